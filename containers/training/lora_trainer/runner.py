"""Runs the trainer as a child process: its output goes through the progress parser to our log, and
a SIGTERM from SageMaker (spot interruption, StopTrainingJob) reaches it.

accelerate launch with one process does not forward signals to the script it starts, so the child is
put in a process group of its own and the whole group is signalled."""

from __future__ import annotations

import codecs
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from types import FrameType
from collections.abc import Callable, Mapping, Sequence

from .progress import ProgressParser

TAIL_LINES = 40


@dataclass
class TrainerResult:
    returncode: int
    stopped_by: str | None
    tail: list[str] = field(default_factory=list)


class SignalForwarder:
    """While active, SIGTERM and SIGINT are recorded and passed on to the child's process group."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalForwarder:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        print(f"lora-trainer: received {self.received}; stopping the trainer", flush=True)
        if self.child is not None and self.child.poll() is None:
            try:
                os.killpg(self.child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def run_trainer(
    argv: Sequence[str],
    env: Mapping[str, str],
    parser: ProgressParser,
    forwarder: SignalForwarder,
    emit: Callable[[str], None] = lambda line: print(line, flush=True),
) -> TrainerResult:
    tail: list[str] = []

    def out(line: str) -> None:
        emit(line)
        tail.append(line)
        del tail[:-TAIL_LINES]

    child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True)
    forwarder.child = child
    if forwarder.received:  # a signal that came while the child was being started
        os.killpg(child.pid, signal.SIGTERM)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    assert child.stdout is not None
    fd = child.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        for line in parser.feed(decoder.decode(chunk)):
            out(line)
    for line in parser.feed(decoder.decode(b"", final=True)):
        out(line)
    for line in parser.close():
        out(line)
    child.stdout.close()
    returncode = child.wait()
    forwarder.child = None
    sys.stdout.flush()
    return TrainerResult(returncode, forwarder.received, tail)

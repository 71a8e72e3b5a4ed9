"""Turns kohya's console output into log lines and metric lines.

kohya reports a step only through tqdm's progress bar ('steps:  25%|...| 100/400 [02:10<06:30,
1.30s/it, avr_loss=0.123]'), redrawn with carriage returns, which CloudWatch would show as one
ever-growing line. Progress redraws become one 'lora-metrics ...' line per step, which SageMaker's
metric definitions (metric_definitions.json) parse; every other line passes through unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from collections.abc import Callable, Iterator

METRIC_DEFINITIONS_PATH = Path(__file__).with_name("metric_definitions.json")

_BAR = re.compile(r"^steps:\s*\d+%\|.*?\|\s*(?P<step>\d+)/(?P<total>\d+)\s*\[(?P<inside>[^\]]*)\]")
_LOSS = re.compile(r"avr_loss=(?P<loss>[0-9.eE+-]+|nan|inf)")
_RATE = re.compile(r"(?P<rate>[0-9.]+)(?P<unit>s/it|it/s)")
_EPOCH = re.compile(r"^epoch (?P<epoch>\d+)/(?P<epochs>\d+)$")
# Printed by train_network.py when --max_train_epochs sets the length.
_OVERRIDE = re.compile(r"override steps\. steps for (?P<epochs>\d+) epochs is[^:]*: (?P<steps>\d+)")


def metric_definitions() -> list[dict[str, str]]:
    return json.loads(METRIC_DEFINITIONS_PATH.read_text(encoding="utf-8"))["metricDefinitions"]


class ProgressParser:
    """Feed it the trainer's output as it comes; it yields the lines to print.

    `epoch_offset` is the number of epochs done before this run (a resumed run's bar restarts at 0),
    so printed steps count from the start of training. `on_steps_per_epoch` hears the steps per epoch
    kohya reports at its start, which resuming on several GPUs needs."""

    def __init__(self, epoch_offset: int = 0, on_steps_per_epoch: Callable[[int], None] | None = None) -> None:
        self.epoch_offset = epoch_offset
        self.on_steps_per_epoch = on_steps_per_epoch
        self.epoch = epoch_offset
        self.steps_per_epoch: int | None = None
        self.last_step = -1
        self._pending = ""

    def feed(self, text: str) -> Iterator[str]:
        self._pending += text
        *segments, self._pending = re.split(r"\r\n|\r|\n", self._pending)
        for segment in segments:
            yield from self._segment(segment)

    def close(self) -> Iterator[str]:
        rest, self._pending = self._pending, ""
        if rest:
            yield from self._segment(rest)

    def _segment(self, segment: str) -> Iterator[str]:
        stripped = segment.strip()
        bar = _BAR.match(stripped)
        if bar:
            yield from self._progress(bar, stripped)
            return
        if not stripped:
            return
        epoch = _EPOCH.match(stripped)
        if epoch:
            self.epoch = int(epoch.group("epoch"))
        override = _OVERRIDE.search(stripped)
        if override and int(override.group("epochs")) > 0:
            self.steps_per_epoch = int(override.group("steps")) // int(override.group("epochs"))
            if self.on_steps_per_epoch:
                self.on_steps_per_epoch(self.steps_per_epoch)
        yield segment.rstrip()

    def _progress(self, bar: re.Match[str], line: str) -> Iterator[str]:
        step = int(bar.group("step"))
        loss = _LOSS.search(line)
        if step == self.last_step or step == 0 or loss is None:
            return
        self.last_step = step
        offset = self.epoch_offset * self.steps_per_epoch if self.steps_per_epoch else 0
        fields = [f"step={step + offset}", f"epoch={self.epoch}", f"loss={loss.group('loss')}"]
        rate = _RATE.search(bar.group("inside"))
        if rate:
            value = float(rate.group("rate"))
            seconds = value if rate.group("unit") == "s/it" else (1 / value if value else 0.0)
            fields.append(f"seconds_per_step={seconds:.3f}")
        yield "lora-metrics " + " ".join(fields)

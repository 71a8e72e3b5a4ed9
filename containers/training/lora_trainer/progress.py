"""Turns kohya's console output into log lines and metric lines.

kohya reports a step only through tqdm's progress bar ('steps:  25%|...| 100/400 [02:10<06:30,
1.30s/it, avr_loss=0.123]'), redrawn with carriage returns, which CloudWatch would show as one
ever-growing line. Progress redraws become one 'lora-metrics ...' line per step, which SageMaker's
metric definitions (metric_definitions.json) parse; every other line passes through unchanged.

Per step, train_network.py calls progress_bar.update(1), which redraws the bar with the new step
number but the previous step's loss, and then set_postfix(avr_loss=...), which redraws it with this
step's loss. So a step's metric line is written from the step's last redraw: when the next step
appears, when any other line is printed, or at the end of the output."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator

METRIC_DEFINITIONS_PATH = Path(__file__).with_name("metric_definitions.json")

_BAR = re.compile(r"^steps:\s*\d+%\|.*?\|\s*(?P<step>\d+)/(?P<total>\d+)\s*\[(?P<inside>[^\]]*)\]")
_LOSS = re.compile(r"avr_loss=(?P<loss>[0-9.eE+-]+|nan|inf)")
_EPOCH = re.compile(r"^epoch (?P<epoch>\d+)/(?P<epochs>\d+)$")
# Printed by train_network.py when --max_train_epochs sets the length.
_OVERRIDE = re.compile(r"override steps\. steps for (?P<epochs>\d+) epochs is[^:]*: (?P<steps>\d+)")


def metric_definitions() -> list[dict[str, str]]:
    return json.loads(METRIC_DEFINITIONS_PATH.read_text(encoding="utf-8"))["metricDefinitions"]


@dataclass
class _Step:
    step: int
    epoch: int
    loss: str | None
    seconds: float | None
    # The whole training's length (the bar's total is max_train_steps, also when resumed), so a
    # reader of the metrics can show "step 340/1000" without the hyperparameters.
    total_steps: int | None = None
    total_epochs: int | None = None

    def line(self) -> str:
        fields = [f"step={self.step}", f"epoch={self.epoch}"]
        if self.loss is not None:
            fields.append(f"loss={self.loss}")
        if self.seconds is not None:
            fields.append(f"seconds_per_step={self.seconds:.3f}")
        fields += [f"{name}={value}" for name, value in (("total_steps", self.total_steps), ("total_epochs", self.total_epochs)) if value]
        return "lora-metrics " + " ".join(fields)


class ProgressParser:
    """Feed it the trainer's output as it comes; it yields the lines to print.

    `epoch_offset` is the number of epochs done before this run (a resumed run's bar restarts at 0),
    so printed steps count from the start of training. `on_steps_per_epoch` hears the steps per epoch
    kohya reports at its start, which resuming on several GPUs needs. `clock` times the steps: a
    step's seconds run from the previous step (or the bar's start, or the last other line, such as
    the next epoch's header after a saved state) to the first redraw that shows it. tqdm's own rate
    is an average since the bar started, not the step's time."""

    def __init__(
        self,
        epoch_offset: int = 0,
        on_steps_per_epoch: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.epoch_offset = epoch_offset
        self.on_steps_per_epoch = on_steps_per_epoch
        self.clock = clock
        self.epoch = epoch_offset
        self.epochs: int | None = None
        self.steps_per_epoch: int | None = None
        self.last_step = -1  # the last step number this run's bar showed
        self._pending = ""
        self._step: _Step | None = None  # seen, not yet reported: a later redraw may bring its loss
        self._since: float | None = None

    def feed(self, text: str) -> Iterator[str]:
        self._pending += text
        *segments, self._pending = re.split(r"\r\n|\r|\n", self._pending)
        now = self.clock()
        # tqdm ends a redraw with ']' and the next one starts with '\r': a complete bar is taken at
        # once, so a step is timed when it is drawn, not when the next redraw comes.
        if _BAR.match(self._pending.strip()) and self._pending.rstrip().endswith("]"):
            segments.append(self._pending)
            self._pending = ""
        for segment in segments:
            yield from self._segment(segment, now)

    def close(self) -> Iterator[str]:
        rest, self._pending = self._pending, ""
        if rest:
            yield from self._segment(rest, self.clock())
        yield from self._flush()

    def _flush(self) -> Iterator[str]:
        if self._step is not None:
            yield self._step.line()
            self._step = None

    def _segment(self, segment: str, now: float) -> Iterator[str]:
        stripped = segment.strip()
        bar = _BAR.match(stripped)
        if bar:
            yield from self._progress(int(bar.group("step")), int(bar.group("total")), _LOSS.search(stripped), now)
            return
        if not stripped:
            return
        yield from self._flush()
        self._since = now
        epoch = _EPOCH.match(stripped)
        if epoch:
            self.epoch = int(epoch.group("epoch"))
            self.epochs = int(epoch.group("epochs"))
        override = _OVERRIDE.search(stripped)
        if override and int(override.group("epochs")) > 0:
            self.steps_per_epoch = int(override.group("steps")) // int(override.group("epochs"))
        yield segment.rstrip()
        if override and self.steps_per_epoch and self.on_steps_per_epoch:
            # After the line is printed, so what the callback prints (a mismatch warning) follows it.
            self.on_steps_per_epoch(self.steps_per_epoch)

    def _progress(self, step: int, total: int, loss: re.Match[str] | None, now: float) -> Iterator[str]:
        if step == 0:  # the bar's first draw, before any step
            self._since = now
            return
        if step != self.last_step:
            yield from self._flush()
            offset = self.epoch_offset * self.steps_per_epoch if self.steps_per_epoch else 0
            seconds = now - self._since if self._since is not None else None
            self._step = _Step(step + offset, self.epoch, None, seconds, total, self.epochs)
            self.last_step = step
            self._since = now
        if self._step is not None and loss is not None:
            # The latest redraw wins: update(1)'s may show the previous step's loss, set_postfix's
            # (always after it) shows this step's.
            self._step.loss = loss.group("loss")

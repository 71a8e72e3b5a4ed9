import re
import sys
from pathlib import Path

from lora_trainer.progress import ProgressParser, metric_definitions
from lora_trainer.runner import SignalForwarder, run_trainer

KOHYA_BAR = Path(__file__).with_name("kohya_progress_bar.py")


def run(parser, chunks):
    lines = []
    for chunk in chunks:
        lines += list(parser.feed(chunk))
    return lines + list(parser.close())


class Clock:
    """A clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def bar(step, loss=None, total=400):
    postfix = f", avr_loss={loss}" if loss is not None else ""
    return f"\rsteps:  {step * 100 // total}%|##   | {step}/{total} [00:10<05:00,  1.31s/it{postfix}]"


def test_each_step_is_reported_with_its_own_loss_and_time():
    # update(1) redraws with the previous step's loss, set_postfix(...) with this step's.
    clock = Clock()
    parser = ProgressParser(clock=clock)
    lines = list(parser.feed("override steps. steps for 4 epochs is / 指定エポックまでのステップ数: 400\n\nepoch 1/4\n\n"))
    lines += parser.feed(bar(0))
    clock.now += 2.0
    lines += parser.feed(bar(1) + bar(1, "0.5"))
    clock.now += 0.5
    lines += parser.feed(bar(2, "0.5")[:20])  # a chunk ends inside a redraw
    lines += parser.feed(bar(2, "0.5")[20:] + bar(2, "0.4"))
    lines += parser.feed("\nsaving checkpoint: /opt/ml/checkpoints/lora-000001.safetensors\n")
    lines += parser.close()
    assert lines == [
        "override steps. steps for 4 epochs is / 指定エポックまでのステップ数: 400",
        "epoch 1/4",
        "lora-metrics step=1 epoch=1 loss=0.5 seconds_per_step=2.000 total_steps=400 total_epochs=4",
        "lora-metrics step=2 epoch=1 loss=0.4 seconds_per_step=0.500 total_steps=400 total_epochs=4",
        "saving checkpoint: /opt/ml/checkpoints/lora-000001.safetensors",
    ]
    assert parser.steps_per_epoch == 100


def test_the_last_step_is_reported_at_the_end_of_the_output():
    clock = Clock()
    parser = ProgressParser(clock=clock)
    lines = list(parser.feed(bar(0)))
    clock.now += 1.0
    assert lines + run(parser, [bar(1), bar(1, "0.3")]) == ["lora-metrics step=1 epoch=0 loss=0.3 seconds_per_step=1.000 total_steps=400"]


def test_a_resumed_run_counts_steps_from_the_start_of_training():
    clock = Clock()
    parser = ProgressParser(epoch_offset=2, clock=clock)
    lines = list(parser.feed("override steps. steps for 4 epochs is / 指定エポックまでのステップ数: 400\nepoch 3/4\n" + bar(0)))
    clock.now += 0.4
    lines += run(parser, [bar(1), bar(1, "0.5")])
    # The bar's total is max_train_steps on a resumed run too (train_network.py), so totals need no offset.
    assert lines[-1] == "lora-metrics step=201 epoch=3 loss=0.5 seconds_per_step=0.400 total_steps=400 total_epochs=4"


class ParserStream:
    """A file for tqdm that feeds what it writes to the parser."""

    def __init__(self, parser) -> None:
        self.parser = parser
        self.lines = []

    def write(self, text):
        self.lines += self.parser.feed(text)

    def flush(self):
        pass


def test_a_real_tqdm_bar_driven_as_kohya_drives_it_gives_each_steps_own_time(monkeypatch):
    # Steps of 0.125 s around one of 1 s: tqdm's own rate (an average since the start, what the
    # parser used to report) would say 0.42 s for step 3; each step's own time is wanted. tqdm and
    # the parser read one hand-driven clock, so the check does not depend on the machine's load.
    import tqdm.std

    clock = Clock()
    monkeypatch.setattr(tqdm.std, "time", clock)
    parser = ProgressParser(clock=clock)
    stream = ParserStream(parser)
    seconds = [0.125, 1.0, 0.125, 0.125, 0.125, 0.125]
    stream.write("override steps. steps for 2 epochs is / 指定エポックまでのステップ数: 6\n")
    bar = tqdm.std.tqdm(range(len(seconds)), smoothing=0, desc="steps", file=stream)  # as train_network.py
    for step, duration in enumerate(seconds, start=1):
        if step in (1, 4):
            stream.write(f"\nepoch {1 if step == 1 else 2}/2\n")
        clock.now += duration  # the step's work
        bar.update(1)
        bar.set_postfix(avr_loss=round(0.1 + step / 100, 2))
    metrics = [dict(field.split("=") for field in line.split()[1:]) for line in stream.lines + list(parser.close()) if line.startswith("lora-metrics")]
    assert [float(m["seconds_per_step"]) for m in metrics] == seconds
    assert [m["loss"] for m in metrics] == ["0.11", "0.12", "0.13", "0.14", "0.15", "0.16"]


def test_a_real_tqdm_in_a_child_process_reaches_the_log_as_steps():
    # Through the pipe run_trainer reads: kohya's bar on stderr, its epoch lines on stdout.
    printed = []
    parser = ProgressParser()
    result = run_trainer([sys.executable, str(KOHYA_BAR), "2", ",".join(["0.01"] * 6)], {"PATH": "/usr/bin:/bin"}, parser, SignalForwarder(), printed.append)
    assert result.returncode == 0, printed
    metrics = [dict(field.split("=") for field in line.split()[1:]) for line in printed if line.startswith("lora-metrics")]
    assert [(m["step"], m["epoch"], m["loss"]) for m in metrics] == [
        ("1", "1", "0.11"), ("2", "1", "0.12"), ("3", "1", "0.13"), ("4", "2", "0.14"), ("5", "2", "0.15"), ("6", "2", "0.16"),
    ]
    assert all(float(m["seconds_per_step"]) >= 0 for m in metrics)
    # The epoch header comes after the first epoch's last step, as kohya printed them.
    assert printed.index("epoch 2/2") == printed.index(next(line for line in printed if "step=3 " in line)) + 1


def test_metric_definitions_parse_the_printed_lines():
    # progress.py's line per step, and captioning.py's once the captions are written: each metric
    # is read from one of them only.
    lines = [
        "lora-metrics step=201 epoch=3 loss=0.0831 seconds_per_step=0.400 total_steps=400 total_epochs=4",
        "lora-metrics captions_written=12",
    ]
    found = {}
    for definition in metric_definitions():
        assert len(definition["Regex"]) <= 500 and 1 <= len(definition["Name"]) <= 255
        matches = [match for match in (re.search(definition["Regex"], line) for line in lines) if match]
        assert len(matches) == 1, definition["Name"]
        found[definition["Name"]] = float(matches[0].group(1))
    assert found == {
        "train:loss": 0.0831,
        "train:step": 201,
        "train:epoch": 3,
        "train:seconds_per_step": 0.4,
        "train:total_steps": 400,
        "train:total_epochs": 4,
        "train:captions_written": 12,
    }
    # and nothing else kohya prints looks like a metric
    for other in ["epoch 3/4", "steps:   0%|  | 1/400 [00:01<05:00,  2.50it/s, avr_loss=0.5]", "loss=0.3 step=1"]:
        assert not any(re.search(d["Regex"], other) for d in metric_definitions())

"""Real kohya-ss training on CPU through the entrypoint, on a random-weight SD 1.5 (real_models.py),
then the LoRA it wrote served by the inference server's own code (real_roundtrip_serve.py).

One run serves most tests, to spend the CPU once: 2 images, batch 1, 3 epochs, so 2 steps an epoch
(with one, a step count and an epoch count would agree, and code confusing them would pass). The
first attempt gets SIGTERM, as SageMaker sends it, once epoch 2 starts (the state of epoch 1 saved); the second
attempt, on the same /opt/ml tree, resumes and finishes: it is also the "real run" whose LoRA and
metadata are checked and served. kohya's own sampling draws 2 prompts at 64 px in 2 steps before
training and after each epoch (about 1 s an image), so the samples, their manifest and the contact
sheet are checked across the resume too. A second, shorter run (1 image, 1 epoch, sampling off)
trains on the same weights given as one original-layout .safetensors file, as the workflow passes a
base model from S3. LORA_TEST_WRITE_DOCS_IMAGES=1 saves the resumed run's contact sheet as
docs/images/contact-sheet.png.
Needs the four LORA_TEST_* variables (see _environment)."""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image as PILImage
from safetensors import safe_open

from conftest import skip_or_fail
from lora_trainer.checkpoints import state_problem
from lora_trainer.sampling import file_pattern
from real_models import ensure_sd15, ensure_sd15_single_file

TESTS = Path(__file__).resolve().parent
TRAINING_ROOT = TESTS.parent
ENVIRONMENT = ("LORA_TEST_SD_SCRIPTS", "LORA_TEST_CACHE", "LORA_TEST_PYTHON_TRAINING", "LORA_TEST_PYTHON_INFERENCE")
SD_SCRIPTS_VERSION = "v0.10.1"
DEFAULT_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
OUTPUT_NAME = "real"
EPOCHS = 3
IMAGES = 2
STEPS_PER_EPOCH = IMAGES  # at batch 1
SINGLE_FILE_EPOCHS = 1
BASE_FOLDER_NAME = "sd15-random"
# Not the cached file's own name: the metadata must name the file as the channel holds it.
BASE_FILE_NAME = "sd15-random-ldm.safetensors"
CAPTION = "a photo of sks pokemon"
HYPERPARAMETERS = {
    "output_name": OUTPUT_NAME,
    "mixed_precision": "no",  # CPU: fp32
    "optimizer_type": "AdamW",  # the default AdamW8bit needs bitsandbytes' CUDA kernels
    "learning_rate": "5e-3",  # high, so that 6 steps change the served images visibly
    "network_dim": "4",
    "network_alpha": "4",
    "gradient_checkpointing": "false",  # at 64 px activations are small; recomputing them costs CPU
    "train_batch_size": "2",  # overridden by the dataset.toml's 1: the metadata must tell the effective one
    "sample_prompts": "a photo of sks pokemon|a drawing of sks pokemon",
    # 2 steps without classifier-free guidance (half the U-Net work), at the training resolution,
    # 64 px (the dataset.toml's): a second or two an image on an idle CPU.
    "sample_steps": "2",
    "sample_cfg_scale": "1",
}
SAMPLE_PROMPTS = 2
SAMPLE_SEEDS = (1234, 1235)  # the default sample_seed, + the prompt's index
DOCS_IMAGE = TRAINING_ROOT.parents[1] / "docs" / "images" / "contact-sheet.png"
DATASET_TOML = """[general]
caption_extension = '.txt'
[[datasets]]
resolution = 64
batch_size = 1
[[datasets.subsets]]
image_dir = '.'
num_repeats = 1
"""
# Bounds, well above what 2 idle cores need (about 25 s to start, seconds a step), for a shared machine.
FIRST_STATE_TIMEOUT = 420
SIGTERM_EXIT_TIMEOUT = 120  # SageMaker's SIGKILL follows SIGTERM after 120 s
FINISH_TIMEOUT = 600
SERVE_TIMEOUT = 600

# seconds_per_step is optional here so that a line without it fails an assertion that says so.
# The training's totals (progress.py) may follow; they are checked in test_progress.py.
METRIC = re.compile(
    r"^lora-metrics step=(?P<step>\d+) epoch=(?P<epoch>\d+) loss=(?P<loss>\S+)(?: seconds_per_step=(?P<seconds>\S+))?"
    r"(?: total_steps=\d+)?(?: total_epochs=\d+)?$"
)
KOHYA_EPOCH = re.compile(rf"^epoch (\d+)/{EPOCHS}$")
# train_network.py's count when --max_train_epochs sets the length: epochs x batches per epoch.
KOHYA_OVERRIDE = re.compile(r"override steps\. steps for (?P<epochs>\d+) epochs is[^:]*: (?P<steps>\d+)")
# Reading the output and the entrypoint's clock differ by scheduling delays on a loaded machine.
TIMING_TOLERANCE_SECONDS = 1.0
TIMING_TOLERANCE_FRACTION = 0.1
# kohya's tqdm bar as it reaches the accelerate wrapper, before the entrypoint rewrites it.
RAW_BAR = re.compile(r"steps:\s*\d+%\|.*?\|\s*(?P<step>\d+)/\d+\s*\[[^\]]*avr_loss=(?P<loss>[^,\]]+)")
# The same bar's rate: tqdm's average since the bar started (smoothing=0 in train_network.py).
RAW_RATE = re.compile(r"steps:\s*\d+%\|.*?\|\s*(?P<step>\d+)/\d+\s*\[[^\]]*?(?P<rate>[0-9.]+)(?P<unit>s/it|it/s)")
# tqdm shows its rate with 2 decimals.
TQDM_RATE_PRECISION = 0.006
# kohya starts epoch 2 only after saving the state of epoch 1, so SIGTERM then lands inside epoch 2.
SECOND_EPOCH_STARTED = re.compile(rf"^\s*epoch 2/{EPOCHS}$")


@dataclass(frozen=True)
class Environment:
    sd_scripts: Path
    cache: Path
    python_training: str
    python_inference: str


@dataclass(frozen=True)
class Metric:
    """One lora-metrics line, with when the test read it and where it is in the attempt's output."""

    step: int
    epoch: int
    loss: str
    seconds: str | None
    arrival: float
    index: int


@dataclass
class Attempt:
    """One start of the entrypoint: its output, line by line, as it comes, with the time each line
    was read (a reader thread takes them at once, so these times are the entrypoint's print times)."""

    process: subprocess.Popen[str]
    raw_log: Path
    lines: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    _queue: queue.Queue[tuple[float, str] | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put((time.monotonic(), line.rstrip("\n")))
        self._queue.put(None)

    def _take(self, timeout: float) -> str | None:
        item = self._queue.get(timeout=timeout)
        if item is None:
            return None
        arrival, line = item
        self.arrivals.append(arrival)
        self.lines.append(line)
        return line

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._take(max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern.pattern!r} within {timeout} s; last lines:\n{self.tail()}") from None
            if line is None:
                raise AssertionError(f"the entrypoint ended before a line matching {pattern.pattern!r}; last lines:\n{self.tail()}")
            if pattern.search(line):
                return line

    def finish(self, timeout: float) -> int:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the entrypoint did not end within {timeout} s; last lines:\n{self.tail()}") from None
        while self._take(30) is not None:
            pass
        return self.process.returncode

    def stop(self) -> None:
        """Ends an attempt a failed assertion left running: SIGTERM first, so the entrypoint takes
        kohya's process group down with it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SIGTERM_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def tail(self, count: int = 30) -> str:
        return "\n".join(self.lines[-count:])

    def metrics(self) -> list[Metric]:
        return [
            Metric(int(m["step"]), int(m["epoch"]), m["loss"], m["seconds"], self.arrivals[index], index)
            for index, line in enumerate(self.lines)
            if (m := METRIC.match(line))
        ]

    def kohya_epochs(self) -> list[int]:
        return [int(m.group(1)) for line in self.lines if (m := KOHYA_EPOCH.match(line.strip()))]

    def kohya_planned_steps(self) -> list[tuple[int, int]]:
        """kohya's own (epochs, steps) when it starts: what it will train, from its data loader."""
        return [(int(m["epochs"]), int(m["steps"])) for line in self.lines if (m := KOHYA_OVERRIDE.search(line))]

    def raw_text(self) -> str:
        return self.raw_log.read_text(encoding="utf-8", errors="replace")

    def raw_losses(self) -> dict[int, str]:
        """The loss kohya showed last for each step of its bar: set after the step, so the step's own."""
        losses: dict[int, str] = {}
        for segment in re.split(r"[\r\n]", self.raw_text()):
            if bar := RAW_BAR.search(segment):
                losses[int(bar["step"])] = bar["loss"].strip()
        return losses

    def raw_seconds_per_step(self) -> dict[int, list[float]]:
        """Every rate kohya's bar showed for each step (each redraw recomputes it), in seconds per step."""
        rates: dict[int, list[float]] = {}
        for segment in re.split(r"[\r\n]", self.raw_text()):
            if bar := RAW_RATE.search(segment):
                rate = float(bar["rate"])
                rates.setdefault(int(bar["step"]), []).append(rate if bar["unit"] == "s/it" else 1 / rate)
        return rates

    def command(self) -> list[str]:
        [line] = [line for line in self.lines if line.startswith("lora-trainer: accelerate launch ")]
        return line.removeprefix("lora-trainer: ").split()


@dataclass
class TrainedModel:
    """A finished /opt/ml tree."""

    opt_ml: Path

    @property
    def model(self) -> Path:
        return self.opt_ml / "model"

    def metadata(self) -> dict:
        return json.loads((self.model / "training-metadata.json").read_text(encoding="utf-8"))

    def lora(self) -> tuple[dict[str, str], list[str]]:
        with safe_open(self.model / f"{OUTPUT_NAME}.safetensors", "pt") as lora:
            return lora.metadata(), list(lora.keys())


@dataclass
class RealRun(TrainedModel):
    base_model: Path
    stopped: Attempt
    resumed: Attempt
    stopped_failure: str
    stopped_samples: list[str]

    @property
    def samples(self) -> Path:
        return self.opt_ml / "checkpoints" / "sample"

    def __repr__(self) -> str:  # short, for failure messages
        return f"RealRun({self.opt_ml})"


@dataclass
class SingleFileRun(TrainedModel):
    attempt: Attempt

    def __repr__(self) -> str:
        return f"SingleFileRun({self.opt_ml})"


def _environment() -> Environment:
    missing = [name for name in ENVIRONMENT if not os.environ.get(name)]
    if missing:
        skip_or_fail(f"real-training tests need {', '.join(missing)} (set by the test runner)")
    get = os.environ.__getitem__
    return Environment(Path(get("LORA_TEST_SD_SCRIPTS")), Path(get("LORA_TEST_CACHE")), get("LORA_TEST_PYTHON_TRAINING"), get("LORA_TEST_PYTHON_INFERENCE"))


@pytest.fixture(scope="module")
def environment() -> Environment:
    return _environment()


@pytest.fixture(scope="module")
def base_model(environment: Environment) -> Path:
    return ensure_sd15(environment.cache, environment.python_training)


def _opt_ml(root: Path, epochs: int, images: int, channel_entry: str, model: Path, **extra: str) -> Path:
    """The /opt/ml tree of a job: hyperparameters, a dataset of `images` images, the model (a
    folder or a file) as the base_model channel's `channel_entry`."""
    opt_ml = root / "opt" / "ml"
    (opt_ml / "input" / "config").mkdir(parents=True)
    hyperparameters = {**HYPERPARAMETERS, "max_train_epochs": str(epochs), **extra}
    (opt_ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    dataset = opt_ml / "input" / "data" / "dataset"
    dataset.mkdir(parents=True)
    # Different images, so the steps of an epoch see different latents.
    for index, gradient in enumerate((PILImage.radial_gradient, PILImage.linear_gradient)[:images]):
        gradient("L").resize((64, 64)).convert("RGB").save(dataset / f"pokemon{index}.png")
        (dataset / f"pokemon{index}.txt").write_text(CAPTION)
    (dataset / "dataset.toml").write_text(DATASET_TOML)
    channel = opt_ml / "input" / "data" / "base_model"
    channel.mkdir(parents=True)
    # A link, not a 4 GB copy; its name is what the metadata must name.
    (channel / channel_entry).symlink_to(model, target_is_directory=model.is_dir())
    return opt_ml


def _accelerate_wrapper(folder: Path, environment: Environment) -> Path:
    """An `accelerate` first on PATH that runs the real one with the entrypoint's arguments unchanged
    and keeps kohya's raw output (the tqdm redraws the entrypoint turns into metric lines), after a
    line telling whether the entrypoint set HF_HUB_OFFLINE for it."""
    folder.mkdir()
    real = Path(environment.python_training).parent / "accelerate"
    wrapper = folder / "accelerate"
    wrapper.write_text(
        "#!/bin/bash\nset -o pipefail\n"
        'echo "wrapper: HF_HUB_OFFLINE=${HF_HUB_OFFLINE-unset}" >> "$KOHYA_RAW_LOG"\n'
        f'"{real}" "$@" 2>&1 | tee -a "$KOHYA_RAW_LOG"\n'
    )
    wrapper.chmod(0o755)
    return folder


def _start(root: Path, opt_ml: Path, base_model: Path, environment: Environment, wrapper: Path, name: str) -> Attempt:
    raw_log = root / f"{name}-kohya-raw.log"
    env = dict(
        os.environ,
        OPT_ML=str(opt_ml),
        LORA_WORK_DIR=str(root / "work"),
        SD_SCRIPTS_DIR=str(environment.sd_scripts),
        TOKENIZER_CACHE_DIR=str(base_model / "tokenizers"),
        SD_SCRIPTS_VERSION=SD_SCRIPTS_VERSION,
        PATH=os.pathsep.join([str(wrapper), str(Path(environment.python_training).parent), os.environ.get("PATH", "")]),
        KOHYA_RAW_LOG=str(raw_log),
        HF_HOME=str(root / "hf-home"),
    )
    process = subprocess.Popen(
        [environment.python_training, "-m", "lora_trainer", "train"],
        cwd=TRAINING_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    return Attempt(process, raw_log)


def _finish(attempt: Attempt) -> None:
    try:
        assert attempt.finish(FINISH_TIMEOUT) == 0, attempt.tail(60)
    finally:
        attempt.stop()


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, environment: Environment, base_model: Path) -> RealRun:
    root = tmp_path_factory.mktemp("real-training")
    opt_ml = _opt_ml(root, EPOCHS, IMAGES, BASE_FOLDER_NAME, base_model / "diffusers")
    wrapper = _accelerate_wrapper(root / "bin", environment)

    stopped = _start(root, opt_ml, base_model, environment, wrapper, "attempt1")
    try:
        stopped.wait_for(SECOND_EPOCH_STARTED, FIRST_STATE_TIMEOUT)
        state = opt_ml / "checkpoints" / f"{OUTPUT_NAME}-000001-state"
        assert state_problem(state, False) is None, f"{state} is not whole when epoch 2 starts"
        stopped.process.send_signal(signal.SIGTERM)  # to the entrypoint only, as `docker stop` does
        assert stopped.finish(SIGTERM_EXIT_TIMEOUT) == 143, stopped.tail()
    finally:
        stopped.stop()
    failure = opt_ml / "output" / "failure"
    stopped_failure = failure.read_text(encoding="utf-8") if failure.is_file() else ""
    sample = opt_ml / "checkpoints" / "sample"
    stopped_samples = sorted(p.name for p in sample.iterdir()) if sample.is_dir() else []

    resumed = _start(root, opt_ml, base_model, environment, wrapper, "attempt2")
    _finish(resumed)
    return RealRun(opt_ml, base_model, stopped, resumed, stopped_failure, stopped_samples)


@pytest.fixture(scope="module")
def single_file_run(tmp_path_factory: pytest.TempPathFactory, environment: Environment, base_model: Path) -> SingleFileRun:
    checkpoint = ensure_sd15_single_file(environment.cache, environment.python_training, environment.sd_scripts)
    root = tmp_path_factory.mktemp("real-single-file")
    opt_ml = _opt_ml(root, SINGLE_FILE_EPOCHS, 1, BASE_FILE_NAME, checkpoint, sample_every_n_epochs="0")
    attempt = _start(root, opt_ml, base_model, environment, _accelerate_wrapper(root / "bin", environment), "single-file")
    _finish(attempt)
    return SingleFileRun(opt_ml, attempt)


@pytest.fixture(scope="module", autouse=True)
def report_training_versions(pytestconfig: pytest.Config, environment: Environment) -> None:
    """Which torch, diffusers, transformers and sd-scripts the real run used, in the test output."""
    probe = "import torch, diffusers, transformers, accelerate; print(f'torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, accelerate {accelerate.__version__}')"
    versions = subprocess.run([environment.python_training, "-c", probe], capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    readme = (environment.sd_scripts / "README.md").read_text(encoding="utf-8")
    release = re.search(r"\*\*Version ([0-9.]+)", readme)
    sd_scripts = f"sd-scripts {release.group(1) if release else 'unknown'} at {environment.sd_scripts}"
    _report(pytestconfig, f"real training: {versions}, {sd_scripts}")


def _report(pytestconfig: pytest.Config, line: str) -> None:
    """A line in the test output whatever the capture mode (as capsys.disabled(), for any scope)."""
    plugins = pytestconfig.pluginmanager
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        plugins.get_plugin("terminalreporter").write_line(line)


def test_real_sd15_training_writes_the_lora_and_metadata_to_opt_ml_model(real_run: RealRun):
    assert sorted(p.name for p in real_run.model.iterdir()) == [f"{OUTPUT_NAME}.safetensors", "training-metadata.json"]
    _, keys = real_run.lora()
    modules = {key.split(".")[0] for key in keys}
    # The default trains the text encoder too: 72 CLIP and 192 U-Net modules in SD 1.5.
    assert sum(m.startswith("lora_te_") for m in modules) == 72
    assert sum(m.startswith("lora_unet_") for m in modules) == 192
    assert real_run.metadata()["sd_scripts_version"] == SD_SCRIPTS_VERSION
    assert real_run.resumed.metrics(), "no lora-metrics lines"


def test_real_sd15_training_metadata_names_the_channel_model_and_effective_batch_size(real_run: RealRun):
    metadata = real_run.metadata()
    assert metadata["base_model"] == {"kind": "diffusers folder", "name": BASE_FOLDER_NAME}
    assert DEFAULT_HUB_ID not in json.dumps(metadata), "the metadata names the default Hub id although the model came from the channel"
    assert metadata["dataset"]["batch_size"] == 1  # the dataset.toml's, not train_batch_size 2


def test_real_sd15_training_counts_two_steps_per_epoch_as_kohya_does(real_run: RealRun):
    # kohya's own count, printed by each attempt: 3 epochs of 2 batches (IMAGES at batch 1).
    for attempt in (real_run.stopped, real_run.resumed):
        assert attempt.kohya_planned_steps() == [(EPOCHS, EPOCHS * STEPS_PER_EPOCH)], attempt.tail()
    metadata = real_run.metadata()
    counts = {key: metadata[key] for key in ("planned_steps_per_epoch", "kohya_steps_per_epoch", "steps", "epochs")}
    assert counts == {"planned_steps_per_epoch": STEPS_PER_EPOCH, "kohya_steps_per_epoch": STEPS_PER_EPOCH, "steps": EPOCHS * STEPS_PER_EPOCH, "epochs": EPOCHS}


def test_real_sd15_training_resumes_after_sigterm_each_epoch_once(real_run: RealRun):
    stopped, resumed = real_run.stopped, real_run.resumed
    assert "Stopped by SIGTERM" in real_run.stopped_failure
    assert "--resume" not in stopped.command()
    command = resumed.command()
    resume = command[command.index("--resume") :][:4]
    assert resume == ["--resume", str(real_run.opt_ml / "checkpoints" / f"{OUTPUT_NAME}-000001-state"), "--initial_epoch", "2"]
    # Epoch 2 had begun when SIGTERM came; the resumed attempt runs it again, from its start.
    assert stopped.kohya_epochs() == [1, 2] and resumed.kohya_epochs() == [2, 3]
    # Every step once, numbered from the start of training: the resumed attempt's bar restarts at 1,
    # and its first step is 3 (1 epoch of 2 steps done), not 2 (1 epoch, counted as if a step).
    steps = [(m.step, m.epoch) for m in stopped.metrics() + resumed.metrics()]
    assert steps == [(step, (step - 1) // STEPS_PER_EPOCH + 1) for step in range(1, EPOCHS * STEPS_PER_EPOCH + 1)]
    metadata = real_run.metadata()
    assert metadata["resumed_after_epoch"] == 1 and metadata["epochs"] == EPOCHS


def test_real_sd15_resumed_lora_metadata_counts_every_step(real_run: RealRun):
    # kohya's ss_steps counts only the resumed attempt's steps (4) unless the entrypoint corrects it;
    # a correction by epochs instead of steps would give 5.
    lora_metadata, _ = real_run.lora()
    assert (lora_metadata["ss_steps"], lora_metadata["ss_epoch"]) == (str(EPOCHS * STEPS_PER_EPOCH), str(EPOCHS))


def test_real_sd15_successful_attempt_removes_the_stopped_attempts_failure_file(real_run: RealRun):
    assert real_run.stopped_failure, "the stopped attempt wrote no failure file"
    assert not (real_run.opt_ml / "output" / "failure").exists(), "the stopped attempt's failure file outlived the successful one"


def test_real_sd15_metrics_report_each_steps_own_loss(real_run: RealRun):
    for attempt, first_step in ((real_run.stopped, 1), (real_run.resumed, 1 + STEPS_PER_EPOCH)):
        raw = attempt.raw_losses()
        # Each attempt's bar counts from 1; the metric lines count from the start of training.
        expected = [(first_step + bar_step - 1, loss) for bar_step, loss in sorted(raw.items())]
        assert [(m.step, m.loss) for m in attempt.metrics()] == expected
    # Distinct losses, or a line showing the previous step's loss would pass unnoticed.
    losses = [m.loss for m in real_run.stopped.metrics() + real_run.resumed.metrics()]
    assert len(set(losses)) == len(losses), losses


def _epoch_timings(attempt: Attempt) -> list[tuple[int, float, float]]:
    """(epoch, the seconds_per_step of its 2 steps added up, the time they took as the test saw it)
    for each epoch the attempt finished. A step is timed from the previous step (or the last other
    line, such as the epoch header) to its first redraw, and step 1's line is printed at step 2's
    first redraw: so the two add up to the time from the line before step 1's to step 1's."""
    metrics = attempt.metrics()
    timings = []
    for first, second in itertools.pairwise(metrics):
        if first.epoch != second.epoch or (first.step - 1) % STEPS_PER_EPOCH:
            continue
        before = attempt.lines[first.index - 1]
        assert not METRIC.match(before), f"step {first.step}'s line follows another step's: {before!r}"
        seen = first.arrival - attempt.arrivals[first.index - 1]
        timings.append((first.epoch, float(first.seconds or "nan") + float(second.seconds or "nan"), seen))
    return timings


def _tqdm_seconds(real_run: RealRun) -> dict[int, list[float]]:
    """tqdm's average seconds per step as the bars showed them, by step from the start of training."""
    seconds: dict[int, list[float]] = {}
    for attempt, offset in ((real_run.stopped, 0), (real_run.resumed, STEPS_PER_EPOCH)):
        seconds.update({step + offset: value for step, value in attempt.raw_seconds_per_step().items()})
    return seconds


def test_real_sd15_metrics_report_each_steps_own_time(real_run: RealRun, pytestconfig: pytest.Config):
    metrics = real_run.stopped.metrics() + real_run.resumed.metrics()
    for metric in metrics:
        assert metric.seconds is not None and float(metric.seconds) > 0, f"step {metric.step}: seconds_per_step={metric.seconds}"
    tqdm = _tqdm_seconds(real_run)
    _report(pytestconfig, "real training seconds_per_step (tqdm's average): " + "; ".join(f"{m.step}: {m.seconds} ({tqdm.get(m.step)})" for m in metrics))
    # tqdm's rate is the average since its bar started: the steps' own times cannot all agree with
    # one of the rates it showed for them.
    agree = [m.step for m in metrics if any(abs(float(m.seconds or 0) - rate) <= TQDM_RATE_PRECISION for rate in tqdm[m.step])]
    assert len(agree) < len(metrics), "seconds_per_step is tqdm's average"
    timings = _epoch_timings(real_run.stopped) + _epoch_timings(real_run.resumed)
    _report(pytestconfig, "real training, each epoch's steps added up / seen: " + "; ".join(f"{e}: {r:.2f}/{s:.2f} s" for e, r, s in timings))
    assert [epoch for epoch, _, _ in timings] == list(range(1, EPOCHS + 1))
    for epoch, reported, seen in timings:
        # Not a speed bound: the steps' own times must account for the time they took.
        tolerance = max(TIMING_TOLERANCE_SECONDS, TIMING_TOLERANCE_FRACTION * seen)
        assert abs(reported - seen) <= tolerance, f"epoch {epoch}: its steps report {reported:.3f} s, took {seen:.3f} s"


def test_real_sd15_lora_round_trip_changes_served_images(real_run: RealRun, environment: Environment, pytestconfig: pytest.Config, tmp_path: Path):
    result = tmp_path / "served.json"
    argv = [environment.python_inference, str(TESTS / "real_roundtrip_serve.py"), str(real_run.base_model), str(real_run.model), str(result)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=SERVE_TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    served = json.loads(result.read_text(encoding="utf-8"))
    _report(pytestconfig, f"round trip served with {served['versions']}")
    # Every module kohya wrote is loaded: a text-encoder name that matches nothing is not skipped.
    assert (served["text_encoder_lora_modules"], served["unet_lora_modules"]) == (72, 192)
    assert served["text_embedding_max_abs_diff"] > 0, "the LoRA does not change the text encoder's output"
    assert served["image_std"] > 1, f"the base model draws a flat image, which cannot show a change: {served}"
    assert served["image_mean_abs_diff"] > 0.5, f"lora_scale 0 and {served['lora_scale']} draw the same image: {served}"
    assert served["image_diff_back_at_default"] == 0, "back at the default scale, the image is not the one first drawn"


def test_real_sd15_single_file_base_model_trains_offline_through_kohyas_checkpoint_loader(single_file_run: SingleFileRun):
    attempt = single_file_run.attempt
    assert "wrapper: HF_HUB_OFFLINE=1" in attempt.raw_text(), "the entrypoint did not set HF_HUB_OFFLINE for a channel model"
    # kohya's original-checkpoint path (train_util._load_target_model), every tensor of the file used.
    assert any("load StableDiffusion checkpoint: " in line for line in attempt.lines), attempt.tail(60)
    loaded = [line for line in attempt.lines if re.search(r"loading (u-net|vae|text encoder): ", line)]
    assert len(loaded) == 3 and all("<All keys matched successfully>" in line for line in loaded), loaded
    assert [(m.step, m.epoch) for m in attempt.metrics()] == [(1, 1)]


def test_real_sd15_single_file_base_model_gives_the_folders_lora_modules(single_file_run: SingleFileRun, real_run: RealRun):
    assert sorted(p.name for p in single_file_run.model.iterdir()) == [f"{OUTPUT_NAME}.safetensors", "training-metadata.json"]
    _, keys = single_file_run.lora()
    _, folder_keys = real_run.lora()
    assert sorted(keys) == sorted(folder_keys)


def test_real_sd15_single_file_metadata_names_the_channel_file(single_file_run: SingleFileRun):
    metadata = single_file_run.metadata()
    assert metadata["base_model"] == {"kind": "single file", "name": BASE_FILE_NAME}
    assert metadata["hyperparameters"]["base_model"] == BASE_FILE_NAME
    assert metadata["steps"] == SINGLE_FILE_EPOCHS  # 1 image at batch 1


SAMPLING_STARTS = "generating sample images at step"
# What kohya prints next once it has drawn an epoch's samples.
AFTER_SAMPLING = re.compile(rf"^\s*epoch \d+/{EPOCHS}$|^saving checkpoint|^model saved|^lora-trainer: ")


def _sampling_seconds(attempt: Attempt) -> float:
    """The time kohya spent drawing samples in this attempt, as the test saw its output."""
    total = 0.0
    for index, line in enumerate(attempt.lines):
        if SAMPLING_STARTS in line:
            after = next((i for i in range(index + 1, len(attempt.lines)) if AFTER_SAMPLING.search(attempt.lines[i])), len(attempt.lines) - 1)
            total += attempt.arrivals[after] - attempt.arrivals[index]
    return total


def test_real_sd15_kohya_draws_the_samples_of_every_epoch_once_across_the_resume(real_run: RealRun, pytestconfig: pytest.Config):
    seconds = [_sampling_seconds(attempt) for attempt in (real_run.stopped, real_run.resumed)]
    _report(pytestconfig, f"real training, kohya's sampling ({(EPOCHS + 1) * SAMPLE_PROMPTS} images): {' + '.join(f'{s:.1f}' for s in seconds)} s")
    # The stopped attempt drew the base model's row and epoch 1 (before epoch 2 began); the resumed
    # one epochs 2 and 3, without --sample_at_first (its weights are not the base model's).
    assert "--sample_at_first" in real_run.stopped.command() and "--sample_at_first" not in real_run.resumed.command()
    pattern = file_pattern(OUTPUT_NAME)
    drawn = {(int(m["epoch"]), int(m["index"]), int(m["seed"])): name for name in real_run.stopped_samples if (m := pattern.match(name))}
    assert sorted(drawn) == [(epoch, index, SAMPLE_SEEDS[index]) for epoch in (0, 1) for index in range(SAMPLE_PROMPTS)]
    manifest = json.loads((real_run.samples / "samples.json").read_text(encoding="utf-8"))
    images = manifest["images"]
    assert [(i["epoch"], i["prompt_index"], i["step"]) for i in images] == [
        (epoch, index, epoch * STEPS_PER_EPOCH) for epoch in range(EPOCHS + 1) for index in range(SAMPLE_PROMPTS)
    ]
    assert set(drawn.values()) <= {i["file"] for i in images}, "the stopped attempt's samples are not in the manifest"
    assert [(p["prompt"], p["seed"], p["width"], p["height"], p["steps"]) for p in manifest["prompts"]] == [
        (text, seed, 64, 64, 2) for text, seed in zip(HYPERPARAMETERS["sample_prompts"].split("|"), SAMPLE_SEEDS, strict=True)
    ]
    for image in images:
        with PILImage.open(real_run.samples / image["file"]) as opened:
            assert (opened.format, opened.size) == ("PNG", (64, 64)), image
            # A flat image (kohya turns NaN latents into black) would show nothing of the training.
            assert any(low != high for low, high in opened.getextrema()), f"{image['file']} is flat"


def test_real_sd15_samples_show_the_training(real_run: RealRun):
    # Same prompt, same seed: the base model's sample and the last epoch's differ only by the LoRA.
    manifest = json.loads((real_run.samples / "samples.json").read_text(encoding="utf-8"))
    files = {(i["epoch"], i["prompt_index"]): i["file"] for i in manifest["images"]}
    first, last = (PILImage.open(real_run.samples / files[(epoch, 0)]).convert("L") for epoch in (0, EPOCHS))
    difference = sum(abs(a - b) for a, b in zip(first.tobytes(), last.tobytes(), strict=True)) / (64 * 64)
    assert difference > 0.5, f"epoch 0 and epoch {EPOCHS} draw the same image (mean difference {difference})"


def test_real_sd15_contact_sheet_is_built_from_what_kohya_wrote(real_run: RealRun):
    from lora_trainer.contact_sheet import GAP, HEADER_LINES, LINE_HEIGHT, MIN_CELL, ROW_LABEL_WIDTH

    sheet_path = real_run.samples / "contact-sheet.png"
    with PILImage.open(sheet_path) as sheet:
        rows = EPOCHS + 1
        assert sheet.size == (ROW_LABEL_WIDTH + SAMPLE_PROMPTS * (MIN_CELL + GAP) + GAP, HEADER_LINES * LINE_HEIGHT + GAP + rows * (MIN_CELL + GAP) + GAP)
    # Also where SageMaker's output.tar.gz takes it, and not in the model.
    assert (real_run.opt_ml / "output" / "data" / "sample" / "contact-sheet.png").read_bytes() == sheet_path.read_bytes()
    assert "contact-sheet.png" not in [p.name for p in real_run.model.iterdir()]
    if os.environ.get("LORA_TEST_WRITE_DOCS_IMAGES") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_IMAGE.write_bytes(sheet_path.read_bytes())


def test_real_sd15_sampling_off_passes_no_sampling_flag(single_file_run: SingleFileRun):
    assert not [arg for arg in single_file_run.attempt.command() if arg.startswith("--sample")]
    assert not (single_file_run.opt_ml / "checkpoints" / "sample").exists()

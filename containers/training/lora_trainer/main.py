"""The training entrypoint: SageMaker runs the image with the argument `train`.

Order of work: everything that can be checked is checked before the trainer starts (hyperparameters,
base model, every image and caption), so a mistake fails the job in seconds with a reason; then the
trainer resumes from the newest complete state, or finishes at once when an earlier attempt of the job
already produced the model."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from . import caption_targets, captioning, checkpoints, flux_files, run_record, sampling
from .base_model import BaseModel, resolve_base_model
from .command import SCRIPTS, Launch, accelerate_argv, epochs_for, kohya_args
from .contact_sheet import write_contact_sheet
from .dataset import DatasetOptions, PreparedDataset, prepare_dataset
from .dataset_check import one_or_all
from .errors import TrainingError
from .files import write_json
from .hub_download import fetch_flux_files
from .hub_token import read_hf_token
from .hyperparameters import parse_hyperparameters
from .lora_file import read_metadata, update_metadata
from .paths import SageMakerPaths
from .progress import ProgressParser
from .runner import SignalForwarder, TrainerResult, run_trainer

METADATA_NAME = "training-metadata.json"
# SageMaker keeps the first 1024 characters of the failure file as the job's FailureReason.
FAILURE_REASON_LIMIT = 1024
# kohya refuses text encoder caching with these caption augmentations (sdxl_train_network.py), and
# latent caching with these image augmentations (train_network.py:583/590): before it loads the model,
# but only once the job has pulled the image and kohya has loaded the dataset.
_CAPTION_AUGMENTATIONS = ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate", "token_warmup_step")
_IMAGE_AUGMENTATIONS = ("color_aug", "random_crop")


@dataclass(frozen=True)
class Image:
    """What the image provides (set by its Dockerfile); tests point these elsewhere."""

    sd_scripts: Path = Path("/opt/sd-scripts")
    tokenizer_cache: Path = Path("/opt/tokenizers")
    sd_scripts_version: str = "unknown"

    @classmethod
    def from_env(cls) -> Image:
        return cls(
            Path(os.environ.get("SD_SCRIPTS_DIR", "/opt/sd-scripts")),
            Path(os.environ.get("TOKENIZER_CACHE_DIR", "/opt/tokenizers")),
            os.environ.get("SD_SCRIPTS_VERSION", "unknown"),
        )


@dataclass
class Trainer:
    """How the trainer is started. Production launches kohya through accelerate; tests give a
    `command` prefix that replaces `accelerate launch <script>` and receives the same kohya flags."""

    command: Sequence[str] | None = None
    gpus: int | None = None
    forwarder: SignalForwarder = field(default_factory=SignalForwarder)


@dataclass
class Inputs:
    """Everything checked before the trainer starts."""

    raw: dict[str, Any]
    values: dict[str, Any]
    base: BaseModel
    prepared: PreparedDataset

    @property
    def model_type(self) -> str:
        return str(self.values["model_type"])

    @property
    def output_name(self) -> str:
        return str(self.values["output_name"])


@dataclass
class Attempt:
    """What this attempt did: the epoch it resumed after, whether it reused a finished model, the
    optimizer steps the final model was trained for, and the GPUs and steps per epoch (per GPU)
    kohya trained with."""

    resumed_from: int | None = None
    reused: bool = False
    steps: int | None = None
    gpus: int | None = None
    kohya_steps_per_epoch: int | None = None


@dataclass
class Job:
    """One attempt of the training job, once its inputs are checked."""

    paths: SageMakerPaths
    image: Image
    trainer: Trainer
    inputs: Inputs
    fingerprint: str
    record: dict[str, Any]
    epochs: int
    started: float
    prompts: list[sampling.SamplePrompt] = field(default_factory=list)

    @property
    def final_model(self) -> Path:
        return self.paths.checkpoints / f"{self.inputs.output_name}.safetensors"

    @property
    def samples(self) -> Path:
        return self.paths.checkpoints / sampling.SAMPLE_FOLDER


def train(paths: SageMakerPaths, image: Image, trainer: Trainer) -> dict[str, Any]:
    started = time.time()
    inputs = check_inputs(paths)
    summary = inputs.prepared.summary
    base = inputs.base
    fingerprint = run_record.make_fingerprint(inputs.values, summary.content_sha256, base.name_or_path, base.kind, image.sd_scripts_version)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    record = run_record.load_or_create(paths.checkpoints, fingerprint)
    # --- caption_missing (captioning.py, part D): captions next to the images before kohya or the samples read them ---
    captioning.write_captions(paths, inputs.values, inputs.prepared)
    # --- end caption_missing ---
    epochs = epochs_for(inputs.values, summary.steps_per_epoch)
    job = Job(paths, image, trainer, inputs, fingerprint, record, epochs, started, _plan_samples(inputs, epochs))
    if run_record.completed(paths.checkpoints, fingerprint, job.final_model):
        print(f"lora-trainer: an earlier attempt of this job already trained {job.final_model.name}; not training again", flush=True)
        # The GPUs and steps per epoch of the attempt that trained it, from the run record.
        attempt = Attempt(
            reused=True, steps=_model_steps(job.final_model),
            gpus=record.get("gpus"), kohya_steps_per_epoch=record.get("steps_per_epoch"),
        )
    else:
        attempt = _train_model(job)
        run_record.mark_completed(paths.checkpoints, fingerprint, job.final_model)
        for removed in checkpoints.clean_finished(paths.checkpoints, inputs.output_name):
            print(f"lora-trainer: removed checkpoint {removed} (training finished)", flush=True)
    metadata = _write_outputs(job, attempt)
    _write_samples(job, attempt)
    return metadata


def check_inputs(paths: SageMakerPaths) -> Inputs:
    """Hyperparameters, base model, every image and caption, and the combinations kohya would refuse
    only once the image is pulled and the dataset loaded (before it loads the model)."""
    raw = _read_hyperparameters(paths.hyperparameters)
    values = parse_hyperparameters(raw)
    base = resolve_base_model(paths.channel("base_model"), str(values["base_model"]), "base_model" in raw, str(values["model_type"]))
    variant = f" ({base.variant})" if base.variant else ""
    print(f"lora-trainer: {values['model_type']}{variant} LoRA '{values['output_name']}' on {base.kind} {base.name_or_path}", flush=True)
    prepared = prepare_dataset(
        paths.channel("dataset"),
        paths.work,
        DatasetOptions(
            resolution=int(values["resolution"]),
            batch_size=int(values["train_batch_size"]),
            num_repeats=int(values["num_repeats"]),
            # caption_missing: caption_targets.check_plan below refuses the captionless images it will not caption.
            allow_missing_captions=bool(values["allow_missing_captions"]) or caption_targets.wanted(values),
            max_train_steps=None if values["max_train_epochs"] is not None else int(values["max_train_steps"]),
            num_repeats_given="num_repeats" in raw,
            model_type=str(values["model_type"]),
        ),
    )
    for line in prepared.summary.lines():
        print(line, flush=True)
    # --- caption_missing (caption_targets.py, part D) ---
    caption_targets.check_plan(paths.channel("dataset"), prepared.config, prepared.summary, values)
    # --- end caption_missing ---
    if values["cache_text_encoder_outputs"]:
        _refuse(prepared.config, _CAPTION_AUGMENTATIONS, "cache_text_encoder_outputs", "captions are encoded once, so they cannot change per step")
    if values["cache_latents"]:
        _refuse(prepared.config, _IMAGE_AUGMENTATIONS, "cache_latents", "images are encoded once, so they cannot change per step")
    return Inputs(raw, values, base, prepared)


def _train_model(job: Job) -> Attempt:
    """Resumes from the newest complete state (or starts), runs kohya, and checks its model."""
    _fetch_hub_files(job)
    launch = _plan_launch(job)
    values, trainer = job.inputs.values, job.trainer
    argv = [*trainer.command, *kohya_args(values, launch)] if trainer.command else accelerate_argv(values, launch)
    print("lora-trainer: " + " ".join(argv), flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if job.inputs.base.local or job.inputs.base.flux is not None:
        # Nothing may reach the Hub (the job can run with network isolation): tokenizers are in
        # the image, the model is in the channel or already downloaded (FLUX.1).
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")

    def remember_steps_per_epoch(steps: int) -> None:
        _compare_steps_per_epoch(job, launch.gpus, steps)
        # Saved at once: the attempt may be killed long before it ends.
        if (job.record.get("steps_per_epoch"), job.record.get("gpus")) != (steps, launch.gpus):
            job.record.update(steps_per_epoch=steps, gpus=launch.gpus)
            write_json(job.paths.checkpoints / run_record.RUN_RECORD, job.record)

    parser = ProgressParser(epoch_offset=launch.resume_epoch, on_steps_per_epoch=remember_steps_per_epoch)
    if trainer.forwarder.received:
        raise TrainingError(f"Stopped by {trainer.forwarder.received} before training started; a restarted job starts over cleanly.")
    result = run_trainer(argv, env, parser, trainer.forwarder)
    _check_result(result, SCRIPTS[job.inputs.model_type], parser.epoch)
    problem = checkpoints.file_problem(job.final_model)
    if problem:
        raise TrainingError(f"kohya-ss finished without a usable {job.final_model.name} ({problem}) in {job.paths.checkpoints}.")
    steps = _correct_step_count(job.final_model, launch.resume_epoch, parser.steps_per_epoch)
    return Attempt(resumed_from=launch.resume_epoch or None, steps=steps, gpus=launch.gpus, kohya_steps_per_epoch=parser.steps_per_epoch)


def _fetch_hub_files(job: Job) -> None:
    """A FLUX.1 Hub model's files, downloaded only now: after every check, and never by an attempt
    that reuses a finished model. The token is read here and given only to the download."""
    base = job.inputs.base
    if base.variant is None or base.local:
        return
    job.inputs.base = fetch_flux_files(base, job.paths.hub_base_model, read_hf_token())


def planned_steps_per_epoch(batches_per_epoch: int, gpus: int) -> int:
    """Optimizer steps per epoch on each GPU: kohya splits an epoch's batches among the processes
    (train_network.py: ceil(len(train_dataloader) / num_processes))."""
    return math.ceil(batches_per_epoch / gpus)


def _compare_steps_per_epoch(job: Job, gpus: int, reported: int) -> None:
    """The plan (training length, resume points, ss_steps) rests on counting kohya's batches as it
    does; a difference is said at once, with both numbers."""
    planned = planned_steps_per_epoch(job.inputs.prepared.summary.steps_per_epoch, gpus)
    if reported != planned:
        print(
            f"lora-trainer: WARNING: kohya reports {reported} steps per epoch on each of {gpus} GPU(s), the entrypoint "
            f"planned {planned}: the {job.epochs} epoch(s) take {job.epochs * reported} steps, not {job.epochs * planned} "
            "(its count of kohya's buckets, lora_trainer/buckets.py, is off for this dataset)",
            flush=True,
        )


def _plan_launch(job: Job) -> Launch:
    values, summary = job.inputs.values, job.inputs.prepared.summary
    plan = checkpoints.plan_resume(job.paths.checkpoints, job.inputs.output_name, values["mixed_precision"] == "fp16")
    for removed in plan.removed:
        print(f"lora-trainer: removed checkpoint {removed}", flush=True)
    gpus = job.trainer.gpus or _gpu_count()
    state = plan.state
    if state is not None and gpus > 1 and not job.record.get("steps_per_epoch"):
        print(f"lora-trainer: cannot place {state.path.name} on {gpus} GPUs without the steps per epoch; starting over", flush=True)
        state = None
    every = int(values["save_every_n_epochs"])
    if (job.epochs - 1) // every == 0:
        print(
            f"lora-trainer: WARNING: {job.epochs} epoch(s) with a state every {every}: no resume point "
            "before the end, so a spot interruption restarts training; lower num_repeats or save_every_n_epochs",
            flush=True,
        )
    print(
        f"lora-trainer: training {job.epochs} epoch(s) of {planned_steps_per_epoch(summary.steps_per_epoch, gpus)} step(s) on each of {gpus} GPU(s); "
        + (f"resuming after epoch {state.epoch} from {state.path.name}" if state else "starting from the base model"),
        flush=True,
    )
    return Launch(
        sample_prompts=_prepare_sampling(job, state.epoch if state else 0),
        sample_every_n_epochs=sampling.every_n_epochs(values, job.epochs),
        sd_scripts=job.image.sd_scripts,
        base_model=str(job.inputs.base.flux.transformer) if job.inputs.base.flux else job.inputs.base.name_or_path,
        flux=job.inputs.base.flux,
        dataset_config=job.inputs.prepared.config_path,
        output_dir=job.paths.checkpoints,
        tokenizer_cache=job.image.tokenizer_cache,
        epochs=job.epochs,
        gpus=gpus,
        cpus=os.cpu_count() or 1,
        resume_state=state.path if state else None,
        resume_epoch=state.epoch if state else 0,
        steps_per_epoch=job.record.get("steps_per_epoch"),
    )


def _plan_samples(inputs: Inputs, epochs: int) -> list[sampling.SamplePrompt]:
    """The sample prompts, announced with every setting; sampling with nothing to prompt with (no
    sample_prompts, no caption) is turned off with a warning rather than failing a good dataset."""
    values = inputs.values
    if not sampling.sampling_on(values):
        print("lora-trainer: sample images off (sample_every_n_epochs = 0)", flush=True)
        return []
    prompts = sampling.plan_prompts(values, inputs.prepared.config, inputs.base.variant)
    if not prompts:
        print("lora-trainer: WARNING: no sample_prompts and no caption in the dataset to sample with; sample images off", flush=True)
        return []
    first, every = prompts[0], sampling.every_n_epochs(values, epochs)
    print(
        f"lora-trainer: sample images every {every} epoch(s) of {epochs}"
        + (" and before training" if values["sample_at_first"] else "")
        + f": {len(prompts)} prompt(s) at {first.width}x{first.height}, {first.steps} steps, "
        + f"{first.sampler or 'FLUX.1 Euler'}, guidance {first.cfg_scale}",
        flush=True,
    )
    for prompt in prompts:
        print(f"lora-trainer:   sample {prompt.index} (seed {prompt.seed}): {prompt.prompt}", flush=True)
    warning = sampling.schedule_warning(every, epochs, bool(values["sample_at_first"]))
    if warning:
        print(f"lora-trainer: WARNING: {warning}", flush=True)
    return prompts


def _prepare_sampling(job: Job, resumed_after: int) -> Path | None:
    """Writes kohya's prompts file (in the work folder: the channels may be read-only) and removes
    the samples of the epochs this attempt trains again."""
    if not job.prompts:
        return None
    for removed in sampling.remove_superseded(job.samples, job.inputs.output_name, resumed_after):
        print(f"lora-trainer: removed sample {removed} (its epoch is trained again)", flush=True)
    return sampling.write_prompts_file(job.prompts, job.paths.work / sampling.PROMPTS_FILE_NAME)


def _write_samples(job: Job, attempt: Attempt) -> None:
    """samples.json and the contact sheet beside kohya's samples, also copied to output/data. A
    problem here never fails a training whose LoRA is fine: it is logged as a warning."""
    if not job.prompts:
        return
    try:
        images = _readable_samples(job, attempt)
        sheet = None
        try:
            sheet = write_contact_sheet(job.samples, sampling.CONTACT_SHEET_NAME, job.prompts, images).name
        except (OSError, ValueError) as error:
            print(f"lora-trainer: WARNING: no contact sheet ({type(error).__name__}: {error})", flush=True)
        sampling.write_manifest(job.samples, sampling.manifest(job.prompts, images, sheet))
        copy = job.paths.output_data / sampling.SAMPLE_FOLDER
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(job.samples, copy)
        print(f"lora-trainer: {len(images)} sample image(s) of {len(job.prompts)} prompt(s) in {job.samples} and {copy}", flush=True)
    except Exception as error:  # noqa: BLE001 - the LoRA is written; samples are a view of it
        print(f"lora-trainer: WARNING: could not write the samples' manifest ({type(error).__name__}: {error})", flush=True)


def _readable_samples(job: Job, attempt: Attempt) -> list[sampling.SampleImage]:
    """kohya's epoch samples, less any that do not decode, each named in a warning."""
    found = sampling.sample_images(job.samples, job.inputs.output_name, attempt.kohya_steps_per_epoch)
    images, unreadable = sampling.readable(job.samples, found)
    for name in unreadable:
        print(f"lora-trainer: WARNING: sample {name} does not decode (cut short?); left out of the manifest and the sheet", flush=True)
    return images


def _correct_step_count(final_model: Path, resume_epoch: int, steps_per_epoch: int | None) -> int | None:
    """kohya writes its own step counter as the model's ss_steps, and on a run resumed with
    --initial_epoch that counter starts at 0 (train_network.py resets global_step unless
    --skip_until_initial_step, which replays the data and still counts only from the skipped
    epoch's start). So a resumed run's model would claim only its last attempt's steps: the steps
    of the epochs before the resume point are added back here."""
    steps = _model_steps(final_model)
    if steps is None or resume_epoch == 0:
        return steps
    if steps_per_epoch is None:
        print(f"lora-trainer: WARNING: kohya did not report its steps per epoch; {final_model.name} keeps ss_steps={steps}", flush=True)
        return steps
    total = steps + resume_epoch * steps_per_epoch
    update_metadata(final_model, {"ss_steps": str(total)})
    print(f"lora-trainer: {final_model.name}: ss_steps {steps} -> {total} (this attempt's steps plus {resume_epoch} earlier epoch(s))", flush=True)
    return total


def _model_steps(model: Path) -> int | None:
    value = read_metadata(model).get("ss_steps")
    return int(value) if value is not None and str(value).isdigit() else None


def _write_outputs(job: Job, attempt: Attempt) -> dict[str, Any]:
    model = job.paths.model
    model.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(job.final_model, model / job.final_model.name)
    summary = job.inputs.prepared.summary
    metadata = {
        "output_name": job.inputs.output_name,
        "model_file": job.final_model.name,
        "model_type": job.inputs.model_type,
        "base_model": _base_model_record(job.inputs.base),
        "hyperparameters": _effective_hyperparameters(job.inputs),
        "epochs": job.epochs,
        "gpus": attempt.gpus,
        # Per GPU: epochs x kohya_steps_per_epoch = steps (when kohya trained as planned).
        "planned_steps_per_epoch": planned_steps_per_epoch(summary.steps_per_epoch, attempt.gpus) if attempt.gpus else None,
        "kohya_steps_per_epoch": attempt.kohya_steps_per_epoch,
        "steps": attempt.steps,
        "resumed_after_epoch": attempt.resumed_from,
        "reused_completed_model": attempt.reused,
        "sd_scripts_version": job.image.sd_scripts_version,
        "dataset": asdict(summary),
        "fingerprint": job.fingerprint,
        "started_at": run_record.iso(job.started),
        "finished_at": run_record.now(),
    }
    write_json(model / METADATA_NAME, metadata)
    print(f"lora-trainer: wrote {job.final_model.name} and {METADATA_NAME} to {model}", flush=True)
    return metadata


def _base_model_record(base: BaseModel) -> dict[str, str]:
    """The model trained on: a channel's file or folder name (its kind says which), or the Hub id;
    FLUX.1's variant, and a Hub model's pinned commit, too."""
    record = {"kind": base.kind, "name": Path(base.name_or_path).name if base.local else base.name_or_path}
    if base.variant:
        record["variant"] = base.variant
        if not base.local:
            record["revision"] = flux_files.HUB_REVISIONS[base.variant]
    return record


def _effective_hyperparameters(inputs: Inputs) -> dict[str, Any]:
    """The hyperparameters as the run used them: the base model that was trained on, and the batch
    size and repeats dataset.toml set (one value when all agree, else one per dataset or subset)."""
    summary = inputs.prepared.summary
    effective = dict(inputs.values)
    effective["base_model"] = _base_model_record(inputs.base)["name"]
    effective["train_batch_size"] = summary.batch_size
    effective["num_repeats"] = one_or_all([s.num_repeats for s in summary.subsets])
    return effective


def _read_hyperparameters(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise TrainingError(f"hyperparameters.json is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise TrainingError("hyperparameters.json must be a JSON object of names to values.")
    return raw


def _refuse(config: dict[str, Any], keys: Sequence[str], setting: str, why: str) -> None:
    tables = [config.get("general", {})]
    for dataset in config.get("datasets", []):
        tables.append(dataset)
        tables.extend(dataset.get("subsets", []))
    used = sorted({key for table in tables for key in keys if table.get(key)})
    if used:
        raise TrainingError(f"{setting} cannot be combined with {', '.join(used)} in dataset.toml ({why}); remove one or the other.")


def _check_result(result: TrainerResult, script: str, epoch: int) -> None:
    if result.stopped_by:
        raise TrainingError(
            f"Stopped by {result.stopped_by} during epoch {epoch} (spot interruption or StopTrainingJob); "
            "a restarted job resumes from the newest complete state in /opt/ml/checkpoints."
        )
    if result.returncode != 0:
        errors = [line.strip() for line in result.tail if any(word in line for word in ("Error", "error:", "Exception", "assert"))]
        cause = errors[-1] if errors else (result.tail[-1].strip() if result.tail else "no output")
        raise TrainingError(f"kohya-ss {script} failed with exit status {result.returncode}: {cause}")


def _gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "all"):
        return max(1, len([d for d in visible.split(",") if d.strip()]))
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as error:
        print(f"lora-trainer: cannot list the GPUs ({error}); training with one process", flush=True)
        return 1
    return max(1, sum(1 for line in listing.splitlines() if line.startswith("GPU ")))


def write_failure(paths: SageMakerPaths, message: str) -> None:
    paths.failure.parent.mkdir(parents=True, exist_ok=True)
    paths.failure.write_text(message[:FAILURE_REASON_LIMIT], encoding="utf-8")


def main(argv: Sequence[str] | None = None, paths: SageMakerPaths | None = None, image: Image | None = None, trainer: Trainer | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    paths = paths or SageMakerPaths.from_env()
    if args not in ([], ["train"]):
        message = f"This image trains LoRAs: run it with the argument 'train', not {' '.join(args)!r}."
        print(message, file=sys.stderr, flush=True)
        write_failure(paths, message)
        return 2
    # A failure file of an earlier attempt must not outlive it: this attempt's outcome decides.
    paths.failure.unlink(missing_ok=True)
    trainer = trainer or Trainer()
    with trainer.forwarder:
        try:
            train(paths, image or Image.from_env(), trainer)
        except TrainingError as error:
            print(f"lora-trainer: FAILED: {error}", file=sys.stderr, flush=True)
            write_failure(paths, str(error))
            return 143 if trainer.forwarder.received else 1
        except Exception as error:  # noqa: BLE001 - any other failure still needs a reason for the job
            traceback.print_exc()
            write_failure(paths, f"Internal error in the training entrypoint: {type(error).__name__}: {error}")
            return 1
    return 0

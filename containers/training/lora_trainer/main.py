"""The training entrypoint: SageMaker runs the image with the argument `train`.

Order of work: everything that can be checked is checked before the trainer starts (hyperparameters,
base model, every image and caption), so a mistake fails the job in seconds with a reason; then the
trainer resumes from the newest complete state, or finishes at once when an earlier attempt of the job
already produced the model."""

from __future__ import annotations

import hashlib
import json
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

from . import checkpoints
from .base_model import resolve_base_model
from .command import SCRIPTS, Launch, accelerate_argv, epochs_for, kohya_args
from .dataset import DatasetOptions, prepare_dataset
from .errors import TrainingError
from .files import sha256_file, write_json
from .hyperparameters import parse_hyperparameters
from .paths import SageMakerPaths
from .progress import ProgressParser
from .runner import SignalForwarder, TrainerResult, run_trainer

RUN_RECORD = "lora-run.json"
METADATA_NAME = "training-metadata.json"
# SageMaker keeps the first 1024 characters of the failure file as the job's FailureReason.
FAILURE_REASON_LIMIT = 1024
# kohya refuses text encoder caching with these caption augmentations (sdxl_train_network.py), and
# latent caching with these image augmentations (train_network.py), after loading the model.
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


def train(paths: SageMakerPaths, image: Image, trainer: Trainer) -> dict[str, Any]:
    started = time.time()
    raw = _read_hyperparameters(paths.hyperparameters)
    values = parse_hyperparameters(raw)
    model_type = str(values["model_type"])
    output_name = str(values["output_name"])
    base = resolve_base_model(paths.channel("base_model"), str(values["base_model"]), "base_model" in raw)
    print(f"lora-trainer: {model_type} LoRA '{output_name}' on {base.kind} {base.name_or_path}", flush=True)

    prepared = prepare_dataset(
        paths.channel("dataset"),
        paths.work,
        DatasetOptions(
            resolution=int(values["resolution"]),  # type: ignore[arg-type]
            batch_size=int(values["train_batch_size"]),  # type: ignore[arg-type]
            num_repeats=int(values["num_repeats"]),  # type: ignore[arg-type]
            allow_missing_captions=bool(values["allow_missing_captions"]),
            max_train_steps=None if values["max_train_epochs"] is not None else int(values["max_train_steps"]),  # type: ignore[arg-type]
            num_repeats_given="num_repeats" in raw,
        ),
    )
    for line in prepared.summary.lines():
        print(line, flush=True)
    if values["cache_text_encoder_outputs"]:
        _refuse(prepared.config, _CAPTION_AUGMENTATIONS, "cache_text_encoder_outputs", "captions are encoded once, so they cannot change per step")
    if values["cache_latents"]:
        _refuse(prepared.config, _IMAGE_AUGMENTATIONS, "cache_latents", "images are encoded once, so they cannot change per step")

    fingerprint = _fingerprint(values, prepared.summary.content_sha256, base.name_or_path, base.kind, image.sd_scripts_version)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    record = _run_record(paths.checkpoints, fingerprint)
    epochs = epochs_for(values, prepared.summary.images_per_epoch, prepared.summary.batch_size)
    final_model = paths.checkpoints / f"{output_name}.safetensors"
    completed = _completed(paths.checkpoints, fingerprint, final_model)

    resumed_from: int | None = None
    if completed:
        print(f"lora-trainer: an earlier attempt of this job already trained {final_model.name}; not training again", flush=True)
    else:
        fp16 = values["mixed_precision"] == "fp16"
        plan = checkpoints.plan_resume(paths.checkpoints, output_name, fp16)
        for removed in plan.removed:
            print(f"lora-trainer: removed checkpoint {removed}", flush=True)
        gpus = trainer.gpus or _gpu_count()
        state = plan.state
        if state is not None and gpus > 1 and not record.get("steps_per_epoch"):
            print(f"lora-trainer: cannot place {state.path.name} on {gpus} GPUs without the steps per epoch; starting over", flush=True)
            state = None
        resumed_from = state.epoch if state else None
        saves = (epochs - 1) // int(values["save_every_n_epochs"])  # type: ignore[arg-type]
        if saves == 0:
            print(
                f"lora-trainer: WARNING: {epochs} epoch(s) with a state every {values['save_every_n_epochs']}: no resume point "
                "before the end, so a spot interruption restarts training; lower num_repeats or save_every_n_epochs",
                flush=True,
            )
        print(
            f"lora-trainer: training {epochs} epoch(s) on {gpus} GPU(s); "
            + (f"resuming after epoch {state.epoch} from {state.path.name}" if state else "starting from the base model"),
            flush=True,
        )
        launch = Launch(
            sd_scripts=image.sd_scripts,
            base_model=base.name_or_path,
            dataset_config=prepared.config_path,
            output_dir=paths.checkpoints,
            tokenizer_cache=image.tokenizer_cache,
            epochs=epochs,
            gpus=gpus,
            cpus=os.cpu_count() or 1,
            resume_state=state.path if state else None,
            resume_epoch=state.epoch if state else 0,
            steps_per_epoch=record.get("steps_per_epoch"),
        )
        argv = [*trainer.command, *kohya_args(values, launch)] if trainer.command else accelerate_argv(values, launch)
        print("lora-trainer: " + " ".join(argv), flush=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if base.local:
            # Nothing may reach the Hub (the job can run with network isolation): tokenizers are in
            # the image, the model is in the channel.
            env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")

        def remember_steps_per_epoch(steps: int) -> None:
            # Saved at once: the attempt may be killed long before it ends.
            if record.get("steps_per_epoch") != steps:
                record["steps_per_epoch"] = steps
                write_json(paths.checkpoints / RUN_RECORD, record)

        parser = ProgressParser(epoch_offset=launch.resume_epoch, on_steps_per_epoch=remember_steps_per_epoch)
        if trainer.forwarder.received:
            raise TrainingError(f"Stopped by {trainer.forwarder.received} before training started; a restarted job starts over cleanly.")
        result = run_trainer(argv, env, parser, trainer.forwarder)
        _check_result(result, SCRIPTS[model_type], parser.epoch)
        problem = checkpoints.file_problem(final_model)
        if problem:
            raise TrainingError(f"kohya-ss finished without a usable {final_model.name} ({problem}) in {paths.checkpoints}.")
        write_json(
            paths.checkpoints / checkpoints.COMPLETION_MARKER,
            {"fingerprint": fingerprint, "sha256": sha256_file(final_model), "finished_at": _now()},
        )
        for removed in checkpoints.clean_finished(paths.checkpoints, output_name):
            print(f"lora-trainer: removed checkpoint {removed} (training finished)", flush=True)

    paths.model.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(final_model, paths.model / final_model.name)
    metadata = {
        "output_name": output_name,
        "model_file": final_model.name,
        "model_type": model_type,
        "base_model": {"kind": base.kind, "name": base.name_or_path if not base.local else Path(base.name_or_path).name},
        "hyperparameters": values,
        "epochs": epochs,
        "resumed_after_epoch": resumed_from,
        "reused_completed_model": completed,
        "sd_scripts_version": image.sd_scripts_version,
        "dataset": asdict(prepared.summary),
        "fingerprint": fingerprint,
        "started_at": _iso(started),
        "finished_at": _now(),
    }
    write_json(paths.model / METADATA_NAME, metadata)
    print(f"lora-trainer: wrote {final_model.name} and {METADATA_NAME} to {paths.model}", flush=True)
    return metadata


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


def _fingerprint(values: dict[str, Any], dataset_sha256: str, base_model: str, base_kind: str, version: str) -> str:
    document = json.dumps(
        {"hyperparameters": values, "dataset": dataset_sha256, "base_model": [base_kind, Path(base_model).name], "sd_scripts": version},
        sort_keys=True,
    )
    return hashlib.sha256(document.encode()).hexdigest()


def _run_record(folder: Path, fingerprint: str) -> dict[str, Any]:
    """Checkpoints belong to one run: a restarted job (same inputs) resumes them; anything else
    refuses to train on a state made with other hyperparameters or data."""
    path = folder / RUN_RECORD
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            record = {}
        if isinstance(record, dict) and record.get("fingerprint") == fingerprint:
            return record
        if isinstance(record, dict) and record.get("fingerprint"):
            raise TrainingError(
                "The checkpoint location holds the state of a different run (other hyperparameters, data or base model). "
                "Give this job its own CheckpointConfig S3Uri, or delete that prefix to start over."
            )
    record = {"fingerprint": fingerprint, "created_at": _now()}
    write_json(path, record)
    return record


def _completed(folder: Path, fingerprint: str, final_model: Path) -> bool:
    marker = folder / checkpoints.COMPLETION_MARKER
    if not marker.is_file() or not final_model.is_file():
        return False
    try:
        content = json.loads(marker.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return isinstance(content, dict) and content.get("fingerprint") == fingerprint and content.get("sha256") == sha256_file(final_model)


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






def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _now() -> str:
    return _iso(time.time())


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

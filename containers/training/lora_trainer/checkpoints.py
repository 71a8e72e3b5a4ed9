"""Spot resume: /opt/ml/checkpoints holds kohya's output and training states, mirrored to S3 by
SageMaker. A spot interruption can stop a job in the middle of writing a state (or SageMaker in the
middle of uploading it), so a state counts only when every file in it is whole."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .files import TEMPORARY_SUFFIX
from .safetensors_header import HeaderError, read_header

# What accelerate 1.6's save_state writes for kohya's network training, in writing order: kohya's
# pre-save hook writes train_state.json first; random_states_0.pkl comes last. A GradScaler, and so
# scaler.pt, exists only with fp16 mixed precision. flux_train_network.py saves the same (it inherits
# train_network.py's loop and hooks; tests/test_kohya_flux.py), in bf16: no scaler.pt.
STATE_FILES = ("train_state.json", "model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")
FP16_STATE_FILES = ("scaler.pt",)
COMPLETION_MARKER = "training-complete.json"


@dataclass(frozen=True)
class State:
    path: Path
    epoch: int


@dataclass(frozen=True)
class ResumePlan:
    """Where to pick up: `state` is None for a fresh start; `removed` lists what was pruned and why."""

    state: State | None
    removed: tuple[str, ...]


def state_pattern(output_name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(output_name)}-(\d{{6}})-state$")


def model_pattern(output_name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(output_name)}-(\d{{6}})\.safetensors$")


def plan_resume(checkpoints: Path, output_name: str, fp16: bool) -> ResumePlan:
    """Chooses the newest complete epoch state and deletes every other state and intermediate model
    (incomplete ones are useless, older ones superseded), so checkpoints never grow beyond one state,
    and what an interrupted write left. SageMaker mirrors the deletions to S3."""
    removed = [f"{name} (unfinished write)" for name in remove_temporaries(checkpoints)]
    states = sorted(
        (State(p, int(m.group(1))) for p in _children(checkpoints) if p.is_dir() and (m := state_pattern(output_name).match(p.name))),
        key=lambda s: s.epoch,
        reverse=True,
    )
    chosen: State | None = None
    for state in states:
        problem = None if chosen else state_problem(state.path, fp16)
        if chosen is None and problem is None:
            chosen = state
            continue
        shutil.rmtree(state.path)
        reason = problem if problem else f"superseded by {chosen.path.name}" if chosen else "unusable"
        removed.append(f"{state.path.name} ({reason})")
    end_state = checkpoints / f"{output_name}-state"
    if end_state.is_dir():
        # Written after the last epoch, before the final model: kohya cannot resume from it (its
        # step count equals max_train_steps), so an interrupted end of training redoes the last epoch.
        shutil.rmtree(end_state)
        removed.append(f"{end_state.name} (end-of-training state, not resumable)")
    for path in _children(checkpoints):
        match = model_pattern(output_name).match(path.name)
        if match and path.is_file() and (chosen is None or int(match.group(1)) != chosen.epoch):
            path.unlink()
            removed.append(f"{path.name} (intermediate model without its state)")
    return ResumePlan(chosen, tuple(removed))


def clean_finished(checkpoints: Path, output_name: str) -> list[str]:
    """After the final model is safe, drops every state and intermediate model (hundreds of MB each):
    a finished run needs only its model and completion marker."""
    removed = remove_temporaries(checkpoints)
    patterns = (state_pattern(output_name), model_pattern(output_name), re.compile(rf"^{re.escape(output_name)}-state$"))
    for path in _children(checkpoints):
        if any(p.match(path.name) for p in patterns):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path.name)
    return removed


def remove_temporaries(checkpoints: Path) -> list[str]:
    """Deletes the temporaries of writes an interruption cut short (files.write_atomically): a
    model-sized one would otherwise stay in S3 with the checkpoints."""
    removed = []
    for path in _children(checkpoints):
        if path.is_file() and path.name.endswith(TEMPORARY_SUFFIX):
            path.unlink()
            removed.append(path.name)
    return removed


def state_problem(path: Path, fp16: bool) -> str | None:
    """Why the state at `path` cannot be resumed from, or None when every file is whole."""
    for name in STATE_FILES + (FP16_STATE_FILES if fp16 else ()):
        problem = file_problem(path / name)
        if problem:
            return f"{name}: {problem}"
    try:
        epoch = json.loads((path / "train_state.json").read_text(encoding="utf-8")).get("current_epoch")
    except (ValueError, AttributeError):
        epoch = None
    if not isinstance(epoch, int):
        return "train_state.json: no current_epoch"
    return None


def file_problem(path: Path) -> str | None:
    """Checks a file's structure by its kind, without loading it: a file cut short fails."""
    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty"
    try:
        if path.suffix == ".safetensors":
            return safetensors_problem(path)
        if path.suffix in (".bin", ".pt", ".pkl"):
            # accelerate writes all three with torch.save: a zip archive whose central directory
            # is written last, at the very end, so a file cut short has none.
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
            return None
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
            return None
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as error:
        return f"unreadable ({error})"
    return None


def safetensors_problem(path: Path) -> str | None:
    """A safetensors file is whole when its header reads and the data reaches the largest offset it names."""
    try:
        header, data_start = read_header(path)
    except HeaderError as error:
        return str(error)
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"tensor {name} has no data_offsets"
        end = max(end, offsets[1])
    size = path.stat().st_size
    if data_start + end > size:
        return f"data cut short ({size} of {data_start + end} bytes)"
    return None


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []

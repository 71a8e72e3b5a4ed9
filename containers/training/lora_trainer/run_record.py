"""The run record kept beside the checkpoints: checkpoints belong to one run (same hyperparameters,
dataset content, base model and sd-scripts version), and a finished run leaves a completion marker
with its model's SHA-256."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from . import checkpoints
from .errors import TrainingError
from .files import sha256_file, write_json

RUN_RECORD = "lora-run.json"


def make_fingerprint(values: dict[str, Any], dataset_sha256: str, base_model: str, base_kind: str, version: str) -> str:
    document = json.dumps(
        {"hyperparameters": values, "dataset": dataset_sha256, "base_model": [base_kind, Path(base_model).name], "sd_scripts": version},
        sort_keys=True,
    )
    return hashlib.sha256(document.encode()).hexdigest()


def load_or_create(folder: Path, fingerprint: str) -> dict[str, Any]:
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
    record = {"fingerprint": fingerprint, "created_at": now()}
    write_json(path, record)
    return record


def completed(folder: Path, fingerprint: str, final_model: Path) -> bool:
    marker = folder / checkpoints.COMPLETION_MARKER
    if not marker.is_file() or not final_model.is_file():
        return False
    try:
        content = json.loads(marker.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return isinstance(content, dict) and content.get("fingerprint") == fingerprint and content.get("sha256") == sha256_file(final_model)


def mark_completed(folder: Path, fingerprint: str, final_model: Path) -> None:
    """Written once the final model is whole; a restarted job then copies it out instead of training."""
    write_json(folder / checkpoints.COMPLETION_MARKER, {"fingerprint": fingerprint, "sha256": sha256_file(final_model), "finished_at": now()})


def iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def now() -> str:
    return iso(time.time())

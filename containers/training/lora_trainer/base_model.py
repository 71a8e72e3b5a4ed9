"""The base model: a 'base_model' channel (one .safetensors/.ckpt file or a diffusers folder) or a
Hugging Face id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import TrainingError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class BaseModel:
    """`name_or_path` is what kohya's --pretrained_model_name_or_path gets; `local` decides whether
    the Hugging Face Hub may be reached at all."""

    name_or_path: str
    local: bool
    kind: str  # "single file", "diffusers folder" or "Hugging Face id"


def resolve_base_model(channel: Path, hub_id: str, hub_id_given: bool) -> BaseModel:
    if not channel.is_dir():
        return BaseModel(hub_id, local=False, kind="Hugging Face id")
    if hub_id_given:
        raise TrainingError(
            f"Both a base_model channel and the base_model hyperparameter ({hub_id}) are given; "
            "give one: the channel for a model in S3, the hyperparameter for a Hugging Face id."
        )
    for folder in (channel, *sorted(p for p in channel.iterdir() if p.is_dir())):
        if (folder / "model_index.json").is_file():
            return BaseModel(str(folder), local=True, kind="diffusers folder")
    files = sorted(p for p in channel.rglob("*") if p.is_file() and not p.name.startswith("."))
    singles = [p for p in files if p.suffix.lower() in SINGLE_FILE_SUFFIXES]
    if len(singles) == 1:
        return BaseModel(str(singles[0]), local=True, kind="single file")
    found = ", ".join(str(p.relative_to(channel)) for p in files[:10]) or "nothing"
    if len(singles) > 1:
        raise TrainingError(
            f"The base_model channel holds {len(singles)} model files ({found}); point it at exactly one "
            ".safetensors or .ckpt file, or at a diffusers folder."
        )
    raise TrainingError(
        f"The base_model channel holds no .safetensors or .ckpt file and no diffusers folder (model_index.json); found: {found}."
    )

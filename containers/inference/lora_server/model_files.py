"""Finding the LoRA and the base model on the container's disk, before anything is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .flux_files import has_flux_files
from .settings import Settings

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


class ModelFilesError(Exception):
    """The LoRA or the base model is missing or ambiguous; the message says what was found."""


@dataclass(frozen=True)
class BaseModel:
    """Where the base model comes from: a diffusers folder, one checkpoint file, FLUX.1's four files, or a Hugging Face id."""

    kind: Literal["folder", "single_file", "flux_files", "hub"]
    location: str

    @property
    def offline(self) -> bool:
        return self.kind != "hub"


def find_lora_file(model_dir: Path) -> Path:
    """The one `.safetensors` at the top of the extracted model.tar.gz."""
    if not model_dir.is_dir():
        raise ModelFilesError(f"{model_dir} does not exist: the model has no ModelDataUrl, or it was not extracted")
    found = sorted(p for p in model_dir.iterdir() if p.suffix == ".safetensors" and p.is_file())
    if len(found) != 1:
        listing = ", ".join(sorted(p.name for p in model_dir.iterdir())) or "nothing"
        raise ModelFilesError(f"expected exactly one .safetensors LoRA in {model_dir}, found {len(found)} (it holds: {listing})")
    return found[0]


def resolve_base_model(settings: Settings) -> BaseModel:
    """The mounted base model if there is one (a diffusers folder or a single checkpoint file), else BASE_MODEL_ID."""
    path = settings.base_model_path
    if settings.model_type == "flux1" and has_flux_files(path):
        # Settings checked that exactly the four files are there (flux_files.variant_of_folder).
        return BaseModel("flux_files", str(path))
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        return BaseModel("single_file", str(path))
    if path.is_dir() and any(path.iterdir()):
        if (path / "model_index.json").is_file():
            return BaseModel("folder", str(path))
        files = sorted(p for p in path.rglob("*") if p.suffix in SINGLE_FILE_SUFFIXES and p.is_file())
        if len(files) == 1:
            return BaseModel("single_file", str(files[0]))
        raise ModelFilesError(
            f"{path} holds neither a diffusers folder (model_index.json) nor exactly one .safetensors or .ckpt file "
            f"(found {len(files)}: {', '.join(str(f.relative_to(path)) for f in files[:5])})"
        )
    if settings.base_model_id:
        return BaseModel("hub", settings.base_model_id)
    raise ModelFilesError(f"no base model: nothing is mounted at {path} and BASE_MODEL_ID is not set")

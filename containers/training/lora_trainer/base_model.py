"""The base model: a 'base_model' channel (one .safetensors/.ckpt file or a diffusers folder; for
FLUX.1 the four single files of flux_files.py) or a Hugging Face id (for FLUX.1, the four files
downloaded at pinned commits once the inputs are checked, by hub_download.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import flux_files
from .errors import TrainingError
from .safetensors_header import HeaderError, read_header

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
FLUX_KIND = "FLUX.1 files"


@dataclass(frozen=True)
class FluxFiles:
    """The four files flux_train_network.py loads, on local disk."""

    transformer: Path
    ae: Path
    clip_l: Path
    t5xxl: Path


@dataclass(frozen=True)
class BaseModel:
    """`name_or_path` is what kohya's --pretrained_model_name_or_path gets; `local` decides whether
    the Hugging Face Hub may be reached at all. FLUX.1: `variant` is dev or schnell, and `flux` holds
    the files once they are on disk (a Hub model's only after fetch_flux_files)."""

    name_or_path: str
    local: bool
    kind: str  # "single file", "diffusers folder", "FLUX.1 files" or "Hugging Face id"
    variant: str | None = None
    flux: FluxFiles | None = None


def resolve_base_model(channel: Path, hub_id: str, hub_id_given: bool, model_type: str = "sd15") -> BaseModel:
    if not channel.is_dir():
        return BaseModel(hub_id, local=False, kind="Hugging Face id", variant=flux_files.variant_of_hub_id(hub_id) if model_type == "flux1" else None)
    if hub_id_given:
        raise TrainingError(
            f"Both a base_model channel and the base_model hyperparameter ({hub_id}) are given; "
            "give one: the channel for a model in S3, the hyperparameter for a Hugging Face id."
        )
    if model_type == "flux1":
        return _flux_channel(channel)
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


def _flux_channel(channel: Path) -> BaseModel:
    """The four files at the top of the channel, by their documented names; the transformer's name
    gives the variant, which its tensors must agree with."""
    present = {p.name for p in channel.iterdir() if p.is_file()}
    transformers = [name for name in flux_files.TRANSFORMER.values() if name in present]
    expected = " or ".join(flux_files.TRANSFORMER.values())
    if len(transformers) > 1:
        raise TrainingError(f"The FLUX.1 base_model channel holds both {' and '.join(transformers)}; keep the one to train on.")
    needed = (transformers[0] if transformers else expected, flux_files.AE, flux_files.CLIP_L, flux_files.T5XXL)
    missing = [name for name in needed if name not in present]
    if missing:
        found = ", ".join(sorted(present)[:10]) or "nothing"
        raise TrainingError(
            f"The FLUX.1 base_model channel lacks {', '.join(missing)} (found: {found}); it needs {expected}, "
            f"{flux_files.AE}, {flux_files.CLIP_L} and {flux_files.T5XXL} at the top of the S3 prefix."
        )
    variant = next(v for v, name in flux_files.TRANSFORMER.items() if name == transformers[0])
    files = flux_files_in(channel, variant)
    check_variant(files.transformer, variant)
    return BaseModel(str(files.transformer), local=True, kind=FLUX_KIND, variant=variant, flux=files)


def flux_files_in(folder: Path, variant: str) -> FluxFiles:
    """The four files by their documented names in `folder` (a channel, or the Hub download's)."""
    return FluxFiles(
        transformer=folder / flux_files.TRANSFORMER[variant],
        ae=folder / flux_files.AE,
        clip_l=folder / flux_files.CLIP_L,
        t5xxl=folder / flux_files.T5XXL,
    )


def check_variant(transformer: Path, variant: str) -> None:
    """kohya decides dev or schnell from the tensors (flux_utils.analyze_checkpoint_state), and with
    it the T5 token length and the sampling's guidance; a file named for the other variant would
    train as that one."""
    try:
        header, _ = read_header(transformer)
    except HeaderError as error:
        raise TrainingError(f"{transformer.name} is not a safetensors file ({error}).") from None
    keys = [k for k in header if k != "__metadata__"]
    if not flux_files.has_blocks(keys):
        raise TrainingError(
            f"{transformer.name} is not a FLUX.1 transformer: it has none of FLUX's double and single blocks "
            "(double_blocks.N.*, single_blocks.N.*); use BFL's single file of the FLUX.1 repository."
        )
    actual = "schnell" if flux_files.is_schnell(keys) else "dev"
    if actual != variant:
        has = "has the guidance embedder of" if actual == "dev" else "has no guidance embedder (guidance_in), as"
        raise TrainingError(
            f"{transformer.name} {has} FLUX.1 {actual}: it is the {actual} transformer; name it "
            f"{flux_files.TRANSFORMER[actual]} or upload the {variant} file."
        )

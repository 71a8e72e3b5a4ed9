"""FLUX.1's base model files and Hub repositories, as the whole pipeline names them (lambda/shared/flux-files.ts).

A FLUX.1 base model is either one of the two Hub repositories, loaded in diffusers' layout at a
pinned commit, or a mounted folder (an S3 prefix) holding exactly four single files: the BFL
transformer (its name says the variant), the BFL autoencoder, and CLIP-L and T5-XXL with
transformers' key names (comfyanonymous/flux_text_encoders' files).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Literal

FluxVariant = Literal["dev", "schnell"]
VARIANTS: tuple[FluxVariant, ...] = ("dev", "schnell")

TRANSFORMER_FILES: dict[FluxVariant, str] = {"dev": "flux1-dev.safetensors", "schnell": "flux1-schnell.safetensors"}
AE_FILE = "ae.safetensors"
CLIP_L_FILE = "clip_l.safetensors"
T5XXL_FILE = "t5xxl_fp16.safetensors"

HUB_REPOS: dict[FluxVariant, str] = {"dev": "black-forest-labs/FLUX.1-dev", "schnell": "black-forest-labs/FLUX.1-schnell"}
# The commits the server loads (diffusers layout: transformer/, vae/, text_encoder*/, tokenizer*/, scheduler/),
# the same ones the training image downloads its single files from (facts: Hub snapshots of these repositories).
HUB_REVISIONS: dict[FluxVariant, str] = {
    "dev": "3de623fc3c33e44ffbe2bad470d0f45bccf2eb21",
    "schnell": "741f7c3ce8b383c54771c7003378a50191e9efe9",
}
# FLUX.1-dev is gated (non-commercial licence, accepted on the Hub): it needs HF_TOKEN_SECRET_ID.
GATED: dict[FluxVariant, bool] = {"dev": True, "schnell": False}


class FluxFilesError(Exception):
    """The mounted FLUX.1 files are not the four the server needs; the message names them."""


def variant_of_hub_id(model_id: str) -> FluxVariant | None:
    return next((v for v, repo in HUB_REPOS.items() if repo == model_id), None)


def variant_of_folder(folder: Path) -> FluxVariant:
    """The variant the folder's transformer file names; exactly one transformer file and the three others must be there."""
    names = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
    transformers = [v for v, name in TRANSFORMER_FILES.items() if name in names]
    missing = [name for name in (AE_FILE, CLIP_L_FILE, T5XXL_FILE) if name not in names]
    if len(transformers) != 1 or missing:
        found = ", ".join(sorted(names)) or "nothing"
        raise FluxFilesError(
            f"{folder} must hold exactly one of {' or '.join(TRANSFORMER_FILES.values())} and {AE_FILE}, {CLIP_L_FILE}, "
            f"{T5XXL_FILE}; it holds: {found}"
        )
    return transformers[0]


def has_flux_files(folder: Path) -> bool:
    """Whether a mounted folder holds any FLUX.1 single file (then it must hold exactly the four)."""
    names = {*TRANSFORMER_FILES.values(), AE_FILE, CLIP_L_FILE, T5XXL_FILE}
    return folder.is_dir() and any((folder / name).is_file() for name in names)


# kohya's analyze_checkpoint_state (library/flux_utils.py): a transformer with the guidance embedder is dev.
GUIDANCE_KEYS = ("guidance_in.in_layer.bias", "model.diffusion_model.guidance_in.in_layer.bias")


def check_transformer_variant(path: Path, variant: FluxVariant) -> None:
    """The BFL transformer file's keys must be its name's variant: diffusers would load dev weights as schnell with a mere warning."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        keys = json.loads(f.read(length)) if length <= 64 * 1024 * 1024 else {}
    is_dev = any(key in keys for key in GUIDANCE_KEYS)
    if not keys or is_dev != (variant == "dev"):
        found = "dev (it has guidance_in)" if is_dev else "schnell (no guidance_in)" if keys else "no safetensors header"
        raise FluxFilesError(f"{path.name} names FLUX.1-{variant}, but its weights are {found}: rename the file after its variant")

"""Inspect a LoRA `.safetensors` file from its header alone, before any weight is loaded.

A safetensors file starts with an 8-byte little-endian length N, then N bytes of JSON: one entry
per tensor (dtype, shape, offsets) and an optional `__metadata__` object of strings. Reading only
that much tells whether the file is a kohya-ss LoRA and which Stable Diffusion family it was
trained for, so a wrong artifact fails at start with a clear message instead of deep in diffusers.

Key sets, as kohya-ss sd-scripts writes them (networks/lora.py) and diffusers' kohya conversion
reads them (loaders/lora_conversion_utils.py):
- SD 1.x: text encoder `lora_te_…`; U-Net in diffusers block names `lora_unet_down_blocks_…`,
  `lora_unet_mid_block_…`, `lora_unet_up_blocks_…`.
- SDXL: text encoders `lora_te1_…` and `lora_te2_…`; U-Net in the original SGM block names
  `lora_unet_input_blocks_…`, `lora_unet_middle_block_…`, `lora_unet_output_blocks_…`.
Each module has `.lora_down.weight`, `.lora_up.weight` and usually `.alpha`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ModelType = Literal["sd15", "sdxl"]

# A LoRA header is a few hundred KB (one small entry per tensor); anything far larger is not one.
MAX_HEADER_BYTES = 16 * 1024 * 1024

_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
_FAMILY_PREFIXES: dict[ModelType, tuple[str, ...]] = {
    "sd15": ("lora_te_", "lora_unet_down_blocks_", "lora_unet_mid_block_", "lora_unet_up_blocks_"),
    "sdxl": ("lora_te1_", "lora_te2_", "lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_"),
}
# kohya-ss writes `ss_base_model_version`: "sd_v1", "sd_v1_v", "sd_v2", "sd_v2_v" or "sdxl_base_v1-0".
_BASE_MODEL_VERSIONS: dict[str, ModelType] = {"sd_v1": "sd15", "sdxl_base_v1-0": "sdxl"}


class LoraFileError(Exception):
    """The file cannot be served as the LoRA of this endpoint; the message says why."""


@dataclass(frozen=True)
class LoraInfo:
    """What the header says about a LoRA file."""

    model_type: ModelType
    modules: int
    rank: int | None
    metadata: dict[str, str] = field(default_factory=dict)


def read_header(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """Returns the tensor entries and the `__metadata__` strings of a safetensors file."""
    try:
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise LoraFileError(f"{path.name}: not a safetensors file (shorter than its 8-byte header length)")
            (length,) = struct.unpack("<Q", prefix)
            if length < 2 or length > MAX_HEADER_BYTES:
                raise LoraFileError(
                    f"{path.name}: not a safetensors file (header length {length} is outside 2..{MAX_HEADER_BYTES} bytes)"
                )
            raw = f.read(length)
    except OSError as e:
        raise LoraFileError(f"{path}: cannot be read: {e}") from e
    if len(raw) < length:
        raise LoraFileError(f"{path.name}: truncated: the header announces {length} bytes, the file has {len(raw)}")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoraFileError(f"{path.name}: corrupt safetensors header (not JSON: {e})") from e
    if not isinstance(header, dict):
        raise LoraFileError(f"{path.name}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LoraFileError(f"{path.name}: corrupt safetensors header (__metadata__ must map names to strings)")
    if not all(isinstance(entry, dict) and "shape" in entry for entry in header.values()):
        raise LoraFileError(f"{path.name}: corrupt safetensors header (a tensor entry has no shape)")
    return header, metadata


def inspect_lora(path: Path, expected: ModelType) -> LoraInfo:
    """Checks that `path` is a kohya-ss LoRA for `expected`, from its header; raises LoraFileError if not."""
    tensors, metadata = read_header(path)
    if not tensors:
        raise LoraFileError(f"{path.name}: holds no tensors")

    foreign = sorted(k for k in tensors if not k.startswith("lora_") or not k.endswith(_SUFFIXES))
    if foreign:
        raise LoraFileError(
            f"{path.name}: not a kohya-ss LoRA: {len(foreign)} of {len(tensors)} tensors are not LoRA weights "
            f"(first: {foreign[0]}); a base model or a LoRA in another format does not go in /opt/ml/model"
        )
    downs = {k.removesuffix(".lora_down.weight") for k in tensors if k.endswith(".lora_down.weight")}
    ups = {k.removesuffix(".lora_up.weight") for k in tensors if k.endswith(".lora_up.weight")}
    if not downs or downs != ups:
        unpaired = sorted(downs ^ ups)
        raise LoraFileError(f"{path.name}: not a usable LoRA: lora_down/lora_up weights do not pair up (first: {unpaired[:1]})")

    families = {family for family, prefixes in _FAMILY_PREFIXES.items() if any(m.startswith(prefixes) for m in downs)}
    unknown = sorted(m for m in downs if not any(m.startswith(p) for ps in _FAMILY_PREFIXES.values() for p in ps))
    if unknown:
        raise LoraFileError(f"{path.name}: LoRA modules of no Stable Diffusion 1.5 or SDXL layout (first: {unknown[0]})")
    if len(families) != 1:
        raise LoraFileError(f"{path.name}: mixes SD 1.5 and SDXL module names; it is not one model's LoRA")
    (found,) = families

    version = metadata.get("ss_base_model_version")
    if version is not None and _BASE_MODEL_VERSIONS.get(version) != found:
        raise LoraFileError(
            f"{path.name}: its metadata says it was trained on '{version}', which does not match its {found} module names"
        )
    if found != expected:
        raise LoraFileError(
            f"{path.name}: is an {_LABEL[found]} LoRA but MODEL_TYPE is {expected} ({_LABEL[expected]}); "
            "serve it with the base model it was trained on"
        )
    ranks = {tensors[f"{m}.lora_down.weight"]["shape"][0] for m in downs}
    return LoraInfo(model_type=found, modules=len(downs), rank=ranks.pop() if len(ranks) == 1 else None, metadata=metadata)


_LABEL: dict[ModelType, str] = {"sd15": "SD 1.5", "sdxl": "SDXL"}

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
- FLUX.1 (networks/lora_flux.py): the transformer's `lora_unet_double_blocks_…` and
  `lora_unet_single_blocks_…` (kohya keeps the `unet` prefix for ComfyUI), `ss_base_model_version`
  "flux1"; its text-encoder modules (`lora_te1_` CLIP-L, `lora_te3_` T5) and its `in_dims` input-layer
  modules are refused (see below).
Text-encoder names are accepted with `text_model_` (kohya under transformers 4) or without (as the
server renames them for transformers 5, kohya_names.py): only prefixes, suffixes and widths are read.
Each module has `.lora_down.weight` ([rank, in_features]), `.lora_up.weight` and usually `.alpha`;
diffusers refuses an `.alpha` of no module. SD 2 LoRAs use SD 1.5's names: only widths tell them
apart, the text encoder's (768 for SD 1.5 and SDXL's first, 1024 for SD 2, 1280 for SDXL's second)
and the cross-attention context's (768, 1024, 2048 for SDXL), both readable from header shapes.
"""

from __future__ import annotations

import json
import re
import struct
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ModelType = Literal["sd15", "sdxl", "flux1"]
MODEL_TYPES: tuple[ModelType, ...] = ("sd15", "sdxl", "flux1")

# A LoRA header is a few hundred KB (one small entry per tensor); anything far larger is not one.
MAX_HEADER_BYTES = 16 * 1024 * 1024

_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
_FAMILY_PREFIXES: dict[ModelType, tuple[str, ...]] = {
    "sd15": ("lora_te_", "lora_unet_down_blocks_", "lora_unet_mid_block_", "lora_unet_up_blocks_"),
    "sdxl": ("lora_te1_", "lora_te2_", "lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_"),
    # networks/lora_flux.py: the double and single stream blocks, and (with its in_dims option) the input layers.
    "flux1": ("lora_unet_double_blocks_", "lora_unet_single_blocks_", "lora_unet_img_in", "lora_unet_txt_in",
              "lora_unet_time_in_", "lora_unet_vector_in_", "lora_unet_guidance_in_"),
}
# lora_flux.py's text-encoder prefixes (CLIP-L, T5-XXL). The pipeline trains FLUX.1's transformer only
# (its text-encoder outputs are cached), and diffusers 0.40 loads no T5 LoRA: both are refused.
_FLUX_TEXT_ENCODER_PREFIXES = ("lora_te1_", "lora_te3_")
# in_dims modules: diffusers 0.40's kohya conversion names them without "transformer." (x_embedder, ...),
# and load_lora_adapter then drops them without a word (diffusers loaders/lora_conversion_utils.py:587-645, peft.py:195).
_FLUX_IN_DIMS_PREFIXES = ("lora_unet_img_in", "lora_unet_txt_in", "lora_unet_time_in_", "lora_unet_vector_in_", "lora_unet_guidance_in_")
# kohya-ss sd-scripts v0.10.1 writes `ss_base_model_version`: "sd_v1" or "sd_v2", with "_v" appended
# for v-parameterization (library/model_util.py, get_model_version_str_for_sd1_sd2), or
# "sdxl_base_v1-0" (library/sdxl_model_util.py, MODEL_VERSION_SDXL_BASE_V1_0).
# FLUX.1: "flux1" (library/flux_utils.py, MODEL_VERSION_FLUX_V1; "chroma" is another model).
_BASE_MODEL_VERSIONS: dict[str, ModelType] = {"sd_v1": "sd15", "sdxl_base_v1-0": "sdxl", "flux1": "flux1"}
_V_PREDICTION_VERSIONS = ("sd_v1_v", "sd_v2_v")

# in_features of lora_down that a module's width fixes, per family: (module name pattern, width).
# Text encoder attention projections and first MLP layer take the hidden size; a U-Net
# cross-attention key or value takes the text context.
_TE_INPUTS = re.compile(r"_self_attn_(q|k|v|out)_proj$|_mlp_fc1$")
_CONTEXT_INPUTS = re.compile(r"_attn2_to_(k|v)$")
_WIDTHS: dict[ModelType, dict[str, int]] = {
    "sd15": {"lora_te_": 768, "lora_unet_": 768},
    "sdxl": {"lora_te1_": 768, "lora_te2_": 1280, "lora_unet_": 2048},
}
_SD2_WIDTH = 1024
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


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
            size = f.seek(0, 2)
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
    _check_offsets(path, header, size - 8 - length)
    return header, metadata


def _check_offsets(path: Path, header: dict[str, dict], body: int) -> None:
    """Each tensor's data_offsets must lie within the data that follows the header, and match its shape."""
    for name, entry in header.items():
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise LoraFileError(f"{path.name}: corrupt safetensors header ({name} has no valid data_offsets)")
        if offsets[1] > body:
            raise LoraFileError(
                f"{path.name}: truncated: {name} ends at byte {offsets[1]} of the data, the file holds {body}; "
                "the upload or extraction of model.tar.gz was cut short"
            )
        width = _DTYPE_BYTES.get(entry.get("dtype", ""))
        if width is not None and offsets[1] - offsets[0] != width * math.prod(entry["shape"]):
            raise LoraFileError(f"{path.name}: corrupt safetensors header ({name}: data_offsets do not match its shape)")


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
    orphans = sorted({k.removesuffix(".alpha") for k in tensors if k.endswith(".alpha")} - downs)
    if orphans:
        raise LoraFileError(f"{path.name}: not a usable LoRA: an .alpha belongs to no lora_down/lora_up pair (first: {orphans[0]}.alpha)")

    families = {family for family, prefixes in _FAMILY_PREFIXES.items() if any(m.startswith(prefixes) for m in downs)}
    if "flux1" in families:
        _check_flux_modules(path, downs)
        families = {"flux1"}
    unknown = sorted(m for m in downs if not any(m.startswith(p) for ps in _FAMILY_PREFIXES.values() for p in ps))
    if unknown:
        raise LoraFileError(f"{path.name}: LoRA modules of no Stable Diffusion 1.5, SDXL or FLUX.1 layout (first: {unknown[0]})")
    if len(families) != 1:
        raise LoraFileError(f"{path.name}: mixes SD 1.5 and SDXL module names; it is not one model's LoRA")
    (found,) = families

    version = metadata.get("ss_base_model_version")
    if version in _V_PREDICTION_VERSIONS:
        raise LoraFileError(
            f"{path.name}: was trained for a v-prediction model (ss_base_model_version '{version}'); "
            "v-prediction is not supported: serve a LoRA trained on an epsilon-prediction SD 1.5 or SDXL model"
        )
    _check_widths(path, tensors, downs, found)
    if version is not None and _BASE_MODEL_VERSIONS.get(version) != found:
        raise LoraFileError(
            f"{path.name}: its metadata says it was trained on '{version}', which does not match its {found} module names"
        )
    if found != expected:
        raise LoraFileError(
            f"{path.name}: is {'a' if found == 'flux1' else 'an'} {_LABEL[found]} LoRA but MODEL_TYPE is {expected} ({_LABEL[expected]}); "
            "serve it with the base model it was trained on"
        )
    ranks = {tensors[f"{m}.lora_down.weight"]["shape"][0] for m in downs}
    return LoraInfo(model_type=found, modules=len(downs), rank=ranks.pop() if len(ranks) == 1 else None, metadata=metadata)


def _check_flux_modules(path: Path, downs: set[str]) -> None:
    """A FLUX.1 LoRA's modules: transformer ones only (lora_unet_...), none of another family."""
    text = sorted(m for m in downs if m.startswith(_FLUX_TEXT_ENCODER_PREFIXES))
    if text:
        raise LoraFileError(
            f"{path.name}: a FLUX.1 LoRA with text-encoder modules (first: {text[0]}); FLUX.1 LoRAs are served for the "
            "transformer only, as this pipeline trains them (network_train_unet_only): retrain without the text encoders"
        )
    inputs = sorted(m for m in downs if m.startswith(_FLUX_IN_DIMS_PREFIXES))
    if inputs:
        raise LoraFileError(
            f"{path.name}: kohya's in_dims modules (first: {inputs[0]}) on FLUX.1's input layers, which diffusers 0.40 "
            "drops without a word when it loads the LoRA: retrain without the in_dims network argument"
        )
    other = sorted(m for m in downs if not m.startswith(_FAMILY_PREFIXES["flux1"]))
    if other:
        raise LoraFileError(f"{path.name}: mixes FLUX.1 module names with others (first: {other[0]}); it is not one model's LoRA")


def _check_widths(path: Path, tensors: dict[str, dict], downs: set[str], found: ModelType) -> None:
    """The widths the header shapes show must be the family's; SD 2 (1024) is named as such."""
    if found not in _WIDTHS:
        return  # FLUX.1: diffusers' conversion checks the widths against the transformer (LoadCheck names the module)
    for module in sorted(downs):
        if not (_TE_INPUTS.search(module) or _CONTEXT_INPUTS.search(module)):
            continue
        shape = tensors[f"{module}.lora_down.weight"]["shape"]
        prefix = next((p for p in _WIDTHS[found] if module.startswith(p)), None)
        if prefix is None or len(shape) < 2:
            continue
        expected = _WIDTHS[found][prefix]
        if shape[1] == expected:
            continue
        if found == "sd15" and shape[1] == _SD2_WIDTH:
            raise LoraFileError(
                f"{path.name}: is an SD 2 LoRA ({module} takes {_SD2_WIDTH} features; SD 1.5 has {expected}); "
                "SD 2 is not supported: serve an SD 1.5 or SDXL LoRA"
            )
        raise LoraFileError(
            f"{path.name}: {module} takes {shape[1]} features, but {_LABEL[found]} has {expected} there; "
            "it was not trained on an SD 1.5 or SDXL model"
        )


_LABEL: dict[ModelType, str] = {"sd15": "SD 1.5", "sdxl": "SDXL", "flux1": "FLUX.1"}

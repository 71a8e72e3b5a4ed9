"""Tiny stand-ins of FLUX.1's four base model files for the entrypoint's tests: safetensors files
whose tensor names are what the container reads (the transformer's guidance embedder says dev).
That those names are kohya's own is checked on real kohya models in test_kohya_flux.py."""

import json
import struct
from pathlib import Path

from lora_trainer import flux_files

BLOCK_KEYS = ("double_blocks.0.img_attn.proj.bias", "single_blocks.0.modulation.lin.bias")


def safetensors_with(names: list[str]) -> bytes:
    header = {name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, name in enumerate(names)}
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + bytes(4 * len(names))


def transformer_bytes(variant: str) -> bytes:
    return safetensors_with([*BLOCK_KEYS, *(("guidance_in.in_layer.bias",) if variant == "dev" else ())])


def write_flux_files(folder: Path, variant: str, transformer_name: str | None = None, skip: tuple[str, ...] = ()) -> Path:
    """The four files as an S3 base model prefix holds them; `transformer_name` misnames the transformer."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        transformer_name or flux_files.TRANSFORMER[variant]: transformer_bytes(variant),
        flux_files.AE: safetensors_with(["decoder.conv_in.bias"]),
        flux_files.CLIP_L: safetensors_with(["text_model.final_layer_norm.bias"]),
        flux_files.T5XXL: safetensors_with(["shared.weight"]),
    }
    for name, content in files.items():
        if name not in skip:
            (folder / name).write_bytes(content)
    return folder

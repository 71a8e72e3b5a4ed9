"""The metadata kohya writes into the trained LoRA's safetensors header (ss_* keys), read and
corrected without loading the tensors.

A safetensors file is an 8-byte little-endian header length, a JSON header (with a "__metadata__"
map of strings) and the tensor data, whose offsets count from the end of the header; so the header
can be rewritten with another length and the data copied as is. kohya's sshs_model_hash and
sshs_legacy_hash cover only the tensor data, so they stay valid."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from .errors import TrainingError

MAX_HEADER = 100_000_000
# safetensors pads the header with spaces so the data starts 8-byte aligned.
ALIGNMENT = 8


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header and the offset where the tensor data starts."""
    with path.open("rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            raise TrainingError(f"{path.name} is not a safetensors file (too short).")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER:
            raise TrainingError(f"{path.name} is not a safetensors file (header of {length} bytes).")
        header = json.loads(stream.read(length))
    if not isinstance(header, dict):
        raise TrainingError(f"{path.name} has a safetensors header that is not a JSON object.")
    return header, 8 + length


def read_metadata(path: Path) -> dict[str, str]:
    return dict(read_header(path)[0].get("__metadata__") or {})


def update_metadata(path: Path, updates: dict[str, str]) -> None:
    """Sets metadata keys, writing through a temporary file so the model is never half written."""
    header, data_start = read_header(path)
    header["__metadata__"] = {**(header.get("__metadata__") or {}), **updates}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-(8 + len(encoded)) % ALIGNMENT)
    temporary = path.with_name(path.name + ".tmp")
    with path.open("rb") as source, temporary.open("wb") as target:
        target.write(struct.pack("<Q", len(encoded)) + encoded)
        source.seek(data_start)
        shutil.copyfileobj(source, target, 1 << 20)
    temporary.replace(path)

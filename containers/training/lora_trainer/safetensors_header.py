"""The one reader of safetensors headers: an 8-byte little-endian header length, then a JSON object
(tensor names to dtype, shape and data_offsets, and an optional "__metadata__" map of strings)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import TrainingError

# The safetensors library refuses headers above 100 MB; a LoRA's is a few hundred KB.
MAX_HEADER = 100_000_000


class HeaderError(TrainingError):
    """The file has no readable safetensors header; the message says what is wrong with it."""


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header and the offset where the tensor data starts."""
    with path.open("rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            raise HeaderError("truncated header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER or 8 + length > path.stat().st_size:
            raise HeaderError("truncated header")
        try:
            header = json.loads(stream.read(length))
        except (ValueError, UnicodeDecodeError):
            raise HeaderError("header is not JSON") from None
    if not isinstance(header, dict):
        raise HeaderError("header is not a JSON object")
    return header, 8 + length

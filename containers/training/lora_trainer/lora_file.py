"""The metadata kohya writes into the trained LoRA's safetensors header (ss_* keys), read and
corrected without rewriting the tensors.

A safetensors file is an 8-byte little-endian header length, a JSON header (with a "__metadata__"
map of strings) and the tensor data, whose offsets count from the end of the header; so the header
can be rewritten with another length and the data copied as is. kohya stores two hashes, both over
the serialization of the tensors with only the ss_* metadata (library/train_util.py,
precalculate_safetensors_hashes): sshs_model_hash covers the bytes after the header, which a rewrite
keeps; sshs_legacy_hash covers the 64 KiB at byte 1 MiB, header included, so it is recomputed."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

from .errors import TrainingError
from .files import write_atomically
from .safetensors_header import HeaderError, read_header

# safetensors pads the header with spaces so the data starts 8-byte aligned.
ALIGNMENT = 8
# sd-webui-additional-networks' legacy hash: 64 KiB from byte 1 MiB (train_util.addnet_hash_legacy).
LEGACY_HASH_SPAN = (0x100000, 0x110000)


def lora_header(path: Path) -> tuple[dict, int]:
    try:
        return read_header(path)
    except HeaderError as error:
        raise TrainingError(f"{path.name} is not a safetensors file ({error}).") from None


def read_metadata(path: Path) -> dict[str, str]:
    return dict(lora_header(path)[0].get("__metadata__") or {})


def update_metadata(path: Path, updates: dict[str, str]) -> None:
    """Sets metadata keys, writing through a temporary file so the model is never half written."""
    header, data_start = lora_header(path)
    metadata = {**(header.get("__metadata__") or {}), **updates}
    if "sshs_legacy_hash" in metadata:
        # Recomputed, not dropped: it depends on the ss_* header, and consumers trust a stored one.
        metadata["sshs_legacy_hash"] = legacy_hash(path, metadata)
    header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-(8 + len(encoded)) % ALIGNMENT)

    def write(target) -> None:
        target.write(struct.pack("<Q", len(encoded)) + encoded)
        with path.open("rb") as source:
            source.seek(data_start)
            shutil.copyfileobj(source, target, 1 << 20)

    write_atomically(path, write)


def legacy_hash(path: Path, metadata: dict[str, str]) -> str:
    """kohya's sshs_legacy_hash of the file's tensors with these ss_* metadata (the serialization is
    the safetensors library's, as kohya's is, so it is produced by that library)."""
    from safetensors.torch import load_file, save  # the training image's; imported only when needed

    serialized = save(load_file(str(path)), {k: v for k, v in metadata.items() if k.startswith("ss_")})
    return hashlib.sha256(serialized[LEGACY_HASH_SPAN[0] : LEGACY_HASH_SPAN[1]]).hexdigest()[:8]

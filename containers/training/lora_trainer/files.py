"""Small file helpers shared by the modules."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# What write_atomically writes first; a crash can leave one behind, which the next start removes
# (checkpoints.remove_temporaries), since /opt/ml/checkpoints is uploaded to S3 as it is.
TEMPORARY_SUFFIX = ".tmp"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Writes `path` through `<name>.tmp`, on disk before the rename, so an interruption leaves the
    old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    with temporary.open("wb") as stream:
        write(stream)
        stream.flush()
        os.fsync(stream.fileno())
    temporary.replace(path)


def write_json(path: Path, content: Any) -> None:
    encoded = (json.dumps(content, indent=2, sort_keys=True) + "\n").encode("utf-8")
    write_atomically(path, lambda stream: stream.write(encoded))

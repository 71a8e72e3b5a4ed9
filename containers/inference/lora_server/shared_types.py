"""The values shared mode passes between its parts: what a request names, what the registry says, what is on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LoraRef:
    """A LoRA as a request names it; version None means the name's current version."""

    name: str
    version: int | None
    scale: float


@dataclass(frozen=True)
class LoraVersion:
    """A registry version item, checked against the endpoint (family, base model, S3 location)."""

    name: str
    version: int
    status: str
    model_type: str
    base_model: str
    s3_uri: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class LocalLora:
    """A verified file on local disk, ready for the pipeline, with the scale the request gave it."""

    version: LoraVersion
    path: Path
    scale: float

    @property
    def key(self) -> str:
        return f"{self.version.name}@{self.version.version}"

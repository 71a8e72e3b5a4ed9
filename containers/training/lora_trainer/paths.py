"""Where SageMaker's training contract puts things, relative to one root so tests can use a
temporary tree."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SageMakerPaths:
    root: Path = Path("/opt/ml")
    # Generated files (the effective dataset.toml, captions from metadata.jsonl); the channels may be read-only.
    work: Path = Path("/tmp/lora-trainer")

    @classmethod
    def from_env(cls) -> SageMakerPaths:
        return cls(Path(os.environ.get("OPT_ML", "/opt/ml")), Path(os.environ.get("LORA_WORK_DIR", "/tmp/lora-trainer")))

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def hub_base_model(self) -> Path:
        """Where a FLUX.1 Hub base model's files (34 GB) are downloaded: under /opt/ml/input, beside the
        channels SageMaker downloads (storage it sizes for input data), and outside the folders it
        uploads (model, output, checkpoints)."""
        return self.root / "input" / "hub-base-model"

    @property
    def output_data(self) -> Path:
        """SageMaker uploads it as output/output.tar.gz beside model.tar.gz when the job ends."""
        return self.root / "output" / "data"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"

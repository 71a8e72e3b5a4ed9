"""Runs the real entrypoint in its own process with the fake trainer, for the signal tests:
python run_entrypoint.py <opt/ml root> <work dir>."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_trainer.main import Image, Trainer, main  # noqa: E402
from lora_trainer.paths import SageMakerPaths  # noqa: E402

FAKE_KOHYA = Path(__file__).with_name("fake_kohya.py")

if __name__ == "__main__":
    root, work = map(Path, sys.argv[1:3])
    sys.exit(
        main(
            ["train"],
            SageMakerPaths(root, work),
            Image(work / "sd-scripts", work / "tokenizers", "v0.10.1"),
            Trainer(command=[sys.executable, str(FAKE_KOHYA)], gpus=1),
        )
    )

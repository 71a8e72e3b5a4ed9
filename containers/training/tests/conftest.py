import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import NoReturn

import pytest
from PIL import Image as PILImage

from lora_trainer.main import Image, Trainer
from lora_trainer.paths import SageMakerPaths

FAKE_KOHYA = Path(__file__).with_name("fake_kohya.py")

SEED_TOML = """[general]
shuffle_caption = true
caption_extension = '.txt'
keep_tokens = 1
[[datasets]]
resolution = [768, 768]
batch_size = 2
[[datasets.subsets]]
image_dir = '/opt/ml/input/data/images/'
# metadata_file = '/opt/ml/input/data/images/metadata.jsonl'
"""


# Large enough for one bucket step on every side (64 px), so real kohya could load every test dataset.
TEST_IMAGE_SIZE = (64, 64)


def write_image(path: Path, size: tuple[int, int] = TEST_IMAGE_SIZE, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", size, (200, 30, 30)).save(path, format=fmt)
    return path


@dataclass
class OptMl:
    """A temporary /opt/ml tree, as SageMaker lays it out for a training job."""

    paths: SageMakerPaths
    log: Path

    @property
    def dataset(self) -> Path:
        return self.paths.channel("dataset")

    def hyperparameters(self, values: dict) -> None:
        self.paths.hyperparameters.parent.mkdir(parents=True, exist_ok=True)
        self.paths.hyperparameters.write_text(json.dumps(values))

    def captioned_images(self, count: int, folder: Path | None = None, prefix: str = "img") -> list[Path]:
        folder = folder or self.dataset
        images = []
        for index in range(count):
            image = write_image(folder / f"{prefix}{index}.png")
            image.with_suffix(".txt").write_text(f"a red pokemon number {index}")
            images.append(image)
        return images

    def runs(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def failure(self) -> str:
        return self.paths.failure.read_text()


@pytest.fixture
def opt_ml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OptMl:
    root = tmp_path / "opt" / "ml"
    paths = SageMakerPaths(root=root, work=tmp_path / "work")
    (root / "input" / "data" / "dataset").mkdir(parents=True)
    log = tmp_path / "kohya-runs.jsonl"
    monkeypatch.setenv("FAKE_KOHYA_LOG", str(log))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FAKE_KOHYA_DIE_AFTER_EPOCH", "FAKE_KOHYA_PARTIAL_NEXT", "FAKE_KOHYA_HANG", "FAKE_KOHYA_EXIT", "FAKE_KOHYA_PROCESSES", "FAKE_KOHYA_STEPS_PER_EPOCH", "FAKE_KOHYA_BAD_SAMPLE"):
        monkeypatch.delenv(name, raising=False)
    return OptMl(paths, log)


@pytest.fixture
def image(tmp_path: Path) -> Image:
    return Image(sd_scripts=tmp_path / "sd-scripts", tokenizer_cache=tmp_path / "tokenizers", sd_scripts_version="v0.10.1")


def fake_trainer(gpus: int = 1) -> Trainer:
    return Trainer(command=[sys.executable, str(FAKE_KOHYA)], gpus=gpus)


def skip_or_fail(message: str) -> NoReturn:
    """A test the runner cannot give what it needs: a failure in CI (CI=1 or true), where every test must run; else a skip."""
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _sd_scripts_folder() -> Path:
    """sd-scripts at the pinned commit, from LORA_TEST_SD_SCRIPTS. Without it the tests that hold the
    entrypoint to kohya's own code are skipped locally, and fail in CI, where they must run."""
    folder = os.environ.get("LORA_TEST_SD_SCRIPTS")
    problem = None
    if not folder:
        problem = "LORA_TEST_SD_SCRIPTS is not set (the sd-scripts folder at the pinned commit)"
    elif not (Path(folder) / "train_network.py").is_file():
        problem = f"LORA_TEST_SD_SCRIPTS={folder} has no train_network.py"
    if problem:
        skip_or_fail(f"{problem}; CI must run the tests against real sd-scripts")
    return Path(folder)


@pytest.fixture(scope="session")
def sd_scripts():
    """kohya-ss sd-scripts' own modules, imported in this process (about 5 s, once)."""
    folder = str(_sd_scripts_folder())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sd-scripts' invalid escape sequences
        import flux_train_network
        import sdxl_train_network
        import train_network
        from library import config_util, train_util
    return SimpleNamespace(
        folder=Path(folder), train_network=train_network, sdxl_train_network=sdxl_train_network,
        flux_train_network=flux_train_network, config_util=config_util, train_util=train_util,
    )

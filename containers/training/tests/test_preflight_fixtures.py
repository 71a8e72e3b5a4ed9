"""The dataset fixtures of test/fixtures/datasets/, run through the container's real hyperparameter
handling and dataset preparation (main.check_inputs, as a training job runs them). The TypeScript
pre-flight (lambda/prepare/preflight.ts, test/lambda/preflight.test.ts) asserts the same outcome for
each case, so Prepare refuses exactly what the training job would."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.errors import DatasetError, TrainingError
from lora_trainer.main import check_inputs

FIXTURES = Path(__file__).resolve().parents[3] / "test" / "fixtures" / "datasets"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "case.json").is_file())

# The problem kinds of preflight.ts, told from the container's message (its first refusal).
KINDS = [
    ("is not valid TOML", "toml-invalid"),
    ("is outside the dataset folder", "path-outside"),
    ("leads outside the dataset folder", "path-outside"),
    ("is not a folder in the dataset", "missing-folder"),
    ("same image_dir", "repeated-image-dir"),
    ("bucket_reso_steps =", "bucket-settings"),
    ("min_bucket_reso =", "bucket-settings"),
    ("max_bucket_reso =", "bucket-settings"),
    ("metadata_file", "metadata"),
    ("metadata.jsonl is not UTF-8", "metadata"),
    ("metadata.jsonl line", "metadata"),
    ("has no [[datasets]]", "toml-structure"),
    ("needs an image_dir", "toml-structure"),
    ("must be a string path", "toml-structure"),
    ("is not a kohya dataset setting", "toml-settings"),
    ("is not [general] or [[datasets]]", "toml-settings"),
    ("caption_extension must start with a dot", "toml-settings"),
    ("must be ", "toml-settings"),
    ("cannot be decoded", "undecodable"),
    ("has no images", "no-images"),
    ("smaller than one bucket step", "too-small"),
    ("are not UTF-8 text", "caption-not-utf8"),
    ("are empty, which kohya refuses", "empty-caption"),
    ("have no caption", "missing-captions"),
    ("cannot be combined with", "cache-combination"),
]


def kind_of(message: str) -> str:
    return next((kind for phrase, kind in KINDS if phrase in message), f"unknown: {message}")


def sagemaker_value(value) -> str:
    """Hyperparameters reach the container as strings, as SageMaker passes them."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def load_case(name: str) -> tuple[dict, Path]:
    case = json.loads((FIXTURES / name / "case.json").read_text(encoding="utf-8"))
    return case, FIXTURES / case.get("sameFilesAs", name)


def copy_dataset(source: Path, channel: Path) -> None:
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.relative_to(source) != Path("case.json"):
            target = channel / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def test_the_fixtures_are_there_with_both_outcomes():
    outcomes = {load_case(name)[0]["expected"]["outcome"] for name in CASES}
    assert len(CASES) >= 20 and outcomes == {"ok", "refused"}


@pytest.mark.parametrize("name", CASES)
def test_the_container_reaches_the_fixtures_outcome(opt_ml, name):
    case, source = load_case(name)
    copy_dataset(source, opt_ml.dataset)
    opt_ml.hyperparameters({"model_type": case["modelType"], **{k: sagemaker_value(v) for k, v in case["hyperparameters"].items()}})
    expected = case["expected"]
    if expected["outcome"] == "refused":
        # TrainingError: check_inputs refuses a caching hyperparameter with a dataset.toml augmentation after the dataset checks.
        with pytest.raises(TrainingError) as refused:
            check_inputs(opt_ml.paths)
        message = str(refused.value)
        assert kind_of(message) == expected["kind"], message
        for mention in expected["mentions"] + [f for f in expected["files"] if f != "dataset.toml"]:
            assert mention in message
        return
    summary = check_inputs(opt_ml.paths).prepared.summary
    assert (summary.images, summary.captioned) == (expected["images"], expected["captions"])
    assert sorted(summary.ignored) == sorted(expected["skipped"])


def test_the_formats_fixture_names_each_image_by_its_format_and_size():
    """The TypeScript header parser reads each of these and must find the same format and size."""
    for path in sorted((FIXTURES / "formats").iterdir()):
        if path.name != "case.json":
            with Image.open(path) as opened:
                fmt, size = path.name.split("-")[0], path.stem.rsplit("-", 1)[1]
                assert (opened.format.lower(), f"{opened.width}x{opened.height}") == (fmt, size)


def test_a_clean_folder_passes_and_the_same_folder_with_a_fault_is_refused(opt_ml):
    """The negative control of the fixtures: one undecodable image turns the clean case into a refusal."""
    _, source = load_case("clean")
    copy_dataset(source, opt_ml.dataset)
    opt_ml.hyperparameters({"model_type": "sd15"})
    assert check_inputs(opt_ml.paths).prepared.summary.images == 4
    (opt_ml.dataset / "a.png").write_text("not an image")
    with pytest.raises(DatasetError, match="cannot be decoded: a.png"):
        check_inputs(opt_ml.paths)

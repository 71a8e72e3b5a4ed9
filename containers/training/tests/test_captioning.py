"""caption_missing: which images are captioned, where the captions go, and their reuse by a restarted
job, on a tiny random BlipForConditionalGeneration (the class the image bakes) through the real
transformers, on CPU. The real model's words are not tested here."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import fake_trainer, write_image
from lora_trainer import caption_targets, captioning
from lora_trainer import captioner as captioner_module
from lora_trainer.errors import DatasetError, TrainingError
from lora_trainer.hyperparameters import HyperparameterError, parse_hyperparameters
from lora_trainer.main import check_inputs, main

WORDS = ["a", "red", "dog", "cat", "on", "the", "beach", "photo", "of", "blue", "sky", "green", "tree"]


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory) -> Path:
    """A BLIP captioner as the Dockerfile bakes it (weights, processor, captioner.json), tiny and random."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder = tmp_path_factory.mktemp("captioner")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    torch.manual_seed(0)
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64)
    config = BlipConfig(
        text_config={**text, "bos_token_id": 5, "pad_token_id": 0, "sep_token_id": 3, "eos_token_id": 3},
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16),
        projection_dim=16,
    )
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    (folder / captioner_module.CAPTIONER_INFO).write_text(json.dumps({"model": "tiny/blip", "revision": "0" * 40}))
    return folder


@pytest.fixture
def captioner(monkeypatch, tiny_blip):
    monkeypatch.setattr(captioner_module, "CAPTIONER_DIR", tiny_blip)
    return tiny_blip


def folder_without_captions(opt_ml) -> Path:
    """a.png captioned; b.png and c.png without; 2_sks/d.png captioned by its class tokens."""
    dataset = opt_ml.dataset
    write_image(dataset / "a.png")
    (dataset / "a.txt").write_text("my own caption\n")
    write_image(dataset / "b.png", (64, 96))
    write_image(dataset / "c.png", (96, 64))
    write_image(dataset / "2_sks" / "d.png")
    return dataset


def hyperparameters(opt_ml, **values) -> None:
    opt_ml.hyperparameters({"max_train_steps": "8", "num_repeats": "1", "sample_every_n_epochs": "0", **values})


def test_the_captionless_images_are_captioned_next_to_them_and_copied_out(opt_ml, image, captioner, capsys):
    dataset = folder_without_captions(opt_ml)
    hyperparameters(opt_ml, caption_missing="true", caption_trigger_word='"ohwx"')
    assert main(["train"], opt_ml.paths, image, fake_trainer()) == 0
    blip = captioner_module.generate(captioner, [dataset / "b.png", dataset / "c.png"])
    assert all(blip) and set(" ".join(blip).split()) <= set(WORDS)
    assert [(dataset / name).read_text() for name in ("b.txt", "c.txt")] == [f"ohwx, {text}\n" for text in blip]
    assert (dataset / "a.txt").read_text() == "my own caption\n" and not (dataset / "2_sks" / "d.txt").exists()
    for folder in (opt_ml.paths.output_data / "captions", opt_ml.paths.checkpoints / "captions"):
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == ["b.txt", "c.txt", "captions.json"]
        assert (folder / "b.txt").read_text() == (dataset / "b.txt").read_text()
        manifest = json.loads((folder / "captions.json").read_text())
        assert manifest == {"model": "tiny/blip", "revision": "0" * 40, "triggerWord": "ohwx", "count": 2, "files": ["b.txt", "c.txt"]}
    assert "lora-metrics captions_written=2" in capsys.readouterr().out
    metadata = json.loads((opt_ml.paths.model / "training-metadata.json").read_text())
    assert (metadata["dataset"]["captioned"], metadata["dataset"]["missing_captions"]) == (4, [])


def test_without_caption_missing_the_same_folder_is_refused(opt_ml, image, captioner):
    """The negative control: the default for sd15 (off) keeps refusing captionless images, and writes none."""
    dataset = folder_without_captions(opt_ml)
    hyperparameters(opt_ml)
    assert main(["train"], opt_ml.paths, image, fake_trainer()) == 1
    assert "2 of 4 image(s) have no caption: b.png, c.png" in opt_ml.failure()
    assert not (dataset / "b.txt").exists() and not (opt_ml.paths.output_data / "captions").exists()


def test_a_restarted_job_reuses_the_captions_without_running_blip(opt_ml, captioner, tmp_path):
    dataset = folder_without_captions(opt_ml)
    hyperparameters(opt_ml, caption_missing="true")
    inputs = check_inputs(opt_ml.paths)
    assert captioning.write_captions(opt_ml.paths, inputs.values, inputs.prepared) == 2
    first = (dataset / "b.txt").read_text()
    # A restart downloads the folder afresh: no captions beside the images, the checkpoints kept.
    (dataset / "b.txt").unlink()
    (dataset / "c.txt").unlink()
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copyfile(captioner / captioner_module.CAPTIONER_INFO, no_weights / captioner_module.CAPTIONER_INFO)
    inputs = check_inputs(opt_ml.paths)
    assert captioning.write_captions(opt_ml.paths, inputs.values, inputs.prepared, no_weights) == 2
    assert (dataset / "b.txt").read_text() == first
    # Negative control: captions made with another trigger word are not reused, so BLIP runs (and has no weights here).
    (dataset / "b.txt").unlink()
    (dataset / "c.txt").unlink()
    inputs.values["caption_trigger_word"] = "other"
    with pytest.raises(TrainingError, match="Captioning the images without a caption failed"):
        captioning.write_captions(opt_ml.paths, inputs.values, inputs.prepared, no_weights)


def test_a_caption_extension_publish_cannot_write_back_is_refused(opt_ml):
    dataset = opt_ml.dataset
    write_image(dataset / "img" / "a.png")
    write_image(dataset / "img" / "b.png")
    (dataset / "img" / "a.cap").write_text("a caption")
    (dataset / "dataset.toml").write_text("[general]\ncaption_extension = '.cap'\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'img'\n")
    hyperparameters(opt_ml, caption_missing="true")
    with pytest.raises(
        DatasetError, match=r"1 image\(s\) have no caption, and caption_missing writes only .txt or .caption caption files, not .cap: img/b.png"
    ):
        check_inputs(opt_ml.paths)
    # Negative control: the same extension is fine when every image has its caption.
    (dataset / "img" / "b.cap").write_text("another caption")
    assert check_inputs(opt_ml.paths).prepared.summary.captioned == 2


def test_the_caption_extension_of_the_subset_is_written(opt_ml):
    dataset = opt_ml.dataset
    write_image(dataset / "img" / "a.png")
    (dataset / "dataset.toml").write_text("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'img'\ncaption_extension = '.caption'\n")
    hyperparameters(opt_ml, caption_missing="true")
    inputs = check_inputs(opt_ml.paths)
    [target] = caption_targets.targets(opt_ml.dataset, inputs.prepared.config)
    assert (target.relative, target.caption) == ("img/a.caption", (dataset / "img" / "a.caption").resolve())


def test_two_images_that_would_share_a_caption_are_refused(opt_ml):
    write_image(opt_ml.dataset / "a.png")
    write_image(opt_ml.dataset / "a.jpg", fmt="JPEG")
    hyperparameters(opt_ml, caption_missing="true")
    with pytest.raises(DatasetError, match="a.jpg and a.png have no caption and would share the caption file a.txt"):
        check_inputs(opt_ml.paths)


def test_images_of_a_metadata_jsonl_are_not_captioned(opt_ml):
    """The jsonl is the user's own captions: an image beside it that it does not list stays refused."""
    dataset = opt_ml.dataset
    write_image(dataset / "a.png")
    write_image(dataset / "b.png")
    (dataset / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "a listed image"}) + "\n")
    hyperparameters(opt_ml, caption_missing="true")
    with pytest.raises(DatasetError, match=r"1 of 2 image\(s\) have no caption: b.png"):
        check_inputs(opt_ml.paths)
    hyperparameters(opt_ml, caption_missing="true", allow_missing_captions="true")
    inputs = check_inputs(opt_ml.paths)
    assert caption_targets.targets(opt_ml.dataset, inputs.prepared.config) == []


def test_the_setting_defaults_per_model_type_and_the_trigger_word_is_one_short_line():
    assert parse_hyperparameters({})["caption_missing"] is False
    assert parse_hyperparameters({"model_type": "sdxl"})["caption_missing"] is False
    assert parse_hyperparameters({"caption_trigger_word": "ohwx man"})["caption_trigger_word"] == "ohwx man"
    for bad in (",", " , ", "a\nb", "x" * 65):
        with pytest.raises(HyperparameterError, match="caption_trigger_word"):
            parse_hyperparameters({"caption_trigger_word": bad})


def test_flux1_captions_by_default():
    assert parse_hyperparameters({"model_type": "flux1"})["caption_missing"] is True


FIXTURES = Path(__file__).resolve().parents[3] / "test" / "fixtures" / "datasets"
CAPTION_CASES = sorted(
    p.name
    for p in FIXTURES.iterdir()
    if (p / "case.json").is_file() and "caption_missing" in json.loads((p / "case.json").read_text())["hyperparameters"]
)


def test_there_are_caption_fixtures_of_both_outcomes():
    outcomes = {json.loads((FIXTURES / name / "case.json").read_text())["expected"]["outcome"] for name in CAPTION_CASES}
    assert len(CAPTION_CASES) >= 4 and outcomes == {"ok", "refused"}


@pytest.mark.parametrize("name", CAPTION_CASES)
def test_the_container_captions_as_many_images_as_the_preflight_says(opt_ml, name):
    """test_preflight_fixtures.py checks the outcome of every fixture; this, the number of captions the
    job writes, which Prepare announces (captionsToWrite in test/lambda/preflight.test.ts)."""
    case = json.loads((FIXTURES / name / "case.json").read_text())
    source = FIXTURES / case.get("sameFilesAs", name)
    shutil.copytree(source, opt_ml.dataset, dirs_exist_ok=True, ignore=shutil.ignore_patterns("case.json"))
    opt_ml.hyperparameters(
        {"model_type": case["modelType"], **{k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in case["hyperparameters"].items()}}
    )
    if case["expected"]["outcome"] == "refused":
        with pytest.raises(DatasetError, match="have no caption"):
            check_inputs(opt_ml.paths)
        return
    inputs = check_inputs(opt_ml.paths)
    assert len(caption_targets.targets(opt_ml.dataset, inputs.prepared.config)) == case["expected"]["captionsToWrite"]


def test_the_image_bakes_the_captioner_where_the_entrypoint_reads_it():
    dockerfile = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
    block = dockerfile.split("# --- captioner (part D)")[1].split("# --- end captioner ---")[0]
    assert f"ENV LORA_CAPTIONER_DIR={captioner_module.CAPTIONER_DIR}" in block
    assert f"'{captioner_module.CAPTIONER_DIR}/{captioner_module.CAPTIONER_INFO}'" in block
    assert "snapshot_download('Salesforce/blip-image-captioning-large', revision=sys.argv[1]" in block
    assert "allow_patterns=['*.json', '*.txt', 'model.safetensors']" in block
    # Baked before the entrypoint's code is copied, so a code change does not download it again.
    assert dockerfile.index("# --- end captioner ---") < dockerfile.index("COPY lora_trainer")


def test_a_captioner_that_fails_or_gives_a_blank_caption_fails_the_job_with_why(monkeypatch, tmp_path):
    from types import SimpleNamespace

    answers = iter(
        [
            SimpleNamespace(returncode=1, stdout="", stderr="Traceback\ntorch.OutOfMemoryError: CUDA out of memory\n"),
            SimpleNamespace(returncode=0, stdout=json.dumps(["a red dog", ""]), stderr=""),
            SimpleNamespace(returncode=0, stdout=json.dumps(["a red dog", "a cat"]), stderr=""),
        ]
    )
    monkeypatch.setattr(captioner_module.subprocess, "run", lambda *args, **kwargs: next(answers))
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    with pytest.raises(TrainingError, match=r"failed \(exit status 1\): torch.OutOfMemoryError: CUDA out of memory"):
        captioner_module.run_captioner(tmp_path, images)
    with pytest.raises(TrainingError, match=f"BLIP gave no caption for {images[1]}"):
        captioner_module.run_captioner(tmp_path, images)
    assert captioner_module.run_captioner(tmp_path, images) == ["a red dog", "a cat"]


def test_blip_loads_with_only_what_the_images_transformers_accepts_and_runs_in_fp16(captioner, monkeypatch, tmp_path):
    """The image has sd-scripts' transformers 4.54.1, whose from_pretrained has no dtype= keyword (4.56
    added it, huggingface/transformers#39782; 4.54 hands it to the model's __init__, a TypeError); so
    the model is loaded with no keyword and cast, which also holds GPU-style fp16 here on the CPU."""
    import torch
    from transformers import BlipForConditionalGeneration

    real, keywords = BlipForConditionalGeneration.from_pretrained, []
    monkeypatch.setattr(BlipForConditionalGeneration, "from_pretrained", lambda *args, **kwargs: (keywords.append(kwargs), real(*args, **kwargs))[1])
    monkeypatch.setattr(captioner_module, "device_and_dtype", lambda: ("cpu", torch.float16))
    write_image(tmp_path / "a.png")
    [text] = captioner_module.generate(captioner, [tmp_path / "a.png"])
    assert keywords == [{}] and text and set(text.split()) <= set(WORDS)

"""Sample images through the real entrypoint, with fake_kohya.py drawing them as kohya names them:
the prompts file and flags, the manifest and contact sheet, spot resume, and sampling off."""

import json

from PIL import Image as PILImage

from conftest import fake_trainer
from lora_trainer.main import main
from lora_trainer.sampling import file_pattern


def train(opt_ml, image):
    return main(["train"], opt_ml.paths, image, fake_trainer())


def samples(opt_ml):
    return opt_ml.paths.checkpoints / "sample"


def kohya_files(opt_ml, name="lora"):
    return sorted(p.name for p in samples(opt_ml).iterdir() if file_pattern(name).match(p.name))


def manifest(opt_ml):
    return json.loads((samples(opt_ml) / "samples.json").read_text())


def test_default_samples_are_three_of_the_captions_rendered_every_epoch(opt_ml, image, capsys):
    opt_ml.captioned_images(7)  # captions "a red pokemon number 0".."6"
    opt_ml.hyperparameters({"max_train_epochs": "2", "resolution": "512"})
    assert train(opt_ml, image) == 0
    [run] = opt_ml.runs()
    argv = run["argv"]
    prompts_file = opt_ml.paths.work / "sample-prompts.json"
    assert argv[argv.index("--sample_prompts") + 1] == str(prompts_file)
    assert argv[argv.index("--sample_every_n_epochs") + 1] == "1" and argv[argv.index("--sample_sampler") + 1] == "euler_a"
    assert "--sample_at_first" in argv
    # Evenly spaced over the 7 captions in file order: indices 0, 2, 4.
    written = json.loads(prompts_file.read_text())
    assert [p["prompt"] for p in written] == [f"a red pokemon number {i}" for i in (0, 2, 4)]
    assert [(p["seed"], p["width"], p["height"], p["sample_steps"], p["scale"], p["sample_sampler"]) for p in written] == [
        (1234 + i, 512, 512, 20, 7.0, "euler_a") for i in range(3)
    ]
    content = manifest(opt_ml)
    assert content["contact_sheet"] == "contact-sheet.png"
    assert content["prompts"][1] == {
        "index": 1, "prompt": "a red pokemon number 2", "negative_prompt": "", "seed": 1235, "width": 512, "height": 512,
        "steps": 20, "cfg_scale": 7.0, "sampler": "euler_a",
    }
    # Epoch 0 (before training), 1 and 2, each prompt; steps at the epoch's end (7 images x 10 repeats).
    assert [(i["epoch"], i["prompt_index"], i["step"]) for i in content["images"]] == [(e, p, e * 70) for e in range(3) for p in range(3)]
    assert sorted(i["file"] for i in content["images"]) == kohya_files(opt_ml)
    with PILImage.open(samples(opt_ml) / "contact-sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.height > 3 * 256  # three rows of 256 px cells
    # The same files where SageMaker's output.tar.gz takes them, and nothing in the model.
    copied = opt_ml.paths.root / "output" / "data" / "sample"
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in samples(opt_ml).iterdir())
    assert sorted(p.name for p in opt_ml.paths.model.iterdir()) == ["lora.safetensors", "training-metadata.json"]
    out = capsys.readouterr().out
    assert "lora-trainer:   sample 2 (seed 1236): a red pokemon number 4" in out
    assert "WARNING" not in out


def test_user_prompts_and_settings_reach_the_prompts_file(opt_ml, image):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({
        "max_train_epochs": "4", "sample_prompts": " a cat --n dog | photo of sks #1 ", "sample_every_n_epochs": "2",
        "sample_at_first": "false", "sample_sampler": "ddim", "sample_seed": "7", "sample_steps": "3", "sample_cfg_scale": "4.5",
        "sample_negative_prompt": "blurry", "sample_count": "1",
    })
    assert train(opt_ml, image) == 0
    argv = opt_ml.runs()[0]["argv"]
    assert "--sample_at_first" not in argv and argv[argv.index("--sample_every_n_epochs") + 1] == "2"
    prompts = manifest(opt_ml)["prompts"]
    # The text is the prompt as given: ' --n' stays text (the JSON prompts file is not parsed for options).
    assert [(p["prompt"], p["negative_prompt"], p["seed"], p["steps"], p["cfg_scale"], p["sampler"]) for p in prompts] == [
        ("a cat --n dog", "blurry", 7, 3, 4.5, "ddim"), ("photo of sks #1", "blurry", 8, 3, 4.5, "ddim"),
    ]
    assert sorted({i["epoch"] for i in manifest(opt_ml)["images"]}) == [2, 4]


def test_samples_of_a_resumed_run_cover_every_epoch_once(opt_ml, image, monkeypatch, capsys):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "4", "sample_prompts": "one|two"})
    monkeypatch.setenv("FAKE_KOHYA_DIE_AFTER_EPOCH", "2")
    assert train(opt_ml, image) == 1
    first = kohya_files(opt_ml)
    assert len(first) == 6  # epochs 0, 1, 2 x 2 prompts
    # Drawn at epoch 3 by an attempt whose state 3 never reached S3 whole: that epoch is trained again.
    stale = samples(opt_ml) / "lora_e000003_00_20260101000000_1234.png"
    PILImage.new("RGB", (8, 8)).save(stale)
    monkeypatch.delenv("FAKE_KOHYA_DIE_AFTER_EPOCH")
    assert train(opt_ml, image) == 0
    resumed = opt_ml.runs()[1]["argv"]
    assert "--resume" in resumed and "--sample_at_first" not in resumed  # epoch 0 is the base model's, drawn once
    assert not stale.exists()
    assert "removed sample lora_e000003_00_20260101000000_1234.png (its epoch is trained again)" in capsys.readouterr().out
    images = manifest(opt_ml)["images"]
    assert [(i["epoch"], i["prompt_index"]) for i in images] == [(e, p) for e in range(5) for p in range(2)]
    assert set(first) <= {i["file"] for i in images}  # the first attempt's samples are kept


def test_a_fresh_start_removes_every_earlier_sample(opt_ml, image, monkeypatch):
    # Negative control of the one above: with no state to resume, no earlier sample belongs to this training.
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "2", "sample_prompts": "one"})
    samples(opt_ml).mkdir(parents=True)
    old = samples(opt_ml) / "lora_e000000_00_20260101000000_1234.png"
    PILImage.new("RGB", (8, 8)).save(old)
    (samples(opt_ml) / "samples.json").write_text("{}")
    assert train(opt_ml, image) == 0
    assert not old.exists()
    assert [i["epoch"] for i in manifest(opt_ml)["images"]] == [0, 1, 2]


def test_sampling_off_passes_no_sampling_flag_and_writes_no_sample(opt_ml, image, capsys):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "2", "sample_every_n_epochs": "0", "sample_prompts": "ignored"})
    assert train(opt_ml, image) == 0
    assert not [a for a in opt_ml.runs()[0]["argv"] if a.startswith("--sample")]
    assert not samples(opt_ml).exists() and not (opt_ml.paths.root / "output" / "data").exists()
    assert not (opt_ml.paths.work / "sample-prompts.json").exists()
    assert "sample images off (sample_every_n_epochs = 0)" in capsys.readouterr().out


def test_no_caption_and_no_prompts_turns_sampling_off_with_a_warning(opt_ml, image, capsys):
    opt_ml.captioned_images(1)
    (opt_ml.dataset / "img0.txt").unlink()
    opt_ml.hyperparameters({"max_train_epochs": "1", "allow_missing_captions": "true"})
    assert train(opt_ml, image) == 0
    assert not [a for a in opt_ml.runs()[0]["argv"] if a.startswith("--sample")]
    assert "WARNING: no sample_prompts and no caption in the dataset to sample with; sample images off" in capsys.readouterr().out


def test_a_sample_cut_short_is_left_out_and_the_sheet_still_drawn(opt_ml, image, monkeypatch, capsys):
    # Negative control: the first test, whose samples all decode, lists every one and warns of nothing.
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "1", "sample_prompts": "one"})
    monkeypatch.setenv("FAKE_KOHYA_BAD_SAMPLE", "1")
    assert train(opt_ml, image) == 0
    assert (opt_ml.paths.model / "lora.safetensors").is_file() and not opt_ml.paths.failure.exists()
    [cut] = [name for name in kohya_files(opt_ml) if "_e000001_" in name]
    assert f"WARNING: sample {cut} does not decode (cut short?); left out of the manifest and the sheet" in capsys.readouterr().out
    content = manifest(opt_ml)
    assert content["contact_sheet"] == "contact-sheet.png" and [i["epoch"] for i in content["images"]] == [0]
    copied = opt_ml.paths.root / "output" / "data" / "sample"
    assert {i["file"] for i in content["images"]} | {"samples.json", "contact-sheet.png"} <= {p.name for p in copied.iterdir()}


def test_unset_cadence_samples_about_eight_rows_ending_at_the_last_epoch(opt_ml, image, capsys):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "18", "sample_prompts": "one"})
    assert train(opt_ml, image) == 0
    argv = opt_ml.runs()[0]["argv"]
    # ceil(18 / 8) = 3 divides 18: rows 0, 3, ..., 18, the delivered LoRA included.
    assert argv[argv.index("--sample_every_n_epochs") + 1] == "3"
    assert [i["epoch"] for i in manifest(opt_ml)["images"]] == list(range(0, 19, 3))
    assert "WARNING" not in capsys.readouterr().out


def test_a_cadence_that_skips_the_last_epoch_is_warned_about(opt_ml, image, capsys):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"max_train_epochs": "4", "sample_prompts": "one", "sample_every_n_epochs": "3"})
    assert train(opt_ml, image) == 0
    assert [i["epoch"] for i in manifest(opt_ml)["images"]] == [0, 3]
    assert "WARNING: the last epoch (4) is not sampled: kohya samples every 3 epoch(s), so the last row is epoch 3" in capsys.readouterr().out


def test_a_restarted_finished_job_writes_the_same_manifest_without_training(opt_ml, image):
    opt_ml.captioned_images(2)
    opt_ml.hyperparameters({"max_train_epochs": "2"})
    assert train(opt_ml, image) == 0
    first = manifest(opt_ml)
    (samples(opt_ml) / "samples.json").unlink()
    assert train(opt_ml, image) == 0
    assert len(opt_ml.runs()) == 1
    assert manifest(opt_ml) == first

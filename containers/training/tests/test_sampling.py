"""The sample prompts (user's or the dataset's captions), kohya's sample file names, what a resumed
attempt removes, and samples.json."""

import json

import pytest
from PIL import Image as PILImage

from conftest import write_image
from lora_trainer.dataset import DatasetOptions, prepare_dataset
from lora_trainer.hyperparameters import parse_hyperparameters
from lora_trainer.sampling import (
    SampleImage,
    choose_captions,
    dataset_captions,
    every_n_epochs,
    file_pattern,
    manifest,
    plan_prompts,
    readable,
    remove_superseded,
    sample_images,
    sample_resolution,
    schedule_warning,
    split_prompts,
    write_prompts_file,
)

OPTIONS = DatasetOptions(resolution=512, batch_size=1, num_repeats=1, allow_missing_captions=True)


def config_of(opt_ml, toml_text=None):
    if toml_text is not None:
        (opt_ml.dataset / "dataset.toml").write_text(toml_text)
    return prepare_dataset(opt_ml.dataset, opt_ml.paths.work, OPTIONS).config


def captioned(folder, name, caption):
    image = write_image(folder / f"{name}.png")
    if caption is not None:
        image.with_suffix(".txt").write_text(caption)


def test_split_prompts_trims_each():
    assert split_prompts(" a cat | a dog on the moon |x") == ["a cat", "a dog on the moon", "x"]


def test_captions_in_file_order_distinct_without_regularization_or_skipped_subsets(opt_ml):
    train, reg, skipped = opt_ml.dataset / "train", opt_ml.dataset / "reg", opt_ml.dataset / "skipped"
    for name, caption in (("b", "sks dog\nsecond line"), ("a", "sks dog"), ("c", "sks dog on a sofa"), ("d", None)):
        captioned(train, name, caption)
    captioned(reg, "r", "a dog")
    captioned(skipped, "s", "never trained")
    config = config_of(opt_ml, (
        "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'train'\nclass_tokens = 'sks'\n"
        "[[datasets.subsets]]\nimage_dir = 'reg'\nis_reg = true\n"
        "[[datasets.subsets]]\nimage_dir = 'skipped'\nnum_repeats = 0\n"
    ))
    # a and b both say "sks dog" (kohya reads b's first line only); d, without a file, is its class tokens.
    assert dataset_captions(config) == ["sks dog", "sks dog on a sofa", "sks"]


def test_captions_carry_the_prefix_and_suffix_kohya_trains_with(opt_ml):
    # A trigger word in caption_prefix is part of every caption kohya trains: a sample prompt
    # without it would not show what the LoRA learnt. The test above is the control without them.
    captioned(opt_ml.dataset, "a", "a dog on grass")
    captioned(opt_ml.dataset, "b", None)
    config = config_of(opt_ml, (
        "[general]\ncaption_suffix = 'high quality'\n"
        "[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\ncaption_prefix = 'sks,'\nclass_tokens = 'dog'\n"
    ))
    assert dataset_captions(config) == ["sks, a dog on grass high quality", "sks, dog high quality"]


def test_with_wildcards_a_prompt_is_the_first_caption_line(opt_ml):
    captioned(opt_ml.dataset, "a", "\nfirst\nsecond")
    config = config_of(opt_ml, "[general]\nenable_wildcard = true\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n")
    assert dataset_captions(config) == ["first"]


@pytest.mark.parametrize(
    "count, chosen",
    [(3, ["c0", "c3", "c6"]), (1, ["c0"]), (9, ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"]), (12, [f"c{i}" for i in range(9)])],
)
def test_captions_are_chosen_evenly_spaced(count, chosen):
    assert choose_captions([f"c{i}" for i in range(9)], count) == chosen


def test_the_sample_size_is_the_resolution_kohya_trains_at():
    assert sample_resolution({"datasets": [{"resolution": [768, 512]}]}, 1024) == (768, 512)
    assert sample_resolution({"general": {"resolution": 640}, "datasets": [{}]}, 1024) == (640, 640)
    assert sample_resolution({"datasets": [{}]}, 1024) == (1024, 1024)


def test_plan_prompts_gives_each_prompt_its_own_seed_and_every_setting(opt_ml):
    captioned(opt_ml.dataset, "a", "sks dog")
    # A dataset.toml without a resolution: the hyperparameter's applies.
    config = config_of(opt_ml, "[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n")
    values = parse_hyperparameters({"sample_prompts": "x|y", "sample_seed": "10", "resolution": "768"})
    prompts = plan_prompts(values, config)
    assert [(p.index, p.prompt, p.seed, p.width, p.steps, p.sampler, p.negative_prompt) for p in prompts] == [
        (0, "x", 10, 768, 20, "euler_a", ""), (1, "y", 11, 768, 20, "euler_a", ""),
    ]
    assert [p.prompt for p in plan_prompts(parse_hyperparameters({}), config)] == ["sks dog"]
    assert plan_prompts(parse_hyperparameters({"sample_every_n_epochs": "0"}), config) == []


def test_the_prompts_file_is_kohyas_json_format(tmp_path, opt_ml):
    captioned(opt_ml.dataset, "a", "sks dog")
    prompts = plan_prompts(parse_hyperparameters({"sample_prompts": "a \"quoted\" --n text", "sample_negative_prompt": "ugly"}), config_of(opt_ml))
    path = write_prompts_file(prompts, tmp_path / "prompts.json")
    assert json.loads(path.read_text()) == [{
        "prompt": 'a "quoted" --n text', "negative_prompt": "ugly", "seed": 1234, "width": 512, "height": 512,
        "sample_steps": 20, "scale": 7.0, "sample_sampler": "euler_a",
    }]
    with pytest.raises(AssertionError):
        write_prompts_file(prompts, tmp_path / "prompts.txt")  # kohya would parse a .txt line by line


def test_kohya_file_names_give_epoch_and_prompt():
    pattern = file_pattern("my_lora")
    match = pattern.match("my_lora_e000012_03_20261206045501_1237.png")
    assert (match["epoch"], match["index"], match["seed"]) == ("000012", "03", "1237")
    assert pattern.match("my_lora_000040_00_20261206045501.png")["step"] == "000040"  # a step sample, no seed
    for other in ("other_e000012_03_20261206045501_1.png", "my_lora_e12_03_20261206045501_1.png", "samples.json", "contact-sheet.png"):
        assert not pattern.match(other), other


def _files(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        PILImage.new("RGB", (4, 4)).save(folder / name)


def test_sample_images_are_ordered_and_the_newest_of_a_cell_wins(tmp_path):
    _files(tmp_path, [
        "lora_e000002_01_20260101000000_2.png", "lora_e000002_00_20260101000000_1.png", "lora_e000010_00_20260101000000_1.png",
        "lora_e000001_00_20260101000000_1.png", "lora_e000001_00_20260101000009_1.png", "lora_000005_00_20260101000000_1.png",
    ])
    (tmp_path / "notes.txt").write_text("not a sample")
    images = sample_images(tmp_path, "lora", 4)
    assert [(i.epoch, i.prompt_index, i.step, i.file) for i in images] == [
        (1, 0, 4, "lora_e000001_00_20260101000009_1.png"), (2, 0, 8, "lora_e000002_00_20260101000000_1.png"),
        (2, 1, 8, "lora_e000002_01_20260101000000_2.png"), (10, 0, 40, "lora_e000010_00_20260101000000_1.png"),
    ]
    assert [i.step for i in sample_images(tmp_path, "lora", None)] == [None] * 4


@pytest.mark.parametrize("resumed_after, kept", [(2, ["lora_e000000_00_t_1.png", "lora_e000002_00_t_1.png"]), (0, [])])
def test_a_new_attempt_removes_the_samples_of_epochs_it_trains_again(tmp_path, resumed_after, kept):
    names = [f"lora_e{epoch:06d}_00_20260101000000_1.png" for epoch in (0, 2, 3)] + ["lora_000007_00_20260101000000.png"]
    _files(tmp_path, names)
    (tmp_path / "samples.json").write_text("{}")
    (tmp_path / "samples.json.tmp").write_text("{")
    (tmp_path / "other.png").write_text("not ours")
    removed = remove_superseded(tmp_path, "lora", resumed_after)
    remaining = sorted(p.name for p in tmp_path.iterdir())
    expected = sorted([n.replace("_t_", "_20260101000000_") for n in kept] + ["other.png"])
    assert remaining == expected
    assert set(removed) == set(names + ["samples.json", "samples.json.tmp"]) - set(remaining)


def test_the_manifest_has_the_contracts_fields(opt_ml):
    captioned(opt_ml.dataset, "a", "sks dog")
    prompts = plan_prompts(parse_hyperparameters({}), config_of(opt_ml))
    images = [SampleImage("lora_e000001_00_x_1234.png", 0, 1, 40), SampleImage("lora_e000001_05_x_9.png", 5, 1, 40)]
    content = manifest(prompts, images, "contact-sheet.png")
    assert content == {
        "prompts": [{"index": 0, "prompt": "sks dog", "negative_prompt": "", "seed": 1234, "width": 512, "height": 512,
                     "steps": 20, "cfg_scale": 7.0, "sampler": "euler_a"}],
        # An image of a prompt that is not this run's (index 5) is left out.
        "images": [{"file": "lora_e000001_00_x_1234.png", "prompt_index": 0, "epoch": 1, "step": 40}],
        "contact_sheet": "contact-sheet.png",
    }


@pytest.mark.parametrize("epochs, every", [(1, 1), (8, 1), (9, 3), (13, 2), (16, 2), (50, 10), (160, 20), (10000, 1250)])
def test_unset_cadence_gives_about_eight_rows_and_prefers_one_that_samples_the_last_epoch(epochs, every):
    values = parse_hyperparameters({})
    assert values["sample_every_n_epochs"] is None
    assert every_n_epochs(values, epochs) == every
    assert every_n_epochs(parse_hyperparameters({"sample_every_n_epochs": "1"}), 160) == 1  # a given value is kept


@pytest.mark.parametrize(
    "every, epochs, at_first, warned",
    [(1, 8, True, None), (4, 8, True, None), (3, 8, True, "the last epoch (8) is not sampled"),
     (10, 8, True, "only the base model (epoch 0) is sampled"), (10, 8, False, "no sample is drawn at all")],
)
def test_a_cadence_that_leaves_out_the_trained_lora_is_warned_about(every, epochs, at_first, warned):
    warning = schedule_warning(every, epochs, at_first)
    assert warning is None if warned is None else warned in warning


def test_readable_leaves_out_a_sample_cut_short(tmp_path):
    _files(tmp_path, ["lora_e000001_00_20260101000000_1.png", "lora_e000002_00_20260101000000_1.png"])
    cut = tmp_path / "lora_e000002_00_20260101000000_1.png"
    PILImage.effect_noise((64, 64), 50).save(cut)
    cut.write_bytes(cut.read_bytes()[:200])  # inside its pixel data
    good, bad = readable(tmp_path, sample_images(tmp_path, "lora", 1))
    assert [i.epoch for i in good] == [1] and bad == [cut.name]


def test_an_empty_negative_prompt_is_refused_with_a_message_that_says_why():
    from lora_trainer.errors import TrainingError

    with pytest.raises(TrainingError, match=r"1 to 1000 characters \(leave it unset for no negative prompt\), not \"\""):
        parse_hyperparameters({"sample_negative_prompt": ""})
    assert parse_hyperparameters({"sample_negative_prompt": "blurry"})["sample_negative_prompt"] == "blurry"

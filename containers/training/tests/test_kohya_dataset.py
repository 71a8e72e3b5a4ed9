"""Every dataset.toml the entrypoint writes or accepts, loaded by the pinned sd-scripts' own dataset
code as train_network.py loads it (library/config_util.py's sanitizer and blueprint, then the
dataset group, whose length after make_buckets is kohya's steps per epoch): kohya must find the
images, captions and repeats the entrypoint reported, and the steps per epoch it planned."""

import functools
import json
import math
import re
from pathlib import Path

import pytest
import toml

from conftest import SEED_TOML, write_image
from lora_trainer.command import epochs_for, kohya_args
from lora_trainer.dataset import MIN_EPOCHS
from lora_trainer.dataset_check import kohya_caption, one_or_all
from lora_trainer.main import check_inputs
from test_kohya_cli import FLUX, MODULES, launch


def kohya_dataset_group(sd_scripts, inputs):
    """kohya's training dataset group for the command line the entrypoint would run, passed through
    the trainer's own checks of it (assert_extra_args: bucket_reso_steps, SDXL caching), which kohya
    runs after loading the dataset."""
    model_type = inputs.values["model_type"]
    files = {"base_model": str(FLUX.transformer), "flux": FLUX} if model_type == "flux1" else {}
    argv = kohya_args(inputs.values, launch(dataset_config=inputs.prepared.config_path, **files))
    module = getattr(sd_scripts, MODULES[model_type])
    args = module.setup_parser().parse_args(argv)
    sd_scripts.train_util.prepare_dataset_args(args, True)
    config_util = sd_scripts.config_util
    user_config = config_util.load_user_config(str(args.dataset_config))
    blueprint = config_util.BlueprintGenerator(config_util.ConfigSanitizer(True, True, args.masked_loss, True)).generate(user_config, args)
    group, validation = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
    assert validation is None or len(validation) == 0
    trainer = {"sd15": "NetworkTrainer", "sdxl": "SdxlNetworkTrainer", "flux1": "FluxNetworkTrainer"}[model_type]
    getattr(module, trainer)().assert_extra_args(args, group, None)
    return group


def assert_kohya_agrees(sd_scripts, opt_ml, hyperparameters):
    opt_ml.hyperparameters(hyperparameters)
    inputs = check_inputs(opt_ml.paths)
    summary = inputs.prepared.summary
    group = kohya_dataset_group(sd_scripts, inputs)
    kohya_subsets = [subset for dataset in group.datasets for subset in dataset.subsets]
    assert [(s.img_count, s.num_repeats) for s in kohya_subsets] == [(s.images, s.num_repeats) for s in summary.subsets if s.images]
    assert one_or_all([d.batch_size for d in group.datasets]) == summary.batch_size
    # The captions kohya will train with are the ones the entrypoint checked.
    for dataset in group.datasets:
        for subset in dataset.subsets:
            for info in dataset.image_data.values():
                if Path(info.absolute_path).parent == Path(subset.image_dir):
                    expected = kohya_caption(Path(info.absolute_path), subset.caption_extension, subset.class_tokens, subset.enable_wildcard)
                    assert info.caption == (expected or ""), info.absolute_path
    # kohya registers only the regularization images it needs; every training image.
    views = sum(info.num_repeats for d in group.datasets for info in d.image_data.values())
    assert views == summary.images_per_epoch
    # kohya's epoch is the group's length (one batch per item): the entrypoint must plan the same.
    assert len(group) == summary.steps_per_epoch
    if inputs.values["max_train_epochs"] is None:
        assert epochs_for(inputs.values, summary.steps_per_epoch) == math.ceil(int(inputs.values["max_train_steps"]) / len(group))
    return inputs, group


def images(folder: Path, sizes, prefix="img", caption=lambda i: f"a red pokemon number {i}"):
    for index, size in enumerate(sizes):
        image = write_image(folder / f"{prefix}{index}.png", size)
        text = caption(index)
        if text is not None:
            image.with_suffix(".txt").write_text(text)


MIXED = [(640, 480), (480, 640), (512, 512), (1200, 700), (300, 900), (777, 555), (1024, 1024)]


def test_the_seed_guides_toml(sd_scripts, opt_ml):
    (opt_ml.dataset / "dataset.toml").write_text(SEED_TOML)
    images(opt_ml.dataset, MIXED[:5])
    inputs, group = assert_kohya_agrees(sd_scripts, opt_ml, {})
    assert len(group) == math.ceil(5 * 10 / 2)  # no buckets: one of 768x768, batches of 2


def test_a_generated_configuration_with_repeat_folders_and_buckets(sd_scripts, opt_ml):
    images(opt_ml.dataset / "10_pikachu", MIXED, caption=lambda i: None if i == 2 else "pikachu sitting")
    images(opt_ml.dataset / "style", MIXED[:4])
    images(opt_ml.dataset, MIXED[3:])
    assert_kohya_agrees(sd_scripts, opt_ml, {"train_batch_size": "3", "num_repeats": "2"})


def test_several_datasets_of_different_batch_sizes(sd_scripts, opt_ml):
    # Finding: the steps were planned at the largest batch size for all datasets, 1600 steps became
    # 2670. kohya sums each dataset's own batches.
    images(opt_ml.dataset / "a", MIXED)
    images(opt_ml.dataset / "b", MIXED[:3] * 1, prefix="b")
    (opt_ml.dataset / "dataset.toml").write_text(
        "[general]\nenable_bucket = true\n"
        "[[datasets]]\nbatch_size = 1\nresolution = 512\n[[datasets.subsets]]\nimage_dir = 'a'\nnum_repeats = 4\n"
        "[[datasets]]\nbatch_size = 4\nresolution = [768, 640]\nbucket_reso_steps = 128\n[[datasets.subsets]]\nimage_dir = 'b'\nnum_repeats = 3\n"
    )
    inputs, group = assert_kohya_agrees(sd_scripts, opt_ml, {})
    assert inputs.prepared.summary.steps_per_epoch != math.ceil(inputs.prepared.summary.images_per_epoch / max(inputs.prepared.summary.batch_size))


@pytest.mark.parametrize("batch, train_repeats, reg_repeats", [(2, 3, 1), (1, 3, 1), (1, 3, 4), (1, 1, 1)])
def test_regularization_images_are_balanced_as_kohya_balances_them(sd_scripts, opt_ml, batch, train_repeats, reg_repeats):
    # Fewer, as many and more regularization views than training views; batch 1 counts every view.
    images(opt_ml.dataset / "train", MIXED[:2])
    images(opt_ml.dataset / "reg", MIXED[2:7], prefix="r", caption=lambda i: None)
    (opt_ml.dataset / "dataset.toml").write_text(
        f"[[datasets]]\nbatch_size = {batch}\nenable_bucket = true\nbucket_no_upscale = true\n"
        f"[[datasets.subsets]]\nimage_dir = 'train'\nnum_repeats = {train_repeats}\n"
        f"[[datasets.subsets]]\nimage_dir = 'reg'\nis_reg = true\nclass_tokens = 'a pokemon'\nnum_repeats = {reg_repeats}\n"
    )
    assert_kohya_agrees(sd_scripts, opt_ml, {})


def test_a_hugging_face_imagefolder(sd_scripts, opt_ml):
    images(opt_ml.dataset / "train", MIXED[:4], caption=lambda i: None)
    lines = [json.dumps({"file_name": f"train/img{i}.png", "text": f"caption {i}"}) for i in range(4)]
    (opt_ml.dataset / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    assert_kohya_agrees(sd_scripts, opt_ml, {"max_train_steps": "100"})


def test_sdxl_at_a_large_resolution(sd_scripts, opt_ml):
    images(opt_ml.dataset, [(1600, 900), (2000, 2000), (900, 1600), (1024, 1024), (1100, 1000)])
    assert_kohya_agrees(sd_scripts, opt_ml, {"model_type": "sdxl", "resolution": "1280", "train_batch_size": "2"})


@pytest.mark.parametrize("wildcard", [False, True])
def test_multi_line_captions_and_class_tokens(sd_scripts, opt_ml, wildcard):
    images(opt_ml.dataset / "5_pikachu", MIXED[:3], caption=lambda i: ["first line\nsecond line\n", None, "\n\nthird"][i])
    (opt_ml.dataset / "dataset.toml").write_text(
        f"[general]\nenable_wildcard = {str(wildcard).lower()}\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = '5_pikachu'\nclass_tokens = 'pikachu'\n"
    )
    hyperparameters = {"allow_missing_captions": "true"}
    inputs, _ = assert_kohya_agrees(sd_scripts, opt_ml, hyperparameters)
    # A blank first line is an empty caption to kohya, class tokens or not (unless wildcards join lines).
    assert inputs.prepared.summary.missing_captions == ([] if wildcard else ["5_pikachu/img2.png"])


def test_an_empty_caption_file_is_refused_as_kohya_would(sd_scripts, opt_ml):
    from lora_trainer.errors import DatasetError

    images(opt_ml.dataset, MIXED[:2])
    (opt_ml.dataset / "img1.txt").write_text("")
    opt_ml.hyperparameters({})
    with pytest.raises(DatasetError, match="caption file.* are empty, which kohya refuses: img1.txt"):
        check_inputs(opt_ml.paths)
    # kohya itself: an assertion while it loads the dataset, before the model.
    (opt_ml.dataset / "dataset.toml").write_text("[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n")
    (opt_ml.dataset / "img1.txt").write_text("x")
    inputs = check_inputs(opt_ml.paths)
    (opt_ml.dataset / "img1.txt").write_text("")
    with pytest.raises(AssertionError, match="caption file is empty"):
        kohya_dataset_group(sd_scripts, inputs)


def test_face_crop_names_read_the_shorter_caption(sd_scripts, opt_ml):
    # kohya's face-crop output 'name_x_y_w_h.png' falls back to 'name.txt'.
    images(opt_ml.dataset, [(512, 512)] * 2, prefix="pika_0_0_64_", caption=lambda i: None)
    (opt_ml.dataset / "pika.txt").write_text("pikachu face")
    inputs, group = assert_kohya_agrees(sd_scripts, opt_ml, {})
    assert {info.caption for info in group.datasets[0].image_data.values()} == {"pikachu face"}
    assert inputs.prepared.summary.ignored == []  # pika.txt is a caption, not an ignored file


def test_two_subsets_of_one_folder_are_refused_since_kohya_drops_the_second(sd_scripts, opt_ml):
    from lora_trainer.errors import DatasetError

    images(opt_ml.dataset / "a", MIXED[:2])
    subsets = "[[datasets.subsets]]\nimage_dir = 'a'\nnum_repeats = 2\n[[datasets.subsets]]\nimage_dir = 'a'\nnum_repeats = 5\n"
    (opt_ml.dataset / "dataset.toml").write_text("[[datasets]]\n" + subsets)
    opt_ml.hyperparameters({})
    with pytest.raises(DatasetError, match=r"subsets\[1\] has the same image_dir as subsets\[0\]"):
        check_inputs(opt_ml.paths)
    # What kohya does with it: one subset, the second's repeats gone.
    (opt_ml.dataset / "dataset.toml").write_text("[[datasets]]\n" + subsets.split("[[datasets.subsets]]\nimage_dir = 'a'\nnum_repeats = 5")[0])
    inputs = check_inputs(opt_ml.paths)
    config = inputs.prepared.config
    config["datasets"][0]["subsets"].append({**config["datasets"][0]["subsets"][0], "num_repeats": 5})
    inputs.prepared.config_path.write_text(toml.dumps(config))
    group = kohya_dataset_group(sd_scripts, inputs)
    assert [(s.img_count, s.num_repeats) for s in group.datasets[0].subsets] == [(2, 2)]


SIZES = [(w, h) for w in (64, 100, 333, 512, 640, 700, 1023, 1024, 1500, 2048, 4000) for h in (64, 77, 480, 512, 768, 999, 1024, 1600, 3000)]


@pytest.mark.parametrize("no_upscale", [False, True])
@pytest.mark.parametrize(
    "resolution, low, high, steps",
    [((512, 512), 256, 1024, 64), ((1024, 1024), 256, 2048, 64), ((768, 640), 320, 1000, 32), ((512, 512), 200, 777, 64)],
)
def test_every_image_goes_to_kohyas_bucket(sd_scripts, no_upscale, resolution, low, high, steps):
    from lora_trainer.buckets import BucketSettings, bucket_chooser

    settings = BucketSettings(resolution, 1, True, no_upscale, low, high, steps)
    ours = bucket_chooser(settings)
    # As DreamBoothDataset sets kohya's BucketManager up: min/max rounded to the step by kohya's own code.
    low, high = sd_scripts.train_util.BaseDataset.adjust_min_max_bucket_reso_by_steps(None, resolution, low, high, steps)
    kohya = sd_scripts.train_util.BucketManager(no_upscale, resolution, low, high, steps)
    if not no_upscale:
        kohya.make_buckets()
    assert [ours(size) for size in SIZES] == [tuple(kohya.select_bucket(*size)[0]) for size in SIZES]


BUCKETED = "[[datasets]]\nenable_bucket = true\nbucket_reso_steps = 32\n[[datasets.subsets]]\nimage_dir = '.'\n"


def test_bucket_steps_of_32_are_refused_for_sd15_and_flux1_and_kept_for_sdxl(sd_scripts, opt_ml):
    from lora_trainer.errors import DatasetError

    images(opt_ml.dataset, MIXED[:3])
    (opt_ml.dataset / "dataset.toml").write_text(BUCKETED)
    opt_ml.hyperparameters({})
    with pytest.raises(DatasetError, match=r"datasets\[0\] has bucket_reso_steps = 32, which kohya refuses for sd15: it must be a multiple of 64"):
        check_inputs(opt_ml.paths)
    opt_ml.hyperparameters({"model_type": "flux1"})
    with pytest.raises(DatasetError, match=r"bucket_reso_steps = 32, which kohya refuses for flux1: it must be a multiple of 64"):
        check_inputs(opt_ml.paths)
    inputs, _ = assert_kohya_agrees(sd_scripts, opt_ml, {"model_type": "sdxl"})  # SDXL needs a multiple of 32
    for model_type in ("sd15", "flux1"):
        # What kohya does with it: FLUX.1's assert_extra_args runs train_network.py's (64) before its own (32).
        inputs.values["model_type"] = model_type
        with pytest.raises(AssertionError, match="must be divisible by 64"):
            kohya_dataset_group(sd_scripts, inputs)


def test_images_smaller_than_a_bucket_step_are_refused(sd_scripts, opt_ml):
    from lora_trainer.errors import DatasetError

    images(opt_ml.dataset, [(512, 512), (64, 64), (48, 48), (640, 40)])
    opt_ml.hyperparameters({})
    with pytest.raises(DatasetError, match=r"^2 image\(s\) are smaller than one bucket step.*: img2.png \(48x48\), img3.png \(640x40\)\. "
                       r"Use images of at least 64 px per side, or set enable_bucket = false\."):
        check_inputs(opt_ml.paths)
    # What kohya does with a 48x48 image in the generated configuration (bucket_no_upscale): it divides by 0.
    (opt_ml.dataset / "img3.png").unlink()
    write_image(opt_ml.dataset / "img2.png", (64, 64))
    inputs, _ = assert_kohya_agrees(sd_scripts, opt_ml, {})  # the negative control: 64 px is enough
    write_image(opt_ml.dataset / "img2.png", (48, 48))
    with pytest.raises(ZeroDivisionError):
        kohya_dataset_group(sd_scripts, inputs)


def test_captions_that_are_not_utf8_are_refused(sd_scripts, opt_ml):
    from lora_trainer.errors import DatasetError

    images(opt_ml.dataset, MIXED[:3])
    (opt_ml.dataset / "img1.txt").write_bytes("caf\u00e9 pikachu".encode("latin-1"))
    opt_ml.hyperparameters({})
    with pytest.raises(DatasetError, match=r"^1 caption file\(s\) are not UTF-8 text, which kohya cannot read: img1.txt\. Save them as UTF-8\."):
        check_inputs(opt_ml.paths)
    (opt_ml.dataset / "img1.txt").write_text("caf\u00e9 pikachu", encoding="utf-8")
    inputs, _ = assert_kohya_agrees(sd_scripts, opt_ml, {})  # the same caption in UTF-8 passes
    (opt_ml.dataset / "img1.txt").write_bytes("caf\u00e9 pikachu".encode("latin-1"))
    with pytest.raises(UnicodeDecodeError):  # kohya, while it loads the dataset
        kohya_dataset_group(sd_scripts, inputs)


def test_default_repeats_are_lowered_by_kohyas_bucketed_steps(sd_scripts, opt_ml):
    # 40 images, each in a bucket of its own at batch 4: 5 repeats (200 views / 4 = 50 steps if
    # there were no buckets) are 2 batches per bucket, 80 steps an epoch, 3 epochs of 200 steps.
    images(opt_ml.dataset, [(64 * a + 10, 64 * b + 5) for a in range(1, 9) for b in range(1, 6)])
    inputs, group = assert_kohya_agrees(sd_scripts, opt_ml, {"max_train_steps": "200", "train_batch_size": "4"})
    [subset] = inputs.prepared.config["datasets"][0]["subsets"]
    assert subset["num_repeats"] == 4 and math.ceil(200 / len(group)) >= MIN_EPOCHS
    # One more repeat would leave fewer epochs, as kohya counts them: 4 is the most that leaves MIN_EPOCHS.
    subset["num_repeats"] = 5
    inputs.prepared.config_path.write_text(toml.dumps(inputs.prepared.config))
    assert math.ceil(200 / len(kohya_dataset_group(sd_scripts, inputs))) < MIN_EPOCHS


# Values of dataset.toml checked against kohya's own schema (library/config_util.py ConfigSanitizer)
# and its later use of them. A case is (where, key, value as written in TOML).
def toml_with(where: str, setting: str) -> str:
    """Two subsets of one bucketed dataset, with the `setting` line in the table at `where`."""
    lines = {"general": "", "datasets[0]": "", "datasets[0].subsets[0]": "", "datasets[0].subsets[1]": ""}
    lines[where] = f"{setting}\n"
    return (
        "[general]\nenable_bucket = true\n" + lines["general"] + "[[datasets]]\n" + lines["datasets[0]"]
        + "[[datasets.subsets]]\nimage_dir = 'a'\n" + lines["datasets[0].subsets[0]"]
        + "[[datasets.subsets]]\nimage_dir = 'b'\n" + lines["datasets[0].subsets[1]"]
    )


def table_at(config: dict, where: str) -> dict:
    table = config
    for part in where.replace("]", "").replace("[", ".").split("."):
        table = table[int(part)] if part.isdigit() else table[part]
    return table


def two_subsets(opt_ml):
    images(opt_ml.dataset / "a", MIXED[:2])
    images(opt_ml.dataset / "b", MIXED[2:4], prefix="b")


def kohya_with(sd_scripts, opt_ml, where, key, value):
    """kohya's dataset group for the configuration the entrypoint writes for the case's table without
    the value, with the value put back: what kohya would do with it, had the entrypoint let it by."""
    (opt_ml.dataset / "dataset.toml").write_text(toml_with(where, ""))
    opt_ml.hyperparameters({})
    inputs = check_inputs(opt_ml.paths)
    config = inputs.prepared.config
    table_at(config, where)[key] = toml.loads(f"v = {value}")["v"]
    inputs.prepared.config_path.write_text(toml.dumps(config))
    return kohya_dataset_group(sd_scripts, inputs)


KOHYA_SCHEMA = "voluptuous"  # refused by kohya's ConfigSanitizer, before the dataset is read
BAD_VALUES = [
    # (where, key, value, what the entrypoint says is allowed, how kohya refuses it)
    ("datasets[0]", "bucket_reso_steps", '"64"', "a whole number of 1 or more, without quotes", KOHYA_SCHEMA),
    ("datasets[0]", "bucket_reso_steps", "0", "a whole number of 1 or more", ZeroDivisionError),
    ("datasets[0]", "batch_size", "0", "a whole number of 1 or more", ZeroDivisionError),
    ("datasets[0]", "batch_size", '"2"', "a whole number of 1 or more, without quotes", KOHYA_SCHEMA),
    ("general", "batch_size", "2.0", "a whole number of 1 or more", KOHYA_SCHEMA),
    ("datasets[0].subsets[1]", "num_repeats", "1.5", "a whole number of 0 or more (0 skips the subset)", KOHYA_SCHEMA),
    ("datasets[0].subsets[0]", "num_repeats", '"3"', "a whole number of 0 or more (0 skips the subset), without quotes", KOHYA_SCHEMA),
    ("datasets[0]", "resolution", '"512"', "a whole number of pixels, or [width, height], without quotes", KOHYA_SCHEMA),
    ("datasets[0]", "resolution", "[512]", "a whole number of pixels, or [width, height]", KOHYA_SCHEMA),
    ("datasets[0]", "resolution", "[512, 512, 512]", "a whole number of pixels, or [width, height]", KOHYA_SCHEMA),
    ("datasets[0]", "resolution", "512.0", "a whole number of pixels, or [width, height]", KOHYA_SCHEMA),
    ("datasets[0]", "resolution", "0", "a whole number of pixels, or [width, height]", AssertionError),
    ("general", "resolution", "[768, 0]", "a whole number of pixels, or [width, height]", AssertionError),
    ("datasets[0]", "min_bucket_reso", '"256"', "a whole number of 1 or more, without quotes", KOHYA_SCHEMA),
    ("datasets[0]", "min_bucket_reso", "0", "a whole number of 1 or more", ZeroDivisionError),
    ("datasets[0]", "max_bucket_reso", "1024.0", "a whole number of 1 or more", KOHYA_SCHEMA),
    ("datasets[0]", "max_bucket_reso", "0", "a whole number of 1 or more", AssertionError),
    ("datasets[0]", "enable_bucket", '"yes"', "true or false, without quotes", KOHYA_SCHEMA),
    ("datasets[0]", "bucket_no_upscale", "1", "true or false", KOHYA_SCHEMA),
    ("general", "caption_extension", "5", "a quoted string", KOHYA_SCHEMA),
    ("datasets[0].subsets[1]", "class_tokens", "3", "a quoted string", KOHYA_SCHEMA),
    ("datasets[0].subsets[0]", "is_reg", '"true"', "true or false, without quotes", KOHYA_SCHEMA),
    ("datasets[0]", "network_multiplier", "1", "a number with a decimal point, like 1.0", KOHYA_SCHEMA),
    ("datasets[0].subsets[0]", "face_crop_aug_range", "[1, 1]", "two numbers with decimal points, like [0.5, 1.0]", KOHYA_SCHEMA),
    ("general", "shuffle_caption", '"false"', "true or false, without quotes", KOHYA_SCHEMA),
    ("datasets[0].subsets[0]", "keep_tokens", "1.0", "a whole number of 0 or more", KOHYA_SCHEMA),
    ("general", "caption_dropout_rate", '"0.1"', "a number from 0 to 1, without quotes", KOHYA_SCHEMA),
    ("datasets[0]", "custom_attributes", '"x"', "a table, without quotes", KOHYA_SCHEMA),
]


@pytest.mark.parametrize("where, key, value, allowed, kohya_refusal", BAD_VALUES, ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_value_is_refused_here_as_kohya_would_refuse_it(sd_scripts, opt_ml, where, key, value, allowed, kohya_refusal):
    from lora_trainer.errors import DatasetError

    two_subsets(opt_ml)
    (opt_ml.dataset / "dataset.toml").write_text(toml_with(where, f"{key} = {value}"))
    opt_ml.hyperparameters({})
    with pytest.raises(DatasetError) as raised:
        check_inputs(opt_ml.paths)
    assert str(raised.value) == f"dataset.toml: {where}.{key} = {json.dumps(toml.loads(f'v = {value}')['v'])} must be {allowed}."
    refusal = sd_scripts.config_util.MultipleInvalid if kohya_refusal == KOHYA_SCHEMA else kohya_refusal
    with pytest.raises(refusal):
        kohya_with(sd_scripts, opt_ml, where, key, value)


GOOD_VALUES = [
    ("datasets[0]", "bucket_reso_steps", "128"),
    ("datasets[0]", "batch_size", "2"),
    ("datasets[0].subsets[1]", "num_repeats", "0"),  # kohya's and the folder names' "skip this subset"
    ("datasets[0]", "resolution", "[640, 512]"),
    ("general", "resolution", "768"),
    ("datasets[0]", "min_bucket_reso", "320"),
    ("datasets[0]", "max_bucket_reso", "2048"),
    ("datasets[0]", "enable_bucket", "false"),
    ("general", "caption_extension", "'.txt'"),
    ("datasets[0].subsets[1]", "class_tokens", "'pikachu'"),
    ("datasets[0].subsets[1]", "is_reg", "true"),
    ("datasets[0]", "network_multiplier", "1.0"),
    ("datasets[0].subsets[0]", "face_crop_aug_range", "[0.5, 1.0]"),
    ("general", "keep_tokens", "0"),
    ("general", "caption_dropout_rate", "0"),  # kohya takes an integer here
    ("datasets[0]", "custom_attributes", "{ style = 'flat' }"),
]


@pytest.mark.parametrize("where, key, value", GOOD_VALUES, ids=lambda v: v)
def test_a_good_value_is_accepted_here_and_by_kohya(sd_scripts, opt_ml, where, key, value):
    two_subsets(opt_ml)
    (opt_ml.dataset / "dataset.toml").write_text(toml_with(where, f"{key} = {value}"))
    inputs, _ = assert_kohya_agrees(sd_scripts, opt_ml, {})
    assert table_at(inputs.prepared.config, where)[key] == toml.loads(f"v = {value}")["v"]


# Refused here though kohya takes them, each with what kohya would silently do instead.
STRICTER = [
    ("datasets[0].subsets[1]", "num_repeats", "-1", "a whole number of 0 or more"),  # kohya skips the subset, as for 0
    ("datasets[0].subsets[0]", "keep_tokens", "-1", "a whole number of 0 or more"),  # kohya keeps no tokens, as for 0
    ("datasets[0]", "batch_size", "true", "a whole number of 1 or more"),  # kohya trains at batch size 1
    ("general", "caption_dropout_rate", "1.5", "a number from 0 to 1"),  # kohya drops every caption
    ("datasets[0]", "batch_size", "-2", "a whole number of 1 or more"),  # kohya's epoch would have no steps
]


@pytest.mark.parametrize("where, key, value, allowed", STRICTER, ids=lambda v: v)
def test_a_value_kohya_would_misread_is_refused_here(sd_scripts, opt_ml, where, key, value, allowed):
    from lora_trainer.errors import DatasetError

    two_subsets(opt_ml)
    (opt_ml.dataset / "dataset.toml").write_text(toml_with(where, f"{key} = {value}"))
    opt_ml.hyperparameters({})
    with pytest.raises(DatasetError, match=rf"^dataset.toml: {re.escape(where)}.{key} = .* must be {allowed}"):
        check_inputs(opt_ml.paths)
    kohya_with(sd_scripts, opt_ml, where, key, value)  # kohya loads it without complaint


@functools.cache
def kohya_sanitizer(config_util):
    """kohya's ConfigSanitizer as train_network.py builds it (DreamBooth, fine-tuning, dropout)."""
    return config_util.ConfigSanitizer(True, True, False, True)


def kohya_accepts(sd_scripts, level: str, key: str, value) -> bool:
    """Whether kohya's schema takes `key = value` at `level` of dataset.toml."""
    config_util = sd_scripts.config_util
    subset = {"image_dir": "images", key: value} if level == "subsets" else {"image_dir": "images"}
    dataset = {key: value, "subsets": [subset]} if level == "datasets" else {"subsets": [subset]}
    config = {"general": {key: value}} if level == "general" else {"datasets": [dataset]}
    try:
        kohya_sanitizer(config_util).sanitize_user_config(config)
    except config_util.MultipleInvalid:
        return False
    return True


SAMPLES = [0, 1, -1, 64, 1.5, 1.0, 0.5, True, False, "x", "64", "true", [512, 768], [512], [0, 512], [0.5, 1.0], [1, 1], {"a": 1}]


def test_every_key_kohya_types_is_typed_here(sd_scripts):
    from lora_trainer.dataset_schema import ALLOWED_KEYS, RULES

    sanitizer = kohya_sanitizer(sd_scripts.config_util)
    kohya = {
        "general": set(sanitizer.general_schema),
        "datasets": {str(key) for key in sanitizer.db_dataset_schema},
        # A fine-tuning subset's metadata_file is turned into a DreamBooth subset here.
        "subsets": {str(key) for key in sanitizer.db_subset_schema | sanitizer.ft_subset_schema},
    }
    assert ALLOWED_KEYS == kohya
    assert {level: set(rules) for level, rules in RULES.items()} == {**kohya, "datasets": kohya["datasets"] - {"subsets"}}


@pytest.mark.parametrize("level", ["general", "datasets", "subsets"])
def test_the_value_rules_are_kohyas_types_with_ranges(sd_scripts, level):
    """Whatever the entrypoint accepts kohya's schema accepts; where kohya accepts what the entrypoint
    refuses, it is a number out of range or true/false read as a number (1 or 0) by kohya."""
    from lora_trainer.dataset_schema import RULES

    for key, rule in RULES[level].items():
        for value in SAMPLES:
            ours, theirs = rule.accepts(value), kohya_accepts(sd_scripts, level, key, value)
            if ours:
                assert theirs, (level, key, value)
            elif theirs:
                numbers = value if isinstance(value, list) else [value]
                assert all(isinstance(n, (int, float)) for n in numbers), (level, key, value)


@pytest.mark.parametrize(
    "key, value, message, kohya_refusal",
    [
        ("min_bucket_reso", "600", r"min_bucket_reso = 600, larger than the resolution's shorter side \(512\), which kohya refuses", AssertionError),
        ("max_bucket_reso", "448", r"max_bucket_reso = 448, smaller than the resolution's longer side \(512\), which kohya refuses", AssertionError),
        ("min_bucket_reso", "32", r"min_bucket_reso = 32, below one bucket step \(64\): kohya's smallest bucket would be 0 px", ZeroDivisionError),
    ],
)
def test_bucket_limits_that_exclude_the_resolution_are_refused(sd_scripts, opt_ml, key, value, message, kohya_refusal):
    from lora_trainer.errors import DatasetError

    two_subsets(opt_ml)
    (opt_ml.dataset / "dataset.toml").write_text(toml_with("datasets[0]", f"{key} = {value}"))
    opt_ml.hyperparameters({})
    with pytest.raises(DatasetError, match=rf"^dataset.toml: datasets\[0\] has {message}"):
        check_inputs(opt_ml.paths)
    with pytest.raises(kohya_refusal):
        kohya_with(sd_scripts, opt_ml, "datasets[0]", key, value)


@pytest.mark.parametrize(
    "settings",
    [
        "min_bucket_reso = 540",  # kohya rounds it down to the step, 512: the resolution's side
        "max_bucket_reso = 450",  # and this up to 512
        "min_bucket_reso = 32\nbucket_no_upscale = true",  # buckets come from the image sizes, not the minimum
    ],
)
def test_bucket_limits_kohya_rounds_to_the_resolution_are_accepted(sd_scripts, opt_ml, settings):
    two_subsets(opt_ml)
    (opt_ml.dataset / "dataset.toml").write_text(toml_with("datasets[0]", settings))
    assert_kohya_agrees(sd_scripts, opt_ml, {})


def test_flux_caches_text_encoder_outputs_so_caption_shuffling_is_refused_as_kohya_would(sd_scripts, opt_ml):
    from lora_trainer.errors import TrainingError

    images(opt_ml.dataset, MIXED[:2])
    (opt_ml.dataset / "dataset.toml").write_text("[general]\nshuffle_caption = true\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n")
    opt_ml.hyperparameters({"model_type": "flux1"})
    with pytest.raises(TrainingError, match="cache_text_encoder_outputs cannot be combined with shuffle_caption"):
        check_inputs(opt_ml.paths)
    (opt_ml.dataset / "dataset.toml").write_text("[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n")
    inputs, _ = assert_kohya_agrees(sd_scripts, opt_ml, {"model_type": "flux1"})
    inputs.prepared.config_path.write_text("[general]\nshuffle_caption = true\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = '" + str(opt_ml.dataset) + "'\n")
    with pytest.raises(AssertionError, match="when caching Text Encoder output"):  # flux_train_network.py's own refusal
        kohya_dataset_group(sd_scripts, inputs)

import json
import os

import pytest
import toml

from conftest import SEED_TOML, write_image
from lora_trainer.dataset import DatasetError, DatasetOptions, prepare_dataset

OPTIONS = DatasetOptions(resolution=512, batch_size=1, num_repeats=10)


def prepare(opt_ml, options=OPTIONS):
    return prepare_dataset(opt_ml.dataset, opt_ml.paths.work, options)


def test_the_seed_guides_toml_verbatim(opt_ml):
    (opt_ml.dataset / "dataset.toml").write_text(SEED_TOML)
    opt_ml.captioned_images(3)
    prepared = prepare(opt_ml)
    written = toml.loads(prepared.config_path.read_text())
    # The guide's /opt/ml/input/data/images/ is the channel it mounted; here the dataset channel.
    assert written["datasets"][0]["subsets"][0]["image_dir"] == str(opt_ml.dataset.resolve())
    assert written["datasets"][0]["resolution"] == [768, 768]
    assert written["general"] == {"shuffle_caption": True, "caption_extension": ".txt", "keep_tokens": 1}
    assert prepared.summary.source == "dataset.toml"
    assert (prepared.summary.images, prepared.summary.captioned, prepared.summary.batch_size) == (3, 3, 2)
    # num_repeats is not in the toml: the hyperparameter (passed as --dataset_repeats) applies.
    assert prepared.summary.images_per_epoch == 30


def test_relative_image_dir_and_an_absolute_path_under_the_dataset_channel(opt_ml):
    opt_ml.captioned_images(2, opt_ml.dataset / "a")
    opt_ml.captioned_images(1, opt_ml.dataset / "b")
    (opt_ml.dataset / "dataset.toml").write_text(
        "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\nnum_repeats = 3\n"
        "[[datasets.subsets]]\nimage_dir = '/opt/ml/input/data/dataset/b'\n"
    )
    prepared = prepare(opt_ml)
    subsets = prepared.config["datasets"][0]["subsets"]
    assert [s["image_dir"] for s in subsets] == [str((opt_ml.dataset / "a").resolve()), str((opt_ml.dataset / "b").resolve())]
    assert prepared.summary.images_per_epoch == 2 * 3 + 1 * 10
    assert prepared.config["general"]["caption_extension"] == ".txt"


@pytest.mark.parametrize(
    "image_dir, message",
    [
        ("../outside", "leads outside the dataset folder"),
        ("a/../../outside", "leads outside the dataset folder"),
        ("/etc", "is outside the dataset folder"),
        ("/opt/ml/input/data/dataset/../../config", "leads outside the dataset folder"),
        ("/opt/ml/model", "is outside the dataset folder"),
    ],
)
def test_a_path_that_escapes_the_channel_is_refused(opt_ml, image_dir, message):
    outside = opt_ml.dataset.parent / "outside"
    opt_ml.captioned_images(1, outside)
    opt_ml.captioned_images(1, opt_ml.dataset / "a")
    (opt_ml.dataset / "dataset.toml").write_text(f"[[datasets]]\n[[datasets.subsets]]\nimage_dir = '{image_dir}'\n")
    with pytest.raises(DatasetError, match=message):
        prepare(opt_ml)


def test_a_symlink_out_of_the_channel_is_refused(opt_ml):
    outside = opt_ml.dataset.parent / "outside"
    opt_ml.captioned_images(1, outside)
    os.symlink(outside, opt_ml.dataset / "link")
    (opt_ml.dataset / "dataset.toml").write_text("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'link'\n")
    with pytest.raises(DatasetError, match="leads outside the dataset folder"):
        prepare(opt_ml)


@pytest.mark.parametrize("content", ["", "\n  \n", "# just a comment\n"])
def test_an_empty_toml_gets_defaults_by_model_type(opt_ml, content):
    (opt_ml.dataset / "dataset.toml").write_text(content)
    opt_ml.captioned_images(4)
    prepared = prepare(opt_ml, DatasetOptions(resolution=1024, batch_size=2, num_repeats=5))
    dataset = prepared.config["datasets"][0]
    assert (dataset["resolution"], dataset["batch_size"], dataset["enable_bucket"]) == (1024, 2, True)
    assert dataset["subsets"] == [{"image_dir": str(opt_ml.dataset.resolve()), "num_repeats": 5}]
    assert prepared.summary.source == "an empty dataset.toml"
    assert prepared.summary.images_per_epoch == 20


def test_kohya_repeat_folders_without_a_toml(opt_ml):
    opt_ml.captioned_images(2, opt_ml.dataset / "20_pikachu_style")
    opt_ml.captioned_images(1, opt_ml.dataset / "plain")
    write_image(opt_ml.dataset / "5_sks dog" / "dog.jpg", fmt="JPEG")  # no caption: its class tokens are used
    prepared = prepare(opt_ml)
    subsets = prepared.config["datasets"][0]["subsets"]
    assert [(os.path.basename(s["image_dir"]), s["num_repeats"], s.get("class_tokens")) for s in subsets] == [
        ("20_pikachu_style", 20, "pikachu_style"),  # kohya keeps the underscores
        ("5_sks dog", 5, "sks dog"),
        ("plain", 10, None),
    ]
    assert prepared.summary.images_per_epoch == 2 * 20 + 1 * 5 + 1 * 10
    assert prepared.summary.source == "the folder layout (no dataset.toml)"


def test_a_hugging_face_imagefolder_becomes_captions(opt_ml):
    for index in range(3):
        write_image(opt_ml.dataset / f"p{index}.png")
    (opt_ml.dataset / "p2.txt").write_text("its own caption wins")
    lines = [{"file_name": f"p{index}.png", "text": f"green pokemon {index}"} for index in range(3)]
    (opt_ml.dataset / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    prepared = prepare(opt_ml)
    staged = prepared.config["datasets"][0]["subsets"][0]["image_dir"]
    assert staged.startswith(str(opt_ml.paths.work))
    captions = {name: open(os.path.join(staged, name)).read() for name in sorted(os.listdir(staged)) if name.endswith(".txt")}
    assert captions == {"p0.txt": "green pokemon 0", "p1.txt": "green pokemon 1", "p2.txt": "its own caption wins"}
    assert prepared.summary.captioned == 3
    assert not (opt_ml.dataset / "p0.txt").exists()  # the channel is left as it was


def test_metadata_jsonl_named_in_the_toml(opt_ml):
    write_image(opt_ml.dataset / "images" / "a.png")
    (opt_ml.dataset / "images" / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "menacing"}) + "\n")
    (opt_ml.dataset / "dataset.toml").write_text(
        "[[datasets]]\n[[datasets.subsets]]\nmetadata_file = '/opt/ml/input/data/images/images/metadata.jsonl'\n"
    )
    prepared = prepare(opt_ml)
    subset = prepared.config["datasets"][0]["subsets"][0]
    assert "metadata_file" not in subset
    assert open(os.path.join(subset["image_dir"], "a.txt")).read() == "menacing"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "metadata.jsonl line 1 is not JSON"),
        ('{"image": "a.png", "caption": "x"}', 'needs "file_name" and "text"'),
        ('{"file_name": "missing.png", "text": "x"}', "names 'missing.png', which is not in the dataset"),
        ('{"file_name": "../../../etc/passwd", "text": "x"}', "leads outside the dataset folder"),
    ],
)
def test_bad_metadata_jsonl(opt_ml, line, message):
    write_image(opt_ml.dataset / "a.png")
    (opt_ml.dataset / "metadata.jsonl").write_text(line + "\n")
    with pytest.raises(DatasetError, match=message):
        prepare(opt_ml)


def test_missing_captions_are_listed(opt_ml):
    opt_ml.captioned_images(2)
    write_image(opt_ml.dataset / "lonely.png")
    write_image(opt_ml.dataset / "blank.png")
    (opt_ml.dataset / "blank.txt").write_text("  \n")
    with pytest.raises(DatasetError) as raised:
        prepare(opt_ml)
    assert str(raised.value).startswith("2 of 4 image(s) have no caption: blank.png, lonely.png. Add a same-name .txt file")


def test_missing_captions_can_be_allowed(opt_ml):
    opt_ml.captioned_images(1)
    write_image(opt_ml.dataset / "lonely.png")
    prepared = prepare(opt_ml, DatasetOptions(512, 1, 10, allow_missing_captions=True))
    assert prepared.summary.missing_captions == ["lonely.png"]
    assert any("without caption: lonely.png" in line for line in prepared.summary.lines())


def test_long_lists_are_cut(opt_ml):
    for index in range(25):
        write_image(opt_ml.dataset / f"u{index:02d}.png")
    with pytest.raises(DatasetError, match=r"u19.png and 5 more\."):
        prepare(opt_ml)


@pytest.mark.parametrize("layout", ["empty folder", "only captions", "toml pointing at an empty folder"])
def test_no_images(opt_ml, layout):
    if layout == "only captions":
        (opt_ml.dataset / "a.txt").write_text("caption without image")
    if layout == "toml pointing at an empty folder":
        (opt_ml.dataset / "empty").mkdir()
        (opt_ml.dataset / "dataset.toml").write_text("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'empty'\n")
    with pytest.raises(DatasetError, match="no images"):
        prepare(opt_ml)


def test_no_dataset_channel(opt_ml):
    opt_ml.dataset.rmdir()
    with pytest.raises(DatasetError, match="no 'dataset' channel"):
        prepare(opt_ml)


def test_undecodable_images_fail_before_training(opt_ml):
    opt_ml.captioned_images(1)
    (opt_ml.dataset / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (opt_ml.dataset / "broken.txt").write_text("x")
    truncated = write_image(opt_ml.dataset / "cut.jpg", size=(64, 64), fmt="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:200])
    (opt_ml.dataset / "cut.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"^2 image\(s\) cannot be decoded: broken.png \(.+\), cut.jpg \(.+\)"):
        prepare(opt_ml)


def test_unsupported_files_are_ignored_and_reported(opt_ml):
    opt_ml.captioned_images(1)
    (opt_ml.dataset / "notes.md").write_text("x")
    (opt_ml.dataset / "clip.gif").write_bytes(b"GIF89a")
    (opt_ml.dataset / "orphan.txt").write_text("no image")
    (opt_ml.dataset / "train.json").write_text("{}")
    prepared = prepare(opt_ml)
    assert prepared.summary.ignored == ["clip.gif", "notes.md", "orphan.txt"]
    assert prepared.summary.images == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ("[[datasets]\n", "dataset.toml is not valid TOML"),
        ("[general]\nshuffle_caption = true\n", "has no \\[\\[datasets\\]\\] table"),
        ("[[datasets]]\nresolution = 512\n", "has no \\[\\[datasets.subsets\\]\\]"),
        ("[[datasets]]\n[[datasets.subsets]]\nnum_repeats = 2\n", "needs an image_dir"),
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'nope'\n", "'nope' is not a folder in the dataset"),
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\nresolution = 512\n", "subsets\\[0\\].resolution is not a kohya dataset setting \\(it belongs in general or datasets\\)"),
        ("[general]\nlearning_rate = 1\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n", "general.learning_rate is not a kohya dataset setting"),
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\nmetadata_file = 'meta.json'\n", "must be a Hugging Face imagefolder metadata.jsonl"),
    ],
)
def test_toml_mistakes_name_the_fix(opt_ml, content, message):
    opt_ml.captioned_images(1)
    (opt_ml.dataset / "dataset.toml").write_text(content)
    with pytest.raises(DatasetError, match=message):
        prepare(opt_ml)


def test_every_bad_value_is_named_in_one_message(opt_ml):
    # Each with its place, the value as written and what is allowed, so one upload fixes them all
    # (tests/test_kohya_dataset.py holds each rule to kohya's own schema).
    opt_ml.captioned_images(1, opt_ml.dataset / "a")
    opt_ml.captioned_images(1, opt_ml.dataset / "b")
    (opt_ml.dataset / "dataset.toml").write_text(
        "[general]\nbatch_size = '2'\nlearning_rate = 1e-4\n[[datasets]]\nresolution = [512]\nenable_bucket = 'yes'\n"
        "[[datasets.subsets]]\nimage_dir = 'a'\nclass_tokens = 3\n[[datasets.subsets]]\nimage_dir = 'b'\nnum_repeats = -1\n"
    )
    with pytest.raises(DatasetError) as raised:
        prepare(opt_ml)
    assert str(raised.value) == (
        "dataset.toml: general.learning_rate is not a kohya dataset setting; "
        'general.batch_size = "2" must be a whole number of 1 or more, without quotes; '
        "datasets[0].resolution = [512] must be a whole number of pixels, or [width, height]; "
        'datasets[0].enable_bucket = "yes" must be true or false, without quotes; '
        "datasets[0].subsets[0].class_tokens = 3 must be a quoted string; "
        "datasets[0].subsets[1].num_repeats = -1 must be a whole number of 0 or more (0 skips the subset)."
    )


@pytest.mark.parametrize("setting", ["bucket_reso_steps = 0", "batch_size = 0", "min_bucket_reso = 0", "resolution = 0", "bucket_reso_steps = '64'"])
def test_a_value_that_would_crash_the_planning_is_a_dataset_error(opt_ml, setting):
    # These were ZeroDivisionError or TypeError in the step planning: an "internal error".
    opt_ml.captioned_images(1)
    (opt_ml.dataset / "dataset.toml").write_text(f"[[datasets]]\nenable_bucket = true\n{setting}\n[[datasets.subsets]]\nimage_dir = '.'\n")
    with pytest.raises(DatasetError, match=rf"^dataset.toml: datasets\[0\].{setting.split()[0]} = .* must be "):
        prepare(opt_ml, DatasetOptions(512, 1, 10, max_train_steps=100, num_repeats_given=False))


def test_content_hash_follows_images_captions_and_toml(opt_ml):
    opt_ml.captioned_images(2)
    (opt_ml.dataset / "dataset.toml").write_text("")
    first = prepare(opt_ml).summary.content_sha256
    assert prepare(opt_ml).summary.content_sha256 == first
    (opt_ml.dataset / "img0.txt").write_text("another caption")
    second = prepare(opt_ml).summary.content_sha256
    (opt_ml.dataset / "dataset.toml").write_text("# changed\n")
    third = prepare(opt_ml).summary.content_sha256
    assert len({first, second, third}) == 3


def test_the_summary_is_printed_in_words(opt_ml):
    opt_ml.captioned_images(2, opt_ml.dataset / "3_cat")
    lines = prepare(opt_ml).summary.lines()
    assert lines[0].startswith("dataset: 2 images (2 captioned) in 1 subset(s), 6 image views per epoch, batch size 1")
    assert lines[1] == "  subset 3_cat: 2 images x 3 repeats, captions from .txt, class tokens 'cat'"
    assert lines[-1].startswith("  content sha256: ")


def test_file_names_kohya_would_not_train_are_not_counted(opt_ml):
    opt_ml.captioned_images(1)
    write_image(opt_ml.dataset / "b.bmp", fmt="BMP")
    (opt_ml.dataset / "b.txt").write_text("bitmap")
    write_image(opt_ml.dataset / "Mixed.Png", fmt="PNG")  # kohya globs *.png and *.PNG, not *.Png
    write_image(opt_ml.dataset / "0_skipped" / "x.png")  # kohya skips folders with 0 repeats
    prepared = prepare(opt_ml)
    assert prepared.summary.images == 2
    assert prepared.summary.ignored == ["0_skipped/x.png", "Mixed.Png"]


def test_an_imagefolder_whose_file_names_name_subfolders(opt_ml):
    for split in ("train", "extra"):
        write_image(opt_ml.dataset / split / f"{split}.png")
    lines = [{"file_name": "train/train.png", "text": "from the train split"}, {"file_name": "extra/extra.png", "text": "extra"}]
    (opt_ml.dataset / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    prepared = prepare(opt_ml)
    [subset] = prepared.config["datasets"][0]["subsets"]  # the listed folders are not subsets of their own
    staged = subset["image_dir"]
    assert sorted(os.listdir(staged)) == ["extra__extra.png", "extra__extra.txt", "train__train.png", "train__train.txt"]
    assert open(os.path.join(staged, "train__train.txt")).read() == "from the train split"
    assert (prepared.summary.images, prepared.summary.captioned) == (2, 2)


def test_a_jsonl_file_name_that_is_not_an_image(opt_ml):
    (opt_ml.dataset / "clip.gif").write_bytes(b"GIF89a")
    (opt_ml.dataset / "metadata.jsonl").write_text(json.dumps({"file_name": "clip.gif", "text": "x"}))
    with pytest.raises(DatasetError, match="not an image kohya trains"):
        prepare(opt_ml)


def test_regularization_images_double_an_epoch(opt_ml):
    opt_ml.captioned_images(3, opt_ml.dataset / "train")
    opt_ml.captioned_images(7, opt_ml.dataset / "reg", prefix="reg")
    (opt_ml.dataset / "dataset.toml").write_text(
        "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'train'\nnum_repeats = 2\n"
        "[[datasets.subsets]]\nimage_dir = 'reg'\nis_reg = true\nnum_repeats = 1\n"
    )
    # kohya fills the regularization views up to (or trims them down to) the 6 training views.
    assert prepare(opt_ml).summary.images_per_epoch == 12


def test_validation_splits_are_refused(opt_ml):
    opt_ml.captioned_images(2)
    (opt_ml.dataset / "dataset.toml").write_text("[[datasets]]\nvalidation_split = 0.1\n[[datasets.subsets]]\nimage_dir = '.'\n")
    with pytest.raises(DatasetError, match="validation_split and validation_seed are not supported"):
        prepare(opt_ml)


def test_a_caption_extension_needs_its_dot(opt_ml):
    opt_ml.captioned_images(1)
    (opt_ml.dataset / "dataset.toml").write_text("[general]\ncaption_extension = 'txt'\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n")
    with pytest.raises(DatasetError, match="caption_extension must start with a dot"):
        prepare(opt_ml)


@pytest.mark.parametrize("toml_text, expected", [
    ("", 1536),  # generated at the resolution hyperparameter
    ("[[datasets]]\nresolution = [1280, 768]\n[[datasets.subsets]]\nimage_dir = '.'\n", 1280),
    ("[[datasets]]\nresolution = 1280\nmax_bucket_reso = 2048\n[[datasets.subsets]]\nimage_dir = '.'\n", 2048),  # the toml's own wins
])
def test_resolutions_over_1024_get_buckets_to_match(opt_ml, toml_text, expected):
    opt_ml.captioned_images(1)
    (opt_ml.dataset / "dataset.toml").write_text(toml_text)
    prepared = prepare(opt_ml, DatasetOptions(resolution=1536, batch_size=1, num_repeats=10))
    assert prepared.config["datasets"][0]["max_bucket_reso"] == expected


def test_no_max_bucket_reso_is_added_at_1024_or_below(opt_ml):
    opt_ml.captioned_images(1)
    assert "max_bucket_reso" not in prepare(opt_ml, DatasetOptions(resolution=1024, batch_size=1, num_repeats=10)).config["datasets"][0]


@pytest.mark.parametrize(
    "images, steps, given, expected_repeats",
    [
        (200, 1600, False, 2),  # 10 repeats would make one 2000-step epoch: no resume point at all
        (10, 1600, False, 10),  # 16 epochs of 100 steps already: left alone, never raised
        (1000, 1600, False, 1),  # cannot go below one
        (200, 1600, True, 10),  # the user asked for these repeats
        (200, None, False, 10),  # the length is given in epochs
    ],
)
def test_default_repeats_leave_spot_resume_points(opt_ml, images, steps, given, expected_repeats):
    opt_ml.captioned_images(images)
    options = DatasetOptions(resolution=512, batch_size=1, num_repeats=10, max_train_steps=steps, num_repeats_given=given)
    assert prepare(opt_ml, options).config["datasets"][0]["subsets"][0]["num_repeats"] == expected_repeats


def test_repeat_folders_keep_their_repeats_when_the_rest_is_lowered(opt_ml):
    opt_ml.captioned_images(100, opt_ml.dataset / "plain")
    opt_ml.captioned_images(10, opt_ml.dataset / "5_char")
    options = DatasetOptions(resolution=512, batch_size=1, num_repeats=10, max_train_steps=1600, num_repeats_given=False)
    subsets = prepare(opt_ml, options).config["datasets"][0]["subsets"]
    # 5_char's 50 views stay; at 4 repeats for the plain folder an epoch is 450 steps, ceil(1600 / 450) = 4
    # epochs; 5 repeats would give ceil(1600 / 550) = 3.
    assert [(os.path.basename(s["image_dir"]), s["num_repeats"]) for s in subsets] == [("5_char", 5), ("plain", 4)]

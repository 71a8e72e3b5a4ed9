"""The dataset channel: find or generate the kohya dataset.toml, confine its paths to the channel,
turn a Hugging Face imagefolder metadata.jsonl into captions; dataset_check.py then checks every image
and caption before a GPU minute is spent."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import toml

from .buckets import DEFAULT_MAX_BUCKET_RESO, PlannedDataset, bucket_chooser, steps_per_epoch
from .dataset_check import (
    CAPTION_EXTENSION,
    IMAGE_EXTENSIONS,
    JSONL_NAME,
    TOML_NAME,
    DatasetOptions,
    DatasetSummary,
    bucket_settings,
    check_images,
    image_size,
    images_in,
    too_small_for_bucket,
)
from .dataset_schema import ALLOWED_KEYS, value_problems
from .errors import DatasetError

# What callers take from here, though defined with the checks.
__all__ = ["DatasetError", "DatasetOptions", "DatasetSummary", "PreparedDataset", "prepare_dataset"]

# The path prefix of every SageMaker input channel; guides write toml paths against it.
CHANNELS_ROOT = PurePosixPath("/opt/ml/input/data")
# kohya's folder convention: "<repeats>_<class tokens>" (class tokens keep their underscores).
REPEATS_FOLDER = re.compile(r"^(\d+)_(.+)$")
# A generated configuration lowers the default repeats until training has this many epochs, since
# epoch ends are where spot resume points are saved.
MIN_EPOCHS = 4


@dataclass
class PreparedDataset:
    config_path: Path
    config: dict[str, Any]
    summary: DatasetSummary


def prepare_dataset(channel: Path, work: Path, options: DatasetOptions) -> PreparedDataset:
    """Returns the effective dataset.toml, written under `work`, and the checked summary.
    Nothing in the channel is modified (it may be read-only)."""
    if not channel.is_dir():
        raise DatasetError(f"The training job has no 'dataset' channel: {channel} does not exist. Give it the dataset folder.")
    work.mkdir(parents=True, exist_ok=True)
    channel = channel.resolve()
    toml_path = channel / TOML_NAME
    user_config = _read_toml(toml_path) if toml_path.is_file() else {}
    if user_config:
        config = _confine_user_config(user_config, channel, work)
        source = TOML_NAME
    else:
        config = _generate_config(channel, work, options)
        source = f"{'an empty ' + TOML_NAME if toml_path.is_file() else 'the folder layout (no ' + TOML_NAME + ')'}"
    general = config.setdefault("general", {})
    # kohya reads '.caption' files unless told otherwise; the dataset contract is '.txt'.
    general.setdefault("caption_extension", CAPTION_EXTENSION)
    _fit_buckets(config, options)
    summary = check_images(channel, config, options, source)
    config_path = work / TOML_NAME
    config_path.write_text(toml.dumps(config), encoding="utf-8")
    return PreparedDataset(config_path=config_path, config=config, summary=summary)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return toml.loads(path.read_text(encoding="utf-8"))
    except (toml.TomlDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{TOML_NAME} is not valid TOML: {error}. Fix it, or upload an empty {TOML_NAME} to use the defaults.") from error


def inside_channel(value: str, channel: Path, what: str) -> Path:
    """Maps a path written in dataset.toml into the channel. Absolute paths under /opt/ml/input/data/<any
    channel>/ (as guides write them) are taken relative to the dataset channel; relative paths are
    relative to it; anything that resolves outside it is refused."""
    pure = PurePosixPath(value)
    if pure.is_absolute():
        try:
            relative = pure.relative_to(CHANNELS_ROOT)
        except ValueError:
            raise DatasetError(
                f"{what} '{value}' is outside the dataset folder; write it relative to the folder (e.g. 'images') "
                f"or under {CHANNELS_ROOT}/dataset/."
            ) from None
        parts = relative.parts[1:]  # drop the channel name the author used
    else:
        parts = pure.parts
    resolved = channel.joinpath(*parts).resolve()
    if resolved != channel and channel not in resolved.parents:
        raise DatasetError(f"{what} '{value}' leads outside the dataset folder; only paths inside it can be trained on.")
    return resolved


def check_keys(config: dict[str, Any]) -> None:
    """Refuses keys kohya would refuse, naming each with where it may go instead, and values of the
    wrong type or range (dataset_schema.py), all in one message."""
    problems = [f"top-level key '{key}' is not [general] or [[datasets]]" for key in sorted(set(config) - {"general", "datasets"})]
    if "general" in config:
        problems += _table_problems(config["general"], "general", "general")
    datasets = config.get("datasets")
    for d_index, dataset in enumerate(datasets if isinstance(datasets, list) else []):
        problems += _table_problems(dataset, "datasets", f"datasets[{d_index}]")
        subsets = dataset.get("subsets") if isinstance(dataset, dict) else None
        for s_index, subset in enumerate(subsets if isinstance(subsets, list) else []):
            problems += _table_problems(subset, "subsets", f"datasets[{d_index}].subsets[{s_index}]")
    tables = [config.get("general") or {}, *[d for d in datasets if isinstance(d, dict)]] if isinstance(datasets, list) else []
    if any(isinstance(t, dict) and ("validation_split" in t or "validation_seed" in t) for t in tables):
        problems.append(
            "validation_split and validation_seed are not supported: the training length and spot resume are planned "
            "on the whole dataset; remove them"
        )
    if problems:
        raise DatasetError(f"{TOML_NAME}: {'; '.join(problems)}.")


def _table_problems(table: Any, level: str, where: str) -> list[str]:
    if not isinstance(table, dict):
        return [f"{where} must be a table"]
    problems = []
    for key in sorted(set(table) - ALLOWED_KEYS[level]):
        elsewhere = [name for name, keys in ALLOWED_KEYS.items() if key in keys]
        hint = f" (it belongs in {' or '.join(elsewhere)})" if elsewhere else ""
        problems.append(f"{where}.{key} is not a kohya dataset setting{hint}")
    return problems + value_problems(table, level, where)


def _confine_user_config(config: dict[str, Any], channel: Path, work: Path) -> dict[str, Any]:
    check_keys(config)
    datasets = config.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise DatasetError(f"{TOML_NAME} has no [[datasets]] table; add one with a [[datasets.subsets]] image_dir, or leave the file empty.")
    for d_index, dataset in enumerate(datasets):
        subsets = dataset.get("subsets") if isinstance(dataset, dict) else None
        if not isinstance(subsets, list) or not subsets:
            raise DatasetError(f"{TOML_NAME}: datasets[{d_index}] has no [[datasets.subsets]]; give it at least one subset with an image_dir.")
        for s_index, subset in enumerate(subsets):
            where = f"datasets[{d_index}].subsets[{s_index}]"
            if not isinstance(subset, dict) or ("image_dir" not in subset and "metadata_file" not in subset):
                raise DatasetError(f"{TOML_NAME}: {where} needs an image_dir (a folder of images and .txt captions).")
            for key in ("image_dir", "metadata_file"):
                if key in subset:
                    if not isinstance(subset[key], str):
                        raise DatasetError(f"{TOML_NAME}: {where}.{key} must be a string path.")
                    subset[key] = str(inside_channel(subset[key], channel, f"{where}.{key}"))
            metadata = subset.get("metadata_file")
            if metadata is not None:
                metadata_path = Path(metadata)
                if metadata_path.suffix != ".jsonl":
                    raise DatasetError(
                        f"{TOML_NAME}: {where}.metadata_file must be a Hugging Face imagefolder {JSONL_NAME}; "
                        "for kohya's own metadata JSON use an image_dir with .txt captions instead."
                    )
                if not metadata_path.is_file():
                    raise DatasetError(f"{TOML_NAME}: {where}.metadata_file '{metadata_path.relative_to(channel)}' does not exist.")
            image_dir = Path(subset.get("image_dir") or Path(metadata).parent)
            if not image_dir.is_dir():
                raise DatasetError(f"{TOML_NAME}: {where}.image_dir '{image_dir.relative_to(channel)}' is not a folder in the dataset.")
            if metadata is not None:
                # Trained DreamBooth-style, with the captions written out as .txt files.
                subset["image_dir"] = str(stage_jsonl(Path(metadata), image_dir, work / "staged" / f"{d_index}-{s_index}", channel)[0])
                del subset["metadata_file"]
            else:
                subset["image_dir"] = str(image_dir)
    return config


def _generate_config(channel: Path, work: Path, options: DatasetOptions) -> dict[str, Any]:
    subsets: list[dict[str, Any]] = []
    defaulted: list[dict[str, Any]] = []  # subsets whose repeats come from the hyperparameter
    covered: set[Path] = set()
    jsonl = channel / JSONL_NAME
    if jsonl.is_file():
        staged, covered = stage_jsonl(jsonl, channel, work / "staged" / "root", channel)
        subsets.append({"image_dir": str(staged), "num_repeats": options.num_repeats})
        defaulted.append(subsets[-1])
    elif images_in(channel):
        subsets.append({"image_dir": str(channel), "num_repeats": options.num_repeats})
        defaulted.append(subsets[-1])
    for folder in sorted(p for p in channel.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.resolve() in covered or not images_in(folder):
            continue
        match = REPEATS_FOLDER.match(folder.name)
        if match and int(match.group(1)) < 1:
            continue  # kohya skips a folder with no repeats; its files are reported as ignored
        subset: dict[str, Any] = {"image_dir": str(folder.resolve())}
        if match:
            subset["num_repeats"] = int(match.group(1))
            subset["class_tokens"] = match.group(2)
        else:
            subset["num_repeats"] = options.num_repeats
            defaulted.append(subset)
        subsets.append(subset)
    if not subsets:
        raise DatasetError(
            "The dataset folder has no images (.png, .jpg, .jpeg, .webp, .bmp) at its top level or in its subfolders; "
            "upload images with same-name .txt captions."
        )
    config = {
        "general": {"caption_extension": CAPTION_EXTENSION, "shuffle_caption": False, "keep_tokens": 0},
        "datasets": [
            {
                "resolution": options.resolution,
                "batch_size": options.batch_size,
                "enable_bucket": True,
                "bucket_no_upscale": True,
                "subsets": subsets,
            }
        ],
    }
    _leave_resume_points(config, defaulted, options)
    return config


def _leave_resume_points(config: dict[str, Any], defaulted: list[dict[str, Any]], options: DatasetOptions) -> None:
    """With the default repeats, a large dataset would make the whole run one epoch, and kohya saves no
    state after the last epoch: a spot interruption would restart from zero. The repeats that came
    from the default are lowered (never raised) until the requested steps span MIN_EPOCHS epochs of
    kohya's steps per epoch (bucket by bucket, buckets.py), or to 1."""
    if options.max_train_steps is None or options.num_repeats_given or not defaulted:
        return
    [dataset] = config["datasets"]
    settings = bucket_settings(dataset, config["general"], options)
    choose = bucket_chooser(settings)
    sizes = {id(subset): _plannable_sizes(Path(subset["image_dir"]), choose) for subset in dataset["subsets"]}
    lowered = {id(subset) for subset in defaulted}

    def epochs_at(repeats: int) -> int:
        views = [
            (size, repeats if id(subset) in lowered else subset["num_repeats"]) for subset in dataset["subsets"] for size in sizes[id(subset)]
        ]
        return math.ceil(options.max_train_steps / max(1, steps_per_epoch([PlannedDataset(settings, views)])))

    repeats = next((r for r in range(options.num_repeats, 0, -1) if epochs_at(r) >= MIN_EPOCHS), 1)
    for subset in defaulted:
        subset["num_repeats"] = repeats


def _plannable_sizes(folder: Path, choose) -> list[tuple[int, int]]:
    """The sizes of the images kohya can bucket; the others are refused by the checks that follow."""
    sizes = [image_size(image) for image in images_in(folder)]
    return [size for size in sizes if size is not None and min(size) > 0 and not too_small_for_bucket(choose, size)]


def _fit_buckets(config: dict[str, Any], options: DatasetOptions) -> None:
    """kohya asserts max(resolution) <= max_bucket_reso (default 1024) when bucketing; a larger
    resolution gets a matching max_bucket_reso unless the toml sets one."""
    general = config.get("general", {})
    for dataset in config["datasets"]:
        resolution = dataset.get("resolution", general.get("resolution", options.resolution))
        largest = max(resolution) if isinstance(resolution, list) else int(resolution)
        if largest > DEFAULT_MAX_BUCKET_RESO and "max_bucket_reso" not in dataset and "max_bucket_reso" not in general:
            dataset["max_bucket_reso"] = largest


def stage_jsonl(jsonl: Path, image_dir: Path, staged: Path, channel: Path) -> tuple[Path, set[Path]]:
    """Writes a folder of links to the images of a Hugging Face imagefolder, each with a .txt caption
    from metadata.jsonl lines {"file_name": ..., "text": ...} (file_name may name a subfolder; an
    existing .txt caption wins), plus the images beside the jsonl it does not list. Returns the
    folder and the folders whose images the jsonl lists."""
    staged.mkdir(parents=True, exist_ok=True)
    base = jsonl.parent.resolve()
    captions: dict[Path, str] = {}
    try:
        text = jsonl.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:  # else a bare traceback ends the paid job
        raise DatasetError(f"{jsonl.name} is not UTF-8 text ({error}); save it as UTF-8.") from error
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{jsonl.name} line {number}"
        try:
            record = json.loads(line)
        except ValueError as error:
            raise DatasetError(f"{where} is not JSON: {error}") from error
        if not isinstance(record, dict) or not isinstance(record.get("file_name"), str) or not isinstance(record.get("text"), str):
            raise DatasetError(f'{where} needs "file_name" and "text" strings, as a Hugging Face imagefolder has.')
        image = inside_channel(record["file_name"], base, f"{where} file_name")
        if channel not in image.parents:
            raise DatasetError(f"{where} file_name '{record['file_name']}' leads outside the dataset folder.")
        if not image.is_file():
            raise DatasetError(f"{where} names '{record['file_name']}', which is not in the dataset.")
        if image.suffix not in IMAGE_EXTENSIONS:
            raise DatasetError(f"{where} names '{record['file_name']}', which is not an image kohya trains ({', '.join(IMAGE_EXTENSIONS[:5])}).")
        captions[image] = record["text"]
    for image in sorted(set(captions) | {p.resolve() for p in images_in(image_dir)}):
        relative = image.relative_to(base) if base in image.parents else Path(image.name)
        link = staged / "__".join(relative.parts)
        if not link.exists():
            link.symlink_to(image)
        own_caption = image.with_suffix(CAPTION_EXTENSION)
        staged_caption = link.with_suffix(CAPTION_EXTENSION)
        if own_caption.is_file():
            if not staged_caption.exists():
                staged_caption.symlink_to(own_caption)
        elif image in captions:
            staged_caption.write_text(captions[image], encoding="utf-8")
    return staged, {image.parent for image in captions}

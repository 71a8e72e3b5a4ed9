"""Every image and caption of the effective dataset configuration, checked as kohya will read them
before a GPU minute is spent, and the summary the training is planned on (images, captions, repeats,
batch sizes and kohya's steps per epoch)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .buckets import BucketSettings, PlannedDataset, Size, bucket_chooser, steps_per_epoch, views_per_epoch
from .errors import DatasetError
from .files import sha256_file

# Exactly what kohya-ss sd-scripts v0.10.1 globs for (library/train_util.py IMAGE_EXTENSIONS): an
# image it would not train must not be counted, checked or hashed here, and one it trains must be.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP")
CAPTION_EXTENSION = ".txt"
TOML_NAME = "dataset.toml"
JSONL_NAME = "metadata.jsonl"
# Files of the dataset contract that are not training data.
CONTROL_FILES = frozenset({TOML_NAME, "train.json", JSONL_NAME})
MAX_LISTED = 20
# kohya asserts bucket_reso_steps is a multiple of this once it has loaded the dataset
# (assert_extra_args: train_network.py for SD 1.5, sdxl_train_network.py for SDXL; flux_train_network.py
# calls train_network.py's check (64) before its own (32), so FLUX.1 needs 64).
BUCKET_RESO_MULTIPLE = {"sd15": 64, "sdxl": 32, "flux1": 64}


@dataclass(frozen=True)
class DatasetOptions:
    """What the hyperparameters say about the dataset; dataset.toml values win over them."""

    resolution: int
    batch_size: int
    num_repeats: int
    allow_missing_captions: bool = False
    # The requested training length when it is given in steps, and whether num_repeats was given
    # explicitly: together they let a generated configuration choose repeats that leave resume points.
    max_train_steps: int | None = None
    num_repeats_given: bool = True
    model_type: str = "sd15"


@dataclass
class SubsetSummary:
    image_dir: str
    images: int
    num_repeats: int
    class_tokens: str | None = None
    captions_from: str = CAPTION_EXTENSION


@dataclass
class DatasetSummary:
    source: str  # "dataset.toml", or how the configuration was generated
    subsets: list[SubsetSummary]
    images: int
    captioned: int
    images_per_epoch: int
    # The batch size kohya trains with (dataset.toml's, else train_batch_size); one per [[datasets]]
    # when they differ, since each dataset is cut into batches of its own size.
    batch_size: int | list[int]
    # Optimizer steps per epoch on one GPU, as kohya counts them (buckets.py).
    steps_per_epoch: int
    missing_captions: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    content_sha256: str = ""

    def lines(self) -> list[str]:
        out = [
            f"dataset: {self.images} images ({self.captioned} captioned) in {len(self.subsets)} subset(s), "
            f"{self.images_per_epoch} image views per epoch, batch size {self.batch_size}, "
            f"{self.steps_per_epoch} steps per epoch, configuration from {self.source}",
        ]
        for s in self.subsets:
            tokens = f", class tokens '{s.class_tokens}'" if s.class_tokens else ""
            out.append(f"  subset {s.image_dir}: {s.images} images x {s.num_repeats} repeats, captions from {s.captions_from}{tokens}")
        if self.missing_captions:
            out.append(f"  without caption: {listing(self.missing_captions)}")
        if self.ignored:
            out.append(f"  ignored (not an image of a subset, nor its caption): {listing(self.ignored)}")
        out.append(f"  content sha256: {self.content_sha256}")
        return out


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_EXTENSIONS and not p.name.startswith("."))


class _Scan:
    """What checking every image of every subset finds."""

    def __init__(self, channel: Path) -> None:
        self.channel = channel
        self.subsets: list[SubsetSummary] = []
        self.planned: list[PlannedDataset] = []
        self.used: set[Path] = set()
        self.missing: list[str] = []
        self.undecodable: list[str] = []
        self.empty_captions: list[str] = []
        self.not_utf8: list[str] = []
        self.too_small: list[str] = []
        self.bucket_steps: set[int] = set()  # of the datasets whose images are too small
        self.digest_entries: list[tuple[str, str]] = []
        self.images = self.captioned = 0

    def shown(self, path: Path) -> str:
        real = path.resolve()
        return str(real.relative_to(self.channel)) if self.channel in real.parents else path.name


def caption_file(image: Path, extension: str) -> Path | None:
    """The caption file kohya reads for `image`: the same name with the caption extension or, for a
    name of five or more '_'-separated parts (face-crop output), the name without the last four
    parts. kohya splits the whole path, folders included, so this does too."""
    base = str(image.with_suffix(""))
    parts = base.split("_")
    candidates = [base + extension] + (["_".join(parts[:-4]) + extension] if len(parts) >= 5 else [])
    return next((Path(c) for c in candidates if Path(c).is_file()), None)


def kohya_caption(image: Path, extension: str, class_tokens: str | None, wildcard: bool = False) -> str | None:
    """The caption kohya trains `image` with: the first line of its caption file (every non-blank
    line with enable_wildcard), or the class tokens when there is no caption file; None for neither.
    A blank caption file gives an empty caption, even with class tokens (kohya does not fall back).
    Raises UnicodeDecodeError for a caption that is not UTF-8, as kohya does."""
    caption = caption_file(image, extension)
    if caption is None:
        return class_tokens
    lines = caption.read_text(encoding="utf-8").splitlines()  # strict, as kohya reads it
    if wildcard:
        return "\n".join(line.strip() for line in lines if line.strip())
    return lines[0].strip() if lines else ""


def kohya_setting(key: str, subset: Mapping[str, Any], dataset: Mapping[str, Any], general: Mapping[str, Any], default: Any) -> Any:
    """A value as kohya resolves it: the subset, then its dataset, then [general], then the flag."""
    for table in (subset, dataset, general):
        if table.get(key) is not None:
            return table[key]
    return default


def bucket_settings(dataset: dict[str, Any], general: dict[str, Any], options: DatasetOptions) -> BucketSettings:
    resolution = kohya_setting("resolution", {}, dataset, general, options.resolution)
    size = (int(resolution[0]), int(resolution[-1])) if isinstance(resolution, list) else (int(resolution), int(resolution))
    settings = BucketSettings(resolution=size, batch_size=int(kohya_setting("batch_size", {}, dataset, general, options.batch_size)))
    for key in ("enable_bucket", "bucket_no_upscale", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps"):
        setattr(settings, key, kohya_setting(key, {}, dataset, general, getattr(settings, key)))
    return settings


def _scan_subset(
    scan: _Scan, subset: dict[str, Any], dataset: dict[str, Any], general: dict[str, Any], options: DatasetOptions, plan: PlannedDataset
) -> None:
    image_dir = Path(subset.get("image_dir", scan.channel))
    ext = kohya_setting("caption_extension", subset, dataset, general, CAPTION_EXTENSION)
    if not isinstance(ext, str) or not ext.startswith("."):
        raise DatasetError(f"{TOML_NAME}: caption_extension must start with a dot, like '.txt', not {ext!r}.")
    # kohya ascends class_tokens from [[datasets]] and [general] like any subset setting (config_util.py).
    class_tokens = kohya_setting("class_tokens", subset, dataset, general, None)
    wildcard = bool(kohya_setting("enable_wildcard", subset, dataset, general, False))
    repeats = int(kohya_setting("num_repeats", subset, dataset, general, options.num_repeats))
    images = images_in(image_dir) if repeats >= 1 else []  # kohya skips a subset without repeats
    choose = bucket_chooser(plan.settings)
    for image in images:
        scan.used.add(image.resolve())
        scan.digest_entries.append((scan.shown(image), sha256_file(image)))
        size, problem = _decode(image)
        if problem:
            scan.undecodable.append(f"{scan.shown(image)} ({problem})")
        elif too_small_for_bucket(choose, size):
            scan.too_small.append(f"{scan.shown(image)} ({size[0]}x{size[1]})")
            scan.bucket_steps.add(plan.settings.bucket_reso_steps)
        (plan.regularization if subset.get("is_reg") else plan.train).append((size, repeats))
        _scan_caption(scan, image, ext, class_tokens, wildcard)
    scan.images += len(images)
    shown_dir = scan.shown(image_dir) if image_dir != scan.channel else "."
    scan.subsets.append(SubsetSummary(shown_dir, len(images), repeats, class_tokens, ext))


def _scan_caption(scan: _Scan, image: Path, ext: str, class_tokens: str | None, wildcard: bool) -> None:
    caption = caption_file(image, ext)
    if caption is not None:
        scan.used.add(caption.resolve())
        scan.digest_entries.append((scan.shown(caption), sha256_file(caption)))
        if caption.stat().st_size == 0:
            scan.empty_captions.append(scan.shown(caption))
    try:
        text = kohya_caption(image, ext, class_tokens, wildcard)
    except UnicodeDecodeError:
        scan.not_utf8.append(scan.shown(caption))
        return
    if text:
        scan.captioned += 1
    else:
        scan.missing.append(scan.shown(image))


def too_small_for_bucket(choose, size: Size) -> bool:
    """An image whose bucket would have a side of 0 px: with bucket_no_upscale, one smaller than a
    bucket step (kohya divides by the bucket's height, train_util.py BucketManager.select_bucket)."""
    try:
        width, height = choose(size)
    except ZeroDivisionError:  # a sliver so thin that rounding it to the step leaves nothing, in kohya too
        return True
    return width == 0 or height == 0


def image_size(image: Path) -> Size | None:
    """The size from the image's header, without decoding it; None when it is not readable."""
    try:
        with Image.open(image) as opened:
            return opened.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def check_images(channel: Path, config: dict[str, Any], options: DatasetOptions, source: str) -> DatasetSummary:
    general = config.get("general", {})
    scan = _Scan(channel)
    for d_index, dataset in enumerate(config["datasets"]):
        plan = PlannedDataset(bucket_settings(dataset, general, options))
        _refuse_repeated_folders(dataset, d_index)
        _refuse_bucket_steps(plan.settings, d_index, options.model_type)
        _refuse_bucket_range(plan.settings, d_index)
        for subset in dataset["subsets"]:
            _scan_subset(scan, subset, dataset, general, options, plan)
        scan.planned.append(plan)
    _refuse_problems(scan, options)
    return DatasetSummary(
        source=source,
        subsets=scan.subsets,
        images=scan.images,
        captioned=scan.captioned,
        # kohya repeats or drops regularization views until they (about) match the training views.
        images_per_epoch=views_per_epoch(scan.planned),
        batch_size=one_or_all([plan.settings.batch_size for plan in scan.planned]),
        steps_per_epoch=steps_per_epoch(scan.planned),
        missing_captions=scan.missing,
        ignored=_ignored(channel, scan.used),
        content_sha256=_content_digest(channel, scan.digest_entries),
    )


def _refuse_repeated_folders(dataset: dict[str, Any], d_index: int) -> None:
    """kohya keeps only the first of a dataset's subsets with the same image_dir (it ignores the
    others, with their settings); two subsets of one folder are a mistake to fix, not to guess."""
    first: dict[str, int] = {}
    for s_index, subset in enumerate(dataset["subsets"]):
        folder = str(subset.get("image_dir"))
        if folder in first:
            raise DatasetError(
                f"{TOML_NAME}: datasets[{d_index}].subsets[{s_index}] has the same image_dir as subsets[{first[folder]}], "
                "and kohya would ignore it; merge them, or put the second in a [[datasets]] of its own."
            )
        first[folder] = s_index


def _refuse_bucket_steps(settings: BucketSettings, d_index: int, model_type: str) -> None:
    multiple = BUCKET_RESO_MULTIPLE[model_type]
    if settings.enable_bucket and settings.bucket_reso_steps % multiple:
        raise DatasetError(
            f"{TOML_NAME}: datasets[{d_index}] has bucket_reso_steps = {settings.bucket_reso_steps}, which kohya refuses "
            f"for {model_type}: it must be a multiple of {multiple} ({', '.join(f'{v} for {k}' for k, v in BUCKET_RESO_MULTIPLE.items())})."
        )


def _refuse_bucket_range(settings: BucketSettings, d_index: int) -> None:
    """With buckets kohya rounds min_bucket_reso down and max_bucket_reso up to the step, then asserts
    the resolution lies between them (train_util.py adjust_min_max_bucket_reso_by_steps); a minimum
    that rounds to 0 makes it, and the step planning here, divide by 0 while making buckets."""
    if not settings.enable_bucket:
        return
    steps = settings.bucket_reso_steps
    low = settings.min_bucket_reso - settings.min_bucket_reso % steps
    high = settings.max_bucket_reso + (-settings.max_bucket_reso) % steps
    where = f"{TOML_NAME}: datasets[{d_index}]"
    if low < steps and not settings.bucket_no_upscale:
        raise DatasetError(
            f"{where} has min_bucket_reso = {settings.min_bucket_reso}, below one bucket step ({steps}): kohya's smallest bucket "
            f"would be 0 px. Raise it to at least {steps}, or set bucket_no_upscale = true."
        )
    if min(settings.resolution) < low:
        raise DatasetError(
            f"{where} has min_bucket_reso = {settings.min_bucket_reso}, larger than the resolution's shorter side "
            f"({min(settings.resolution)}), which kohya refuses. Lower it."
        )
    if max(settings.resolution) > high:
        raise DatasetError(
            f"{where} has max_bucket_reso = {settings.max_bucket_reso}, smaller than the resolution's longer side "
            f"({max(settings.resolution)}), which kohya refuses. Raise it."
        )


def _refuse_problems(scan: _Scan, options: DatasetOptions) -> None:
    if scan.undecodable:
        raise DatasetError(f"{len(scan.undecodable)} image(s) cannot be decoded: {listing(scan.undecodable)}. Re-export or remove them.")
    if scan.images == 0:
        raise DatasetError(
            f"The dataset has no images ({', '.join(IMAGE_EXTENSIONS[:5])}) in the folders its {TOML_NAME} names; upload at least one."
        )
    if scan.too_small:
        steps = " or ".join(str(s) for s in sorted(scan.bucket_steps))
        raise DatasetError(
            f"{len(scan.too_small)} image(s) are smaller than one bucket step, so kohya's bucket for them would be 0 px wide "
            f"or high (it fails dividing by it): {listing(scan.too_small)}. Use images of at least {steps} px per side, "
            "or set enable_bucket = false."
        )
    if scan.not_utf8:
        # kohya stops with UnicodeDecodeError while it loads the dataset (train_util.py DreamBoothDataset).
        raise DatasetError(
            f"{len(scan.not_utf8)} caption file(s) are not UTF-8 text, which kohya cannot read: {listing(scan.not_utf8)}. "
            "Save them as UTF-8."
        )
    if scan.empty_captions:
        # kohya asserts on an empty caption file while it loads the dataset, before the model.
        raise DatasetError(
            f"{len(scan.empty_captions)} caption file(s) are empty, which kohya refuses: {listing(scan.empty_captions)}. "
            "Write a caption in each, or delete them to train those images without one."
        )
    if scan.missing and not options.allow_missing_captions:
        raise DatasetError(
            f"{len(scan.missing)} of {scan.images} image(s) have no caption: {listing(scan.missing)}. Add a same-name "
            f"{CAPTION_EXTENSION} file for each, set class_tokens for the subset, or set the hyperparameter allow_missing_captions=true."
        )


def _ignored(channel: Path, used: set[Path]) -> list[str]:
    return sorted(
        str(p.relative_to(channel)) for p in channel.rglob("*") if p.is_file() and p.resolve() not in used and p.name not in CONTROL_FILES
    )


def _content_digest(channel: Path, entries: list[tuple[str, str]]) -> str:
    toml_path = channel / TOML_NAME
    if toml_path.is_file():
        entries = [*entries, (TOML_NAME, sha256_file(toml_path))]
    digest = hashlib.sha256()
    for name, file_digest in sorted(set(entries)):
        digest.update(f"{name}\0{file_digest}\n".encode())
    return digest.hexdigest()


def _decode(image: Path) -> tuple[tuple[int, int], str | None]:
    """The image's size (what kohya buckets it by) and why it cannot be decoded, if it cannot."""
    try:
        with Image.open(image) as opened:
            opened.load()
            if opened.width < 1 or opened.height < 1:
                return (0, 0), "empty image"
            return opened.size, None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        return (0, 0), str(error) or type(error).__name__


def one_or_all(items: list[int]) -> int | list[int]:
    """One value when all agree, else all of them."""
    return items[0] if len(set(items)) == 1 else items


def listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")

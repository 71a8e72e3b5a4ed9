"""Which images caption_missing captions: each image kohya would train without a caption file, in
every image_dir subset without class_tokens (a metadata.jsonl subset is the user's own captions and
is left alone). lambda/prepare/caption-targets.ts counts the same images for Prepare."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataset_check import CAPTION_EXTENSION, DatasetSummary, caption_file, images_in, kohya_setting, listing
from .errors import DatasetError

# Caption files Publish may write back to S3 (its IAM grant covers only these names).
WRITABLE_EXTENSIONS = (".txt", ".caption")


@dataclass(frozen=True)
class Target:
    """An image to caption and the caption file kohya will read for it."""

    image: Path
    caption: Path
    relative: str  # of the caption file, '/'-separated, relative to the dataset channel


def wanted(values: dict[str, Any]) -> bool:
    return bool(values.get("caption_missing"))


def targets(channel: Path, config: dict[str, Any]) -> list[Target]:
    """Every image kohya would train without a caption file, in the subsets captions are written for.
    Refuses a caption extension Publish cannot write back, and two images that would share one caption."""
    channel = channel.resolve()
    found: dict[Path, Target] = {}
    unwritable: dict[str, str] = {}  # image -> its caption extension
    for image, extension in _captionless(channel, config):
        if extension not in WRITABLE_EXTENSIONS:
            unwritable[image.relative_to(channel).as_posix()] = extension
            continue
        target = Target(image, image.with_suffix(extension), image.relative_to(channel).with_suffix(extension).as_posix())
        _refuse_shared_caption(found.get(target.caption), target, channel)
        found[target.caption] = target
    if unwritable:
        _refuse_unwritable(unwritable)
    return sorted(found.values(), key=lambda target: target.relative)


def _captionless(channel: Path, config: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """Each image without a caption file, with its subset's caption extension, in the subsets
    captions are written for: in the channel, trained (repeats ≥ 1), without class tokens."""
    general = config.get("general", {})
    for dataset in config.get("datasets", []):
        for subset in dataset.get("subsets", []):
            image_dir = Path(subset.get("image_dir", channel)).resolve()
            # Staged metadata.jsonl subsets live in the work folder; class tokens are a caption.
            if image_dir != channel and channel not in image_dir.parents:
                continue
            if kohya_setting("class_tokens", subset, dataset, general, None) or int(kohya_setting("num_repeats", subset, dataset, general, 1)) < 1:
                continue
            extension = kohya_setting("caption_extension", subset, dataset, general, CAPTION_EXTENSION)
            for image in images_in(image_dir):
                if caption_file(image, extension) is None:
                    yield image, extension


def _refuse_shared_caption(earlier: Target | None, target: Target, channel: Path) -> None:
    """kohya reads one caption per name: a.jpg and a.png would both read a.txt."""
    if earlier is None or earlier.image == target.image:
        return
    raise DatasetError(
        f"{earlier.image.relative_to(channel).as_posix()} and {target.image.relative_to(channel).as_posix()} have no caption and "
        f"would share the caption file {target.relative} (kohya reads one caption per name); rename one of them, or caption them yourself."
    )


def _refuse_unwritable(unwritable: dict[str, str]) -> None:
    extensions = " or ".join(sorted(set(unwritable.values())))
    raise DatasetError(
        f"{len(unwritable)} image(s) have no caption, and caption_missing writes only {' or '.join(WRITABLE_EXTENSIONS)} caption files, "
        f"not {extensions}: {listing(list(unwritable))}. Use caption_extension '.txt', caption these images yourself, "
        "or set caption_missing=false."
    )


def check_plan(channel: Path, config: dict[str, Any], summary: DatasetSummary, values: dict[str, Any]) -> list[Target]:
    """With caption_missing, the images that will be captioned; the other images without a caption
    are refused as they are without caption_missing (unless allow_missing_captions)."""
    if not wanted(values):
        return []
    planned = targets(channel, config)
    images = {target.image.resolve().relative_to(channel.resolve()).as_posix() for target in planned}
    rest = [shown for shown in summary.missing_captions if shown not in images]
    if rest and not values.get("allow_missing_captions"):
        raise DatasetError(
            f"{len(rest)} of {summary.images} image(s) have no caption: {listing(rest)}. Add a same-name {CAPTION_EXTENSION} file for "
            "each, set class_tokens for the subset, or set the hyperparameter allow_missing_captions=true "
            "(caption_missing captions only images of an image_dir subset without class_tokens)."
        )
    if planned:
        print(f"lora-trainer: {len(planned)} image(s) without a caption will be captioned by BLIP", flush=True)
    return planned

"""Steps per epoch, counted the way kohya-ss sd-scripts v0.10.1 counts them.

kohya's epoch is its dataset group's length: each [[datasets]] puts every image view (image x repeats)
into an aspect-ratio bucket, and each bucket is cut into batches of that dataset's batch size, so an
epoch is the sum over datasets of ceil(views in bucket / batch size) over buckets. The training length
and every resume point are planned on this number; tests/test_kohya_dataset.py checks it against
kohya's own dataset group (library/config_util.py, train_util.DreamBoothDataset.make_buckets)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

# kohya's argparse defaults, used where neither the dataset nor [general] sets a value.
DEFAULT_MIN_BUCKET_RESO = 256
DEFAULT_MAX_BUCKET_RESO = 1024
DEFAULT_BUCKET_RESO_STEPS = 64

Size = tuple[int, int]


@dataclass
class BucketSettings:
    """One [[datasets]] table's bucketing settings, with kohya's defaults."""

    resolution: Size
    batch_size: int
    enable_bucket: bool = False
    bucket_no_upscale: bool = False
    min_bucket_reso: int = DEFAULT_MIN_BUCKET_RESO
    max_bucket_reso: int = DEFAULT_MAX_BUCKET_RESO
    bucket_reso_steps: int = DEFAULT_BUCKET_RESO_STEPS


@dataclass
class PlannedDataset:
    """The image sizes of one [[datasets]] with how often each is seen per epoch."""

    settings: BucketSettings
    train: list[tuple[Size, int]] = field(default_factory=list)  # (size, repeats) in kohya's order
    regularization: list[tuple[Size, int]] = field(default_factory=list)


def steps_per_epoch(datasets: list[PlannedDataset]) -> int:
    """Batches in one epoch on one GPU (kohya's len(train_dataset_group))."""
    return sum(dataset_batches(d) for d in datasets)


def views_per_epoch(datasets: list[PlannedDataset]) -> int:
    """Image views in one epoch: repeats of the training images and the regularization views."""
    return sum(repeats for d in datasets for _, repeats in dataset_views(d))


def dataset_views(dataset: PlannedDataset) -> list[tuple[Size, int]]:
    return list(dataset.train) + regularization_views(dataset.regularization, sum(r for _, r in dataset.train))


def dataset_batches(dataset: PlannedDataset) -> int:
    views = dataset_views(dataset)
    choose = bucket_chooser(dataset.settings)
    per_bucket: Counter[Size] = Counter()
    for size, repeats in views:
        per_bucket[choose(size)] += repeats
    return sum(math.ceil(count / dataset.settings.batch_size) for count in per_bucket.values() if count)


def regularization_views(regularization: list[tuple[Size, int]], train_views: int) -> list[tuple[Size, int]]:
    """kohya fills regularization views up to the training views: each image once with its repeats,
    in order, until there are enough, then one more view at a time round-robin (so more
    regularization images than training views leaves some unused)."""
    if not regularization:
        return []
    counts = [0] * len(regularization)
    total = 0
    for index, (_, repeats) in enumerate(regularization):
        if total >= train_views:
            break
        counts[index] = repeats
        total += repeats
    registered = [i for i, c in enumerate(counts) if c]
    while total < train_views:
        for index in registered:
            counts[index] += 1
            total += 1
            if total >= train_views:
                break
    return [(regularization[i][0], counts[i]) for i in registered]


def bucket_chooser(settings: BucketSettings):
    if not settings.enable_bucket:
        return lambda _size: settings.resolution  # one bucket of the dataset's resolution
    steps = settings.bucket_reso_steps
    if settings.bucket_no_upscale:
        max_area = settings.resolution[0] * settings.resolution[1]
        return lambda size: _downscaled_bucket(size, max_area, steps)
    low = settings.min_bucket_reso - settings.min_bucket_reso % steps
    high = settings.max_bucket_reso + (-settings.max_bucket_reso) % steps
    resos = _bucket_resolutions(settings.resolution, low, high, steps)
    return lambda size: _nearest_bucket(size, resos)


def _round_to_steps(value: float, steps: int) -> int:
    rounded = int(value + 0.5)
    return rounded - rounded % steps


def _downscaled_bucket(size: Size, max_area: int, steps: int) -> Size:
    """bucket_no_upscale: an image larger than the resolution's area is shrunk to it keeping its
    aspect ratio (with whichever side rounded to the step keeps the ratio best); the bucket is the
    (shrunk) size cut down to the step."""
    width, height = size
    aspect = width / height
    if width * height > max_area:
        shrunk_width = math.sqrt(max_area * aspect)
        shrunk_height = max_area / shrunk_width
        by_width = _round_to_steps(shrunk_width, steps)
        by_width_error = abs(by_width / _round_to_steps(by_width / aspect, steps) - aspect)
        by_height = _round_to_steps(shrunk_height, steps)
        by_height_error = abs(_round_to_steps(by_height * aspect, steps) / by_height - aspect)
        if by_width_error < by_height_error:
            width, height = by_width, int(by_width / aspect + 0.5)
        else:
            width, height = int(by_height * aspect + 0.5), by_height
    return (width - width % steps, height - height % steps)


def _bucket_resolutions(resolution: Size, low: int, high: int, steps: int) -> list[Size]:
    """The fixed buckets kohya offers when it may upscale: the square of the resolution's area and,
    for each width from low to high in steps, the tallest height within that area, both ways round."""
    area = resolution[0] * resolution[1]
    side = int(math.sqrt(area) // steps) * steps
    resos = {(side, side)}
    for width in range(low, high + 1, steps):
        height = min(high, int((area // width) // steps) * steps)
        if height >= low:
            resos.update({(width, height), (height, width)})
    return sorted(resos)


def _nearest_bucket(size: Size, resos: list[Size]) -> Size:
    """An image of a bucket's exact size goes there; otherwise to the bucket whose aspect ratio is
    closest (the first such in sorted order)."""
    if size in resos:
        return size
    aspect = size[0] / size[1]
    return min(resos, key=lambda r: abs(r[0] / r[1] - aspect))

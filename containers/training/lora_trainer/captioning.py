"""Captions for images that have none (hyperparameter caption_missing), written before training:
the step main.py runs. Which images: caption_targets.py; BLIP: captioner.py; where the caption
files go and how a restarted job reuses them: caption_files.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import caption_files, captioner
from .caption_targets import Target, targets, wanted
from .dataset import PreparedDataset
from .dataset_check import DatasetSummary
from .paths import SageMakerPaths


def write_captions(paths: SageMakerPaths, values: dict[str, Any], prepared: PreparedDataset, model_dir: Path | None = None) -> int:
    """Writes a caption next to every planned image: those of an earlier attempt of the job (from the
    checkpoints) as they are, the others from BLIP. Returns how many were written into the channel.
    The run's fingerprint stays that of the folder as uploaded: a restarted job captions it the same."""
    if not wanted(values):
        return 0
    channel = paths.channel("dataset").resolve()
    planned = targets(channel, prepared.config)
    if not planned:
        return 0
    model_dir = model_dir or captioner.CAPTIONER_DIR
    info = captioner.captioner_info(model_dir)
    trigger = str(values.get("caption_trigger_word") or "").strip() or None
    saved, output = (folder / caption_files.CAPTIONS_FOLDER for folder in (paths.checkpoints, paths.output_data))
    _caption(saved, planned, model_dir, info, trigger)
    files = [target.relative for target in planned]
    manifest = {**info, "triggerWord": trigger, "count": len(files), "files": files}
    for folder in (saved, output):
        caption_files.copy_out(planned, folder, manifest)
    _count_captioned(prepared.summary, channel, planned)
    print(f"lora-trainer: wrote {len(files)} caption(s) next to the images; copies in {output}", flush=True)
    print(f"lora-metrics captions_written={len(files)}", flush=True)
    return len(files)


def _caption(saved: Path, planned: Sequence[Target], model_dir: Path, info: dict[str, str], trigger: str | None) -> None:
    """A caption next to each planned image: restored from `saved` when an earlier attempt made it, else BLIP's."""
    restored = caption_files.restore(saved, planned, info, trigger)
    fresh = [target for target in planned if target.relative not in restored]
    if restored:
        print(f"lora-trainer: {len(restored)} caption(s) of an earlier attempt of this job reused from {saved}", flush=True)
    if fresh:
        texts = captioner.run_captioner(model_dir, [target.image for target in fresh])
        caption_files.write_next_to_images(fresh, texts, trigger)


def _count_captioned(summary: DatasetSummary, channel: Path, planned: Sequence[Target]) -> None:
    """The summary (training-metadata.json's dataset) as kohya now reads the folder."""
    images = {target.image.relative_to(channel).as_posix() for target in planned}
    summary.captioned += sum(1 for shown in summary.missing_captions if shown in images)
    summary.missing_captions = [shown for shown in summary.missing_captions if shown not in images]

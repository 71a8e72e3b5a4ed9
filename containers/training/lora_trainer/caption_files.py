"""The caption files caption_missing writes: next to the images (kohya reads them there), copied with
a captions.json manifest to output/data/captions/ (Publish writes them back to S3 for review) and to
checkpoints/captions/ (mirrored to S3 live, so a spot restart restores them instead of captioning)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .caption_targets import Target
from .files import write_atomically, write_json

# The folder of output/data and of the checkpoints the captions are copied to, and its manifest.
CAPTIONS_FOLDER = "captions"
MANIFEST_NAME = "captions.json"


def with_trigger(text: str, trigger: str | None) -> str:
    """One line of caption: BLIP's words, after '<trigger>, ' when a trigger word is set."""
    return f"{trigger}, {text}" if trigger else text


def write_next_to_images(targets: Sequence[Target], texts: Sequence[str], trigger: str | None) -> None:
    for target, text in zip(targets, texts, strict=True):
        target.caption.write_text(with_trigger(text, trigger) + "\n", encoding="utf-8")


def restore(saved: Path, planned: Sequence[Target], info: dict[str, str], trigger: str | None) -> set[str]:
    """The captions an earlier attempt wrote for the same images with the same model and trigger word,
    copied back next to the images; the manifest is written last, so what it lists is complete."""
    try:
        manifest = json.loads((saved / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    same = {**info, "triggerWord": trigger}
    if not isinstance(manifest, dict) or {key: manifest.get(key) for key in same} != same:
        return set()
    listed = set(manifest.get("files") or [])
    restored = set()
    for target in planned:
        copy = saved / target.relative
        if target.relative in listed and copy.is_file():
            shutil.copyfile(copy, target.caption)
            restored.add(target.relative)
    return restored


def copy_out(planned: Sequence[Target], folder: Path, manifest: dict[str, Any]) -> None:
    """The captions as written next to the images, then the manifest (last: a restart trusts what it lists)."""
    for target in planned:
        text = target.caption.read_bytes()
        write_atomically(folder / target.relative, lambda stream, text=text: stream.write(text))
    write_json(folder / MANIFEST_NAME, manifest)

"""Sample images while training, rendered by kohya-ss's own sampling (train_util.sample_images_common):
the prompts file the entrypoint writes for it, the files kohya writes into <output_dir>/sample/, and
the manifest (samples.json) that names each image's prompt, seed, epoch and step."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

from PIL import Image

from .dataset_check import images_in, kohya_caption, kohya_setting
from .files import TEMPORARY_SUFFIX, write_json

SAMPLE_FOLDER = "sample"  # kohya: args.output_dir + "/sample"
MANIFEST_NAME = "samples.json"
CONTACT_SHEET_NAME = "contact-sheet.png"
PROMPTS_FILE_NAME = "sample-prompts.json"
PROMPT_SEPARATOR = "|"
# FLUX.1's sample steps when sample_steps is unset: schnell is distilled to 4 steps; dev gets kohya's
# default (flux_train_utils.sample_image_inference), the cost of 28 being about 40 % more.
FLUX_SAMPLE_STEPS = {"schnell": 4, "dev": 20}


@dataclass(frozen=True)
class SamplePrompt:
    """One prompt as kohya renders it, every option explicit (none left to kohya's defaults).
    `sampler` None: FLUX.1, which kohya samples with its own flow-matching Euler, `cfg_scale` being
    FLUX's embedded guidance."""

    index: int
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    steps: int
    cfg_scale: float
    sampler: str | None

    def kohya_entry(self) -> dict[str, Any]:
        """The keys sample_image_inference reads from a prompt dict; the JSON prompts file hands
        them over as they are, so no prompt text is ever parsed for ' --' options. FLUX.1's
        (flux_train_utils.sample_image_inference) reads 'guidance_scale' as the embedded guidance and
        'scale' as true CFG, which at 1.0 is off (one transformer pass a step, no negative prompt)."""
        common = {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "seed": self.seed, "width": self.width, "height": self.height}
        if self.sampler is None:
            return {**common, "sample_steps": self.steps, "guidance_scale": self.cfg_scale, "scale": 1.0}
        return {**common, "sample_steps": self.steps, "scale": self.cfg_scale, "sample_sampler": self.sampler}


@dataclass(frozen=True)
class SampleImage:
    file: str
    prompt_index: int
    epoch: int
    step: int | None


# Unset sample_every_n_epochs aims at about this many rows after the base model's: sampling every
# epoch would cost a small dataset (many short epochs) hundreds of images of GPU time.
AUTO_ROWS = 8


def sampling_on(values: Mapping[str, Any]) -> bool:
    """Off only with sample_every_n_epochs = 0; unset means a cadence chosen from the epochs."""
    every = values["sample_every_n_epochs"]
    return every is None or int(every) > 0


def every_n_epochs(values: Mapping[str, Any], epochs: int) -> int:
    """The cadence passed to kohya: the user's, else about AUTO_ROWS rows, preferring a cadence
    that divides the epochs (kohya samples only multiples of it, so the last epoch, the LoRA that
    is delivered, gets a row) when one is at most twice the plain ceil(epochs / AUTO_ROWS)."""
    if values["sample_every_n_epochs"] is not None:
        return int(values["sample_every_n_epochs"])
    plain = max(1, math.ceil(epochs / AUTO_ROWS))
    return next((n for n in range(plain, 2 * plain + 1) if epochs % n == 0), plain)


def schedule_warning(every: int, epochs: int, at_first: bool) -> str | None:
    """What the user should know when kohya's cadence leaves out the trained LoRA: kohya draws
    after epoch e only when e % every == 0 (train_util.sample_images_common), never at the end."""
    if every > epochs:
        drawn = "only the base model (epoch 0) is sampled" if at_first else "no sample is drawn at all"
        return f"sample_every_n_epochs {every} is more than the {epochs} epoch(s) trained: {drawn}; lower it"
    if epochs % every:
        return (
            f"the last epoch ({epochs}) is not sampled: kohya samples every {every} epoch(s), so the last row is epoch "
            f"{epochs // every * every}; a sample_every_n_epochs that divides {epochs} shows the final LoRA"
        )
    return None


def split_prompts(text: str) -> list[str]:
    """The '|'-separated prompts of the sample_prompts hyperparameter (its schema pattern refuses
    blank ones), each without surrounding whitespace."""
    return [part.strip() for part in text.split(PROMPT_SEPARATOR)]


def dataset_captions(config: Mapping[str, Any]) -> list[str]:
    """The distinct captions kohya trains with, in file order over the effective dataset.toml:
    subsets as listed, images sorted by name, with caption_prefix/caption_suffix as kohya joins
    them (process_caption), since a trigger word often lives there. Regularization subsets (is_reg)
    describe the class, not what the LoRA learns, and subsets with 0 repeats are not trained: both
    are left out."""
    general = config.get("general", {})
    captions: list[str] = []
    for dataset in config.get("datasets", []):
        for subset in dataset.get("subsets", []):
            if subset.get("is_reg") or int(kohya_setting("num_repeats", subset, dataset, general, 1)) < 1:
                continue
            extension = str(kohya_setting("caption_extension", subset, dataset, general, ".txt"))
            wildcard = bool(kohya_setting("enable_wildcard", subset, dataset, general, False))
            prefix, suffix = (kohya_setting(key, subset, dataset, general, None) for key in ("caption_prefix", "caption_suffix"))
            for image in images_in(Path(subset["image_dir"])):
                text = kohya_caption(image, extension, subset.get("class_tokens"), wildcard) or ""
                caption = _first_line(" ".join(part for part in (prefix, text, suffix) if part))
                if caption and caption not in captions:
                    captions.append(caption)
    return captions


def choose_captions(captions: Sequence[str], count: int) -> list[str]:
    """`count` captions spread evenly over the list (first included), so a dataset sorted by
    subject shows several subjects; all of them when there are fewer."""
    if len(captions) <= count:
        return list(captions)
    return [captions[i * len(captions) // count] for i in range(count)]


def sample_resolution(config: Mapping[str, Any], default: int) -> tuple[int, int]:
    """The training resolution as kohya applies it (the first [[datasets]]'s, else [general]'s, else
    the hyperparameter), as (width, height)."""
    general = config.get("general", {})
    datasets = config.get("datasets") or [{}]
    resolution = kohya_setting("resolution", {}, datasets[0], general, default)
    if isinstance(resolution, list):
        return int(resolution[0]), int(resolution[-1])
    return int(resolution), int(resolution)


def sample_steps(values: Mapping[str, Any], variant: str | None) -> int:
    """The hyperparameter, else FLUX.1's per variant (its schema default is unset for flux1)."""
    if values["sample_steps"] is not None:
        return int(values["sample_steps"])
    return FLUX_SAMPLE_STEPS[variant or "dev"]


def plan_prompts(values: Mapping[str, Any], config: Mapping[str, Any], variant: str | None = None) -> list[SamplePrompt]:
    """The sample prompts of this run: the user's, else some of the dataset's captions; empty
    when sampling is off or there is nothing to prompt with. `variant`: FLUX.1's dev or schnell."""
    if not sampling_on(values):
        return []
    given = values["sample_prompts"]
    texts = split_prompts(str(given)) if given else choose_captions(dataset_captions(config), int(values["sample_count"]))
    width, height = sample_resolution(config, int(values["resolution"]))
    return [
        SamplePrompt(
            index=index, prompt=text, negative_prompt=str(values["sample_negative_prompt"] or ""),
            seed=int(values["sample_seed"]) + index, width=width, height=height, steps=sample_steps(values, variant),
            cfg_scale=float(values["sample_cfg_scale"]), sampler=values["sample_sampler"],
        )
        for index, text in enumerate(texts)
    ]


def write_prompts_file(prompts: Sequence[SamplePrompt], path: Path) -> Path:
    """kohya's .json prompts format (a list of prompt dicts, read by json.load); the name must end
    in .json for kohya to read it as such."""
    assert path.suffix == ".json", path
    write_json(path, [p.kohya_entry() for p in prompts])
    return path


def file_pattern(output_name: str) -> re.Pattern[str]:
    """kohya's sample file name: <output_name>_<e + epoch, 6 digits | step, 6 digits>_<prompt index,
    2 digits>_<local time, 14 digits>[_<seed>].png (train_util.sample_image_inference)."""
    return re.compile(
        rf"^{re.escape(output_name)}_(?:e(?P<epoch>\d{{6}})|(?P<step>\d{{6}}))_(?P<index>\d{{2,}})_(?P<time>\d{{14}})(?:_(?P<seed>\d+))?\.png$"
    )


def sample_images(folder: Path, output_name: str, steps_per_epoch: int | None) -> list[SampleImage]:
    """kohya's epoch samples in `folder`, oldest epoch first, then by prompt. The step is the
    optimizer step the epoch ended at (epoch x kohya's steps per epoch), None when not known.
    A second file for the same epoch and prompt (kohya wrote it again) keeps only the newest."""
    pattern = file_pattern(output_name)
    newest: dict[tuple[int, int], tuple[str, str]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = pattern.match(path.name)
        if not match or match["epoch"] is None:
            continue  # step samples are not made (no --sample_every_n_steps)
        key = (int(match["epoch"]), int(match["index"]))
        if key not in newest or match["time"] >= newest[key][0]:
            newest[key] = (match["time"], path.name)
    return [
        SampleImage(name, index, epoch, epoch * steps_per_epoch if steps_per_epoch is not None else None)
        for (epoch, index), (_, name) in sorted(newest.items())
    ]


def readable(folder: Path, images: Sequence[SampleImage]) -> tuple[list[SampleImage], list[str]]:
    """The images that decode, and the names of those that do not (a PNG cut short when a spot
    interruption stopped kohya while it saved one): those are left out of the manifest and the sheet
    rather than costing the whole sheet."""
    good, bad = [], []
    for image in images:
        try:
            with Image.open(folder / image.file) as opened:
                opened.load()
            good.append(image)
        except (OSError, ValueError, SyntaxError):  # PIL's errors for a truncated or foreign file
            bad.append(image.file)
    return good, bad


def remove_superseded(folder: Path, output_name: str, resumed_after: int) -> list[str]:
    """Before an attempt starts: the samples of the epochs it will train again (after its resume
    point; every epoch, with the base model's row, on a fresh start) were drawn by training that is
    thrown away, so they go, as do a manifest of an earlier end and a cut-short manifest write.
    The resumed epochs' stay."""
    pattern = file_pattern(output_name)
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = pattern.match(path.name)
        stale = path.name in (MANIFEST_NAME, CONTACT_SHEET_NAME) or path.name.endswith(TEMPORARY_SUFFIX) or (
            match is not None and (resumed_after == 0 or match["epoch"] is None or int(match["epoch"]) > resumed_after)
        )
        if stale and path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def manifest(prompts: Sequence[SamplePrompt], images: Sequence[SampleImage], contact_sheet: str | None) -> dict[str, Any]:
    """samples.json: every prompt with all its settings, every image with its prompt, epoch and step."""
    known = {p.index for p in prompts}
    return {
        "prompts": [asdict(p) for p in prompts],
        "images": [asdict(image) for image in images if image.prompt_index in known],
        "contact_sheet": contact_sheet,
    }


def write_manifest(folder: Path, content: dict[str, Any]) -> Path:
    path = folder / MANIFEST_NAME
    write_json(path, content)
    return path


def _first_line(caption: str | None) -> str:
    """A prompt is one line: with enable_wildcard a caption file holds one caption a line."""
    lines = [line.strip() for line in (caption or "").splitlines() if line.strip()]
    return lines[0] if lines else ""

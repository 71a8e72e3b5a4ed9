"""The contact sheet: one PNG of every sample, a row per epoch (ascending, epoch 0 being the base
model) and a column per prompt, labelled with PIL's default font. A cell kohya did not draw (an
epoch an interruption cut short) stays empty."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .sampling import SampleImage, SamplePrompt

# Cells are at least this wide, so labels fit even under tiny images, and at most this wide, so a
# sheet of 1024 px SDXL samples over many epochs stays a size a browser shows.
MIN_CELL = 128
MAX_CELL = 256
GAP = 4
# At most this many rows (the first and last epochs and evenly spaced ones between): a run sampled
# every epoch for hundreds of epochs would otherwise be a sheet too tall to allocate or to view.
# samples.json still lists every image.
MAX_ROWS = 40
ROW_LABEL_WIDTH = 96
HEADER_LINES = 4
LINE_HEIGHT = 12
BACKGROUND = (255, 255, 255)
EMPTY_CELL = (235, 235, 235)
TEXT = (0, 0, 0)


def cell_size(prompts: Sequence[SamplePrompt]) -> int:
    largest = max((max(p.width, p.height) for p in prompts), default=MIN_CELL)
    return max(MIN_CELL, min(MAX_CELL, largest))


def build_contact_sheet(folder: Path, prompts: Sequence[SamplePrompt], images: Sequence[SampleImage]) -> Image.Image:
    """The grid of `images` (files in `folder`); raises ValueError when there is nothing to show."""
    if not prompts or not images:
        raise ValueError("no sample images to put on a contact sheet")
    cell = cell_size(prompts)
    epochs = shown_epochs(sorted({image.epoch for image in images}))
    steps = {image.epoch: image.step for image in images}
    by_cell = {(image.epoch, image.prompt_index): image for image in images}
    header = HEADER_LINES * LINE_HEIGHT + GAP
    width = ROW_LABEL_WIDTH + len(prompts) * (cell + GAP) + GAP
    height = header + len(epochs) * (cell + GAP) + GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for column, prompt in enumerate(prompts):
        x = ROW_LABEL_WIDTH + GAP + column * (cell + GAP)
        _label(draw, font, (x, GAP), f"#{prompt.index} seed {prompt.seed}: {prompt.prompt}", cell)
    for row, epoch in enumerate(epochs):
        y = header + row * (cell + GAP)
        step = steps.get(epoch)
        _label(draw, font, (GAP, y), f"epoch {epoch}" + (" (base)" if epoch == 0 else f"\nstep {step}" if step is not None else ""), ROW_LABEL_WIDTH)
        for column, prompt in enumerate(prompts):
            x = ROW_LABEL_WIDTH + GAP + column * (cell + GAP)
            image = by_cell.get((epoch, prompt.index))
            if image is None:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=EMPTY_CELL)
                continue
            with Image.open(folder / image.file) as opened:
                tile = _fit(opened.convert("RGB"), cell)
            sheet.paste(tile, (x + (cell - tile.width) // 2, y + (cell - tile.height) // 2))
    return sheet


def shown_epochs(epochs: Sequence[int]) -> list[int]:
    """All the epochs, or MAX_ROWS of them evenly spaced, the first and the last included."""
    if len(epochs) <= MAX_ROWS:
        return list(epochs)
    return [epochs[round(row * (len(epochs) - 1) / (MAX_ROWS - 1))] for row in range(MAX_ROWS)]


def write_contact_sheet(folder: Path, name: str, prompts: Sequence[SamplePrompt], images: Sequence[SampleImage]) -> Path:
    path = folder / name
    build_contact_sheet(folder, prompts, images).save(path, format="PNG")
    return path


def _fit(image: Image.Image, cell: int) -> Image.Image:
    """The image scaled to fit the cell, keeping its aspect ratio (nearest-neighbour when it grows,
    so tiny samples stay sharp pixels rather than a blur)."""
    scale = cell / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)


def _label(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, at: tuple[int, int], text: str, width: int) -> None:
    """`text` wrapped to `width` pixels (by the font's average glyph), at most HEADER_LINES lines."""
    per_line = max(4, width // max(1, int(draw.textlength("n", font=font))))
    lines = [wrapped for part in text.splitlines() for wrapped in textwrap.wrap(part, per_line) or [""]]
    if len(lines) > HEADER_LINES:
        lines = lines[: HEADER_LINES - 1] + [lines[HEADER_LINES - 1][: per_line - 1] + "..."]
    for number, line in enumerate(lines):
        draw.text((at[0], at[1] + number * LINE_HEIGHT), line, fill=TEXT, font=font)

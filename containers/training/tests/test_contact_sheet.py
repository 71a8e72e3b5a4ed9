"""The contact sheet, drawn with the real PIL: a row per epoch (ascending), a column per prompt, each
sample in its cell, an empty cell where a sample is missing, labels."""

import pytest
from PIL import Image

from lora_trainer.contact_sheet import (
    BACKGROUND, EMPTY_CELL, GAP, HEADER_LINES, LINE_HEIGHT, MAX_ROWS, MIN_CELL, ROW_LABEL_WIDTH, build_contact_sheet, cell_size, shown_epochs,
)
from lora_trainer.sampling import SampleImage, SamplePrompt

HEADER = HEADER_LINES * LINE_HEIGHT + GAP


def prompt(index, size=64):
    return SamplePrompt(index, f"prompt number {index}", "", 100 + index, size, size, 2, 7.0, "euler_a")


def colour(epoch, index):
    return (50 * epoch, 100 + 60 * index, 30)


def write_samples(folder, cells, size=64):
    images = []
    for epoch, index in cells:
        name = f"lora_e{epoch:06d}_{index:02d}_20260101000000_{100 + index}.png"
        Image.new("RGB", (size, size), colour(epoch, index)).save(folder / name)
        images.append(SampleImage(name, index, epoch, epoch * 2))
    return images


def colours(image):
    return {pixel for _, pixel in image.getcolors(maxcolors=image.width * image.height)}


def cell_centre(row, column, cell):
    return ROW_LABEL_WIDTH + GAP + column * (cell + GAP) + cell // 2, HEADER + row * (cell + GAP) + cell // 2


def test_rows_are_epochs_ascending_columns_prompts_and_a_missing_cell_is_empty(tmp_path):
    prompts = [prompt(0), prompt(1)]
    # Given out of order; epoch 2 of prompt 1 is missing (an interruption cut the epoch's sampling short).
    images = write_samples(tmp_path, [(2, 0), (0, 1), (0, 0), (1, 0), (1, 1)])
    sheet = build_contact_sheet(tmp_path, prompts, images)
    cell = MIN_CELL  # 64 px samples are shown at least 128 px wide
    assert sheet.size == (ROW_LABEL_WIDTH + 2 * (cell + GAP) + GAP, HEADER + 3 * (cell + GAP) + GAP)
    for row, epoch in enumerate((0, 1, 2)):
        for column in (0, 1):
            expected = EMPTY_CELL if (epoch, column) == (2, 1) else colour(epoch, column)
            assert sheet.getpixel(cell_centre(row, column, cell)) == expected, (epoch, column)


def test_labels_are_drawn_for_each_prompt_and_epoch(tmp_path):
    prompts = [prompt(0)]
    sheet = build_contact_sheet(tmp_path, prompts, write_samples(tmp_path, [(0, 0), (3, 0)]))
    header = sheet.crop((ROW_LABEL_WIDTH, 0, sheet.width, HEADER - GAP))
    row_labels = sheet.crop((0, HEADER, ROW_LABEL_WIDTH, sheet.height))
    for area in (header, row_labels):
        assert colours(area) - {BACKGROUND}, "no label drawn"
    # Negative control: the gap between cells carries no text.
    gap = sheet.crop((ROW_LABEL_WIDTH, HEADER - GAP, ROW_LABEL_WIDTH + GAP, HEADER))
    assert colours(gap) == {BACKGROUND}


@pytest.mark.parametrize("size, cell", [(64, 128), (512, 256), (200, 200), (1024, 256)])
def test_cells_grow_small_samples_and_shrink_large_ones(size, cell):
    assert cell_size([prompt(0, size)]) == cell


def test_a_large_sample_is_scaled_into_its_cell(tmp_path):
    sheet = build_contact_sheet(tmp_path, [prompt(0, 1024)], write_samples(tmp_path, [(1, 0)], size=1024))
    assert sheet.size == (ROW_LABEL_WIDTH + 256 + 2 * GAP, HEADER + 256 + 2 * GAP)
    assert sheet.getpixel(cell_centre(0, 0, 256)) == colour(1, 0)


def test_nothing_to_show_is_an_error_the_entrypoint_logs(tmp_path):
    with pytest.raises(ValueError, match="no sample images"):
        build_contact_sheet(tmp_path, [prompt(0)], [])


def test_a_long_run_shows_at_most_max_rows_with_the_first_and_last_epoch(tmp_path):
    # The first test, 3 epochs, is the control: every epoch gets its row.
    epochs = list(range(0, 301))
    shown = shown_epochs(epochs)
    assert len(shown) == MAX_ROWS and shown[0] == 0 and shown[-1] == 300 and shown == sorted(set(shown))
    assert shown_epochs(epochs[:MAX_ROWS]) == epochs[:MAX_ROWS]
    sheet = build_contact_sheet(tmp_path, [prompt(0, 4)], write_samples(tmp_path, [(e, 0) for e in range(MAX_ROWS + 5)], size=4))
    assert sheet.height == HEADER + MAX_ROWS * (MIN_CELL + GAP) + GAP

import re

from lora_trainer.progress import ProgressParser, metric_definitions


def run(parser, chunks):
    lines = []
    for chunk in chunks:
        lines += list(parser.feed(chunk))
    return lines + list(parser.close())


BAR = "steps:  {p}%|##   | {s}/400 [00:10<05:00,  1.31s/it, avr_loss=0.0{s}]"


def test_progress_redraws_become_one_metric_line_per_step():
    parser = ProgressParser()
    chunks = [
        "override steps. steps for 4 epochs is / 指定エポックまでのステップ数: 400\n",
        "\nepoch 1/4\n\n",
        "\r" + BAR.format(p=0, s=0),
        "\r" + BAR.format(p=1, s=1) + "\r" + BAR.format(p=1, s=1),  # tqdm redraws the same step
        "\r" + BAR.format(p=1, s=2)[:20],  # a chunk ends inside a redraw
        BAR.format(p=1, s=2)[20:] + "\n",
        "saving checkpoint: /opt/ml/checkpoints/lora-000001.safetensors\n",
    ]
    assert run(parser, chunks) == [
        "override steps. steps for 4 epochs is / 指定エポックまでのステップ数: 400",
        "epoch 1/4",
        "lora-metrics step=1 epoch=1 loss=0.01 seconds_per_step=1.310",
        "lora-metrics step=2 epoch=1 loss=0.02 seconds_per_step=1.310",
        "saving checkpoint: /opt/ml/checkpoints/lora-000001.safetensors",
    ]
    assert parser.steps_per_epoch == 100


def test_a_resumed_run_counts_steps_from_the_start_of_training():
    parser = ProgressParser(epoch_offset=2)
    lines = run(parser, [
        "override steps. steps for 4 epochs is / 指定エポックまでのステップ数: 400\n",
        "epoch 3/4\n",
        "\rsteps:   0%|  | 1/400 [00:01<05:00,  2.50it/s, avr_loss=0.5]\n",
    ])
    assert lines[-1] == "lora-metrics step=201 epoch=3 loss=0.5 seconds_per_step=0.400"


def test_metric_definitions_parse_the_printed_lines():
    line = "lora-metrics step=201 epoch=3 loss=0.0831 seconds_per_step=0.400"
    found = {}
    for definition in metric_definitions():
        assert len(definition["Regex"]) <= 500 and 1 <= len(definition["Name"]) <= 255
        match = re.search(definition["Regex"], line)
        assert match, definition["Name"]
        found[definition["Name"]] = float(match.group(1))
    assert found == {"train:loss": 0.0831, "train:step": 201, "train:epoch": 3, "train:seconds_per_step": 0.4}
    # and nothing else kohya prints looks like a metric
    for other in ["epoch 3/4", "steps:   0%|  | 1/400 [00:01<05:00,  2.50it/s, avr_loss=0.5]", "loss=0.3 step=1"]:
        assert not any(re.search(d["Regex"], other) for d in metric_definitions())

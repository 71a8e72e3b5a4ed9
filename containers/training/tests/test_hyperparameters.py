import json
import re
from pathlib import Path

import pytest

from lora_trainer.hyperparameters import SCHEMA_PATH, HyperparameterError, load_schema, parse_hyperparameters

CASES = json.loads(Path(__file__).with_name("hyperparameter_cases.json").read_text())["cases"]
# Every flag the schema may emit, as declared in kohya-ss sd-scripts v0.10.1 (train_network.py,
# library/train_util.py, sdxl_train_network.py); fake_kohya.py accepts exactly these.
KOHYA_FLAGS = {
    "--pretrained_model_name_or_path", "--output_name", "--max_train_epochs", "--learning_rate", "--unet_lr", "--text_encoder_lr",
    "--network_train_unet_only", "--network_dim", "--network_alpha", "--mixed_precision", "--optimizer_type", "--lr_scheduler",
    "--lr_warmup_steps", "--save_every_n_epochs", "--cache_latents", "--cache_text_encoder_outputs", "--gradient_checkpointing",
    "--seed", "--resolution", "--train_batch_size", "--dataset_repeats", "--clip_skip", "--prior_loss_weight",
    "--sample_every_n_epochs", "--sample_at_first", "--sample_sampler",
}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_case(case):
    if "problems" in case:
        with pytest.raises(HyperparameterError) as raised:
            parse_hyperparameters(case["input"])
        assert [[p.key, p.code] for p in raised.value.problems] == case["problems"]
    else:
        values = parse_hyperparameters(case["input"])
        assert {key: values[key] for key in case["expect"]} == case["expect"]


def test_every_effective_value_is_of_its_declared_type():
    schema = load_schema()
    for model_type in ("sd15", "sdxl"):
        values = parse_hyperparameters({"model_type": model_type})
        assert set(values) == set(schema.specs)
        for name, spec in schema.specs.items():
            value = values[name]
            if value is None:
                continue
            expected = {"integer": int, "number": (int, float), "boolean": bool, "string": str}[spec.type]
            assert isinstance(value, expected), name


def test_the_defaults_pass_their_own_rules():
    # Each default, written out as SageMaker would, must be accepted (a bad default would fail every job).
    schema = load_schema()
    for model_type in ("sd15", "sdxl"):
        for name, spec in schema.specs.items():
            default = spec.default_for(model_type)
            if default is None or (spec.models and model_type not in spec.models):
                continue
            raw = {"model_type": model_type, name: json.dumps(default) if not isinstance(default, str) else default}
            if name == "cache_text_encoder_outputs":
                raw["network_train_unet_only"] = "true"
            parse_hyperparameters(raw)


def test_flags_are_real_kohya_flags_and_reserved_keys_are_not_hyperparameters():
    schema = load_schema()
    flags = {spec.flag for spec in schema.specs.values() if spec.flag}
    assert flags == KOHYA_FLAGS
    assert not set(schema.reserved) & set(schema.specs)


def test_the_message_names_every_problem_with_what_to_do():
    with pytest.raises(HyperparameterError) as raised:
        parse_hyperparameters({"network_dim": "0", "max_train_step": "5", "xformers": "true"})
    message = str(raised.value)
    assert message.startswith("Invalid hyperparameters (3 problems): ")
    assert '"network_dim": must be at least 1, not "0"' in message
    assert 'did you mean "max_train_steps"?' in message
    assert "PyTorch's SDPA attention" in message


def test_schema_file_is_what_the_package_ships():
    assert SCHEMA_PATH.parent.name == "lora_trainer"
    document = json.loads(SCHEMA_PATH.read_text())
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in document["hyperparameters"])

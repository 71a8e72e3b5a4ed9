import json
import re
from pathlib import Path

import pytest

from lora_trainer.hyperparameters import SCHEMA_PATH, HyperparameterError, load_schema, parse_hyperparameters

CASES = json.loads(Path(__file__).with_name("hyperparameter_cases.json").read_text())["cases"]
# Every flag the schema may emit, as declared in kohya-ss sd-scripts v0.10.1 (train_network.py,
# library/train_util.py, sdxl_train_network.py, library/flux_train_utils.py); fake_kohya.py accepts exactly these.
KOHYA_FLAGS = {
    "--pretrained_model_name_or_path", "--output_name", "--max_train_epochs", "--learning_rate", "--unet_lr", "--text_encoder_lr",
    "--network_train_unet_only", "--network_dim", "--network_alpha", "--mixed_precision", "--optimizer_type", "--lr_scheduler",
    "--lr_warmup_steps", "--save_every_n_epochs", "--cache_latents", "--cache_text_encoder_outputs", "--gradient_checkpointing",
    "--seed", "--resolution", "--train_batch_size", "--dataset_repeats", "--clip_skip", "--prior_loss_weight",
    "--sample_every_n_epochs", "--sample_at_first", "--sample_sampler",
    "--guidance_scale", "--timestep_sampling", "--sigmoid_scale", "--model_prediction_type", "--discrete_flow_shift", "--fp8_base",
    "--blocks_to_swap", "--t5xxl_max_token_length", "--apply_t5_attn_mask",
}
MODEL_TYPES = ("sd15", "sdxl", "flux1")


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
    for model_type in MODEL_TYPES:
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
    for model_type in MODEL_TYPES:
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


def test_a_per_type_default_names_every_model_type():
    # lambda/shared/hyperparameters.ts reads a per-type default for each model type of the enum.
    schema = load_schema()
    assert schema.specs["model_type"].enum == MODEL_TYPES
    for name, spec in schema.specs.items():
        if isinstance(spec.default, dict):
            assert tuple(spec.default) == MODEL_TYPES, name


def test_flux_only_keys_have_no_value_for_the_other_model_types():
    # Their flags must never reach train_network.py or sdxl_train_network.py, which do not declare them.
    schema = load_schema()
    flux_only = [name for name, spec in schema.specs.items() if spec.models == ("flux1",)]
    assert len(flux_only) == 9
    for model_type in ("sd15", "sdxl"):
        values = parse_hyperparameters({"model_type": model_type})
        assert {name: values[name] for name in flux_only} == dict.fromkeys(flux_only)


@pytest.mark.parametrize(("model_type", "hub_id"), [("sd15", "black-forest-labs/FLUX.1-dev"), ("sdxl", "black-forest-labs/FLUX.1-schnell")])
def test_a_flux_hub_id_under_sd15_or_sdxl_says_to_choose_flux1(model_type, hub_id):
    # Python-only until lambda/shared/hyperparameters.ts reports it too; then a case of hyperparameter_cases.json.
    with pytest.raises(HyperparameterError) as raised:
        parse_hyperparameters({"model_type": model_type, "base_model": hub_id})
    assert [(p.key, p.code) for p in raised.value.problems] == [("base_model", "conflict")]
    assert f"{hub_id} is a flux1 base model, not {model_type}: set model_type = flux1" in str(raised.value)

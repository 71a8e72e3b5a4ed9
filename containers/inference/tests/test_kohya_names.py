"""Renaming kohya-ss's transformers 4 text-encoder names for the text encoders transformers 5 builds."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import TypeVar

from lora_server.kohya_names import adapted_names, modules_per_component, prefixes_to_strip

T = TypeVar("T")


def adapt_names(state_dict: Mapping[str, T], strip: list[str], file_name: str = "the LoRA file") -> dict[str, T]:
    """The tensors as load_pipeline hands them to diffusers: each under its adapted name."""
    return {new: state_dict[old] for old, new in adapted_names(state_dict, strip, file_name).items()}

FLAT = SimpleNamespace(encoder=object())  # transformers 5's CLIPTextModel: no text_model
WRAPPED = SimpleNamespace(text_model=object())  # CLIPTextModelWithProjection, and any transformers 4 encoder

SDXL_KEYS = {
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": 1,
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha": 2,
    "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": 3,
    "lora_unet_input_blocks_4_1_proj_in.lora_down.weight": 4,
}


def test_only_an_encoder_without_text_model_has_its_prefix_stripped() -> None:
    assert prefixes_to_strip(SimpleNamespace(text_encoder=FLAT, text_encoder_2=WRAPPED)) == ["lora_te_", "lora_te1_"]
    assert prefixes_to_strip(SimpleNamespace(text_encoder=FLAT)) == ["lora_te_", "lora_te1_"]
    # Negative controls: transformers 4 encoders, or none, need nothing.
    assert prefixes_to_strip(SimpleNamespace(text_encoder=WRAPPED, text_encoder_2=WRAPPED)) == []
    assert prefixes_to_strip(SimpleNamespace(text_encoder=None)) == []


def test_sdxl_names_are_renamed_for_the_first_encoder_only() -> None:
    renamed = adapt_names(SDXL_KEYS, ["lora_te_", "lora_te1_"])
    assert renamed == {
        "lora_te1_encoder_layers_0_self_attn_q_proj.lora_down.weight": 1,
        "lora_te1_encoder_layers_0_self_attn_q_proj.alpha": 2,
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": 3,
        "lora_unet_input_blocks_4_1_proj_in.lora_down.weight": 4,
    }
    assert adapt_names(SDXL_KEYS, []) == SDXL_KEYS


def test_sd15_names_are_renamed_and_already_flat_names_are_left_alone() -> None:
    keys = {"lora_te_text_model_encoder_layers_11_mlp_fc2.lora_down.weight": 1, "lora_te_encoder_layers_0_mlp_fc2.lora_down.weight": 2}
    assert adapt_names(keys, ["lora_te_"]) == {"lora_te_encoder_layers_11_mlp_fc2.lora_down.weight": 1, "lora_te_encoder_layers_0_mlp_fc2.lora_down.weight": 2}


def test_modules_are_counted_per_pipeline_component() -> None:
    assert modules_per_component(SDXL_KEYS) == {"text_encoder": 1, "unet": 1}
    assert modules_per_component([*SDXL_KEYS, "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", "lora_te_x.lora_down.weight"]) == {
        "text_encoder": 2, "text_encoder_2": 1, "unet": 1,
    }


def test_a_key_in_both_namings_is_refused_naming_both_never_dropped() -> None:
    import pytest

    from lora_server.lora_file import LoraFileError

    keys = {"lora_te_text_model_encoder_layers_0_mlp_fc2.alpha": 1, "lora_te_encoder_layers_0_mlp_fc2.alpha": 2}
    with pytest.raises(
        LoraFileError,
        match=r"pokemon.safetensors: its keys lora_te_text_model_encoder_layers_0_mlp_fc2.alpha and lora_te_encoder_layers_0_mlp_fc2.alpha name the same layer",
    ):
        adapt_names(keys, ["lora_te_"], "pokemon.safetensors")
    # Negative control: without renaming, both keys are kept.
    assert adapt_names(keys, []) == keys

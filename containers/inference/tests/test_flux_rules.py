"""FLUX.1's rules that need no model: request fields per variant, settings, the LoRA header, the Hub token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lora_server.flux_files import AE_FILE, CLIP_L_FILE, HUB_REPOS, T5XXL_FILE, TRANSFORMER_FILES
from lora_server.hub_token import HubTokenError, read_hub_token, region_of
from lora_server.kohya_names import flux_layers_per_component
from lora_server.lora_file import LoraFileError, inspect_lora
from lora_server.model_files import resolve_base_model
from lora_server.settings import Settings, SettingsError
from lora_server.validation import RequestError, validate

from .conftest import SDXL_MODULES, lora_shapes, write_safetensors

# Module names as sd-scripts' networks/lora_flux.py writes them for FLUX.1's transformer.
FLUX_MODULES = [
    "lora_unet_double_blocks_0_img_attn_qkv",
    "lora_unet_double_blocks_0_txt_mlp_2",
    "lora_unet_single_blocks_37_linear1",
    "lora_unet_single_blocks_0_modulation_lin",
]


def flux(variant: str, **body: Any) -> Any:
    return validate({"prompt": "a cat", **body}, "flux1", 1.0, 7, variant)


@pytest.mark.parametrize(("variant", "steps", "guidance"), [("schnell", 4, 0.0), ("dev", 28, 3.5)])
def test_flux_requests_take_the_variants_steps_and_guidance_at_1024_px(variant: str, steps: int, guidance: float) -> None:
    params = flux(variant)
    assert (params.num_inference_steps, params.guidance_scale, params.width, params.height) == (steps, guidance, 1024, 1024)
    assert params.negative_prompt is None and params.scheduler == "default"
    assert flux(variant, num_inference_steps=50).num_inference_steps == 50


@pytest.mark.parametrize(
    ("variant", "body", "field"),
    [
        ("schnell", {"guidance_scale": 3.5}, "guidance_scale"),
        ("dev", {"guidance_scale": 21}, "guidance_scale"),
        ("dev", {"negative_prompt": "blurry"}, "negative_prompt"),
        ("schnell", {"num_inference_steps": 51}, "num_inference_steps"),
        ("dev", {"scheduler": "euler"}, "scheduler"),
        ("dev", {"width": 1000}, "width"),  # a multiple of 8, not of 16
        ("schnell", {"height": 1552}, "height"),
    ],
)
def test_flux_request_fields_that_do_not_apply_are_refused_naming_them(variant: str, body: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as refused:
        flux(variant, **body)
    assert refused.value.field == field


def test_the_same_fields_stay_valid_for_sd15_and_sdxl() -> None:
    # Negative control: the FLUX.1 rules apply to flux1 only.
    params = validate({"prompt": "a cat", "negative_prompt": "blurry", "scheduler": "euler", "width": 520}, "sd15", 1.0, 7)
    assert (params.num_inference_steps, params.guidance_scale, params.negative_prompt) == (25, 7.5, "blurry")
    assert flux("schnell", guidance_scale=0).guidance_scale == 0.0


def four_files(folder: Path, *transformers: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*[TRANSFORMER_FILES[v] for v in transformers], AE_FILE, CLIP_L_FILE, T5XXL_FILE):  # type: ignore[index]
        (folder / name).write_bytes(b"x")
    return folder


def test_flux1_settings_take_the_variant_from_the_mounted_transformer_file_or_the_hub_id(tmp_path: Path) -> None:
    files = four_files(tmp_path / "dev", "dev")
    settings = Settings.from_env({"MODEL_TYPE": "flux1", "BASE_MODEL_PATH": str(files)})
    assert settings.flux_variant == "dev"
    assert resolve_base_model(settings).kind == "flux_files"
    hub = Settings.from_env({"MODEL_TYPE": "flux1", "BASE_MODEL_PATH": str(tmp_path / "none"), "BASE_MODEL_ID": HUB_REPOS["schnell"],
                             "HF_TOKEN_SECRET_ID": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hf-AbCdEf"})
    assert (hub.flux_variant, hub.hf_token_secret_id) == ("schnell", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hf-AbCdEf")
    assert resolve_base_model(hub).kind == "hub"
    # schnell from the Hub, and dev from S3 files, need no token.
    assert Settings.from_env({"MODEL_TYPE": "flux1", "BASE_MODEL_PATH": str(files), "BASE_MODEL_ID": HUB_REPOS["dev"]}).hf_token_secret_id is None
    assert Settings.from_env({"MODEL_TYPE": "sd15"}).flux_variant is None


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        ({"BASE_MODEL_ID": "someone/flux-finetune"}, "BASE_MODEL_ID", "FLUX.1-dev or black-forest-labs/FLUX.1-schnell"),
        ({}, "BASE_MODEL_ID", "it is not set"),
        ({"BASE_MODEL_ID": HUB_REPOS["dev"], "HF_TOKEN_SECRET_ID": "bad secret"}, "HF_TOKEN_SECRET_ID", "secret name or ARN"),
        ({"BASE_MODEL_ID": HUB_REPOS["dev"]}, "HF_TOKEN_SECRET_ID", "gated FLUX.1-dev"),
    ],
)
def test_flux1_settings_refuse_an_unknown_hub_id_and_a_bad_secret_id(tmp_path: Path, env: dict[str, str], variable: str, message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"MODEL_TYPE": "flux1", "BASE_MODEL_PATH": str(tmp_path / "none"), **env})
    assert [p.variable for p in refused.value.problems] == [variable] and message in str(refused.value)


@pytest.mark.parametrize("transformers", [("dev", "schnell"), ()])
def test_flux1_settings_refuse_both_or_no_transformer_files(tmp_path: Path, transformers: tuple[str, ...]) -> None:
    files = four_files(tmp_path / "files", *transformers)
    with pytest.raises(SettingsError, match=r"exactly one of flux1-dev.safetensors or flux1-schnell.safetensors"):
        Settings.from_env({"MODEL_TYPE": "flux1", "BASE_MODEL_PATH": str(files), "BASE_MODEL_ID": HUB_REPOS["schnell"]})


def test_a_kohya_flux_lora_header_is_read_as_flux1_and_refused_elsewhere(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", lora_shapes(FLUX_MODULES), {"ss_base_model_version": "flux1"})
    assert inspect_lora(path, "flux1").modules == 4
    with pytest.raises(LoraFileError, match="is a FLUX.1 LoRA but MODEL_TYPE is sdxl"):
        inspect_lora(path, "sdxl")
    sdxl = write_safetensors(tmp_path / "b.safetensors", lora_shapes(SDXL_MODULES))
    with pytest.raises(LoraFileError, match="is an SDXL LoRA but MODEL_TYPE is flux1"):
        inspect_lora(sdxl, "flux1")
    # qkv -> 3 layers, linear1 -> 4 (diffusers' split), the others 1.
    assert flux_layers_per_component(f"{m}.lora_down.weight" for m in FLUX_MODULES) == {"transformer": 3 + 1 + 4 + 1}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", "FLUX.1 LoRA with text-encoder modules"),
        ("lora_te3_encoder_block_0_layer_0_SelfAttention_q", "FLUX.1 LoRA with text-encoder modules"),
        ("lora_unet_input_blocks_4_1_proj_in", "mixes FLUX.1 module names with others"),
        ("lora_unet_time_in_in_layer", "kohya's in_dims modules"),
    ],
)
def test_a_flux_lora_with_text_encoder_or_foreign_modules_is_refused(tmp_path: Path, extra: str, message: str) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", lora_shapes([*FLUX_MODULES, extra]))
    with pytest.raises(LoraFileError, match=message):
        inspect_lora(path, "flux1")


class FakeSecrets:
    def __init__(self, value: str | None = None, error: Exception | None = None) -> None:
        self.value, self.error, self.calls = value, error, []

    def __call__(self, region: str | None) -> FakeSecrets:
        self.calls.append(region)
        return self

    def get_secret_value(self, SecretId: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        if self.error is not None:
            raise self.error
        return {"SecretString": self.value} if self.value is not None else {"SecretBinary": b"x"}


def test_the_hub_token_is_read_from_the_named_secret_in_its_region() -> None:
    secrets = FakeSecrets(" hf_abc123\n")
    assert read_hub_token("arn:aws:secretsmanager:eu-west-1:123456789012:secret:hf-AbCdEf", secrets) == "hf_abc123"
    assert secrets.calls == ["eu-west-1"] and region_of("hf-token") is None
    assert read_hub_token(None, secrets) is None and secrets.calls == ["eu-west-1"]


@pytest.mark.parametrize("secrets", [FakeSecrets(None), FakeSecrets("  "), FakeSecrets(error=RuntimeError("AccessDeniedException"))])
def test_an_unreadable_or_empty_token_secret_fails_naming_the_secret(secrets: FakeSecrets) -> None:
    with pytest.raises(HubTokenError, match="HF_TOKEN_SECRET_ID hf-token") as failed:
        read_hub_token("hf-token", secrets)
    assert "hf_" not in str(failed.value).replace("hf-token", "")


def test_flux1_runs_in_bf16_on_cuda_by_default_and_refuses_fp16(tmp_path: Path) -> None:
    env = {"MODEL_TYPE": "flux1", "BASE_MODEL_PATH": str(tmp_path / "none"), "BASE_MODEL_ID": HUB_REPOS["schnell"]}
    assert Settings.from_env(env).dtype == "bfloat16"
    assert Settings.from_env({**env, "DEVICE": "cpu"}).dtype == "float32"
    with pytest.raises(SettingsError, match="overflows in float16"):
        Settings.from_env({**env, "DTYPE": "float16"})
    # Negative control: SD keeps fp16 on CUDA.
    assert Settings.from_env({"MODEL_TYPE": "sdxl"}).dtype == "float16"

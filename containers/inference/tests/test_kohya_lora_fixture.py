"""LoRA files written by kohya-ss sd-scripts' own code (kohya_lora_fixture.py) for tiny pipelines, loaded by diffusers 0.40.

The fixture script runs in the training venv (LORA_TEST_PYTHON_TRAINING, sd-scripts at LORA_TEST_SD_SCRIPTS);
without them these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import UNet2DConditionModel
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file

from .kohya_lora_fixture import TINY_SDXL_UNET_CONFIG
from .conftest import skip_or_fail
from .tiny_pipelines import build_sd15, build_sdxl

SCRIPT = Path(__file__).with_name("kohya_lora_fixture.py")
# Which pipeline component each kohya prefix's modules belong to.
COMPONENTS = {"lora_te_": "text_encoder", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2", "lora_unet_": "unet"}


def training_env() -> tuple[str, str]:
    python, sd_scripts = os.environ.get("LORA_TEST_PYTHON_TRAINING"), os.environ.get("LORA_TEST_SD_SCRIPTS")
    if python and sd_scripts and Path(python).is_file() and (Path(sd_scripts) / "networks" / "lora.py").is_file():
        return python, sd_scripts
    skip_or_fail(f"LORA_TEST_PYTHON_TRAINING={python!r} and LORA_TEST_SD_SCRIPTS={sd_scripts!r} must name the training venv's python and sd-scripts")


def build(model_type: str, work: Path) -> Any:
    if model_type == "sd15":
        return build_sd15(work)
    # kohya's SDXL U-Net can only be as small as TINY_SDXL_UNET_CONFIG (see kohya_lora_fixture.py); the LoRA
    # loads into it, though the pipeline would need 2048 wide text to run end to end.
    pipe = build_sdxl(work)
    torch.manual_seed(0)
    pipe.register_modules(unet=UNet2DConditionModel(**TINY_SDXL_UNET_CONFIG))
    return pipe


@dataclass
class Written:
    model_type: str
    pipe: Any
    summary: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Written:
    python, sd_scripts = training_env()
    work = tmp_path_factory.mktemp(request.param)
    pipe = build(request.param, work)
    pipe.save_pretrained(str(work / "pipeline"))
    output = work / "lora.safetensors"
    run = subprocess.run(
        [python, str(SCRIPT), str(work / "pipeline"), request.param, str(output), "--sd-scripts", sd_scripts, "--seed", "7"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with safe_open(str(output), "pt") as handle:
        metadata = handle.metadata()
    return Written(request.param, pipe, json.loads(run.stdout.strip().splitlines()[-1]), load_file(str(output)), metadata)


def modules(tensors: dict[str, torch.Tensor], prefix: str) -> set[str]:
    return {key.split(".")[0] for key in tensors if key.startswith(prefix)}


def test_keys_and_metadata_are_what_kohya_writes(written: Written) -> None:
    sdxl = written.model_type == "sdxl"
    names = modules(written.tensors, "lora_")
    te_prefixes = ["lora_te1_text_model_encoder_layers_", "lora_te2_text_model_encoder_layers_"] if sdxl else ["lora_te_text_model_encoder_layers_"]
    unet_blocks = ["input_blocks_", "middle_block_", "output_blocks_"] if sdxl else ["down_blocks_", "mid_block_", "up_blocks_"]
    for prefix in te_prefixes + [f"lora_unet_{block}" for block in unet_blocks]:
        assert any(name.startswith(prefix) for name in names), prefix
    assert len(names) == written.summary["modules"]
    assert written.summary["first_text_encoder_key"].startswith(te_prefixes[0])
    assert written.summary["first_unet_key"] in written.tensors
    assert written.metadata["ss_base_model_version"] == ("sdxl_base_v1-0" if sdxl else "sd_v1")
    assert (written.metadata["ss_network_module"], written.metadata["ss_network_dim"], written.metadata["ss_network_alpha"]) == ("networks.lora", "4", "2.0")
    assert {tensor.dtype for tensor in written.tensors.values()} == {torch.float16}


def rename_for(pipe: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`<prefix>text_model_…` to `<prefix>…` where transformers 5's encoder has no `text_model` (CLIPTextModel)."""
    strip = [p for p, c in COMPONENTS.items() if p != "lora_unet_" and getattr(pipe, c, None) is not None and not hasattr(getattr(pipe, c), "text_model")]
    renamed = {}
    for key, value in tensors.items():
        prefix = next((p for p in strip if key.startswith(p + "text_model_")), None)
        renamed[key if prefix is None else prefix + key[len(prefix + "text_model_") :]] = value
    return renamed


def outputs(written: Written) -> dict[str, torch.Tensor]:
    """Each text encoder's penultimate hidden states and one U-Net prediction, on fixed inputs."""
    pipe, generator = written.pipe, torch.Generator().manual_seed(1)
    ids = torch.randint(0, pipe.text_encoder.config.vocab_size, (1, 77), generator=generator)
    result = {c: getattr(pipe, c)(ids, output_hidden_states=True).hidden_states[-2] for c in ("text_encoder", "text_encoder_2") if getattr(pipe, c, None) is not None}
    config = pipe.unet.config
    extra = {}
    if written.model_type == "sdxl":
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 32, generator=generator), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, config.cross_attention_dim, generator=generator)
    result["unet"] = pipe.unet(sample, 500, encoder_hidden_states=context, **extra).sample
    return result


def test_diffusers_loads_every_module_and_it_changes_the_outputs(written: Written) -> None:
    with torch.no_grad():
        before = outputs(written)
    written.pipe.load_lora_weights(rename_for(written.pipe, written.tensors), adapter_name="kohya")
    with torch.no_grad():
        after = outputs(written)
    for component in after:
        expected = sum(len(modules(written.tensors, prefix)) for prefix, c in COMPONENTS.items() if c == component)
        loaded = sum(isinstance(m, LoraLayer) for m in getattr(written.pipe, component).modules())
        assert loaded == expected > 0, (component, loaded, expected)
    for component, value in after.items():
        change = ((value - before[component]).norm() / before[component].norm()).item()
        print(f"{written.model_type} {component}: relative change {change:.3f}", file=sys.stderr)
        assert torch.isfinite(value).all(), component
        assert 0.05 < change < 10, (component, change)

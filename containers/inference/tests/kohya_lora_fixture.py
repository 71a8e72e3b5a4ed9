"""Writes a LoRA file for a tiny diffusers pipeline with kohya-ss sd-scripts' own code, as a training would.

Run it with the TRAINING interpreter (sd-scripts v0.10.1, transformers 4.x, diffusers 0.32):

    .venv/training/bin/python containers/inference/tests/kohya_lora_fixture.py PIPELINE_DIR {sd15,sdxl} OUT.safetensors \
        [--sd-scripts DIR (default: $LORA_TEST_SD_SCRIPTS)] [--rank 4] [--alpha 2] [--seed 0] [--strength 0.5] [--unet-only]

PIPELINE_DIR is a tiny `StableDiffusionPipeline` / `StableDiffusionXLPipeline` saved by diffusers 0.40 and transformers
5.17; only its configs are read (the model is built on the meta device: names and shapes need no weights). The LoRA
modules are those `networks.lora.create_network` makes, their key names and shapes are kohya's, their weights are
seeded random (kohya starts `lora_up` at zero, which would have no effect), and `LoRANetwork.save_weights` writes
the file in fp16 with the metadata `train_network.py` writes. One JSON line on stdout says what was written.

SD 1.5: the diffusers U-Net goes to `create_network` as it is. kohya's SD 1.5 U-Net (library/original_unet.py)
copies diffusers' module names so that `load_state_dict(diffusers_unet.state_dict())` works, and networks/lora.py
picks modules by class name (Transformer2DModel, and CLIPAttention/CLIPSdpaAttention/CLIPMLP in the text encoder),
which diffusers' U-Net has too; so the names come out as in a real training. Any tiny SD 1.5 layout works.

SDXL: `create_network` tells SDXL by the U-Net's class, kohya's own `SdxlUNet2DConditionModel` with SGM block
names (input_blocks / middle_block / output_blocks), which kohya builds from a diffusers SDXL by converting the
state dict (`sdxl_model_util.convert_diffusers_unet_state_dict_to_sdxl`, as `sdxl_train_util` does) and loading
it strictly. That class is sized by module constants (MODEL_CHANNELS, TIME_EMBED_DIM, ADM_IN_CHANNELS, IN/OUT_CHANNELS),
which this script sets from the tiny config, but it hard-codes the rest: 3 levels, 2 resnets a level, attention in
levels 1 and 2 only, 64-wide heads, 2 / 10 / 10 transformer blocks and a 2048-wide context. So the tiny SDXL U-Net
must be exactly this (32 channels is the least kohya's GroupNorm(32) and 64-wide heads allow; 53M parameters):

    TINY_SDXL_UNET_CONFIG below: block_out_channels (32, 64, 128), layers_per_block 2,
    down DownBlock2D, CrossAttnDownBlock2D x2 / up CrossAttnUpBlock2D x2, UpBlock2D, transformer_layers_per_block
    (1, 2, 10), attention_head_dim (1, 1, 2) (diffusers' legacy name for the number of heads: 64 / 1, 128 / 2),
    use_linear_projection True, cross_attention_dim 2048, norm_num_groups 32, addition_embed_type "text_time",
    addition_time_embed_dim 8, projection_class_embeddings_input_dim 6 * 8 + text_encoder_2's projection_dim.

For the pipeline to run, the two text encoders' hidden sizes must add up to 2048 (e.g. 768 + 1280); for a LoRA
file alone any CLIP sizes do. The script checks the tiny diffusers U-Net against kohya's one, key by key and shape
by shape, and stops with the differences if they do not match.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Top-level imports are the standard library only, so the inference venv's tests can import the constants.
TINY_SDXL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 64, 128],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [1, 1, 2],
    "use_linear_projection": True,
    "cross_attention_dim": 2048,
    "norm_num_groups": 32,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    # 6 time ids of 8 each, plus text_encoder_2's projection_dim (32 in the tests' text encoders).
    "projection_class_embeddings_input_dim": 6 * 8 + 32,
}

TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")


def network_parser(description: str) -> argparse.ArgumentParser:
    """The options of both kohya fixtures (this one and kohya_flux_fixture.py): sd-scripts, and the LoRA's sizes and weights."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sd-scripts", type=Path, default=os.environ.get("LORA_TEST_SD_SCRIPTS"), help="default: $LORA_TEST_SD_SCRIPTS")
    parser.add_argument("--rank", type=int, default=4, help="network_dim")
    parser.add_argument("--alpha", type=float, default=2.0, help="network_alpha")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strength", type=float, default=0.5, help="each LoRA's output, relative to its input's RMS")
    return parser


def checked_args(parser: argparse.ArgumentParser, argv: list[str] | None, network_module: str) -> argparse.Namespace:
    """The parsed arguments, once sd-scripts has `networks/<network_module>.py` and the output is a .safetensors file."""
    args = parser.parse_args(argv)
    if args.sd_scripts is None or not (args.sd_scripts / "networks" / f"{network_module}.py").is_file():
        parser.error(f"--sd-scripts (or LORA_TEST_SD_SCRIPTS) must be the sd-scripts folder, got {args.sd_scripts}")
    if args.output.suffix != ".safetensors":
        parser.error("the output must end in .safetensors (save_weights picks the format by suffix)")
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = network_parser(__doc__.splitlines()[0])
    parser.add_argument("pipeline_dir", type=Path, help="a saved diffusers pipeline folder (model_index.json)")
    parser.add_argument("model_type", choices=["sd15", "sdxl"])
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    parser.add_argument("--unet-only", action="store_true", help="as --network_train_unet_only: no text-encoder LoRA")
    return checked_args(parser, argv, "lora")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def build_text_encoders(pipeline_dir: Path, model_type: str) -> list[Any]:
    """The pipeline's CLIP text encoders, on the meta device, as transformers 4.x builds them from its configs."""
    import transformers
    from accelerate import init_empty_weights

    index = read_json(pipeline_dir / "model_index.json")
    encoders = []
    for name in ["text_encoder"] + (["text_encoder_2"] if model_type == "sdxl" else []):
        class_name = index[name][1]
        if class_name not in TEXT_ENCODER_CLASSES:
            raise SystemExit(f"{name} is a {class_name}, not one of {TEXT_ENCODER_CLASSES}")
        # A transformers 5.17 CLIPTextConfig loads as it is in 4.57 (checked: same keys; 4.57 reads 5.x's `dtype`
        # like `torch_dtype`), so nothing is fixed up; refuse anything but a CLIP text config.
        config = transformers.CLIPTextConfig.from_pretrained(pipeline_dir / name)
        if config.model_type != "clip_text_model":
            raise SystemExit(f"{name}/config.json is a {config.model_type} config, not clip_text_model")
        with init_empty_weights():
            encoders.append(getattr(transformers, class_name)(config))
    return encoders


def build_diffusers_unet(unet_config: dict[str, Any]) -> Any:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        return UNet2DConditionModel.from_config(unet_config)


@contextlib.contextmanager
def patched(module: Any, values: dict[str, Any]) -> Any:
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def build_kohya_sdxl_unet(unet_config: dict[str, Any]) -> Any:
    """kohya's SdxlUNet2DConditionModel sized by the tiny config, checked against it as kohya's loader would load it."""
    from accelerate import init_empty_weights
    from library import sdxl_model_util, sdxl_original_unet

    channels = unet_config["block_out_channels"][0]
    sizes = {
        "MODEL_CHANNELS": channels,
        "TIME_EMBED_DIM": 4 * channels,  # diffusers' time_embed_dim is block_out_channels[0] * 4 too
        "ADM_IN_CHANNELS": unet_config["projection_class_embeddings_input_dim"],
        "IN_CHANNELS": unet_config["in_channels"],
        "OUT_CHANNELS": unet_config["out_channels"],
        "CONTEXT_DIM": unet_config["cross_attention_dim"],
    }
    hint = f"build the tiny SDXL U-Net with {Path(__file__).name}'s TINY_SDXL_UNET_CONFIG"
    try:
        # The constants are read in __init__ (ResnetBlock2D reads TIME_EMBED_DIM), so they only need patching while building.
        with patched(sdxl_original_unet, sizes), init_empty_weights():
            unet = sdxl_original_unet.SdxlUNet2DConditionModel()
        diffusers_shapes = {key: tuple(value.shape) for key, value in build_diffusers_unet(unet_config).state_dict().items()}
        # kohya's own diffusers-to-SGM key conversion; it asserts on a key it has no mapping for.
        converted = sdxl_model_util.convert_diffusers_unet_state_dict_to_sdxl(diffusers_shapes)
    except (AssertionError, ValueError) as error:
        raise SystemExit(f"kohya's SDXL U-Net cannot be this tiny U-Net ({error}); {hint}") from error
    expected = {key: tuple(value.shape) for key, value in unet.state_dict().items()}
    if converted != expected:
        differences = sorted(
            f"{key}: diffusers {converted.get(key)} kohya {expected.get(key)}"
            for key in set(converted) | set(expected)
            if converted.get(key) != expected.get(key)
        )
        raise SystemExit(
            f"the tiny diffusers U-Net is not kohya's SDXL U-Net at {sizes} ({len(differences)} differences, first: {differences[:5]}); {hint}"
        )
    return unet


def randomize(network: Any, seed: int, strength: float) -> None:
    """Seeded normal weights: each LoRA's output has about `strength` times its input's RMS, whatever rank/alpha."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    for lora in network.text_encoder_loras + network.unet_loras:
        down, up = lora.lora_down.weight, lora.lora_up.weight
        fan_in = down[0].numel()
        with torch.no_grad():
            down.copy_(torch.randn(down.shape, generator=generator) / fan_in**0.5)
            up.copy_(torch.randn(up.shape, generator=generator) * strength / (lora.scale * lora.lora_dim**0.5))


def training_metadata(args: argparse.Namespace, sdxl: bool) -> dict[str, str]:
    """What train_network.py's save_model writes: its ss_* keys (those that apply here) plus the sai model spec."""
    from library import model_util, sai_model_spec, sdxl_model_util

    now = time.time()
    base_model_version = sdxl_model_util.MODEL_VERSION_SDXL_BASE_V1_0 if sdxl else model_util.get_model_version_str_for_sd1_sd2(False, False)
    metadata = {
        "ss_session_id": args.seed,
        "ss_training_started_at": now,
        "ss_output_name": args.output.stem,
        "ss_learning_rate": 1e-4,
        "ss_text_encoder_lr": None if args.unet_only else 5e-5,
        "ss_unet_lr": 1e-4,
        "ss_network_module": "networks.lora",
        "ss_network_dim": args.rank,
        "ss_network_alpha": args.alpha,
        "ss_network_dropout": None,
        "ss_mixed_precision": "fp16",
        "ss_v2": False,
        "ss_base_model_version": base_model_version,
        "ss_clip_skip": None,
        "ss_seed": args.seed,
        "ss_training_comment": "kohya_lora_fixture: random weights for tests",
        "ss_sd_model_name": args.pipeline_dir.name,
        "ss_training_finished_at": now,
        "ss_steps": 1,
        "ss_epoch": 1,
    }
    # train_network.py stringifies every value (None becomes "None"), then adds the sai model spec.
    metadata = {key: str(value) for key, value in metadata.items()}
    spec = sai_model_spec.build_metadata(None, False, False, sdxl, True, False, now, title=args.output.stem, reso=1024 if sdxl else 512)
    return {**metadata, **spec}


def write_lora(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from networks import lora

    sdxl = args.model_type == "sdxl"
    unet_config = read_json(args.pipeline_dir / "unet" / "config.json")
    text_encoders = build_text_encoders(args.pipeline_dir, args.model_type)
    unet = build_kohya_sdxl_unet(unet_config) if sdxl else build_diffusers_unet(unet_config)
    text_encoder = text_encoders if sdxl else text_encoders[0]
    network = lora.create_network(1.0, args.rank, args.alpha, None, text_encoder, unet)
    # As train_network.py: apply_to drops the text-encoder LoRA for --network_train_unet_only and registers the rest.
    network.apply_to(text_encoder, unet, not args.unet_only, True)
    randomize(network, args.seed, args.strength)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    network.save_weights(str(args.output), torch.float16, training_metadata(args, sdxl))
    first = {"text_encoder": network.text_encoder_loras[:1], "unet": network.unet_loras[:1]}
    return {
        "path": str(args.output),
        "model_type": args.model_type,
        "modules": len(network.text_encoder_loras) + len(network.unet_loras),
        "text_encoder_modules": len(network.text_encoder_loras),
        "unet_modules": len(network.unet_loras),
        "first_text_encoder_key": next((f"{m.lora_name}.lora_down.weight" for m in first["text_encoder"]), None),
        "first_unet_key": next((f"{m.lora_name}.lora_down.weight" for m in first["unet"]), None),
        "rank": args.rank,
        "alpha": args.alpha,
        "seed": args.seed,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(args.sd_scripts.resolve()))
    # kohya's logging may print to stdout: keep stdout for the one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        summary = write_lora(args)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

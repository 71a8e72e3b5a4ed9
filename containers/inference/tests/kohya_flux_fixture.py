"""Writes FLUX.1 test files with kohya-ss sd-scripts' own code: a LoRA, and the BFL single-file transformer.

Run it with the TRAINING interpreter (sd-scripts v0.10.1); the inference tests and the registry's
TypeScript tests (test/lambda/registry-flux.test.ts) both call it:

    .venv/training/bin/python containers/inference/tests/kohya_flux_fixture.py lora OUT.safetensors [--pipeline DIR] \
        [--sd-scripts DIR (default: $LORA_TEST_SD_SCRIPTS)] [--rank 4] [--alpha 2] [--seed 0] [--strength 0.5] \
        [--in-dims "[4,4,4,0,4]"] [--clip-l] [--t5]
    .venv/training/bin/python containers/inference/tests/kohya_flux_fixture.py bfl OUT.safetensors --pipeline DIR [--sd-scripts DIR]

`--pipeline` is the tiny `FluxPipeline` diffusers 0.40 saved (tests/tiny_flux.py); without it, `lora` uses
TINY_TRANSFORMER_CONFIG (a 32-wide transformer: only key names and shapes matter then).

`lora`: kohya's own `library.flux_models.Flux` is built on the meta device with FluxParams read from the
diffusers transformer's config (its hidden size, heads, depths, widths of the text inputs, guidance
embedder), and checked against the diffusers transformer: kohya's `convert_diffusers_sd_to_bfl` of the
diffusers shapes must give exactly kohya's keys and shapes. `networks.lora_flux.create_network` then
makes the LoRA modules on it, `apply_to` keeps the transformer's alone (as flux_train_network.py does
with --network_train_unet_only) unless `--clip-l` / `--t5` give it a one-layer CLIP-L (modules `lora_te1_`)
or T5 (network arg train_t5xxl, modules `lora_te3_`) at the transformer's text widths; `--in-dims` is the
network arg in_dims (modules on the input layers). Weights are seeded random (kohya starts lora_up at zero,
which would have no effect), and `LoRANetwork.save_weights` writes the file in bf16 (what the trainer saves)
with the ss_* metadata train_network.py writes for FLUX.1. One JSON line on stdout says what was written.

`bfl`: the diffusers transformer's weights through kohya's `flux_utils.convert_diffusers_sd_to_bfl`:
the key layout of BFL's flux1-dev/flux1-schnell.safetensors, which the server's S3 path loads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

# Beside this script, which Python puts first on sys.path when it runs it.
from kohya_lora_fixture import checked_args, network_parser, randomize

# A diffusers FluxTransformer2DModel config for `lora` without --pipeline: 2 heads of 16 (the rope axes add
# up to 16), one double and one single block, and a guidance embedder so that in_dims has all 5 input layers.
TINY_TRANSFORMER_CONFIG: dict[str, Any] = {
    "in_channels": 16,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "guidance_embeds": True,
    "axes_dims_rope": [4, 6, 6],
}


# --clip-l / --t5: one layer each (6 and 7 LoRA modules), widths from the transformer's config.
TINY_CLIP_L: dict[str, Any] = {"intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1, "vocab_size": 99}
TINY_T5: dict[str, Any] = {"d_kv": 8, "d_ff": 37, "num_layers": 1, "num_heads": 4, "vocab_size": 99, "feed_forward_proj": "gated-gelu"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = network_parser(__doc__.splitlines()[0])
    parser.add_argument("what", choices=["lora", "bfl"])
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    parser.add_argument("--pipeline", type=Path, help="a saved diffusers FluxPipeline folder (model_index.json); required for bfl")
    parser.add_argument("--in-dims", help="lora_flux.py's in_dims network arg: ranks of [img, time, vector, guidance, txt] input layers")
    parser.add_argument("--clip-l", action="store_true", help="also adapt a one-layer CLIP-L (lora_te1_)")
    parser.add_argument("--t5", action="store_true", help="also adapt a one-layer T5 encoder (train_t5xxl, lora_te3_)")
    args = checked_args(parser, argv, "lora_flux")
    if args.what == "bfl" and args.pipeline is None:
        parser.error("bfl converts a pipeline's transformer weights: give --pipeline")
    return args


def transformer_config(pipeline_dir: Path | None) -> dict[str, Any]:
    if pipeline_dir is None:
        return TINY_TRANSFORMER_CONFIG
    return json.loads((pipeline_dir / "transformer" / "config.json").read_text())


def build_text_encoders(config: dict[str, Any], clip_l: bool, t5: bool) -> list[Any]:
    """[CLIP-L, T5] or None each, one layer deep, at the widths the transformer reads them (meta device: names only)."""
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    with init_empty_weights():
        clip = CLIPTextModel(CLIPTextConfig(hidden_size=config["pooled_projection_dim"], **TINY_CLIP_L)) if clip_l else None
        t5_encoder = T5EncoderModel(T5Config(d_model=config["joint_attention_dim"], **TINY_T5)) if t5 else None
    return [clip, t5_encoder]


def build_kohya_flux(config: dict[str, Any]) -> Any:
    """kohya's Flux at the diffusers transformer's sizes, on the meta device, checked key by key against it."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from library import flux_models, flux_utils

    params = flux_models.FluxParams(
        in_channels=config["in_channels"],
        vec_in_dim=config["pooled_projection_dim"],
        context_in_dim=config["joint_attention_dim"],
        hidden_size=config["num_attention_heads"] * config["attention_head_dim"],
        mlp_ratio=4.0,
        num_heads=config["num_attention_heads"],
        depth=config["num_layers"],
        depth_single_blocks=config["num_single_layers"],
        axes_dim=list(config["axes_dims_rope"]),
        theta=10_000,
        qkv_bias=True,
        guidance_embed=config["guidance_embeds"],
    )
    with init_empty_weights():
        flux = flux_models.Flux(params)
        diffusers_model = FluxTransformer2DModel.from_config(config)
    shapes = {key: torch.empty(tuple(value.shape), device="meta") for key, value in diffusers_model.state_dict().items()}
    converted = flux_utils.convert_diffusers_sd_to_bfl(shapes, config["num_layers"], config["num_single_layers"])
    got = {key: tuple(value.shape) for key, value in converted.items()}
    expected = {key: tuple(value.shape) for key, value in flux.state_dict().items()}
    if got != expected:
        differences = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
        raise SystemExit(f"the diffusers transformer is not kohya's Flux at {params} ({len(differences)} differences: {differences[:5]})")
    return flux


def write_lora(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from networks import lora_flux

    config = transformer_config(args.pipeline)
    flux = build_kohya_flux(config)
    # Without --clip-l/--t5 no text encoder is given, as with --network_train_unet_only (FLUX.1's outputs are cached).
    text_encoders = build_text_encoders(config, args.clip_l, args.t5)
    network_args = {"in_dims": args.in_dims} if args.in_dims else {}  # --network_args as kohya parses them
    if args.t5:
        network_args["train_t5xxl"] = "True"
    network = lora_flux.create_network(1.0, args.rank, args.alpha, None, text_encoders, flux, **network_args)
    network.apply_to(text_encoders, flux, apply_text_encoder=args.clip_l or args.t5, apply_unet=True)
    randomize(network, args.seed, args.strength)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    network.save_weights(str(args.output), torch.bfloat16, training_metadata(args, network_args))
    loras = network.text_encoder_loras + network.unet_loras
    return {
        "path": str(args.output),
        "what": "lora",
        "modules": len(network.unet_loras),
        "text_encoder_modules": len(network.text_encoder_loras),
        "keys": sorted(f"{m.lora_name}.lora_down.weight" for m in loras),
        "rank": args.rank,
        "alpha": args.alpha,
    }


def training_metadata(args: argparse.Namespace, network_args: dict[str, str]) -> dict[str, str]:
    """The ss_* keys train_network.py writes for a FLUX.1 LoRA (those that apply here), stringified as it does."""
    now = time.time()
    metadata = {
        "ss_session_id": args.seed,
        "ss_training_started_at": now,
        "ss_output_name": args.output.stem,
        "ss_learning_rate": 1e-4,
        "ss_text_encoder_lr": 5e-5 if args.clip_l or args.t5 else None,
        "ss_unet_lr": 1e-4,
        "ss_network_module": "networks.lora_flux",
        "ss_network_dim": args.rank,
        "ss_network_alpha": args.alpha,
        "ss_network_dropout": None,
        "ss_mixed_precision": "bf16",
        "ss_base_model_version": "flux1",
        "ss_seed": args.seed,
        "ss_steps": 1,
        "ss_epoch": 1,
        "ss_training_comment": "kohya_flux_fixture: random weights for tests",
        "ss_training_finished_at": now,
    }
    if network_args:
        metadata["ss_network_args"] = json.dumps(network_args)
    return {key: str(value) for key, value in metadata.items()}


def write_bfl(args: argparse.Namespace) -> dict[str, Any]:
    from library import flux_utils
    from safetensors.torch import load_file, save_file

    config = transformer_config(args.pipeline)
    weights: dict[str, Any] = {}
    for shard in sorted((args.pipeline / "transformer").glob("*.safetensors")):
        weights.update(load_file(str(shard)))
    converted = flux_utils.convert_diffusers_sd_to_bfl(weights, config["num_layers"], config["num_single_layers"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in converted.items()}, str(args.output))
    # kohya's own reading of the file: BFL layout, and the variant its keys say (guidance_in: dev).
    is_diffusers, is_schnell, blocks, _ = flux_utils.analyze_checkpoint_state(str(args.output))
    return {"path": str(args.output), "what": "bfl", "is_diffusers": is_diffusers, "is_schnell": is_schnell, "blocks": list(blocks)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(args.sd_scripts.resolve()))
    # kohya's logging may print to stdout: keep stdout for the one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        summary = write_lora(args) if args.what == "lora" else write_bfl(args)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""Writes a diffusers pipeline as one original-layout (LDM/SGM) checkpoint, the form of a single-file base model.

The key layout is the inverse of what diffusers 0.40's `from_single_file` reads
(loaders/single_file_utils.py: convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
convert_ldm_clip_checkpoint, convert_open_clip_checkpoint), derived from the model's config so that
it works for the tiny test models. Its correctness is tested end to end: a single file must give
the very images its diffusers folder gives (test_real_diffusers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from safetensors.torch import save_file

UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(state_dict: dict[str, Any], prefixes: list[tuple[str, str]], inner: dict[str, str], exact: dict[str, str]) -> dict[str, Any]:
    """Renames each key by the first matching prefix (and `inner` renames of the rest), or by `exact`."""
    renamed: dict[str, Any] = {}
    for key, value in state_dict.items():
        if key in exact:
            renamed[exact[key]] = value
            continue
        match = next(((old, new) for old, new in prefixes if key.startswith(old)), None)
        if match is None:
            raise KeyError(f"no LDM name for {key}")
        rest = key[len(match[0]):]
        for old, new in inner.items():
            if rest.startswith(old + "."):
                rest = new + rest[len(old):]
        renamed[match[1] + rest] = value
    return renamed


def unet_to_ldm(unet: Any) -> dict[str, Any]:
    config = unet.config
    per_block = config.layers_per_block + 1
    blocks = len(config.block_out_channels)
    prefixes = [("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."), ("mid_block.resnets.1.", "middle_block.2.")]
    for i in range(blocks):
        for j in range(config.layers_per_block):
            n = 1 + i * per_block + j
            prefixes += [(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n}.0."), (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n}.1.")]
        prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{1 + i * per_block + config.layers_per_block}.0.op."))
        for j in range(per_block):
            n = i * per_block + j
            prefixes += [(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{n}.0."), (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{n}.1.")]
        # The upsampler follows the last resnet, and that resnet's attention block if the level has one.
        upsampler = 2 if config.up_block_types[i].startswith("CrossAttn") else 1
        prefixes.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * per_block + config.layers_per_block}.{upsampler}."))
    exact = {k: v for k, v in DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"].items()}
    if config.addition_embed_type == "text_time":
        exact.update(DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"])
    state_dict = unet.state_dict()
    resnets = {k: v for k, v in state_dict.items() if ".resnets." in k}
    others = {k: v for k, v in state_dict.items() if ".resnets." not in k}
    return {**_rename(resnets, prefixes, UNET_RESNET, {}), **_rename(others, prefixes, {}, exact)}


def vae_to_ldm(vae: Any) -> dict[str, Any]:
    blocks = len(vae.config.block_out_channels)
    prefixes = []
    for part in ("encoder", "decoder"):
        prefixes += [(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."), (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."),
                     (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")]
    for i in range(blocks):
        prefixes += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
                     (f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv."),
                     # The decoder's levels are numbered from the bottom in LDM, from the top in diffusers.
                     (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{blocks - 1 - i}.block."),
                     (f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{blocks - 1 - i}.upsample.conv.")]
    renamed = {}
    for key, value in _rename(vae.state_dict(), prefixes, VAE_ATTENTION, DIFFUSERS_TO_LDM_MAPPING["vae"]).items():
        key = key.replace("conv_shortcut", "nin_shortcut")
        # LDM's VAE attention projections are 1x1 convolutions.
        renamed[key] = value[:, :, None, None] if ".mid.attn_1." in key and value.ndim == 2 else value
    return renamed


def clip_to_ldm(text_encoder: Any) -> dict[str, Any]:
    """transformers 4's CLIPTextModel keys (under `text_model.`), which single files carry."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text_encoder.state_dict().items()}


def open_clip_to_ldm(text_encoder: Any) -> dict[str, Any]:
    """OpenCLIP's keys for SDXL's second text encoder: fused q/k/v, resblocks, a transposed projection."""
    state_dict = text_encoder.state_dict()
    out: dict[str, Any] = {ldm: state_dict[hf] for hf, ldm in DIFFUSERS_TO_LDM_MAPPING["openclip"]["layers"].items() if hf in state_dict}
    out["text_projection"] = state_dict["text_projection.weight"].T.contiguous()
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}
    for layer in range(text_encoder.config.num_hidden_layers):
        hf, ldm = f"text_model.encoder.layers.{layer}.", f"transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            out[f"{ldm}attn.in_proj_{kind}"] = torch.cat([state_dict[f"{hf}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for old, new in names.items():
                out[f"{ldm}{new}.{kind}"] = state_dict[f"{hf}{old}.{kind}"]
    return out


def save_single_file(pipe: Any, model_type: str, path: Path) -> None:
    checkpoint = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(pipe.unet).items()}
    checkpoint.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(pipe.vae).items()})
    if model_type == "sdxl":
        checkpoint.update({f"conditioner.embedders.0.transformer.{k}": v for k, v in clip_to_ldm(pipe.text_encoder).items()})
        checkpoint.update({f"conditioner.embedders.1.model.{k}": v for k, v in open_clip_to_ldm(pipe.text_encoder_2).items()})
    else:
        checkpoint.update({f"cond_stage_model.transformer.{k}": v for k, v in clip_to_ldm(pipe.text_encoder).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(path))

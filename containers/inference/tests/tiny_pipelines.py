"""Tiny random-weight SD 1.5- and SDXL-shaped diffusers pipelines, saved as the server finds base models.

Built from nothing (no download), seeded, with the real architectures shrunk (as diffusers' own
pipeline tests do) but the real layouts kept: a VAE that scales by 8, cross-attention blocks, SDXL's
two text encoders (the second with a projection) and its added time conditioning. Each is saved
- as a diffusers folder (`save_pretrained`),
- as one original-layout (LDM) checkpoint, as a single-file base model is, written by `ldm_checkpoint`,
- as a configs folder laid out as `lora_server.configs` bakes it (configs and tokenizer files only).
The tokenizer is a CLIP BPE tokenizer over a made-up vocabulary: every byte, alone and word-final.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lora_server.configs import is_baked

from .kohya_lora_fixture import TINY_SDXL_UNET_CONFIG
from .ldm_checkpoint import save_single_file

SEED = 0
# The real text encoders' widths (SD 1.5's and SDXL's first 768, SDXL's second 1280), kept so that the
# LoRA header check sees the real widths and from_single_file tells SDXL's two encoders apart by them;
# each has only 2 layers and a narrow MLP.
TEXT_WIDTH = 768
TEXT_WIDTH_2 = 1280
POOLED_WIDTH = 32


def write_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is each byte alone and word-final, and a few merges."""
    folder.mkdir(parents=True, exist_ok=True)
    table = bytes_to_unicode()  # GPT-2/CLIP's reversible byte-to-character table
    chars = [table[byte] for byte in range(256)]
    vocab = {token: index for index, token in enumerate([*chars, *(c + "</w>" for c in chars)])}
    merges = ["p o", "po k", "pok e</w>"]
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def _text_config(tokenizer: CLIPTokenizer, width: int = TEXT_WIDTH, **extra: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=37, num_attention_heads=width // 64, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **extra,
    )


def _vae(sdxl: bool) -> AutoencoderKL:
    # Four blocks: the real VAE's factor of 8 between pixels and latents.
    torch.manual_seed(SEED)
    return AutoencoderKL(
        block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4, norm_num_groups=4, layers_per_block=1, scaling_factor=0.13025 if sdxl else 0.18215, force_upcast=sdxl,
    )


def build_sd15(work: Path) -> StableDiffusionPipeline:
    tokenizer = write_tokenizer(work / "tokenizer-build")
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=4,
    )
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    # The real SD 1.5 scheduler config (stable-diffusion-v1-5's scheduler_config.json).
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False
    )
    return StableDiffusionPipeline(
        vae=_vae(sdxl=False), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_sdxl(work: Path) -> StableDiffusionXLPipeline:
    tokenizer = write_tokenizer(work / "tokenizer-build")
    torch.manual_seed(SEED)
    # kohya's SDXL U-Net has a fixed layout: the smallest one it can build (kohya_lora_fixture.py).
    unet = UNet2DConditionModel.from_config({**TINY_SDXL_UNET_CONFIG, "projection_class_embeddings_input_dim": 6 * 8 + POOLED_WIDTH})
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    torch.manual_seed(SEED + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, TEXT_WIDTH_2, projection_dim=POOLED_WIDTH))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    return StableDiffusionXLPipeline(
        vae=_vae(sdxl=True), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
    )


BUILDERS = {"sd15": build_sd15, "sdxl": build_sdxl}


def save_all(model_type: str, target: Path) -> dict[str, Path]:
    """Builds the tiny `model_type` pipeline; saves it as `folder`, `single_file` and `configs` (CONFIGS_DIR) under `target`."""
    pipe = BUILDERS[model_type](target)
    folder = target / "folder"
    pipe.save_pretrained(str(folder))
    for name in ("tokenizer", "tokenizer_2") if model_type == "sdxl" else ("tokenizer",):
        # As the Hub repositories hold it: vocab.json and merges.txt, no tokenizer.json.
        shutil.copytree(target / "tokenizer-build", folder / name, dirs_exist_ok=True)
        (folder / name / "tokenizer.json").unlink(missing_ok=True)
    configs = target / "configs"
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.is_file() and is_baked(str(relative)):
            (configs / model_type / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, configs / model_type / relative)
    single_file = target / "single_file" / f"tiny-{model_type}.safetensors"
    save_single_file(pipe, model_type, single_file)
    shutil.rmtree(target / "tokenizer-build")
    return {"folder": folder, "single_file": single_file, "configs": configs}

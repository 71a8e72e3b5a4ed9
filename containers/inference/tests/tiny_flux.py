"""A tiny random-weight FLUX.1-shaped diffusers pipeline, saved as the server finds FLUX.1 base models.

The transformer keeps FLUX.1's real width (24 heads of 128: 3072) with one double and one single
block: diffusers 0.40's kohya LoRA conversion (`_convert_kohya_flux_lora_to_diffusers`) splits a
single block's fused `linear1` at the real widths [3072, 3072, 3072, 12288], and its single-file
conversion assumes 3072 too, so a narrower transformer would test neither. Everything else is
shrunk: the VAE keeps FLUX's layout (16 latent channels, no quant convs, a shift factor, a factor
of 8 by four blocks), CLIP and T5 are 2-layer encoders 32 wide over made-up vocabularies.

Saved (`save_all`) as
- `folder`: a diffusers folder (`save_pretrained`), as the Hub repositories hold it,
- `configs`: the configs and tokenizers `lora_server.configs` bakes for flux1,
- `single_files`: the four S3 files (ae, clip_l, t5xxl_fp16 here; the BFL transformer is written by
  kohya-ss's own converter in `kohya_flux_fixture.py`, run with the training interpreter).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5Tokenizer

from lora_server.configs import is_baked
from lora_server.flux_files import AE_FILE, CLIP_L_FILE, T5XXL_FILE

from .ldm_checkpoint import clip_to_ldm, vae_to_ldm
from .tiny_pipelines import write_tokenizer

SEED = 0
CLIP_WIDTH = 32
T5_WIDTH = 32
# FLUX.1's real scheduler configs (the Hub repositories' scheduler/scheduler_config.json): schnell
# samples without shifting; dev shifts by the image's token count.
SCHEDULER_CONFIGS = {
    "schnell": {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False},
    "dev": {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
            "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True},
}


def write_t5_tokenizer(folder: Path) -> T5Tokenizer:
    """A T5 (Unigram) tokenizer over each lower-case letter, space-prefixed or not."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -3.0) for c in letters] + [("▁" + c, -2.5) for c in letters]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build(work: Path, variant: str) -> FluxPipeline:
    clip_tokenizer = write_tokenizer(work / "tokenizer-build")
    t5_tokenizer = write_t5_tokenizer(work / "tokenizer-2-build")
    torch.manual_seed(SEED)
    # Width 3072 is required: diffusers/loaders/lora_conversion_utils.py:552 and single_file_utils.py:2276 hard-code it.
    transformer = FluxTransformer2DModel(
        in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128, num_attention_heads=24,
        joint_attention_dim=T5_WIDTH, pooled_projection_dim=CLIP_WIDTH, guidance_embeds=variant == "dev", axes_dims_rope=(16, 56, 56),
    )
    torch.manual_seed(SEED)
    vae = AutoencoderKL(
        block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=16, norm_num_groups=4, layers_per_block=1, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=0.3611, shift_factor=0.1159,
    )
    torch.manual_seed(SEED)
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tokenizer), hidden_size=CLIP_WIDTH, intermediate_size=37, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=clip_tokenizer.bos_token_id, eos_token_id=clip_tokenizer.eos_token_id,
        pad_token_id=clip_tokenizer.pad_token_id,
    ))
    torch.manual_seed(SEED)
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tokenizer), d_model=T5_WIDTH, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, pad_token_id=0, eos_token_id=1,
    ))
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIGS[variant]), vae=vae, text_encoder=clip, tokenizer=clip_tokenizer,
        text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer,
    )


def save_all(variant: str, target: Path) -> dict[str, Path]:
    """Builds the tiny FLUX.1 `variant`; saves `folder`, `configs` (CONFIGS_DIR) and `single_files` (all but the transformer)."""
    # Saved in bf16, as BFL's files are (the server loads them in DTYPE): half the disk of float32.
    pipe = build(target, variant).to(dtype=torch.bfloat16)
    folder = target / "folder"
    pipe.save_pretrained(str(folder))
    for name, build_dir in (("tokenizer", "tokenizer-build"), ("tokenizer_2", "tokenizer-2-build")):
        shutil.rmtree(folder / name)
        shutil.copytree(target / build_dir, folder / name)
        shutil.rmtree(target / build_dir)
    (folder / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    configs = target / "configs"
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.is_file() and is_baked(str(relative)):
            (configs / "flux1" / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, configs / "flux1" / relative)
    files = target / "single_files"
    files.mkdir()
    # BFL's ae.safetensors is the original (LDM) VAE layout without a prefix; comfy's clip_l keeps
    # transformers 4's `text_model.` keys; its t5xxl_fp16 holds `shared.weight` and the encoder's keys.
    save_file({k: v.contiguous() for k, v in vae_to_ldm(pipe.vae).items()}, str(files / AE_FILE))
    save_file({k: v.contiguous() for k, v in clip_to_ldm(pipe.text_encoder).items()}, str(files / CLIP_L_FILE))
    t5 = {k: v.contiguous() for k, v in pipe.text_encoder_2.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(t5, str(files / T5XXL_FILE))
    return {"folder": folder, "configs": configs, "single_files": files}

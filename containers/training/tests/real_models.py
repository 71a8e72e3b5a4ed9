"""Random-weight Stable Diffusion 1.5 for the real-training tests: the real architecture (kohya
converts the U-Net into its own class with fixed widths, so shrunken shapes do not load), written
from the published SD 1.5 configs since nothing can be downloaded.

Built once per BUILDER_VERSION into $LORA_TEST_CACHE by the training interpreter:
python real_models.py <folder> writes <folder>/diffusers (a diffusers folder, fp32) and
<folder>/tokenizers/openai_clip-vit-large-patch14 (the layout of kohya's --tokenizer_cache_dir).
python real_models.py --single-file <folder> <file> <sd-scripts> writes the same weights as one
original-layout (LDM) .safetensors checkpoint, as a base_model channel may hold, converted by kohya's
own model_util (so the test cannot agree with itself on a layout kohya does not read)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Bump when anything below changes what is built: the cache is keyed by it.
BUILDER_VERSION = "sd15-random-v1"
SEED = 1234
# kohya looks for the SD 1.5 tokenizer under --tokenizer_cache_dir as the Hub id with '/' -> '_'.
TOKENIZER_FOLDER = "openai_clip-vit-large-patch14"
BUILD_TIMEOUT_SECONDS = 900
# Bump when the single-file conversion changes; kept inside the folder of the weights it converts.
SINGLE_FILE_VERSION = "ldm-fp16-v1"
SINGLE_FILE_NAME = "sd15-random.safetensors"

UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
)
VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
    scaling_factor=0.18215,
)
TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    skip_prk_steps=True,
    set_alpha_to_one=False,
    steps_offset=1,
)


def ensure_sd15(cache: Path, python: str) -> Path:
    """The cached model folder, built first if missing (in a temporary folder, renamed when whole,
    so an interrupted build is never taken for a model)."""
    folder = cache / BUILDER_VERSION
    if (folder / "diffusers" / "model_index.json").is_file():
        return folder
    partial = cache / f"{BUILDER_VERSION}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([python, __file__, str(partial)], check=True, timeout=BUILD_TIMEOUT_SECONDS)
        if not folder.exists():  # another run may have built the same version meanwhile
            partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def ensure_sd15_single_file(cache: Path, python: str, sd_scripts: Path) -> Path:
    """The cached single-file checkpoint of ensure_sd15's weights, converted first if missing (to a
    temporary name, renamed when whole)."""
    folder = ensure_sd15(cache, python)
    target = folder / SINGLE_FILE_VERSION / SINGLE_FILE_NAME
    if target.is_file():
        return target
    target.parent.mkdir(exist_ok=True)
    # kohya picks the format by the suffix: the partial file must end in .safetensors too.
    partial = target.with_name(f"partial-{os.getpid()}-{SINGLE_FILE_NAME}")
    try:
        subprocess.run([python, __file__, "--single-file", str(folder), str(partial), str(sd_scripts)], check=True, timeout=BUILD_TIMEOUT_SECONDS)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def write_tokenizer(folder: Path) -> None:
    """The CLIP tokenizer files, rebuilt from open_clip's BPE merges: the vocabulary is the 256 byte
    symbols, the same with '</w>', one token per merge, then the two special tokens (49408 in all)."""
    import open_clip
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    bpe = Path(open_clip.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == TEXT_ENCODER["vocab_size"], len(tokens)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def build(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    write_tokenizer(folder / "tokenizers" / TOKENIZER_FOLDER)
    torch.manual_seed(SEED)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER)),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizers" / TOKENIZER_FOLDER),
        unet=UNet2DConditionModel(**UNET),
        scheduler=PNDMScheduler(**SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "diffusers")


def build_single_file(folder: Path, output: Path, sd_scripts: Path) -> None:
    """kohya's save_stable_diffusion_checkpoint, called as its tools/convert_diffusers20_original_sd.py
    calls it for a diffusers folder (no source checkpoint): fp16, as most published checkpoints are."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    sys.path.insert(0, str(sd_scripts))
    from library import model_util

    models = folder / "diffusers"
    unet = UNet2DConditionModel.from_pretrained(models / "unet")
    text_encoder = CLIPTextModel.from_pretrained(models / "text_encoder")
    vae = AutoencoderKL.from_pretrained(models / "vae")
    model_util.save_stable_diffusion_checkpoint(False, str(output), text_encoder, unet, None, 0, 0, None, save_dtype=torch.float16, vae=vae)


if __name__ == "__main__":
    if sys.argv[1] == "--single-file":
        build_single_file(*map(Path, sys.argv[2:5]))
    else:
        build(Path(sys.argv[1]))

"""The component configs and tokenizers baked into the image, one folder per model type.

`from_single_file` builds a pipeline from one checkpoint plus the configs of its components
(scheduler, U-Net, VAE, text encoders) and the tokenizers, which it would otherwise fetch from the
Hub at start. The Dockerfile runs this module at build time (`python -m lora_server.configs DIR`)
so that a single-file base model from S3 loads with the Hub out of reach. No weights are fetched.
Then `python -m lora_server.configs --check DIR`, with HF_HUB_OFFLINE=1, loads every baked config
and tokenizer as `from_single_file` will, so that a missing or unreadable file fails the build.

For FLUX.1 (flux1) the bake is FLUX.1-schnell's repository (Apache-2.0, not gated, so the build needs
no token) at the commit the server pins (flux_files.HUB_REVISIONS): its model_index.json, component
configs, CLIP and T5 tokenizers (tokenizer.json: no sentencepiece needed) and scheduler config, which
the four S3 single files need; FLUX.1-dev's differences are applied at load (flux_pipeline).

This module imports nothing of the server but flux_files (standard library only), so the Dockerfile can bake before copying the rest:
an edit to the server's code then reuses the baked layer instead of fetching from the Hub again.
"""

from __future__ import annotations

import argparse
import os
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from .flux_files import HUB_REPOS, HUB_REVISIONS

if TYPE_CHECKING:
    from .lora_file import ModelType

# The reference repositories whose configs match a single-file checkpoint of each family; diffusers
# picks the same ones for such a checkpoint (loaders/single_file_utils.py).
CONFIG_REPOS: dict[ModelType, str] = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "flux1": HUB_REPOS["schnell"],
}
# Configs (*.json) and CLIP tokenizer files (vocab.json, merges.txt); never *.safetensors/*.bin/*.ckpt.
ALLOW_PATTERNS = ["*.json", "*.txt"]
# The largest config or tokenizer file is about 1 MB; anything bigger would be a weight.
MAX_FILE_BYTES = 8 * 1024 * 1024


def is_baked(name: str) -> bool:
    """Whether a repository path is fetched: the Hub matches patterns with fnmatchcase on the whole path."""
    return any(fnmatchcase(name, pattern) for pattern in ALLOW_PATTERNS)


# What from_single_file reads from a baked folder besides model_index.json: the diffusers components'
# configs (by a class whose load_config reads that file), the text encoders' configs, the tokenizers.
DIFFUSERS_CONFIGS: dict[ModelType, dict[str, str]] = {
    "sd15": {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "scheduler": "DDIMScheduler"},
    "sdxl": {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "scheduler": "DDIMScheduler"},
    "flux1": {"transformer": "FluxTransformer2DModel", "vae": "AutoencoderKL", "scheduler": "FlowMatchEulerDiscreteScheduler"},
}
# Per subfolder, the transformers config and tokenizer classes that read it.
TEXT_ENCODERS: dict[ModelType, dict[str, str]] = {
    "sd15": {"text_encoder": "CLIPTextConfig"},
    "sdxl": {"text_encoder": "CLIPTextConfig", "text_encoder_2": "CLIPTextConfig"},
    "flux1": {"text_encoder": "CLIPTextConfig", "text_encoder_2": "T5Config"},
}
TOKENIZERS: dict[ModelType, dict[str, str]] = {
    "sd15": {"tokenizer": "CLIPTokenizer"},
    "sdxl": {"tokenizer": "CLIPTokenizer", "tokenizer_2": "CLIPTokenizer"},
    "flux1": {"tokenizer": "CLIPTokenizer", "tokenizer_2": "T5TokenizerFast"},
}


def bake(target: Path, revisions: dict[ModelType, str]) -> None:
    from huggingface_hub import snapshot_download

    for model_type, repo in CONFIG_REPOS.items():
        folder = target / model_type
        snapshot_download(repo, revision=revisions[model_type], allow_patterns=ALLOW_PATTERNS, local_dir=folder)
        files = [p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts]
        too_big = [str(p) for p in files if p.stat().st_size > MAX_FILE_BYTES]
        if not (folder / "model_index.json").is_file() or too_big:
            raise SystemExit(f"{repo}: no model_index.json, or files too big to be configs: {too_big}")
        print(f"{repo}@{revisions[model_type]}: {len(files)} config and tokenizer files in {folder}")


def check(target: Path, model_types: tuple[ModelType, ...] | None = None) -> None:
    """Loads every baked config and tokenizer (of `model_types`, default all) with the Hub switched off; raises if one is missing."""
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        # huggingface_hub reads it once, at import: set it in the environment of the process.
        raise SystemExit("run the check with HF_HUB_OFFLINE=1, so that nothing can come from the Hub")
    import diffusers
    import transformers

    for model_type in model_types or tuple(CONFIG_REPOS):
        folder = target / model_type
        diffusers.DiffusionPipeline.load_config(str(folder), local_files_only=True)
        for subfolder, class_name in DIFFUSERS_CONFIGS[model_type].items():
            getattr(diffusers, class_name).load_config(str(folder), subfolder=subfolder, local_files_only=True)
        for subfolder, class_name in TEXT_ENCODERS[model_type].items():
            getattr(transformers, class_name).from_pretrained(str(folder / subfolder), local_files_only=True)
        for subfolder, class_name in TOKENIZERS[model_type].items():
            tokenizer = getattr(transformers, class_name).from_pretrained(str(folder / subfolder), local_files_only=True)
            words = tokenizer("a photo of a pokemon", add_special_tokens=False)["input_ids"]
            # transformers 5 builds an empty T5 tokenizer when tokenizer.json is missing: every word is then unknown.
            unknown = tokenizer.unk_token_id not in (None, tokenizer.eos_token_id) and tokenizer.unk_token_id in words
            if not words or unknown:
                raise SystemExit(f"{folder / subfolder}: the tokenizer produced no tokens, or unknown ones (are its files missing?)")
        print(f"{folder}: configs and tokenizers load offline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("--check", action="store_true", help="load the baked files offline instead of fetching them")
    parser.add_argument("--sd15-revision")
    parser.add_argument("--sdxl-revision")
    args = parser.parse_args()
    if args.check:
        check(args.target)
    elif not (args.sd15_revision and args.sdxl_revision):
        parser.error("--sd15-revision and --sdxl-revision are required to bake")
    else:
        bake(args.target, {"sd15": args.sd15_revision, "sdxl": args.sdxl_revision, "flux1": HUB_REVISIONS["schnell"]})


if __name__ == "__main__":
    main()

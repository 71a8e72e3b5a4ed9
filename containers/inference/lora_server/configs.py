"""The component configs and tokenizers baked into the image, one folder per model type.

`from_single_file` builds a pipeline from one checkpoint plus the configs of its components
(scheduler, U-Net, VAE, text encoders) and the tokenizers, which it would otherwise fetch from the
Hub at start. The Dockerfile runs this module at build time (`python -m lora_server.configs DIR`)
so that a single-file base model from S3 loads with the Hub out of reach. No weights are fetched.
Then `python -m lora_server.configs --check DIR`, with HF_HUB_OFFLINE=1, loads every baked config
and tokenizer as `from_single_file` will, so that a missing or unreadable file fails the build.

This module imports nothing of the server, so the Dockerfile can bake before copying the rest:
an edit to the server's code then reuses the baked layer instead of fetching from the Hub again.
"""

from __future__ import annotations

import argparse
import os
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lora_file import ModelType

# The reference repositories whose configs match a single-file checkpoint of each family; diffusers
# picks the same ones for such a checkpoint (loaders/single_file_utils.py).
CONFIG_REPOS: dict[ModelType, str] = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
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
DIFFUSERS_CONFIGS = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "scheduler": "DDIMScheduler"}
TEXT_ENCODERS: dict[ModelType, tuple[str, ...]] = {"sd15": ("text_encoder",), "sdxl": ("text_encoder", "text_encoder_2")}
TOKENIZERS: dict[ModelType, tuple[str, ...]] = {"sd15": ("tokenizer",), "sdxl": ("tokenizer", "tokenizer_2")}


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


def check(target: Path) -> None:
    """Loads every baked config and tokenizer with the Hub switched off; raises if one is missing."""
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        # huggingface_hub reads it once, at import: set it in the environment of the process.
        raise SystemExit("run the check with HF_HUB_OFFLINE=1, so that nothing can come from the Hub")
    import diffusers
    import transformers

    for model_type in CONFIG_REPOS:
        folder = target / model_type
        diffusers.DiffusionPipeline.load_config(str(folder), local_files_only=True)
        for subfolder, class_name in DIFFUSERS_CONFIGS.items():
            getattr(diffusers, class_name).load_config(str(folder), subfolder=subfolder, local_files_only=True)
        for subfolder in TEXT_ENCODERS[model_type]:
            transformers.CLIPTextConfig.from_pretrained(str(folder / subfolder), local_files_only=True)
        for subfolder in TOKENIZERS[model_type]:
            tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder / subfolder), local_files_only=True)
            if not tokenizer("a photo of a pokemon")["input_ids"]:
                raise SystemExit(f"{folder / subfolder}: the tokenizer produced no tokens")
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
        bake(args.target, {"sd15": args.sd15_revision, "sdxl": args.sdxl_revision})


if __name__ == "__main__":
    main()

"""The component configs and tokenizers baked into the image, one folder per model type.

`from_single_file` builds a pipeline from one checkpoint plus the configs of its components
(scheduler, U-Net, VAE, text encoders) and the tokenizers, which it would otherwise fetch from the
Hub at start. The Dockerfile runs this module at build time (`python -m lora_server.configs DIR`)
so that a single-file base model from S3 loads with the Hub out of reach. No weights are fetched.
"""

from __future__ import annotations

import argparse
from fnmatch import fnmatchcase
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("--sd15-revision", required=True)
    parser.add_argument("--sdxl-revision", required=True)
    args = parser.parse_args()
    bake(args.target, {"sd15": args.sd15_revision, "sdxl": args.sdxl_revision})


if __name__ == "__main__":
    main()

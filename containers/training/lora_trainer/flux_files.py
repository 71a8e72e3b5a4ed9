"""FLUX.1's base model files: the names the training container expects in an S3 base model channel
(the same as lambda/shared/flux-files.ts), and the Hub repositories and commits it downloads them from."""

from __future__ import annotations

import re

# BFL's single-file transformer; which one is present names the variant.
TRANSFORMER = {"dev": "flux1-dev.safetensors", "schnell": "flux1-schnell.safetensors"}
AE = "ae.safetensors"  # BFL's autoencoder
CLIP_L = "clip_l.safetensors"  # CLIP-L text encoder, transformers key names
T5XXL = "t5xxl_fp16.safetensors"  # T5-XXL encoder, transformers key names

HUB_REPOS = {"dev": "black-forest-labs/FLUX.1-dev", "schnell": "black-forest-labs/FLUX.1-schnell"}
# The Hub commits the files are downloaded at, so a run is repeatable whatever the repositories'
# main branch becomes (the commits' file sizes are in the README).
HUB_REVISIONS = {
    "dev": "3de623fc3c33e44ffbe2bad470d0f45bccf2eb21",
    "schnell": "741f7c3ce8b383c54771c7003378a50191e9efe9",
}
# sd-scripts' FLUX guide: the text encoders come from ComfyUI's repository (t5xxl_fp16, not fp8).
TEXT_ENCODERS_REPO = "comfyanonymous/flux_text_encoders"
TEXT_ENCODERS_REVISION = "6af2a98e3f615bdfa612fbd85da93d1ed5f69ef5"

# kohya's own dev/schnell test (flux_utils.analyze_checkpoint_state): only dev has the guidance
# embedder, under BFL or diffusers names; keys may carry ComfyUI's prefix.
GUIDANCE_KEYS = ("guidance_in.in_layer.bias", "time_text_embed.guidance_embedder.linear_1.bias")
COMFY_PREFIX = "model.diffusion_model."


# The blocks kohya counts to build the model (analyze_checkpoint_state), in BFL or diffusers names:
# a file with neither pair is no FLUX.1 transformer, and kohya would fail on it only once loading.
BLOCK_KEYS = (
    (re.compile(r"double_blocks\.\d+\.img_attn\.proj\.bias"), re.compile(r"single_blocks\.\d+\.modulation\.lin\.bias")),
    (re.compile(r"transformer_blocks\.\d+\.attn\.add_k_proj\.bias"), re.compile(r"single_transformer_blocks\.\d+\.attn\.to_k\.bias")),
)


def variant_of_hub_id(hub_id: str) -> str | None:
    return next((variant for variant, repo in HUB_REPOS.items() if repo == hub_id), None)


def hub_files(variant: str) -> dict[str, tuple[str, str, str]]:
    """Role -> (repository, commit, file name) of the four files of a Hub base model."""
    repo, revision = HUB_REPOS[variant], HUB_REVISIONS[variant]
    return {
        "transformer": (repo, revision, TRANSFORMER[variant]),
        "ae": (repo, revision, AE),
        "clip_l": (TEXT_ENCODERS_REPO, TEXT_ENCODERS_REVISION, CLIP_L),
        "t5xxl": (TEXT_ENCODERS_REPO, TEXT_ENCODERS_REVISION, T5XXL),
    }


def is_schnell(keys: list[str]) -> bool:
    """kohya's rule, on the tensor names of a transformer file."""
    names = {key.removeprefix(COMFY_PREFIX) for key in keys}
    return not any(key in names for key in GUIDANCE_KEYS)


def has_blocks(keys: list[str]) -> bool:
    """Whether kohya finds double and single blocks among the tensor names of a transformer file."""
    names = [key.removeprefix(COMFY_PREFIX) for key in keys]
    return any(all(any(pattern.fullmatch(name) for name in names) for pattern in pair) for pair in BLOCK_KEYS)

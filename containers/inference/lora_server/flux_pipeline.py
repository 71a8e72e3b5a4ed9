"""Loading FLUX.1 (dev or schnell) as a diffusers FluxPipeline, one component at a time onto the device.

Three sources, all in DTYPE (bf16 on the GPU for FLUX.1: fp16 overflows in its T5 and transformer):
- the Hub repository of the variant, diffusers layout, at its pinned commit (flux_files.HUB_REVISIONS),
  with the token from HF_TOKEN_SECRET_ID (FLUX.1-dev is gated);
- a mounted diffusers folder (model_index.json), offline;
- the four single files of an S3 prefix (flux_files), offline: the BFL transformer through
  `FluxTransformer2DModel.from_single_file`, the BFL autoencoder through `AutoencoderKL.from_single_file`,
  CLIP-L and T5-XXL through transformers' `from_pretrained` on a folder pairing the baked config with
  the file (transformers maps comfy's `text_model.`/`shared.` keys itself), with the tokenizers and the
  scheduler config baked from FLUX.1-schnell's repository (configs.py). FLUX.1-dev differs from those
  only in its guidance embedder and its scheduler's shift (FLUX_DEV_OVERRIDES).

Each component goes to the device as soon as it is loaded, so host memory peaks at the largest one
(the transformer: 23.8 GB in bf16), not at the whole pipeline (~34 GB).
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .flux_files import AE_FILE, CLIP_L_FILE, HUB_REPOS, HUB_REVISIONS, T5XXL_FILE, TRANSFORMER_FILES, FluxVariant, check_transformer_variant
from .hub_token import read_hub_token
from .logs import JsonLog
from .model_files import BaseModel
from .settings import Settings

# What FLUX.1-dev's repository says where it differs from schnell's baked configs: the transformer has
# a guidance embedder, and the scheduler shifts by the image's token count (dev's scheduler_config.json).
FLUX_DEV_OVERRIDES: dict[str, dict[str, Any]] = {
    "transformer": {"guidance_embeds": True},
    "scheduler": {"shift": 3.0, "use_dynamic_shifting": True},
}
# T5 tokens per prompt, as BFL's reference and kohya's trainer use them: 256 for schnell, 512 for dev.
T5_MAX_TOKENS: dict[FluxVariant, int] = {"schnell": 256, "dev": 512}


def load_flux(settings: Settings, base: BaseModel, dtype: Any, log: JsonLog) -> Any:
    """The FluxPipeline of `base` in `dtype`, its components moved to DEVICE one by one."""
    import diffusers

    variant = settings.flux_variant
    assert variant is not None, "settings resolved the FLUX.1 variant"
    if base.kind == "flux_files":
        # Before anything is loaded: the file name chose the configs, its keys must agree.
        check_transformer_variant(Path(base.location) / TRANSFORMER_FILES[variant], variant)
        loaders = _single_file_loaders(Path(base.location), settings.configs_dir / "flux1", variant, dtype)
    else:
        loaders = _repository_loaders(settings, base, variant, dtype)
    components: dict[str, Any] = {}
    for name, load in loaders.items():
        component = load()
        if hasattr(component, "to") and hasattr(component, "parameters"):
            component = component.to(settings.device)
        components[name] = component
        gc.collect()  # the host copy of a component is freed before the next one is read
        log("flux_component_loaded", component=name, device=settings.device)
    return diffusers.FluxPipeline(**components)


def _repository_loaders(settings: Settings, base: BaseModel, variant: FluxVariant, dtype: Any) -> dict[str, Callable[[], Any]]:
    """The Hub repository at its pinned commit (token from HF_TOKEN_SECRET_ID), or a mounted diffusers folder."""
    import diffusers
    import transformers

    if base.kind == "hub":
        source, options = HUB_REPOS[variant], {"revision": HUB_REVISIONS[variant], "token": read_hub_token(settings.hf_token_secret_id)}
    else:
        source, options = base.location, {"local_files_only": True}

    def part(cls: Any, subfolder: str, **extra: Any) -> Callable[[], Any]:
        return lambda: cls.from_pretrained(source, subfolder=subfolder, **options, **extra)

    return {
        "scheduler": part(diffusers.FlowMatchEulerDiscreteScheduler, "scheduler"),
        "tokenizer": part(transformers.CLIPTokenizer, "tokenizer"),
        "tokenizer_2": part(transformers.T5TokenizerFast, "tokenizer_2"),
        "text_encoder": part(transformers.CLIPTextModel, "text_encoder", dtype=dtype),
        "text_encoder_2": part(transformers.T5EncoderModel, "text_encoder_2", dtype=dtype),
        "vae": part(diffusers.AutoencoderKL, "vae", dtype=dtype),
        "transformer": part(diffusers.FluxTransformer2DModel, "transformer", dtype=dtype),
    }


def _single_file_loaders(folder: Path, configs: Path, variant: FluxVariant, dtype: Any) -> dict[str, Callable[[], Any]]:
    """The four single files, with the configs and tokenizers baked into the image."""
    import diffusers
    import transformers

    overrides = FLUX_DEV_OVERRIDES if variant == "dev" else {}

    def scheduler() -> Any:
        config = diffusers.FlowMatchEulerDiscreteScheduler.load_config(str(configs), subfolder="scheduler", local_files_only=True)
        return diffusers.FlowMatchEulerDiscreteScheduler.from_config({**config, **overrides.get("scheduler", {})})

    def single(cls: Any, file: str, subfolder: str) -> Callable[[], Any]:
        return lambda: cls.from_single_file(
            str(folder / file), config=str(configs), subfolder=subfolder, local_files_only=True, dtype=dtype, **overrides.get(subfolder, {})
        )

    return {
        "scheduler": scheduler,
        "tokenizer": lambda: transformers.CLIPTokenizer.from_pretrained(str(configs / "tokenizer"), local_files_only=True),
        "tokenizer_2": lambda: transformers.T5TokenizerFast.from_pretrained(str(configs / "tokenizer_2"), local_files_only=True),
        "text_encoder": lambda: _transformers_file(transformers.CLIPTextModel, configs / "text_encoder", folder / CLIP_L_FILE, dtype),
        "text_encoder_2": lambda: _transformers_file(transformers.T5EncoderModel, configs / "text_encoder_2", folder / T5XXL_FILE, dtype),
        "vae": single(diffusers.AutoencoderKL, AE_FILE, "vae"),
        "transformer": single(diffusers.FluxTransformer2DModel, TRANSFORMER_FILES[variant], "transformer"),
    }


def _transformers_file(cls: Any, config_dir: Path, weights: Path, dtype: Any) -> Any:
    """A transformers model from its baked config and one .safetensors of its weights (linked, not copied)."""
    with tempfile.TemporaryDirectory(prefix="flux-encoder-") as folder:
        os.symlink(config_dir / "config.json", Path(folder) / "config.json")
        os.symlink(weights.resolve(), Path(folder) / "model.safetensors")
        return cls.from_pretrained(folder, dtype=dtype, local_files_only=True)

"""kohya-ss text-encoder LoRA names, adapted to the text encoder modules the server's transformers builds.

kohya-ss names a LoRA module after the module it wraps, `.` replaced by `_`. Its training image pins
transformers 4.x, where `CLIPTextModel` holds its layers under a `text_model` submodule, so SD 1.5's
text encoder keys read `lora_te_text_model_encoder_layers_0_self_attn_q_proj…` (SDXL: `lora_te1_…`).
transformers 5 dropped that submodule from `CLIPTextModel` (its layers are `encoder.layers.0…`), but
kept it in `CLIPTextModelWithProjection` (SDXL's second encoder, `lora_te2_text_model_…`).
diffusers 0.40 converts the kohya names to module paths as they are, so names for a module path that
no longer exists match nothing, and `load_lora_weights` fails (IndexError in get_peft_kwargs).
Each prefix is therefore renamed only when its loaded text encoder has no `text_model` submodule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from .lora_file import LoraFileError

# kohya's text-encoder prefixes, and the pipeline component each one's modules belong to.
TEXT_ENCODER_PREFIXES = {"lora_te_": "text_encoder", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2"}
UNET_PREFIX = "lora_unet_"
DOWN = ".lora_down.weight"
# The transformers 4 submodule kohya's names carry.
TEXT_MODEL = "text_model_"


def prefixes_to_strip(pipe: Any) -> list[str]:
    """The text-encoder prefixes whose `text_model_` part names no module of the loaded pipeline."""
    return [
        prefix
        for prefix, component in TEXT_ENCODER_PREFIXES.items()
        if getattr(pipe, component, None) is not None and not hasattr(getattr(pipe, component), "text_model")
    ]


def adapted_names(keys: Iterable[str], strip: list[str], file_name: str) -> dict[str, str]:
    """Each key -> its name with `<prefix>text_model_` renamed to `<prefix>` for each prefix in `strip`.

    Raises LoraFileError when two keys would get the same name: one of the tensors would be lost.
    """
    names: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key in keys:
        prefix = next((p for p in strip if key.startswith(p + TEXT_MODEL)), None)
        new = key if prefix is None else prefix + key[len(prefix + TEXT_MODEL) :]
        if new in sources:
            raise LoraFileError(
                f"{file_name}: its keys {sources[new]} and {key} name the same layer of this transformers version's "
                "text encoder; a kohya-ss LoRA has only one of them: remove the other, or retrain the LoRA"
            )
        names[key], sources[new] = new, key
    return names


def modules_per_component(keys: Iterable[str]) -> Counter[str]:
    """How many LoRA modules (lora_down weights) the file has for each pipeline component."""
    counts: Counter[str] = Counter()
    for key in keys:
        if key.endswith(DOWN):
            prefix = next((p for p in TEXT_ENCODER_PREFIXES if key.startswith(p)), None)
            counts[TEXT_ENCODER_PREFIXES[prefix] if prefix else "unet" if key.startswith(UNET_PREFIX) else "other"] += 1
    return counts


# kohya's FLUX.1 modules that diffusers 0.40's conversion (_convert_kohya_flux_lora_to_diffusers) splits into
# several transformer layers: a double block's fused q/k/v (to_q, to_k, to_v or their add_ twins) and a
# single block's linear1 (to_q, to_k, to_v, proj_mlp). Every other module becomes one layer.
FLUX_SPLITS = {"_attn_qkv": 3, "_linear1": 4}


def flux_layers_per_component(keys: Iterable[str]) -> Counter[str]:
    """How many transformer layers a kohya FLUX.1 LoRA's modules become once diffusers has converted them."""
    counts: Counter[str] = Counter()
    for key in keys:
        if key.endswith(DOWN):
            module = key[: -len(DOWN)]
            component = "transformer" if module.startswith(UNET_PREFIX) else "other"
            counts[component] += next((n for suffix, n in FLUX_SPLITS.items() if module.endswith(suffix)), 1)
    return counts

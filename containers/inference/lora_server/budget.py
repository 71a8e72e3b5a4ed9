"""A request's time budget: what must be left after denoising for decoding, encoding and sending.

REQUEST_TIMEOUT_SECONDS runs from a request's arrival to its response. Denoising must end early
enough for the rest: the VAE decodes each image (SDXL's VAE upcast to fp32, one image at a time),
then each image is encoded (PNG is the slow one) and base64-encoded into the body. That part grows
with the pixels produced, so it is reserved per megapixel of output, per model type.
"""

from __future__ import annotations

from .lora_file import ModelType
from .validation import GenerationParams

# Seconds reserved after the last denoising step: a fixed part, plus per megapixel of output
# (width x height x num_images). Set for the slowest supported GPU (ml.g4dn's T4), where an SDXL
# decode in fp32 and a PNG encode take about a second per megapixel together.
FINISH_FIXED_SECONDS = 2.0
# FLUX.1: its 16-channel VAE decodes in bf16, about as SDXL's in fp32.
FINISH_SECONDS_PER_MEGAPIXEL: dict[ModelType, float] = {"sd15": 1.0, "sdxl": 2.0, "flux1": 2.0}


def megapixels(params: GenerationParams) -> float:
    return params.width * params.height * params.num_images / 1_000_000


def finish_seconds(model_type: ModelType, params: GenerationParams) -> float:
    """The time reserved after denoising for decoding, encoding and sending `params`' images."""
    return FINISH_FIXED_SECONDS + FINISH_SECONDS_PER_MEGAPIXEL[model_type] * megapixels(params)

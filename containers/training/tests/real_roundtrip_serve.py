"""Serves a LoRA that real kohya training wrote with the inference server's own loading code, in the
INFERENCE interpreter (diffusers 0.40, transformers 5), and reports what serving it changed:

python real_roundtrip_serve.py <model folder of real_models.py> <model dir> <result.json>

The base model's diffusers folder (saved by the training image's diffusers) is saved once more by
this diffusers, as the server would be given it, next to it in the cache, unless already there."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

INFERENCE_ROOT = Path(__file__).resolve().parents[2] / "inference"
sys.path.insert(0, str(INFERENCE_ROOT))

PROMPT = "a photo of sks pokemon"
SEED = 7
# Generation may not stop at the server's deadline here: the test bounds the whole script instead.
NO_DEADLINE_SECONDS = 3600.0


def served_base(models: Path) -> Path:
    """The same random weights as a diffusers folder written by the server's diffusers."""
    import diffusers

    target = models / f"diffusers-{diffusers.__version__}"
    if (target / "model_index.json").is_file():
        return target
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        models / "diffusers", safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    partial = models / f"{target.name}.partial-{os.getpid()}"
    try:
        pipe.save_pretrained(partial)
        if not target.exists():  # another run may have finished the same folder meanwhile
            partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def params(lora_scale: float):
    from lora_server.validation import GenerationParams

    return GenerationParams(
        prompt=PROMPT,
        negative_prompt=None,
        num_inference_steps=2,
        guidance_scale=1.0,  # no classifier-free guidance: half the U-Net work, the prompt still conditions
        width=64,
        height=64,
        seed=SEED,
        num_images=1,
        lora_scale=lora_scale,
        scheduler="default",
        output_format="png",
    )


def lora_modules(pipe, component: str) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for m in getattr(pipe, component).modules())


def prompt_embedding(pipe):
    embeds, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)
    return embeds


def serve(base: Path, model_dir: Path) -> dict:
    import numpy as np
    import torch

    from lora_server.diffusers_pipeline import load_pipeline
    from lora_server.logs import JsonLog
    from lora_server.settings import Settings

    env = {"MODEL_TYPE": "sd15", "MODEL_DIR": str(model_dir), "BASE_MODEL_PATH": str(base), "DEVICE": "cpu", "DTYPE": "float32"}
    settings = Settings.from_env(env)
    served = load_pipeline(settings, JsonLog(sys.stderr))
    pipe = served._pipe  # the loaded diffusers pipeline: where the LoRA modules can be counted

    def image(scale: float):
        [picture] = served.generate(params(scale), time.monotonic() + NO_DEADLINE_SECONDS)
        return np.asarray(picture, dtype=np.float64), prompt_embedding(pipe)

    fused, fused_text = image(settings.lora_scale)
    plain, plain_text = image(0.0)
    again, _ = image(settings.lora_scale)
    return {
        "lora_scale": settings.lora_scale,
        "text_encoder_lora_modules": lora_modules(pipe, "text_encoder"),
        "unet_lora_modules": lora_modules(pipe, "unet"),
        "image_std": float(fused.std()),
        "image_mean_abs_diff": float(np.abs(fused - plain).mean()),
        "image_diff_back_at_default": float(np.abs(fused - again).max()),
        "text_embedding_max_abs_diff": float((fused_text - plain_text).abs().max()),
        "versions": {"torch": torch.__version__, **_versions()},
    }


def _versions() -> dict:
    import diffusers
    import peft
    import transformers

    return {"diffusers": diffusers.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


if __name__ == "__main__":
    models, model_dir, result = map(Path, sys.argv[1:4])
    result.write_text(json.dumps(serve(served_base(models), model_dir), indent=1), encoding="utf-8")

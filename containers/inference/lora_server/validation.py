"""Validation of an /invocations request body: pure, so every rule is tested without a model."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from .lora_file import ModelType
from .registry import NAME, NAME_PATTERN, NAME_RULE, label
from .shared_types import LoraRef

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1

# Per model type: (smallest, largest, default) side in pixels. Both families work in 8-pixel
# latent cells; SD 1.5 was trained at 512, SDXL at 1024, and quality falls off far from those.
SIDES: dict[ModelType, tuple[int, int, int]] = {"sd15": (256, 1024, 512), "sdxl": (512, 1536, 1024), "flux1": (256, 1536, 1024)}
# FLUX.1 packs 2 x 2 latent cells of 8 pixels into one token: its sides are multiples of 16.
SIDE_MULTIPLES: dict[ModelType, int] = {"sd15": 8, "sdxl": 8, "flux1": 16}
# Per model type, the most pixels a request may produce (width x height x num_images): what a 24 GB
# GPU denoises and decodes (one image at a time, SDXL's VAE in fp32) within the time limit. 4 x
# 1024 x 1024; SD 1.5's side bounds keep it within this anyway, SDXL's 1536 sides do not.
MAX_OUTPUT_PIXELS: dict[ModelType, int] = {"sd15": 4 * 1024 * 1024, "sdxl": 4 * 1024 * 1024, "flux1": 4 * 1024 * 1024}

# FLUX.1 per variant (BFL's and diffusers' reference settings): schnell is timestep-distilled to 1-4 steps
# and takes no guidance; dev is guidance-distilled: its guidance_scale is the embedded guidance
# (3.5 by default), not classifier-free guidance, so there is no negative prompt and no doubled batch.
FLUX_STEPS: dict[str, int] = {"schnell": 4, "dev": 28}
FLUX_MAX_STEPS = 50
FLUX_GUIDANCE: dict[str, float] = {"schnell": 0.0, "dev": 3.5}

# Scheduler names a request may choose, and the diffusers class (with options) each one builds
# from the base model's scheduler config. "default" keeps the base model's own scheduler.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "default": None,
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    # PLMS only, as SD 1.5's own PNDM config says: from a config without it (SDXL's Euler one), PNDM would
    # start with Runge-Kutta steps, which fail under 4 steps and cost extra U-Net calls.
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
OUTPUT_FORMATS = ("png", "jpeg")


class RequestError(Exception):
    """A request the server refuses with 400; `field` names the bad field (None: the body as a whole)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    negative_prompt: str | None
    num_inference_steps: int
    guidance_scale: float
    width: int
    height: int
    seed: int
    num_images: int
    lora_scale: float
    scheduler: str
    output_format: str

    def for_log(self, include_prompts: bool) -> dict[str, Any]:
        """The parameters for a log line; prompts are user content, so only their length unless asked."""
        values = asdict(self)
        if not include_prompts:
            values["prompt"] = f"<{len(self.prompt)} chars>"
            if self.negative_prompt is not None:
                values["negative_prompt"] = f"<{len(self.negative_prompt)} chars>"
        return values


def parse_json(body: bytes) -> dict[str, Any]:
    """Parses the body as a JSON object; NaN and Infinity (which Python's json accepts) are refused."""

    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    try:
        value = json.loads(body.decode("utf-8"), parse_constant=refuse_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(f"the body is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise RequestError("the body must be a JSON object, such as {\"prompt\": \"...\"}")
    return value


def _text(body: dict[str, Any], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise RequestError(f"{name} is required", name)
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise RequestError(f"{name} must be a non-empty string", name)
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(f"{name} must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}", name)
    return value


def _integer(body: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = body.get(name, default)
    # bool is an int in Python; `true` is not a step count.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{name} must be an integer from {low} to {high}, got {json.dumps(value)}", name)
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise RequestError(f"{name} must be a number from {low:g} to {high:g}, got {json.dumps(value)}", name)
    return float(value)


def _choice(body: dict[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if value not in choices:
        raise RequestError(f"{name} must be one of {', '.join(choices)}, got {json.dumps(value)}", name)
    return value


def _side(body: dict[str, Any], name: str, model_type: ModelType) -> int:
    low, high, default = SIDES[model_type]
    value = _integer(body, name, low, high, default)
    multiple = SIDE_MULTIPLES[model_type]
    if value % multiple:
        raise RequestError(f"{name} must be a multiple of {multiple}, got {value}", name)
    return value


def _sampling(body: dict[str, Any], model_type: ModelType, variant: str | None) -> dict[str, Any]:
    """negative_prompt, num_inference_steps, guidance_scale and scheduler: FLUX.1's rules differ by variant."""
    if model_type != "flux1":
        return {
            "negative_prompt": _text(body, "negative_prompt", required=False),
            "num_inference_steps": _integer(body, "num_inference_steps", 1, 100, 25),
            "guidance_scale": _number(body, "guidance_scale", 0.0, 20.0, 7.5),
            "scheduler": _choice(body, "scheduler", tuple(SCHEDULERS), "default"),
        }
    assert variant in FLUX_STEPS, f"a FLUX.1 server knows its variant, got {variant!r}"
    if body.get("negative_prompt") is not None:
        raise RequestError("negative_prompt does not apply to FLUX.1 (it is guidance-distilled: no classifier-free guidance)", "negative_prompt")
    guidance = _number(body, "guidance_scale", 0.0, 20.0, FLUX_GUIDANCE[variant])
    if variant == "schnell" and guidance != 0:
        # schnell has no guidance embedder: diffusers would ignore the value, so a caller would not get what it asked.
        raise RequestError("guidance_scale does not apply to FLUX.1-schnell (it takes no guidance): leave it out or give 0", "guidance_scale")
    return {
        "negative_prompt": None,
        "num_inference_steps": _integer(body, "num_inference_steps", 1, FLUX_MAX_STEPS, FLUX_STEPS[variant]),
        "guidance_scale": guidance,
        # FLUX.1 is a flow-matching model: only its own Euler scheduler applies.
        "scheduler": _choice(body, "scheduler", ("default",), "default"),
    }


def validate(
    body: dict[str, Any], model_type: ModelType, default_lora_scale: float, random_seed: int, variant: str | None = None
) -> GenerationParams:
    """Checks every field of a request body, applying defaults; raises RequestError naming the first bad field.

    A field given as null takes its default, as if it were absent (`"seed": null` is a random seed).
    `variant` is FLUX.1's ('dev' or 'schnell'); other model types have none.
    """
    unknown = sorted(set(body) - set(GenerationParams.__dataclass_fields__))
    if unknown:
        raise RequestError(
            f"unknown field {unknown[0]!r}; the fields are {', '.join(GenerationParams.__dataclass_fields__)}", unknown[0]
        )
    body = {name: value for name, value in body.items() if value is not None}
    prompt = _text(body, "prompt", required=True)
    assert prompt is not None
    sampling = _sampling(body, model_type, variant)
    return GenerationParams(
        prompt=prompt,
        negative_prompt=sampling["negative_prompt"],
        num_inference_steps=sampling["num_inference_steps"],
        guidance_scale=sampling["guidance_scale"],
        width=_side(body, "width", model_type),
        height=_side(body, "height", model_type),
        seed=_integer(body, "seed", 0, MAX_SEED, random_seed),
        num_images=_integer(body, "num_images", 1, 4, 1),
        lora_scale=_number(body, "lora_scale", 0.0, 2.0, default_lora_scale),
        scheduler=sampling["scheduler"],
        output_format=_choice(body, "output_format", OUTPUT_FORMATS, "png"),
    )


def check_output_pixels(params: GenerationParams, model_type: ModelType) -> None:
    """Refuses more pixels than the model type may produce in one request (400 naming num_images)."""
    pixels = params.width * params.height * params.num_images
    limit = MAX_OUTPUT_PIXELS[model_type]
    if pixels > limit:
        raise RequestError(
            f"num_images x width x height must be at most {limit} pixels for {model_type} "
            f"(4 images of 1024 x 1024), got {params.num_images} x {params.width} x {params.height} = {pixels}; "
            "ask for fewer num_images or a smaller width or height",
            "num_images",
        )


# The request fields that name LoRAs (shared mode only), and the most a request may combine.
LORA_FIELDS = ("lora", "loras")
MAX_LORAS = 3
MAX_LORA_VERSION = 2**53 - 1  # the largest integer every JSON client reads exactly
_LORA_REF = re.compile(rf"^({NAME})(?:@([1-9][0-9]{{0,14}}))?\Z")
_LORAS_KEYS = ("name", "version", "scale")


def split_loras(body: dict[str, Any], shared: bool, default_lora_scale: float) -> tuple[dict[str, Any], list[LoraRef]]:
    """The body without `lora`/`loras`, and the LoRAs they name (empty: the base model alone).

    A dedicated server serves its one fused LoRA: naming one is refused. `lora_scale` applies to
    `lora`; with `loras` each entry has its own `scale`, so `lora_scale` is refused there.
    """
    given = [name for name in LORA_FIELDS if body.get(name) is not None]
    rest = {name: value for name, value in body.items() if name not in LORA_FIELDS}
    if given and not shared:
        raise RequestError(
            f"{given[0]} is for the shared endpoint; this endpoint is dedicated to one LoRA, which every request uses", given[0]
        )
    if not given:
        return rest, []
    if len(given) == 2:
        raise RequestError("give either lora or loras, not both", "loras")
    if given == ["lora"]:
        scale = _number(rest, "lora_scale", 0.0, 2.0, default_lora_scale)
        return rest, [_lora_string(body["lora"], scale)]
    if rest.get("lora_scale") is not None:
        raise RequestError("lora_scale applies to lora; with loras give each entry its own scale", "lora_scale")
    return rest, _lora_list(body["loras"], default_lora_scale)


def _lora_string(value: Any, scale: float) -> LoraRef:
    match = _LORA_REF.match(value) if isinstance(value, str) else None
    if match is None:
        raise RequestError(
            f"lora must be a LoRA name ({NAME_RULE}), "
            f"optionally with @version (a positive integer), such as 'my-style' or 'my-style@3'; got {json.dumps(value)}",
            "lora",
        )
    version = match.group(2)
    return LoraRef(match.group(1), int(version) if version else None, scale)


def _lora_list(value: Any, default_scale: float) -> list[LoraRef]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LORAS:
        raise RequestError(
            f"loras must be a list of 1 to {MAX_LORAS} objects such as {{\"name\": \"my-style\", \"version\": 3, \"scale\": 0.8}}, "
            f"got {json.dumps(value)[:200]}",
            "loras",
        )
    refs: list[LoraRef] = []
    for index, entry in enumerate(value):
        where = f"loras[{index}]"
        if not isinstance(entry, dict) or set(entry) - set(_LORAS_KEYS):
            raise RequestError(f"{where} must be an object with name and optional version and scale, got {json.dumps(entry)[:200]}", "loras")
        entry = {k: v for k, v in entry.items() if v is not None}
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise RequestError(
                f"{where}.name must be a LoRA name ({NAME_RULE}), "
                f"got {json.dumps(name)}; give the version as {where}.version",
                "loras",
            )
        try:
            version = _integer(entry, "version", 1, MAX_LORA_VERSION, 1) if "version" in entry else None
            scale = _number(entry, "scale", 0.0, 2.0, default_scale)
        except RequestError as e:
            raise RequestError(f"{where}.{e}", "loras") from e
        refs.append(LoraRef(name, version, scale))
    seen = [(ref.name, ref.version) for ref in refs]
    duplicate = next((ref for i, ref in enumerate(seen) if ref in seen[:i]), None)
    if duplicate is not None:
        raise RequestError(f"loras names {label(*duplicate)} twice", "loras")
    return refs

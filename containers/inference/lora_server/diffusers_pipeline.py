"""The real model: a diffusers Stable Diffusion (1.5 or XL) pipeline with the trained LoRA fused in.

torch and diffusers are imported only inside `load_pipeline`, so the rest of the server (and its
tests) runs without them. `DiffusersPipeline` takes the loaded pipeline and a few factories, which
is what lets the tests drive this class's real logic with a stand-in for the diffusers object.

How the LoRA scale works: the LoRA is loaded as a PEFT adapter and fused (merged) into the base
weights at LORA_SCALE, so denoising steps cost the same as without a LoRA. PEFT 0.21 merges with
`weight.data += delta` and unmerges with `weight.data -= delta`, in the weights' dtype (fp16 on the
GPU; float32 on the CPU rounds too, less), so an unfuse and a fuse each round the weights once more:
re-fusing again and again would let the weights drift further from the trained ones. So the first
time a request asks for another `lora_scale`, the weights of every LoRA-targeted layer, as fused at
LORA_SCALE at load and untouched since, are copied to CPU memory. Every change of scale starts from
that copy: copy it back (exact), set PEFT's scale back to LORA_SCALE (its merged flags are unchanged
by the copy, so PEFT's state is again "merged at LORA_SCALE"), then, for another scale, unfuse,
`set_adapters` with the new weight and fuse. The weights at a scale are thus always the same, one
unfuse and one fuse away from the load-time ones, and exactly those at LORA_SCALE. (`set_adapters`
sets the scale absolutely; `fuse_lora(lora_scale=…)` would multiply the scale already set and
compound.) That costs about a second, once; the weights then stay at that scale until a request
asks for another.

The deadline: a step callback stops denoising by raising out of the diffusers call, so a request
that cannot finish in time is answered at once, without decoding latents nobody will see.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL.Image import Image

from .budget import finish_seconds
from .kohya_names import adapt_names, modules_per_component, prefixes_to_strip
from .logs import JsonLog
from .lora_file import LoraFileError, inspect_lora
from .model_files import BaseModel, find_lora_file, resolve_base_model
from .service import GenerationTimeout, NotEnoughTime
from .settings import Settings
from .validation import SCHEDULERS, GenerationParams

ADAPTER = "trained"
# The pipeline components diffusers fuses a kohya LoRA into (fuse_lora's default components).
LORA_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


class WeightCopy:
    """A CPU copy of tensors, made once, and copied back on demand; works on any torch tensors."""

    def __init__(self, tensors: Callable[[], list[Any]]) -> None:
        self._tensors = tensors
        self._pairs: list[tuple[Any, Any]] | None = None

    def save(self) -> int:
        """Copies the tensors to CPU memory the first time; returns the bytes copied (0 after the first)."""
        if self._pairs is not None:
            return 0
        pairs = [(t, t.detach().to("cpu", copy=True)) for t in self._tensors()]
        self._pairs = pairs
        return sum(saved.numel() * saved.element_size() for _, saved in pairs)

    def restore(self) -> None:
        assert self._pairs is not None, "restore() before save()"
        for tensor, saved in self._pairs:
            tensor.data.copy_(saved)


class DiffusersPipeline:
    """Serves requests from one loaded diffusers pipeline; the caller serializes calls."""

    def __init__(
        self,
        pipe: Any,
        *,
        lora_scale: float,
        make_generator: Callable[[int], Any],
        make_scheduler: Callable[[str, Any], Any],
        log: JsonLog,
        vae_dtype: Any,
        empty_cache: Callable[[], None],
        lora_weights: Callable[[], list[Any]],
        finish_reserve: Callable[[GenerationParams], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pipe = pipe
        self._default_scale = lora_scale
        # The weights of the LoRA-targeted layers as fused at LORA_SCALE: copied before the first re-fuse.
        self._fused_weights = WeightCopy(lora_weights)
        self._vae_dtype = vae_dtype
        self._empty_cache = empty_cache
        # Decode the images of a request one at a time: 4 at once in fp32 (SDXL) may not fit.
        pipe.vae.enable_slicing()
        self._make_generator = make_generator
        self._make_scheduler = make_scheduler
        self._log = log
        self._clock = clock
        self._schedulers: dict[str, Any] = {"default": pipe.scheduler}
        # Seconds per denoising step, measured on the last request of each shape (see _shape).
        self._step_seconds: dict[tuple[int, bool], float] = {}
        # What the caller's deadline leaves after denoising (budget.finish_seconds), and the seconds
        # from the last step to the images (the decode), measured on the last request of each shape.
        self._finish_reserve = finish_reserve
        self._decode_seconds: dict[tuple[int, bool], float] = {}
        started = clock()
        self._fuse_at(lora_scale)
        self._fused_scale: float | None = lora_scale
        self._log("lora_fused", lora_scale=lora_scale, ms=round((clock() - started) * 1000))

    @property
    def fused_scale(self) -> float | None:
        """The scale the LoRA is fused at; None while unknown (a re-fuse failed), so the next request re-fuses."""
        return self._fused_scale

    def _fuse_at(self, scale: float) -> None:
        self._pipe.set_adapters([ADAPTER], adapter_weights=[scale])
        self._pipe.fuse_lora(adapter_names=[ADAPTER], lora_scale=1.0)

    def apply_lora_scale(self, scale: float) -> None:
        if scale == self._fused_scale:
            return
        started = self._clock()
        # Only ever reached first at LORA_SCALE, with the weights as fused at load.
        saved = self._fused_weights.save()
        if saved:
            self._log("lora_weights_saved", bytes=saved)
        known = self._fused_scale is not None
        self._fused_scale = None
        if not known:
            # A change of scale failed part-way: some layers may be merged, at some scale, and others
            # not. Unfuse what is merged and fuse every layer at LORA_SCALE, so that all are merged
            # at LORA_SCALE in PEFT's eyes; the copy below then makes the weights agree.
            self._pipe.unfuse_lora()
            self._fuse_at(self._default_scale)
        self._fused_weights.restore()
        # Copying weights leaves PEFT's merged flags alone; its scale goes back to LORA_SCALE, which
        # the copied weights are merged at, so that an unfuse subtracts exactly what is merged.
        self._pipe.set_adapters([ADAPTER], adapter_weights=[self._default_scale])
        if scale != self._default_scale:
            self._pipe.unfuse_lora()
            self._fuse_at(scale)
        self._fused_scale = scale
        self._log("lora_fused", lora_scale=scale, ms=round((self._clock() - started) * 1000))

    def _scheduler(self, name: str) -> Any:
        if name not in self._schedulers:
            self._schedulers[name] = self._make_scheduler(name, self._schedulers["default"].config)
        return self._schedulers[name]

    @staticmethod
    def _shape(params: GenerationParams) -> tuple[int, bool]:
        """What a step's cost depends on: the pixels denoised, and whether classifier-free guidance
        doubles the U-Net's batch (diffusers guides only with guidance_scale > 1)."""
        return params.width * params.height * params.num_images, params.guidance_scale > 1

    def estimate_seconds(self, params: GenerationParams) -> float | None:
        """Denoising time for `params` at the pace of the last request of its shape; None before one.

        Only the same shape is trusted: a step's cost does not scale simply with the pixels
        (attention grows faster, fixed costs weigh more on small images).
        """
        seconds = self._step_seconds.get(self._shape(params))
        return None if seconds is None else seconds * params.num_inference_steps

    def decode_excess(self, params: GenerationParams) -> float:
        """How much longer than the whole reserve after denoising the last decode of this shape took.

        The reserve is set for GPUs; where decoding is slower (the CPU), denoising must end earlier
        by the difference for the request to answer within its limit. 0 before a measurement.
        """
        measured = self._decode_seconds.get(self._shape(params), 0.0)
        return max(0.0, measured - self._finish_reserve(params))

    def generate(self, params: GenerationParams, deadline: float) -> list[Image]:
        excess = self.decode_excess(params)
        needed = self.estimate_seconds(params)
        if needed is not None and self._clock() + needed + excess > deadline:
            # Refused before any GPU time is spent on a request that would be stopped part-way.
            raise NotEnoughTime(needed + excess, deadline - self._clock())
        try:
            return self._generate(params, deadline - excess)
        except GenerationTimeout:
            raise  # stopped before the decode: nothing to undo
        except Exception:
            self._recover()
            raise

    def _recover(self) -> None:
        """Undoes what a failure part-way through a generation can leave behind.

        The SDXL pipeline upcasts its fp16 VAE to fp32 for the decode and casts it back only after
        a decode that succeeds (pipeline_stable_diffusion_xl.py in diffusers 0.40): a decode that
        fails (out of memory) would leave it in fp32, and every later decode of fp16 latents would
        fail on the dtype mismatch. Memory a failed step held is returned to the GPU as well.
        """
        self._pipe.vae.to(dtype=self._vae_dtype)
        self._empty_cache()
        self._log("generation_recovered", vae_dtype=str(self._vae_dtype))

    def _generate(self, params: GenerationParams, deadline: float) -> list[Image]:
        self.apply_lora_scale(params.lora_scale)
        self._pipe.scheduler = self._scheduler(params.scheduler)
        paced: list[tuple[int, float]] = []
        started = self._clock()

        def stop_at_deadline(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            # Stop as soon as the remaining steps, at the pace so far, would end past the deadline
            # (from the second step on: the first carries warm-up), and in any case at the deadline.
            now = self._clock()
            done = step + 1
            paced[:] = [(done, now - started)]
            projected = now + (now - started) / done * (params.num_inference_steps - done)
            if now > deadline or (done >= 2 and projected > deadline):
                raise _StoppedAtDeadline(done)
            return callback_kwargs

        try:
            output = self._pipe(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                num_inference_steps=params.num_inference_steps,
                guidance_scale=params.guidance_scale,
                width=params.width,
                height=params.height,
                num_images_per_prompt=params.num_images,
                # One generator per image: image i is reproducible alone from seed + i.
                generator=[self._make_generator(params.seed + i) for i in range(params.num_images)],
                callback_on_step_end=stop_at_deadline,
            )
        except _StoppedAtDeadline as stopped:
            # Raised out of the pipeline call, so the VAE never decodes the half-denoised latents:
            # the 504 leaves at the deadline, not a decode later. The call leaves nothing behind:
            # the next call sets the scheduler's timesteps (resetting its state) and its own flags.
            raise GenerationTimeout(
                f"stopped after {stopped.steps} of {params.num_inference_steps} steps: the request would not finish "
                "within its time limit; "
                "ask for fewer num_inference_steps or num_images, or a smaller width or height"
            ) from None
        finally:
            if paced and paced[0][0] >= 2:
                done, seconds = paced[0]
                self._step_seconds[self._shape(params)] = seconds / done
        if paced:
            self._decode_seconds[self._shape(params)] = self._clock() - started - paced[0][1]
        return list(output.images)


class _StoppedAtDeadline(Exception):
    """Raised by the step callback to leave the diffusers call before the decode."""

    def __init__(self, steps: int) -> None:
        super().__init__(f"stopped after {steps} steps")
        self.steps = steps


def load_pipeline(settings: Settings, log: JsonLog) -> DiffusersPipeline:
    """Checks the LoRA file, loads the base model (fp16 on the GPU by default), loads the LoRA and fuses it."""
    lora_path = find_lora_file(settings.model_dir)
    lora = inspect_lora(lora_path, settings.model_type)
    log("lora_checked", file=lora_path.name, model_type=lora.model_type, modules=lora.modules, rank=lora.rank)
    base = resolve_base_model(settings)
    if base.offline:
        # Read when huggingface_hub is first imported (just below): no Hub call can then be attempted.
        os.environ["HF_HUB_OFFLINE"] = "1"
    log("base_model", kind=base.kind, location=base.location, device=settings.device, dtype=settings.dtype)

    import diffusers
    import torch

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU is visible; the server needs an ml.g* or ml.p* instance (DEVICE=cpu runs it on the CPU, slowly)")
    dtype = getattr(torch, settings.dtype)
    pipe = _load_base_model(diffusers, settings, base, dtype)
    pipe.to(settings.device)
    pipe.set_progress_bar_config(disable=True)
    # Attention: diffusers' default processor on torch 2 is SDPA (AttnProcessor2_0); nothing to set.
    _load_lora(pipe, lora_path, log)

    def lora_weights() -> list[Any]:
        from peft.tuners.tuners_utils import BaseTunerLayer

        return [
            module.get_base_layer().weight
            for name in LORA_COMPONENTS
            if getattr(pipe, name, None) is not None
            for module in getattr(pipe, name).modules()
            if isinstance(module, BaseTunerLayer)
        ]

    def make_scheduler(name: str, config: Any) -> Any:
        spec = SCHEDULERS[name]
        assert spec is not None, "the default scheduler is never rebuilt"
        class_name, options = spec
        return getattr(diffusers, class_name).from_config(config, **options)

    return DiffusersPipeline(
        pipe,
        lora_scale=settings.lora_scale,
        # CPU generators: the same seed gives the same starting noise on any GPU type.
        make_generator=lambda seed: torch.Generator(device="cpu").manual_seed(seed),
        make_scheduler=make_scheduler,
        log=log,
        vae_dtype=dtype,
        empty_cache=torch.cuda.empty_cache if settings.device == "cuda" else lambda: None,
        lora_weights=lora_weights,
        finish_reserve=lambda params: finish_seconds(settings.model_type, params),
    )


def _load_base_model(diffusers: Any, settings: Settings, base: BaseModel, dtype: Any) -> Any:
    pipeline_class = diffusers.StableDiffusionXLPipeline if settings.model_type == "sdxl" else diffusers.StableDiffusionPipeline
    # `dtype=`: diffusers 0.40 deprecates `torch_dtype=` with a warning at every load.
    options: dict[str, Any] = {"dtype": dtype}
    if settings.model_type == "sd15":
        # SDXL has no safety checker; for SD 1.5 it is skipped too, as from_single_file skips it,
        # so a folder and a single file of the same model behave alike. Moderation is the caller's.
        # Its feature extractor only feeds the safety checker; in transformers 5.17 it is the
        # torchvision-backed CLIPImageProcessor, which needs torchvision, so it is not loaded either.
        options.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if base.kind == "single_file":
        return pipeline_class.from_single_file(
            base.location, config=str(settings.configs_dir / settings.model_type), local_files_only=True, **options
        )
    return pipeline_class.from_pretrained(base.location, local_files_only=base.offline, **options)


def _load_lora(pipe: Any, lora_path: Path, log: JsonLog) -> None:
    """Loads the kohya file as a PEFT adapter, its text-encoder names adapted to transformers 5 (kohya_names)."""
    from safetensors.torch import load_file

    original = load_file(str(lora_path))
    state_dict = adapt_names(original, prefixes_to_strip(pipe))
    log("lora_names_adapted", renamed=sum(1 for old, new in zip(original, state_dict, strict=True) if old != new))
    pipe.load_lora_weights(state_dict, adapter_name=ADAPTER)
    _check_every_module_loaded(pipe, modules_per_component(original), lora_path.name)


def _check_every_module_loaded(pipe: Any, expected: Counter[str], file_name: str) -> None:
    """Each LoRA module of the file must have become one PEFT layer: diffusers skips names that match
    no module of a text encoder with a warning only, which would serve a LoRA without its text part."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for component, count in sorted(expected.items()):
        model = getattr(pipe, component, None)
        loaded = 0 if model is None else sum(isinstance(m, BaseTunerLayer) for m in model.modules())
        if loaded != count:
            raise LoraFileError(
                f"{file_name}: {count} LoRA modules are for the {component}, but {loaded} of its layers took one; "
                "its module names do not match this base model's layers (a LoRA for another model, or naming "
                "this version of diffusers/transformers does not read)"
            )

"""The real model: a diffusers Stable Diffusion (1.5 or XL) pipeline with the trained LoRA fused in.

torch and diffusers are imported only inside `load_pipeline`, so the rest of the server (and its
tests) runs without them. `DiffusersPipeline` takes the loaded pipeline and two factories, which
is what lets the tests drive this class's real logic with a stand-in for the diffusers object.

How the LoRA scale works: the LoRA is loaded as a PEFT adapter and fused (merged) into the base
weights at LORA_SCALE, so denoising steps cost the same as without a LoRA. A request with another
`lora_scale` re-fuses: unfuse, set the adapter's weight to the new scale (`set_adapters` sets it
absolutely; `fuse_lora(lora_scale=…)` would multiply the scale already set and compound), fuse
again. That costs about a second, once; the weights then stay at that scale until a request asks
for another, so a run of requests at one scale pays once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from PIL.Image import Image

from .logs import JsonLog
from .lora_file import inspect_lora
from .model_files import find_lora_file, resolve_base_model
from .budget import megapixels
from .service import GenerationTimeout, NotEnoughTime
from .settings import Settings
from .validation import SCHEDULERS, GenerationParams

ADAPTER = "trained"


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pipe = pipe
        self._vae_dtype = vae_dtype
        self._empty_cache = empty_cache
        # Decode the images of a request one at a time: 4 at once in fp32 (SDXL) may not fit.
        pipe.vae.enable_slicing()
        self._make_generator = make_generator
        self._make_scheduler = make_scheduler
        self._log = log
        self._clock = clock
        self._schedulers: dict[str, Any] = {"default": pipe.scheduler}
        # Seconds per denoising step per megapixel of output, measured on the last request.
        self._pace: float | None = None
        self._fused_scale: float | None = None
        self._maybe_fused = False
        self.apply_lora_scale(lora_scale)

    @property
    def fused_scale(self) -> float | None:
        """The scale the LoRA is fused at; None while unknown (a re-fuse failed), so the next request re-fuses."""
        return self._fused_scale

    def apply_lora_scale(self, scale: float) -> None:
        if scale == self._fused_scale:
            return
        started = self._clock()
        self._fused_scale = None
        if self._maybe_fused:
            # Unmerges with the scale each layer was merged at; a layer not merged is left as it is.
            self._pipe.unfuse_lora()
        self._pipe.set_adapters([ADAPTER], adapter_weights=[scale])
        self._maybe_fused = True
        self._pipe.fuse_lora(adapter_names=[ADAPTER], lora_scale=1.0)
        self._fused_scale = scale
        self._log("lora_fused", lora_scale=scale, ms=round((self._clock() - started) * 1000))

    def _scheduler(self, name: str) -> Any:
        if name not in self._schedulers:
            self._schedulers[name] = self._make_scheduler(name, self._schedulers["default"].config)
        return self._schedulers[name]

    def estimate_seconds(self, params: GenerationParams) -> float | None:
        """Denoising time for `params` at the pace of the last request; None before the first."""
        if self._pace is None:
            return None
        return self._pace * params.num_inference_steps * megapixels(params)

    def generate(self, params: GenerationParams, deadline: float) -> list[Image]:
        needed = self.estimate_seconds(params)
        if needed is not None and self._clock() + needed > deadline:
            # Refused before any GPU time is spent on a request that would be stopped part-way.
            raise NotEnoughTime(needed, deadline - self._clock())
        try:
            return self._generate(params, deadline)
        except GenerationTimeout:
            raise  # denoising was interrupted and the decode completed: nothing to undo
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
        stopped_at: list[int] = []
        paced: list[tuple[int, float]] = []
        started = self._clock()

        def stop_at_deadline(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            # Stop as soon as the remaining steps, at the pace so far, would end past the deadline
            # (from the second step on: the first carries warm-up), and in any case at the deadline.
            # diffusers skips the remaining steps once `_interrupt` is set, then still decodes; the
            # half-denoised images are discarded below.
            now = self._clock()
            done = step + 1
            paced[:] = [(done, now - started)]
            projected = now + (now - started) / done * (params.num_inference_steps - done)
            if not stopped_at and (now > deadline or (done >= 2 and projected > deadline)):
                stopped_at.append(done)
                pipe._interrupt = True
            return callback_kwargs

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
        if paced and paced[0][0] >= 2:
            done, seconds = paced[0]
            self._pace = seconds / done / megapixels(params)
        if stopped_at:
            raise GenerationTimeout(
                f"stopped after {stopped_at[0]} of {params.num_inference_steps} steps: the request would not finish "
                "within its time limit; "
                "ask for fewer num_inference_steps or num_images, or a smaller width or height"
            )
        return list(output.images)


def load_pipeline(settings: Settings, log: JsonLog) -> DiffusersPipeline:
    """Checks the LoRA file, loads the base model in fp16 on the GPU, loads the LoRA and fuses it."""
    lora_path = find_lora_file(settings.model_dir)
    lora = inspect_lora(lora_path, settings.model_type)
    log("lora_checked", file=lora_path.name, model_type=lora.model_type, modules=lora.modules, rank=lora.rank)
    base = resolve_base_model(settings)
    if base.offline:
        # Read when huggingface_hub is first imported (just below): no Hub call can then be attempted.
        os.environ["HF_HUB_OFFLINE"] = "1"
    log("base_model", kind=base.kind, location=base.location)

    import diffusers
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU is visible; the server needs an ml.g* or ml.p* instance")
    pipeline_class = diffusers.StableDiffusionXLPipeline if settings.model_type == "sdxl" else diffusers.StableDiffusionPipeline
    options: dict[str, Any] = {"torch_dtype": torch.float16}
    if settings.model_type == "sd15":
        # SDXL has no safety checker; for SD 1.5 it is skipped too, as from_single_file skips it,
        # so a folder and a single file of the same model behave alike. Moderation is the caller's.
        options.update(safety_checker=None, requires_safety_checker=False)
    if base.kind == "single_file":
        pipe = pipeline_class.from_single_file(
            base.location, config=str(settings.configs_dir / settings.model_type), local_files_only=True, **options
        )
    else:
        pipe = pipeline_class.from_pretrained(base.location, local_files_only=base.offline, **options)
    pipe.to("cuda")
    pipe.set_progress_bar_config(disable=True)
    # Attention: diffusers' default processor on torch 2 is SDPA (AttnProcessor2_0); nothing to set.
    pipe.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name, adapter_name=ADAPTER)

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
        vae_dtype=torch.float16,
        empty_cache=torch.cuda.empty_cache,
    )

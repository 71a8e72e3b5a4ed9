"""The real model: a diffusers Stable Diffusion (1.5 or XL) or FLUX.1 pipeline with the trained LoRA fused in.

torch and diffusers are imported only inside the loading functions, so the rest of the server (and its
tests) runs without them. `DiffusersPipeline` takes the loaded pipeline and a few factories, which
is what lets the tests drive this class's real logic with a stand-in for the diffusers object.
`PipelineRunner` holds what both serving modes share (schedulers, pacing, the deadline, recovery);
`DiffusersPipeline` adds the one fused LoRA, `shared_pipeline.SharedDiffusersPipeline` any set of LoRAs.

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
that cannot finish in time is answered at once, without decoding latents nobody will see. What the
steps and the decode take is measured per request size by `pacing.Pacer`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL.Image import Image

from .budget import finish_seconds
from .kohya_names import DOWN, TEXT_ENCODER_PREFIXES, UNET_PREFIX, adapted_names, flux_layers_per_component, modules_per_component, prefixes_to_strip
from .logs import JsonLog
from .lora_file import LoraFileError, inspect_lora
from .model_files import BaseModel, ModelFilesError, find_lora_file, resolve_base_model
from .pacing import Pacer
from .service import GenerationTimeout
from .settings import Settings
from .validation import SCHEDULERS, GenerationParams

ADAPTER = "trained"
# The pipeline components diffusers fuses a kohya LoRA into (fuse_lora's default components); FLUX.1's is its transformer.
LORA_COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "transformer")
# FLUX.1's flow-matching scheduler: one transformer call per step, its timesteps set by the pipeline (dev's need the image size).
FLOW_MATCH_SCHEDULER = "FlowMatchEulerDiscreteScheduler"


def sd_request_kwargs(params: GenerationParams) -> dict[str, Any]:
    """The Stable Diffusion pipelines' own arguments of a request, beside those every pipeline takes."""
    return {"negative_prompt": params.negative_prompt}


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


class PipelineRunner:
    """Runs requests on one loaded diffusers pipeline: schedulers, pacing, the deadline, recovery after a failure.

    Subclasses decide the weights a request runs with (`DiffusersPipeline`: the one LoRA fused at a
    scale; `shared_pipeline.SharedDiffusersPipeline`: any set of LoRAs). The caller serializes calls.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        make_generator: Callable[[int], Any],
        make_scheduler: Callable[[str, Any], Any],
        log: JsonLog,
        vae_dtype: Any,
        empty_cache: Callable[[], None],
        finish_reserve: Callable[[GenerationParams], float],
        clock: Callable[[], float] = time.monotonic,
        synchronize: Callable[[], None] = lambda: None,
        request_kwargs: Callable[[GenerationParams], dict[str, Any]] = sd_request_kwargs,
    ) -> None:
        self._pipe = pipe
        self._request_kwargs = request_kwargs
        self._vae_dtype = vae_dtype
        self._empty_cache = empty_cache
        # Decode the images of a request one at a time: 4 at once in fp32 (SDXL) may not fit.
        pipe.vae.enable_slicing()
        self._make_generator = make_generator
        self._make_scheduler = make_scheduler
        self._log = log
        self._clock = clock
        self._schedulers: dict[str, Any] = {"default": pipe.scheduler}
        # `synchronize` waits for the GPU's queued work (torch.cuda.synchronize; nothing on the CPU).
        self._pacer = Pacer(clock, synchronize, finish_reserve)

    def _scheduler(self, name: str) -> Any:
        if name not in self._schedulers:
            self._schedulers[name] = self._make_scheduler(name, self._schedulers["default"].config)
        return self._schedulers[name]

    def unet_calls(self, params: GenerationParams) -> int:
        """The U-Net calls denoising `params` takes: its scheduler's timesteps (PNDM has one more than asked)."""
        scheduler = self._scheduler(params.scheduler)
        if type(scheduler).__name__ == FLOW_MATCH_SCHEDULER:
            return params.num_inference_steps
        # The pipeline sets the timesteps again at its start: this leaves nothing behind.
        scheduler.set_timesteps(params.num_inference_steps)
        return len(scheduler.timesteps)

    def estimate_seconds(self, params: GenerationParams) -> float | None:
        """Denoising time for `params` at the pace measured on its shape; None before a measurement."""
        return self._pacer.estimate(params, self.unet_calls(params))

    def decode_excess(self, params: GenerationParams) -> float:
        """How much earlier than the reserve asks denoising of `params` must end, for its decode (Pacer)."""
        return self._pacer.decode_excess(params)

    def run(self, params: GenerationParams, deadline: float, set_weights: Callable[[], None]) -> list[Image]:
        """Images for `params`, once `set_weights()` has given the model the weights this request runs with."""
        # Refused before any GPU time is spent on a request that would be stopped part-way.
        self._pacer.check(params, self.unet_calls(params), deadline)
        try:
            set_weights()
            return self._generate(params, deadline)
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
        self._pipe.scheduler = self._scheduler(params.scheduler)
        paced = self._pacer.start(params, deadline)

        def stop_at_deadline(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            # num_timesteps: the U-Net calls of this call, which PNDM makes one more than num_inference_steps.
            if paced.should_stop(step + 1, pipe.num_timesteps):
                raise _StoppedAtDeadline(step + 1, pipe.num_timesteps)
            return callback_kwargs

        try:
            output = self._pipe(
                prompt=params.prompt,
                **self._request_kwargs(params),
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
            paced.stopped()
            raise GenerationTimeout(
                f"stopped after {stopped.steps} of {stopped.total} denoising steps: the request would not finish "
                "within its time limit; "
                "ask for fewer num_inference_steps or num_images, or a smaller width or height"
            ) from None
        paced.finished()
        return list(output.images)


class DiffusersPipeline(PipelineRunner):
    """Serves requests with the one trained LoRA fused in, at the scale each request asks for."""

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
        synchronize: Callable[[], None] = lambda: None,
        request_kwargs: Callable[[GenerationParams], dict[str, Any]] = sd_request_kwargs,
    ) -> None:
        super().__init__(
            pipe, make_generator=make_generator, make_scheduler=make_scheduler, log=log, vae_dtype=vae_dtype,
            empty_cache=empty_cache, finish_reserve=finish_reserve, clock=clock, synchronize=synchronize,
            request_kwargs=request_kwargs,
        )
        self._default_scale = lora_scale
        # The weights of the LoRA-targeted layers as fused at LORA_SCALE: copied before the first re-fuse.
        self._fused_weights = WeightCopy(lora_weights)
        started = clock()
        self._fuse_at(lora_scale)
        self._fused_scale: float | None = lora_scale
        self._log("lora_fused", lora_scale=lora_scale, ms=round((clock() - started) * 1000))

    def generate(self, params: GenerationParams, deadline: float) -> list[Image]:
        return self.run(params, deadline, lambda: self.apply_lora_scale(params.lora_scale))

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


class _StoppedAtDeadline(Exception):
    """Raised by the step callback to leave the diffusers call before the decode."""

    def __init__(self, steps: int, total: int) -> None:
        super().__init__(f"stopped after {steps} of {total} steps")
        self.steps, self.total = steps, total


def load_pipeline(settings: Settings, log: JsonLog) -> DiffusersPipeline:
    """Checks the LoRA file, loads the base model (fp16 on the GPU by default), loads the LoRA and fuses it."""
    lora_path = find_lora_file(settings.model_dir)
    lora = inspect_lora(lora_path, settings.model_type)
    log("lora_checked", file=lora_path.name, model_type=lora.model_type, modules=lora.modules, rank=lora.rank)
    pipe = load_base_pipeline(settings, log)
    load_kohya_lora(pipe, lora_path, settings.model_type, log)

    def lora_weights() -> list[Any]:
        return [layer.get_base_layer().weight for layers in lora_layers(pipe).values() for _, layer in layers]

    return DiffusersPipeline(pipe, lora_scale=settings.lora_scale, lora_weights=lora_weights, **runner_options(settings, log))


def load_base_pipeline(settings: Settings, log: JsonLog) -> Any:
    """The base model's diffusers pipeline, in DTYPE on DEVICE, without any LoRA."""
    base = resolve_base_model(settings)
    if base.offline:
        # Read when huggingface_hub is first imported (just below): no Hub call can then be attempted.
        os.environ["HF_HUB_OFFLINE"] = "1"
    log("base_model", kind=base.kind, location=base.location, device=settings.device, dtype=settings.dtype)

    import diffusers
    import torch

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU is visible; the server needs an ml.g* or ml.p* instance (DEVICE=cpu runs it on the CPU, slowly)")
    pipe = _load_base_model(diffusers, settings, base, getattr(torch, settings.dtype), log)
    pipe.to(settings.device)
    pipe.set_progress_bar_config(disable=True)
    # Attention: diffusers' default processor on torch 2 is SDPA (AttnProcessor2_0); nothing to set.
    return pipe


def runner_options(settings: Settings, log: JsonLog) -> dict[str, Any]:
    """PipelineRunner's keyword arguments for the real torch and diffusers on `settings.device`."""
    import diffusers
    import torch

    def make_scheduler(name: str, config: Any) -> Any:
        spec = SCHEDULERS[name]
        assert spec is not None, "the default scheduler is never rebuilt"
        class_name, options = spec
        return getattr(diffusers, class_name).from_config(config, **options)

    cuda = settings.device == "cuda"
    return {
        # CPU generators: the same seed gives the same starting noise on any GPU type.
        "make_generator": lambda seed: torch.Generator(device="cpu").manual_seed(seed),
        "make_scheduler": make_scheduler,
        "log": log,
        "vae_dtype": getattr(torch, settings.dtype),
        "empty_cache": torch.cuda.empty_cache if cuda else lambda: None,
        "finish_reserve": lambda params: finish_seconds(settings.model_type, params),
        "synchronize": torch.cuda.synchronize if cuda else lambda: None,
        "request_kwargs": flux_request_kwargs(settings) if settings.model_type == "flux1" else sd_request_kwargs,
    }


def flux_request_kwargs(settings: Settings) -> Callable[[GenerationParams], dict[str, Any]]:
    """FluxPipeline's arguments of a request: no negative prompt (validation refuses one), the variant's T5 length."""
    from . import flux_pipeline

    variant = settings.flux_variant
    assert variant is not None
    return lambda params: {"max_sequence_length": flux_pipeline.T5_MAX_TOKENS[variant]}


def _load_base_model(diffusers: Any, settings: Settings, base: BaseModel, dtype: Any, log: JsonLog) -> Any:
    if settings.model_type == "flux1":
        from .flux_pipeline import load_flux

        if base.kind == "single_file":
            raise ModelFilesError(f"{base.location}: a FLUX.1 base model is four files (flux_files), not one checkpoint")
        return load_flux(settings, base, dtype, log)
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


def lora_layers(pipe: Any) -> dict[str, list[tuple[str, Any]]]:
    """The PEFT LoRA layers (module path, layer) of each loaded component diffusers fuses a LoRA into."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {
        name: [(path, m) for path, m in getattr(pipe, name).named_modules() if isinstance(m, BaseTunerLayer)]
        for name in LORA_COMPONENTS
        if getattr(pipe, name, None) is not None
    }


def load_kohya_lora(pipe: Any, lora_path: Path, model_type: str, log: JsonLog, adapter_name: str = ADAPTER) -> None:
    """Loads the kohya file as a PEFT adapter, its text-encoder names adapted to transformers 5 (kohya_names).

    Raises LoraFileError unless every LoRA module of the file became one PEFT layer (LoadCheck).
    """
    from safetensors.torch import load_file

    original = load_file(str(lora_path))
    names = adapted_names(original, prefixes_to_strip(pipe), lora_path.name)
    log("lora_names_adapted", renamed=sum(1 for old, new in names.items() if old != new))
    state_dict = {new: original[old] for old, new in names.items()}
    check = LoadCheck(names, lora_path.name, model_type)
    try:
        pipe.load_lora_weights(state_dict, adapter_name=adapter_name)
    except IndexError as error:
        # diffusers 0.40 fails so (get_peft_kwargs) when no name of a text encoder matches a layer.
        try:
            check.every_module_loaded(pipe)
        except LoraFileError as clear:
            raise clear from error
        raise LoraFileError(f"{lora_path.name}: diffusers could not load it ({error!r}); {check.action}") from error
    check.every_module_loaded(pipe)


class LoadCheck:
    """Each LoRA module of the file must have become one PEFT layer: diffusers only warns when some of
    a text encoder's names match no layer (and fails with an IndexError when none do), which would
    serve a LoRA without its text part."""

    def __init__(self, names: dict[str, str], file_name: str, model_type: str) -> None:
        # FLUX.1: diffusers splits kohya's fused qkv and linear1 modules into one layer per projection.
        flux = model_type == "flux1"
        self._expected = flux_layers_per_component(names) if flux else modules_per_component(names)
        self._counted = "LoRA layers (kohya's fused qkv and linear1 modules split by diffusers)" if flux else "LoRA modules"
        # kohya module name, as diffusers is given it -> as the file names it (text_model_ put back).
        self._file_names = {_module(new): _module(old) for old, new in names.items() if new.endswith(DOWN)}
        self._file_name = file_name
        self.action = (
            f"serve it with the base model it was trained on (MODEL_TYPE={model_type} with that model's "
            "BASE_MODEL_PATH or BASE_MODEL_ID), or a diffusers/transformers version that reads its names"
        )

    def every_module_loaded(self, pipe: Any) -> None:
        layers = lora_layers(pipe)
        for component, count in sorted(self._expected.items()):
            loaded = layers.get(component, [])
            if len(loaded) != count:
                raise LoraFileError(
                    f"{self._file_name}: {count} {self._counted} are for the {component}, but {len(loaded)} of its layers "
                    f"took one{self._unmatched(component, loaded, count)}; its module names do not match this base "
                    f"model's layers; {self.action}"
                )

    def _unmatched(self, component: str, loaded: list[tuple[str, Any]], count: int) -> str:
        """A few of the file's modules that got no layer, named by kohya's rule: prefix + path, "." -> "_"."""
        taken = {path.replace(".", "_") for path, _ in loaded}
        prefixes = [p for p, c in TEXT_ENCODER_PREFIXES.items() if c == component] or [UNET_PREFIX]
        missing = sorted(
            old
            for new, old in self._file_names.items()
            for prefix in prefixes
            if new.startswith(prefix) and new[len(prefix) :] not in taken
        )
        # kohya names SDXL's U-Net modules by its original (LDM) layout, which diffusers converts: no list then.
        if len(missing) != count - len(loaded):
            return ""
        return f" (no layer for {', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})"


def _module(key: str) -> str:
    return key.split(".", 1)[0]

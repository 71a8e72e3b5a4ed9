"""Shared mode: one base pipeline; each request runs with its own set of LoRAs (up to 3), each at its own scale.

How a LoRA gets to the weights:
- Converted once, on its first use: its file goes through diffusers' own loader exactly as the
  dedicated server loads it (`diffusers_pipeline.load_kohya_lora`: kohya's names adapted for
  transformers 5, and every module checked to have become a layer), its PEFT layers are read into
  plain tensors (`lora_switch.LoraWeights`), and `unload_lora_weights` removes them again: the
  model is plain modules before and after, with the same weights.
- Kept in two tiers, each least recently used by bytes: host memory (the converted tensors) and
  the GPU (their copy on DEVICE; on the CPU a second, separately counted tier). The LoRAs of the
  request being served are pinned in both. The disk tier is below (lora_fetch, lora_cache).
- Applied by `lora_switch.LoraSwitch`: the weights are always pristine + the deltas of the
  request's set, rewritten from a pristine copy at each change of set, so they never drift and
  no adapter module stays in the model (no memory growth as LoRAs come and go).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL.Image import Image

from .diffusers_pipeline import LORA_COMPONENTS, PipelineRunner, load_base_pipeline, load_kohya_lora, lora_layers, runner_options
from .logs import JsonLog
from .lora_cache import ByteLru, CacheError, TooLarge
from .lora_file import LoraFileError, inspect_lora
from .lora_switch import LayerLora, LoraSwitch, LoraWeights, layer_kind
from .metrics import Metrics
from .settings import Settings
from .shared_types import LocalLora
from .validation import GenerationParams

# The adapter name a LoRA has between its load and its conversion; never left in the model.
CONVERTING = "converting"
FAILED_CONVERSIONS = 256  # failed files remembered by sha256 (a small, bounded negative cache)


class SharedDiffusersPipeline(PipelineRunner):
    """Serves requests with any set of LoRAs on one base pipeline; the caller serializes calls (the GPU lock)."""

    def __init__(
        self,
        pipe: Any,
        *,
        convert: Callable[[Path], LoraWeights],
        device: str,
        host_bytes: int,
        gpu_bytes: int,
        metrics: Metrics,
        **runner: Any,
    ) -> None:
        super().__init__(pipe, **runner)
        self._convert = convert
        self._device = device
        self._metrics = metrics
        self.host_tier: ByteLru[str, LoraWeights] = ByteLru(host_bytes, "LORA_CACHE_HOST_BYTES host LoRA cache")
        self.gpu_tier: ByteLru[str, LoraWeights] = ByteLru(gpu_bytes, "LORA_CACHE_GPU_BYTES GPU LoRA cache")
        self.switch = LoraSwitch(self._layer, log=self._log)
        # Files that failed to convert, by sha256 (their reason): refused again without another load.
        self._failed: OrderedDict[str, str] = OrderedDict()
        # Set when a conversion left PEFT layers in the model: /ping then reports the server unhealthy.
        self.unhealthy: str | None = None

    def _layer(self, component: str, path: str) -> Any:
        return getattr(self._pipe, component).get_submodule(path)

    def generate(self, params: GenerationParams, deadline: float, loras: list[LocalLora]) -> list[Image]:
        """Images for `params` with `loras` applied (none: the base model alone); `params.lora_scale` is not used."""
        with self._pinned(loras):
            # Loaded before the time check, so that the check sees what loading left of the time.
            ready = [(lora.key, self._on_device(lora, loras), lora.scale) for lora in loras]
            return self.run(params, deadline, lambda: self._apply(ready))

    def apply(self, loras: list[LocalLora]) -> None:
        """Gives the model the weights of `loras` without generating (what a request does before denoising)."""
        with self._pinned(loras):
            self._apply([(lora.key, self._on_device(lora, loras), lora.scale) for lora in loras])

    @contextmanager
    def _pinned(self, loras: list[LocalLora]) -> Iterator[None]:
        """The request's LoRAs are never evicted from a tier by one another."""
        keys = [lora.key for lora in loras]
        self.host_tier.pin(keys)
        self.gpu_tier.pin(keys)
        try:
            yield
        finally:
            self.host_tier.unpin(keys)
            self.gpu_tier.unpin(keys)

    def _on_device(self, lora: LocalLora, request: list[LocalLora]) -> LoraWeights:
        """The LoRA's tensors on DEVICE, from the GPU tier, else the host tier, else its file."""
        on_device = self.gpu_tier.get(lora.key)
        self._metrics.record("LoraHitGpu", int(on_device is not None), "Count")
        if on_device is not None:
            return on_device
        started = self._clock()
        on_host = self.host_tier.get(lora.key)
        self._metrics.record("LoraHitHost", int(on_host is not None), "Count")
        if on_host is None:
            on_host = self._converted(lora)
            _put(self.host_tier, lora, on_host, request)
        on_device = on_host.to(self._device)
        _put(self.gpu_tier, lora, on_device, request)
        self._metrics.record("LoraLoadMs", (self._clock() - started) * 1000, "Milliseconds")
        return on_device

    def _converted(self, lora: LocalLora) -> LoraWeights:
        """The LoRA's file converted; a file that failed before is refused at once (its sha256 remembered)."""
        sha256 = lora.version.sha256
        if sha256 in self._failed:
            raise LoraConversionError(lora.key, f"{self._failed[sha256]} (remembered from an earlier attempt)")
        try:
            return self._convert(lora.path)
        except LoraFileError as e:
            self._failed[sha256] = str(e)
            while len(self._failed) > FAILED_CONVERSIONS:
                self._failed.popitem(last=False)
            raise LoraConversionError(lora.key, str(e)) from e
        except ModelNotPlain as e:
            self.unhealthy = f"a LoRA conversion left the model changed: {e}"
            self._log("model_unhealthy", level="error", reason=self.unhealthy, lora=lora.key)
            raise

    def _apply(self, ready: list[tuple[str, LoraWeights, float]]) -> None:
        started = self._clock()
        if self.switch.apply(ready):
            ms = (self._clock() - started) * 1000
            self._metrics.record("LoraSwitchMs", ms, "Milliseconds")
            self._log("loras_applied", loras=[f"{key}:{scale:g}" for key, _, scale in ready], ms=round(ms))


def _put(tier: ByteLru[str, LoraWeights], lora: LocalLora, weights: LoraWeights, request: list[LocalLora]) -> None:
    """Adds the LoRA to a tier; a request whose own LoRAs exceed the tier is TooLarge (400: retrying cannot help).

    Requests are serialized here (the GPU lock), so the only pins in a tier are this request's own.
    """
    try:
        tier.put(lora.key, weights, weights.nbytes)
    except TooLarge:
        raise
    except CacheError as e:
        held = [other.key for other in request if other.key != lora.key and other.key in tier]
        total = tier.held_bytes(held) + weights.nbytes
        if total > tier.capacity_bytes:
            raise TooLarge(
                f"{tier.name}: this request's LoRAs {', '.join([*held, lora.key])} need {total} bytes together, "
                f"more than its {tier.capacity_bytes} bytes; ask for fewer LoRAs at once, or raise the cache size"
            ) from e
        raise


class LoraConversionError(LoraFileError):
    """One LoRA of a request could not be converted; `lora_key` names it (the 400 names that LoRA alone)."""

    def __init__(self, lora_key: str, message: str) -> None:
        super().__init__(message)
        self.lora_key = lora_key


class ModelNotPlain(RuntimeError):
    """A conversion left PEFT layers or a peft_config in the model: every later conversion would fail."""


def convert_lora(pipe: Any, path: Path, model_type: str, log: JsonLog) -> LoraWeights:
    """The LoRA file's weights as plain tensors on the CPU, read through diffusers' loader; the model is left as it was.

    Raises LoraFileError, with the model unchanged, when the file is not a LoRA of `model_type`, a
    module of it matches no layer of this base model, or diffusers or PEFT cannot load it.
    ModelNotPlain when unloading left PEFT layers behind (the server is then unhealthy).
    """
    inspect_lora(path, model_type)  # the header alone: another family is refused before diffusers reads it
    try:
        load_kohya_lora(pipe, path, model_type, log, adapter_name=CONVERTING)
        return _read_layers(pipe, path.name)
    except LoraFileError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        if type(e).__name__ == "OutOfMemoryError":  # torch's: the device, not the file
            raise
        raise LoraFileError(f"{path.name}: diffusers could not load it as a LoRA: {type(e).__name__}: {e}"[:800]) from e
    finally:
        pipe.unload_lora_weights()
        assert_plain(pipe)


def _read_layers(pipe: Any, file_name: str) -> LoraWeights:
    layers: dict[tuple[str, str], LayerLora] = {}
    for component, found in lora_layers(pipe).items():
        for path, layer in found:
            _refuse_variants(layer, file_name, f"{component}.{path}")
            layers[component, path] = LayerLora(
                layer_kind(layer.get_base_layer(), file_name, (component, path)),
                layer.lora_A[CONVERTING].weight.detach().to("cpu", copy=True),
                layer.lora_B[CONVERTING].weight.detach().to("cpu", copy=True),
                alpha=float(layer.lora_alpha[CONVERTING]),
                rank=int(layer.r[CONVERTING]),
            )
    return LoraWeights(layers)


def _refuse_variants(layer: Any, file_name: str, where: str) -> None:
    """Only plain LoRA has the delta lora_switch computes: DoRA, rsLoRA, a LoRA bias or fan-in-fan-out layers are refused."""
    variant = (
        CONVERTING in getattr(layer, "lora_variant", {})
        or layer.use_rslora.get(CONVERTING, False)
        or layer.lora_bias.get(CONVERTING, False)
        or getattr(layer, "fan_in_fan_out", False)
    )
    if variant:
        raise LoraFileError(f"{file_name}: {where} loads as a LoRA variant (DoRA, rsLoRA or a LoRA bias), which shared mode cannot apply")


def assert_plain(pipe: Any) -> None:
    """No PEFT layer or adapter config may stay in the model after a conversion (memory would grow with each LoRA)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name in LORA_COMPONENTS:
        model = getattr(pipe, name, None)
        if model is None:
            continue
        left = [path for path, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
        if left or getattr(model, "peft_config", None):
            raise ModelNotPlain(f"{name}: unload_lora_weights left PEFT layers ({left[:3]}) or a peft_config behind")


def load_shared_pipeline(settings: Settings, log: JsonLog, metrics: Metrics) -> SharedDiffusersPipeline:
    """The base model alone, ready to serve any LoRA of MODEL_TYPE per request."""
    pipe = load_base_pipeline(settings, log)
    return SharedDiffusersPipeline(
        pipe,
        convert=lambda path: convert_lora(pipe, path, settings.model_type, log),
        device=settings.device,
        host_bytes=settings.lora_cache_host_bytes,
        gpu_bytes=settings.lora_cache_gpu_bytes,
        metrics=metrics,
        **runner_options(settings, log),
    )


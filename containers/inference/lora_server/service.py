"""The model's life cycle and the serialized use of the GPU, independent of HTTP and of diffusers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from PIL.Image import Image

from .budget import finish_seconds
from .logs import JsonLog
from .lora_cache import TooLarge
from .lora_file import LoraFileError
from .registry import LoraRefused, Registry
from .settings import Settings
from .shared_types import LocalLora, LoraRef, LoraVersion
from .validation import GenerationParams

if TYPE_CHECKING:
    from .lora_fetch import DiskTier
    from .metrics import Metrics


class Pipeline(Protocol):
    """What the server needs from a loaded model; production's is `diffusers_pipeline.DiffusersPipeline`."""

    def generate(self, params: GenerationParams, deadline: float) -> list[Image]:
        """Images for `params`, denoised by `deadline` (`time.monotonic()`).

        Raises NotEnoughTime before denoising when its estimate says it cannot end by then, and
        GenerationTimeout once denoising is certain to end past it.
        """
        ...


class SharedPipeline(Protocol):
    """The shared mode's model (`shared_pipeline.SharedDiffusersPipeline`): the request's LoRAs applied per call."""

    def generate(self, params: GenerationParams, deadline: float, loras: list[LocalLora]) -> list[Image]:
        """As Pipeline.generate, with `loras` (verified local files, each with its scale) applied; none: the base model."""
        ...


# Dedicated: loader(settings, log); shared: loader(settings, log, metrics).
Loader = Callable[..., Any]


@dataclass(frozen=True)
class SharedLoras:
    """What a shared server resolves and fetches a request's LoRAs with, outside the GPU lock."""

    registry: Registry
    disk: DiskTier
    metrics: Metrics


class NotReady(Exception):
    """The model is still loading, or failed to load (503)."""


class Busy(Exception):
    """Too many requests are in flight, or this one waited for the GPU too long to finish (503: retry)."""


class GenerationTimeout(Exception):
    """The request cannot finish within its time limit even alone (504: ask for less)."""


class NotEnoughTime(Exception):
    """Raised by a pipeline before denoising: the time left is less than the request needs."""

    def __init__(self, needed_seconds: float, left_seconds: float) -> None:
        super().__init__(f"needs about {needed_seconds:.0f} s of denoising, {max(left_seconds, 0):.0f} s are left")
        self.needed_seconds = needed_seconds
        self.left_seconds = left_seconds


@dataclass(frozen=True)
class Generation:
    images: list[Image]
    wait_ms: int
    generate_ms: int
    loras: list[LocalLora] = field(default_factory=list)


class ModelService:
    """Loads the model in a background thread (so /ping answers at once), then runs one generation at a time.

    At most `settings.max_in_flight` invocations are admitted at once (one generating, the others
    waiting for the GPU); any other is refused with Busy at once rather than queued.
    """

    def __init__(self, settings: Settings, loader: Loader, log: JsonLog, shared: SharedLoras | None = None) -> None:
        if settings.shared and shared is None:
            raise ValueError("a shared server needs its registry and disk cache (SharedLoras)")
        self._settings = settings
        self._loader = loader
        self._log = log
        self._shared = shared if settings.shared else None
        self._pipeline: Pipeline | SharedPipeline | None = None
        self._failure: str | None = None
        self._gpu = threading.Lock()
        self._admission = threading.Lock()
        self._in_flight = 0

    def start(self) -> threading.Thread:
        # A daemon thread: a SIGTERM during a long load must not wait for it.
        thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def _load(self) -> None:
        started = time.monotonic()
        self._log("model_loading", model_type=self._settings.model_type)
        try:
            if self._shared is not None:
                pipeline = self._loader(self._settings, self._log, self._shared.metrics)
            else:
                pipeline = self._loader(self._settings, self._log)
        except Exception as e:  # noqa: BLE001 - any failure must leave /ping unhealthy with its reason logged
            self._failure = f"{type(e).__name__}: {e}"
            self._log("model_load_failed", level="error", reason=self._failure, seconds=round(time.monotonic() - started, 1))
            return
        self._pipeline = pipeline
        self._log("model_loaded", seconds=round(time.monotonic() - started, 1))

    @property
    def status(self) -> tuple[str, str | None]:
        """("ready", None), ("loading", None) or ("failed", reason)."""
        if self._pipeline is not None:
            # A shared pipeline a failed conversion left with PEFT layers cannot serve on: replace the instance.
            unhealthy = getattr(self._pipeline, "unhealthy", None)
            return ("failed", unhealthy) if unhealthy else ("ready", None)
        if self._failure is not None:
            return "failed", self._failure
        return "loading", None

    def generate(
        self, params: GenerationParams, received: float, loras: list[LoraRef] | None = None, lora_field: str = "lora"
    ) -> Generation:
        """Runs one request on the GPU, after any request ahead of it, within its time budget from `received`.

        In shared mode the LoRAs named are resolved and fetched first, outside the GPU lock, within the same budget.
        """
        pipeline = self._pipeline
        state, reason = self.status
        if state == "loading":
            raise NotReady("the model is still loading; retry shortly")
        if state != "ready":
            raise NotReady(f"the model failed to load: {reason}" if pipeline is None else f"the model is unhealthy: {reason}")
        with self._admission:
            if self._in_flight >= self._settings.max_in_flight:
                raise Busy(
                    f"busy: {self._in_flight} requests are running or waiting for the GPU; "
                    "retry shortly, or add endpoint instances"
                )
            self._in_flight += 1
        try:
            return self._generate(pipeline, params, received, loras or [], lora_field)
        finally:
            with self._admission:
                self._in_flight -= 1

    def _generate(self, pipeline: Any, params: GenerationParams, received: float, refs: list[LoraRef], lora_field: str) -> Generation:
        timeout = self._settings.request_timeout_seconds
        # Denoising must end early enough to decode, encode and send the images within the time limit.
        denoise_seconds = timeout - finish_seconds(self._settings.model_type, params)
        if denoise_seconds <= 0:
            raise GenerationTimeout(
                f"its images would take longer to decode and encode than its time limit of {timeout:g} s; "
                "ask for fewer num_images or a smaller width or height"
            )
        deadline = received + denoise_seconds
        if self._shared is None:
            return self._on_gpu(lambda: pipeline.generate(params, deadline), received, deadline, denoise_seconds, [])
        shared = self._shared
        versions = resolve_all(shared.registry, refs, lora_field, deadline)
        with shared.disk.use(versions, [ref.scale for ref in refs], deadline) as local:
            run = partial(_apply_loras, pipeline, params, deadline, local, lora_field)
            generation = self._on_gpu(run, received, deadline, denoise_seconds, local)
        shared.metrics.record("GenerationMs", generation.generate_ms, "Milliseconds")
        return generation

    def _on_gpu(
        self, run: Callable[[], list[Image]], received: float, deadline: float, denoise_seconds: float, loras: list[LocalLora]
    ) -> Generation:
        """Runs `run` holding the GPU, waiting for it no later than `deadline`."""
        timeout = self._settings.request_timeout_seconds
        queued = time.monotonic()  # before this, the time went in fetching the request's LoRAs (shared mode)
        if not self._gpu.acquire(timeout=max(0.0, deadline - queued)):
            raise Busy(
                f"{_time_spent(received, queued, time.monotonic())}, which leaves no time to generate "
                f"within its {timeout:g} s limit; retry, or add endpoint instances"
            )
        try:
            start = time.monotonic()
            try:
                images = run()
            except NotEnoughTime as e:
                if e.needed_seconds <= denoise_seconds:
                    # It would fit alone: the time went in waiting behind other requests or fetching its LoRAs.
                    raise Busy(f"{_time_spent(received, queued, start)} and now {e}; retry") from e
                raise GenerationTimeout(
                    f"{e}, more than its time limit allows; "
                    "ask for fewer num_inference_steps or num_images, or a smaller width or height"
                ) from e
            done = time.monotonic()
        finally:
            self._gpu.release()
        return Generation(
            images=images, wait_ms=round((start - received) * 1000), generate_ms=round((done - start) * 1000), loras=loras
        )


def _time_spent(received: float, queued: float, now: float) -> str:
    """Where a request's time went before it could generate: fetching its LoRAs, waiting for the GPU."""
    waited = f"waited {now - queued:.1f} s for the GPU behind other requests"
    fetching = queued - received
    return f"spent {fetching:.1f} s fetching its LoRAs and {waited}" if fetching >= 0.05 else waited


def _apply_loras(pipeline: SharedPipeline, params: GenerationParams, deadline: float, loras: list[LocalLora], field: str) -> list[Image]:
    """The shared pipeline's images; a LoRA it cannot apply to this base model (weights left unchanged) is a 400 naming it."""
    try:
        return pipeline.generate(params, deadline, loras)
    except TooLarge as e:  # the request's own LoRAs never fit a tier: 400 (retrying cannot help), on its field
        raise LoraRefused(f"this request's LoRAs cannot be served here: {e}", field) from e
    except LoraFileError as e:
        # The pipeline names the LoRA that failed when it knows it (a conversion); else every one of the request.
        names = getattr(e, "lora_key", None) or ", ".join(lora.key for lora in loras)
        raise LoraRefused(f"LoRA {names} cannot be applied to this endpoint's base model: {e}", field) from e


def resolve_all(registry: Registry, refs: list[LoraRef], field: str, deadline: float | None = None) -> list[LoraVersion]:
    """The registry versions of a request's LoRAs; the same version named twice (say as `a` and `a@3`) is refused."""
    versions = [registry.resolve(ref, field, deadline) for ref in refs]
    keys = [(v.name, v.version) for v in versions]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise LoraRefused(f"loras names {key[0]}@{key[1]} twice (once as its current version)", "loras")
    return versions

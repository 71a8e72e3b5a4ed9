"""The model's life cycle and the serialized use of the GPU, independent of HTTP and of diffusers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from PIL.Image import Image

from .budget import finish_seconds
from .logs import JsonLog
from .settings import Settings
from .validation import GenerationParams


class Pipeline(Protocol):
    """What the server needs from a loaded model; production's is `diffusers_pipeline.DiffusersPipeline`."""

    def generate(self, params: GenerationParams, deadline: float) -> list[Image]:
        """Images for `params`, denoised by `deadline` (`time.monotonic()`).

        Raises NotEnoughTime before denoising when its estimate says it cannot end by then, and
        GenerationTimeout once denoising is certain to end past it.
        """
        ...


Loader = Callable[[Settings, JsonLog], Pipeline]


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


class ModelService:
    """Loads the model in a background thread (so /ping answers at once), then runs one generation at a time.

    At most `settings.max_in_flight` invocations are admitted at once (one generating, the others
    waiting for the GPU); any other is refused with Busy at once rather than queued.
    """

    def __init__(self, settings: Settings, loader: Loader, log: JsonLog) -> None:
        self._settings = settings
        self._loader = loader
        self._log = log
        self._pipeline: Pipeline | None = None
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
            return "ready", None
        if self._failure is not None:
            return "failed", self._failure
        return "loading", None

    def generate(self, params: GenerationParams, received: float) -> Generation:
        """Runs one request on the GPU, after any request ahead of it, within its time budget from `received`."""
        pipeline = self._pipeline
        if pipeline is None:
            state, reason = self.status
            raise NotReady("the model is still loading; retry shortly" if state == "loading" else f"the model failed to load: {reason}")
        with self._admission:
            if self._in_flight >= self._settings.max_in_flight:
                raise Busy(
                    f"busy: {self._in_flight} requests are running or waiting for the GPU; "
                    "retry shortly, or add endpoint instances"
                )
            self._in_flight += 1
        try:
            return self._generate(pipeline, params, received)
        finally:
            with self._admission:
                self._in_flight -= 1

    def _generate(self, pipeline: Pipeline, params: GenerationParams, received: float) -> Generation:
        timeout = self._settings.request_timeout_seconds
        # Denoising must end early enough to decode, encode and send the images within the time limit.
        denoise_seconds = timeout - finish_seconds(self._settings.model_type, params)
        if denoise_seconds <= 0:
            raise GenerationTimeout(
                f"its images would take longer to decode and encode than its time limit of {timeout:g} s; "
                "ask for fewer num_images or a smaller width or height"
            )
        deadline = received + denoise_seconds
        if not self._gpu.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Busy(
                f"waited {denoise_seconds:.1f} s for the GPU behind other requests, which leaves no time to generate "
                f"within its {timeout:g} s limit; retry, or add endpoint instances"
            )
        try:
            start = time.monotonic()
            try:
                images = pipeline.generate(params, deadline)
            except NotEnoughTime as e:
                if e.needed_seconds <= denoise_seconds:
                    # It would fit alone: the time went in waiting behind other requests.
                    raise Busy(
                        f"waited {start - received:.0f} s for the GPU behind other requests and now {e}; retry"
                    ) from e
                raise GenerationTimeout(
                    f"{e}, more than its time limit allows; "
                    "ask for fewer num_inference_steps or num_images, or a smaller width or height"
                ) from e
            done = time.monotonic()
        finally:
            self._gpu.release()
        return Generation(images=images, wait_ms=round((start - received) * 1000), generate_ms=round((done - start) * 1000))

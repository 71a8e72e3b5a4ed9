"""The model's life cycle and the serialized use of the GPU, independent of HTTP and of diffusers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from PIL.Image import Image

from .logs import JsonLog
from .settings import Settings
from .validation import GenerationParams


class Pipeline(Protocol):
    """What the server needs from a loaded model; production's is `diffusers_pipeline.DiffusersPipeline`."""

    def generate(self, params: GenerationParams, deadline: float) -> list[Image]:
        """Images for `params`; raises GenerationTimeout once `time.monotonic()` passes `deadline`."""
        ...


Loader = Callable[[Settings, JsonLog], Pipeline]


class NotReady(Exception):
    """The model is still loading, or failed to load (503)."""


class Busy(Exception):
    """The request waited for the GPU until its deadline (503)."""


class GenerationTimeout(Exception):
    """Denoising was stopped at the request's deadline (504)."""


@dataclass(frozen=True)
class Generation:
    images: list[Image]
    wait_ms: int
    generate_ms: int


class ModelService:
    """Loads the model in a background thread (so /ping answers at once), then runs one generation at a time."""

    def __init__(self, settings: Settings, loader: Loader, log: JsonLog) -> None:
        self._settings = settings
        self._loader = loader
        self._log = log
        self._pipeline: Pipeline | None = None
        self._failure: str | None = None
        self._gpu = threading.Lock()

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
        deadline = received + self._settings.request_timeout_seconds
        if not self._gpu.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Busy(
                f"waited {self._settings.request_timeout_seconds:g} s for the GPU behind other requests; "
                "retry, or add endpoint instances"
            )
        try:
            start = time.monotonic()
            images = pipeline.generate(params, deadline)
            done = time.monotonic()
        finally:
            self._gpu.release()
        return Generation(images=images, wait_ms=round((start - received) * 1000), generate_ms=round((done - start) * 1000))

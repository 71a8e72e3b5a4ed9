"""The server's configuration: environment variables, read and checked once at start."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .lora_file import ModelType

# SageMaker's contract: the model artifact (model.tar.gz, extracted) and each additional model data
# source, mounted at /opt/ml/additional-model-data-sources/<ChannelName>/.
MODEL_DIR = "/opt/ml/model"
BASE_MODEL_CHANNEL = "base_model"
BASE_MODEL_PATH = f"/opt/ml/additional-model-data-sources/{BASE_MODEL_CHANNEL}"
# Where the Dockerfile bakes the component configs and tokenizers, one folder per model type.
CONFIGS_DIR = "/opt/lora-server/configs"

# SageMaker gives an invocation 60 s. Decoding, encoding and sending the images after the last
# denoising step take a few seconds, so the denoising deadline must stay well below that.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 50.0
MAX_REQUEST_TIMEOUT_SECONDS = 55.0
# Invocations admitted at once: one on the GPU, the others waiting for it. One more is answered 503
# at once, so that the gunicorn threads (gunicorn_config.py) never all wait and /ping always has one.
MAX_INVOCATIONS_IN_FLIGHT = 3


# Where the model runs, and the dtype of its weights. CUDA in fp16 is production's; the CPU (tests,
# local use) runs float32 or bfloat16: fp16 there saves nothing and runs slower than float32.
DEVICES = ("cuda", "cpu")
DTYPES = ("float16", "bfloat16", "float32")
DEFAULT_DTYPES = {"cuda": "float16", "cpu": "float32"}


@dataclass(frozen=True)
class Problem:
    """One bad variable: its name, the value found (None: unset) and what is allowed."""

    variable: str
    value: str | None
    allowed: str

    def __str__(self) -> str:
        found = "it is not set" if self.value is None else f"got {self.value!r}"
        return f"{self.variable} must be {self.allowed}, {found}"


class SettingsError(Exception):
    """A setting is missing or invalid; the message names every bad variable, `problems` lists them."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("invalid configuration: " + "; ".join(map(str, problems)))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    model_type: ModelType
    model_dir: Path
    base_model_path: Path
    base_model_id: str | None
    lora_scale: float
    request_timeout_seconds: float
    log_prompts: bool
    configs_dir: Path
    device: str = "cuda"
    dtype: str = "float16"
    max_in_flight: int = MAX_INVOCATIONS_IN_FLIGHT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        problems: list[Problem] = []

        model_type = env.get("MODEL_TYPE", "")
        if model_type not in ("sd15", "sdxl"):
            problems.append(Problem("MODEL_TYPE", env.get("MODEL_TYPE"), "'sd15' or 'sdxl'"))

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not low <= value <= high:
                problems.append(Problem(name, raw, f"a number from {low:g} to {high:g}"))
                return default
            return value

        lora_scale = number("LORA_SCALE", 1.0, 0.0, 2.0)
        timeout = number("REQUEST_TIMEOUT_SECONDS", DEFAULT_REQUEST_TIMEOUT_SECONDS, 1.0, MAX_REQUEST_TIMEOUT_SECONDS)

        log_prompts = env.get("LOG_PROMPTS", "false").lower()
        if log_prompts not in ("true", "false"):
            problems.append(Problem("LOG_PROMPTS", env["LOG_PROMPTS"], "'true' or 'false'"))

        device, dtype = _device_and_dtype(env, problems)
        if problems:
            raise SettingsError(problems)
        return cls(
            model_type=model_type,  # type: ignore[arg-type]  # checked above
            model_dir=Path(env.get("MODEL_DIR") or MODEL_DIR),
            base_model_path=Path(env.get("BASE_MODEL_PATH") or BASE_MODEL_PATH),
            base_model_id=env.get("BASE_MODEL_ID") or None,
            lora_scale=lora_scale,
            request_timeout_seconds=timeout,
            log_prompts=log_prompts == "true",
            configs_dir=Path(env.get("CONFIGS_DIR") or CONFIGS_DIR),
            device=device,
            dtype=dtype,
        )


def _device_and_dtype(env: Mapping[str, str], problems: list[Problem]) -> tuple[str, str]:
    """DEVICE (default cuda) and DTYPE (default float16 on CUDA, float32 on CPU); fp16 on CPU is refused."""
    device = env.get("DEVICE") or "cuda"
    if device not in DEVICES:
        problems.append(Problem("DEVICE", device, "'cuda' or 'cpu'"))
        device = "cuda"
    dtype = env.get("DTYPE") or DEFAULT_DTYPES[device]
    if dtype not in DTYPES:
        problems.append(Problem("DTYPE", dtype, "'float16', 'bfloat16' or 'float32'"))
    elif device == "cpu" and dtype == "float16":
        # Most CPUs have no fp16 arithmetic: torch 2.13 emulates it, twice as slow as float32 on the tests' models.
        problems.append(Problem("DTYPE", dtype, "'float32' or 'bfloat16' with DEVICE=cpu (float16 is for CUDA)"))
    return device, dtype

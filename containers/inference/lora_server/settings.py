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


class SettingsError(Exception):
    """A setting is missing or invalid; the message names every bad variable."""


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
    max_in_flight: int = MAX_INVOCATIONS_IN_FLIGHT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        problems: list[str] = []

        model_type = env.get("MODEL_TYPE", "")
        if model_type not in ("sd15", "sdxl"):
            problems.append(f"MODEL_TYPE must be 'sd15' or 'sdxl', got {model_type!r}")

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not low <= value <= high:
                problems.append(f"{name} must be a number from {low:g} to {high:g}, got {raw!r}")
                return default
            return value

        lora_scale = number("LORA_SCALE", 1.0, 0.0, 2.0)
        timeout = number("REQUEST_TIMEOUT_SECONDS", DEFAULT_REQUEST_TIMEOUT_SECONDS, 1.0, MAX_REQUEST_TIMEOUT_SECONDS)

        log_prompts = env.get("LOG_PROMPTS", "false").lower()
        if log_prompts not in ("true", "false"):
            problems.append(f"LOG_PROMPTS must be 'true' or 'false', got {env['LOG_PROMPTS']!r}")

        if problems:
            raise SettingsError("invalid configuration: " + "; ".join(problems))
        return cls(
            model_type=model_type,  # type: ignore[arg-type]  # checked above
            model_dir=Path(env.get("MODEL_DIR") or MODEL_DIR),
            base_model_path=Path(env.get("BASE_MODEL_PATH") or BASE_MODEL_PATH),
            base_model_id=env.get("BASE_MODEL_ID") or None,
            lora_scale=lora_scale,
            request_timeout_seconds=timeout,
            log_prompts=log_prompts == "true",
            configs_dir=Path(env.get("CONFIGS_DIR") or CONFIGS_DIR),
        )

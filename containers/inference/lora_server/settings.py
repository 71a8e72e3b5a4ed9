"""The server's configuration: environment variables, read and checked once at start."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .flux_files import HUB_REPOS, FluxFilesError, FluxVariant, has_flux_files, variant_of_folder, variant_of_hub_id
from .lora_file import MODEL_TYPES, ModelType

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


# Shared mode: one base model, the LoRA a request names fetched from the registry (SERVING_MODE=shared).
SERVING_MODES = ("dedicated", "shared")
MIB = 1024 * 1024
# Cache sizes of the LoRA tiers, sized for ml.g4dn.xlarge (T4 16 GB, 16 GiB RAM, 125 GB NVMe); the
# deployment's endpoint.loraCache*Mb settings replace them (in MiB, times 1048576).
DEFAULT_LORA_CACHE_GPU_BYTES = 2048 * MIB
DEFAULT_LORA_CACHE_HOST_BYTES = 4096 * MIB
DEFAULT_LORA_CACHE_DISK_BYTES = 20480 * MIB
MAX_LORA_CACHE_BYTES = 2**50
DEFAULT_LORA_CACHE_DIR = "/tmp/lora-cache"
# How long a registry read is trusted: a retirement takes effect on every instance within it.
DEFAULT_LORA_REGISTRY_TTL_SECONDS = 10.0
MAX_LORA_REGISTRY_TTL_SECONDS = 300.0
DEFAULT_METRICS_NAMESPACE = "SageMakerLoraPipeline/Serving"
# S3's bucket naming rules; DynamoDB's table names (or a table ARN); CloudWatch's namespace characters.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_TABLE = re.compile(r"^([A-Za-z0-9_.-]{3,255}|arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:\d{12}:table/[A-Za-z0-9_.-]{3,255})\Z")
_PREFIX = re.compile(r"^([A-Za-z0-9!_.*'()-]+/)+\Z")
_NAMESPACE = re.compile(r"^[A-Za-z0-9.\-_/#: ]{1,255}\Z")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+\Z")
# A Secrets Manager secret's name or ARN (SecretId): the secret's value, a Hugging Face token, is read at load.
_SECRET_ID = re.compile(r"^[A-Za-z0-9/_+=.@:-]{1,2048}\Z")

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
    # Shared mode only (None or defaults in dedicated mode); see _shared_settings.
    serving_mode: str = "dedicated"
    served_base_model: str | None = None
    lora_registry_table: str | None = None
    lora_bucket: str | None = None
    lora_prefix: str | None = None
    aws_region: str | None = None
    lora_cache_gpu_bytes: int = DEFAULT_LORA_CACHE_GPU_BYTES
    lora_cache_host_bytes: int = DEFAULT_LORA_CACHE_HOST_BYTES
    lora_cache_disk_bytes: int = DEFAULT_LORA_CACHE_DISK_BYTES
    lora_cache_dir: Path = Path(DEFAULT_LORA_CACHE_DIR)
    lora_registry_ttl_seconds: float = DEFAULT_LORA_REGISTRY_TTL_SECONDS
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    # FLUX.1 only: which variant the base model is (its request defaults differ), and the token's secret.
    flux_variant: FluxVariant | None = None
    hf_token_secret_id: str | None = None

    @property
    def shared(self) -> bool:
        return self.serving_mode == "shared"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        problems: list[Problem] = []

        model_type = env.get("MODEL_TYPE", "")
        if model_type not in MODEL_TYPES:
            problems.append(Problem("MODEL_TYPE", env.get("MODEL_TYPE"), "'sd15', 'sdxl' or 'flux1'"))

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

        device, dtype = _device_and_dtype(env, problems, model_type)
        serving_mode = env.get("SERVING_MODE") or "dedicated"
        if serving_mode not in SERVING_MODES:
            problems.append(Problem("SERVING_MODE", serving_mode, "'dedicated' or 'shared' (unset: dedicated)"))
        # A dedicated server ignores the shared variables, exactly as before they existed.
        shared = _shared_settings(env, problems, number) if serving_mode == "shared" else {}
        base_model_path = Path(env.get("BASE_MODEL_PATH") or BASE_MODEL_PATH)
        flux_variant = _flux_variant(env, base_model_path, problems) if model_type == "flux1" else None
        secret_id = _hub_token_secret_id(env, model_type, base_model_path, problems)
        if problems:
            raise SettingsError(problems)
        return cls(
            model_type=model_type,  # type: ignore[arg-type]  # checked above
            model_dir=Path(env.get("MODEL_DIR") or MODEL_DIR),
            base_model_path=base_model_path,
            base_model_id=env.get("BASE_MODEL_ID") or None,
            lora_scale=lora_scale,
            request_timeout_seconds=timeout,
            log_prompts=log_prompts == "true",
            configs_dir=Path(env.get("CONFIGS_DIR") or CONFIGS_DIR),
            device=device,
            dtype=dtype,
            serving_mode=serving_mode,
            flux_variant=flux_variant,
            hf_token_secret_id=secret_id,
            **shared,
        )


def _hub_token_secret_id(env: Mapping[str, str], model_type: str, base_model_path: Path, problems: list[Problem]) -> str | None:
    """HF_TOKEN_SECRET_ID: a secret's name or ARN (never the token), required for FLUX.1-dev from the Hub."""
    secret_id = env.get("HF_TOKEN_SECRET_ID") or None
    if secret_id is not None and not _SECRET_ID.match(secret_id):
        problems.append(Problem("HF_TOKEN_SECRET_ID", secret_id, "a Secrets Manager secret name or ARN"))
    elif secret_id is None and model_type == "flux1" and env.get("BASE_MODEL_ID") == HUB_REPOS["dev"] and not has_flux_files(base_model_path):
        # FLUX.1-dev is gated: without a token the download fails after the endpoint has started.
        problems.append(Problem("HF_TOKEN_SECRET_ID", None, "the secret of a Hugging Face token to load the gated FLUX.1-dev from the Hub"))
    return secret_id


def _flux_variant(env: Mapping[str, str], base_model_path: Path, problems: list[Problem]) -> FluxVariant | None:
    """FLUX.1-dev or -schnell: named by the mounted transformer file, a mounted diffusers folder's transformer config, or BASE_MODEL_ID."""
    if has_flux_files(base_model_path):
        try:
            return variant_of_folder(base_model_path)
        except FluxFilesError as e:
            problems.append(Problem("BASE_MODEL_PATH", str(base_model_path), f"the four FLUX.1 files ({e})"))
            return None
    config = base_model_path / "transformer" / "config.json"
    if (base_model_path / "model_index.json").is_file() and config.is_file():
        # A diffusers-layout FLUX.1 folder: only dev has the guidance embedder.
        return "dev" if json.loads(config.read_text()).get("guidance_embeds") else "schnell"
    model_id = env.get("BASE_MODEL_ID") or None
    variant = variant_of_hub_id(model_id or "")
    if variant is None:
        problems.append(
            Problem(
                "BASE_MODEL_ID", model_id,
                "black-forest-labs/FLUX.1-dev or black-forest-labs/FLUX.1-schnell when MODEL_TYPE is flux1 and "
                "BASE_MODEL_PATH holds no FLUX.1 files (their pinned revisions are the only ones known)",
            )
        )
    return variant


def _shared_settings(env: Mapping[str, str], problems: list[Problem], number: Callable[[str, float, float, float], float]) -> dict[str, Any]:
    """The shared mode's variables: where the registry and the LoRA files are, and the cache sizes."""

    def required(name: str, pattern: re.Pattern[str] | None, allowed: str) -> str | None:
        value = env.get(name) or None
        if value is None or (pattern is not None and not pattern.match(value)):
            problems.append(Problem(name, value, allowed))
            return None
        return value

    def size(name: str, default: int) -> int:
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LORA_CACHE_BYTES:
            problems.append(Problem(name, raw, f"a whole number of bytes from 1 to {MAX_LORA_CACHE_BYTES}"))
            return default
        return int(raw)

    prefix = required("LORA_PREFIX", _PREFIX, "an S3 key prefix ending in '/' such as 'loras/', with no empty, '.' or '..' segment")
    if prefix is not None and any(part in (".", "..") for part in prefix.split("/")):
        problems.append(Problem("LORA_PREFIX", prefix, "a prefix with no '.' or '..' segment"))
    namespace = env.get("METRICS_NAMESPACE") or DEFAULT_METRICS_NAMESPACE
    if not _NAMESPACE.match(namespace) or namespace.startswith("AWS/"):
        problems.append(Problem("METRICS_NAMESPACE", namespace, "a CloudWatch namespace (letters, digits, . - _ / # : space; not AWS/...)"))
    return {
        "served_base_model": required("SERVED_BASE_MODEL", None, "the deployment's baseModel (compared with each registry item's)"),
        "lora_registry_table": required("LORA_REGISTRY_TABLE", _TABLE, "the registry's DynamoDB table name or ARN"),
        "lora_bucket": required("LORA_BUCKET", _BUCKET, "the S3 bucket of the LoRA files"),
        "lora_prefix": prefix,
        "aws_region": required("AWS_DEFAULT_REGION", _REGION, "the AWS region of the registry and the bucket, such as 'us-east-1'"),
        "lora_cache_gpu_bytes": size("LORA_CACHE_GPU_BYTES", DEFAULT_LORA_CACHE_GPU_BYTES),
        "lora_cache_host_bytes": size("LORA_CACHE_HOST_BYTES", DEFAULT_LORA_CACHE_HOST_BYTES),
        "lora_cache_disk_bytes": size("LORA_CACHE_DISK_BYTES", DEFAULT_LORA_CACHE_DISK_BYTES),
        "lora_cache_dir": Path(env.get("LORA_CACHE_DIR") or DEFAULT_LORA_CACHE_DIR),
        "lora_registry_ttl_seconds": number("LORA_REGISTRY_TTL_SECONDS", DEFAULT_LORA_REGISTRY_TTL_SECONDS, 0.0, MAX_LORA_REGISTRY_TTL_SECONDS),
        "metrics_namespace": namespace,
    }


def _device_and_dtype(env: Mapping[str, str], problems: list[Problem], model_type: str = "sd15") -> tuple[str, str]:
    """DEVICE (default cuda) and DTYPE (default float16 on CUDA, bfloat16 for FLUX.1; float32 on CPU); fp16 on CPU is refused."""
    device = env.get("DEVICE") or "cuda"
    if device not in DEVICES:
        problems.append(Problem("DEVICE", device, "'cuda' or 'cpu'"))
        device = "cuda"
    flux = model_type == "flux1"
    dtype = env.get("DTYPE") or ("bfloat16" if flux and device == "cuda" else DEFAULT_DTYPES[device])
    if dtype not in DTYPES:
        problems.append(Problem("DTYPE", dtype, "'float16', 'bfloat16' or 'float32'"))
    elif flux and dtype == "float16":
        # FLUX.1 was trained in bf16; its T5 and transformer activations overflow fp16 (black or NaN images).
        problems.append(Problem("DTYPE", dtype, "'bfloat16' (or 'float32') for FLUX.1, which overflows in float16"))
    elif device == "cpu" and dtype == "float16":
        # Most CPUs have no fp16 arithmetic: torch 2.13 emulates it, twice as slow as float32 on the tests' models.
        problems.append(Problem("DTYPE", dtype, "'float32' or 'bfloat16' with DEVICE=cpu (float16 is for CUDA)"))
    return device, dtype

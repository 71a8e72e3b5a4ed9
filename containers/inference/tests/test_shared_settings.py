"""Shared mode's settings: SERVING_MODE and the registry, bucket and cache variables, checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_server.settings import MIB, Settings, SettingsError

INFERENCE_DIR = Path(__file__).resolve().parents[1]
SHARED = {
    "MODEL_TYPE": "sd15",
    "SERVING_MODE": "shared",
    "SERVED_BASE_MODEL": "runwayml/stable-diffusion-v1-5",
    "LORA_REGISTRY_TABLE": "lora-registry",
    "LORA_BUCKET": "lora-artifacts-123456789012",
    "LORA_PREFIX": "loras/",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


def test_without_serving_mode_the_server_is_dedicated_and_ignores_the_shared_variables() -> None:
    for env in ({"MODEL_TYPE": "sd15"}, {"MODEL_TYPE": "sd15", "SERVING_MODE": "dedicated", "LORA_BUCKET": "Not A Bucket"}):
        settings = Settings.from_env(env)
        assert settings.serving_mode == "dedicated" and not settings.shared
        assert settings.lora_registry_table is None and settings.lora_bucket is None


def test_shared_mode_reads_its_variables_with_the_cache_defaults() -> None:
    settings = Settings.from_env(SHARED)
    assert settings.shared
    assert (settings.served_base_model, settings.lora_registry_table, settings.lora_bucket, settings.lora_prefix, settings.aws_region) == (
        "runwayml/stable-diffusion-v1-5", "lora-registry", "lora-artifacts-123456789012", "loras/", "eu-west-1"
    )
    assert (settings.lora_cache_gpu_bytes, settings.lora_cache_host_bytes, settings.lora_cache_disk_bytes) == (2048 * MIB, 4096 * MIB, 20480 * MIB)
    assert settings.lora_cache_dir == Path("/tmp/lora-cache") and settings.lora_registry_ttl_seconds == 10.0
    assert settings.metrics_namespace == "SageMakerLoraPipeline/Serving"


def test_shared_mode_takes_every_variable_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            **SHARED,
            "LORA_REGISTRY_TABLE": "arn:aws:dynamodb:eu-west-1:123456789012:table/lora-registry",
            "LORA_CACHE_GPU_BYTES": "1000",
            "LORA_CACHE_HOST_BYTES": "2000",
            "LORA_CACHE_DISK_BYTES": "3000",
            "LORA_CACHE_DIR": "/scratch/loras",
            "LORA_REGISTRY_TTL_SECONDS": "0",
            "METRICS_NAMESPACE": "Team/Serving",
        }
    )
    assert (settings.lora_cache_gpu_bytes, settings.lora_cache_host_bytes, settings.lora_cache_disk_bytes) == (1000, 2000, 3000)
    assert settings.lora_registry_table.startswith("arn:aws:dynamodb:")  # type: ignore[union-attr]
    assert (settings.lora_cache_dir, settings.lora_registry_ttl_seconds, settings.metrics_namespace) == (Path("/scratch/loras"), 0.0, "Team/Serving")


def test_every_missing_shared_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"MODEL_TYPE": "sd15", "SERVING_MODE": "shared"})
    assert [p.variable for p in error.value.problems] == [
        "LORA_PREFIX", "SERVED_BASE_MODEL", "LORA_REGISTRY_TABLE", "LORA_BUCKET", "AWS_DEFAULT_REGION"
    ]
    assert "LORA_BUCKET must be the S3 bucket of the LoRA files, it is not set" in str(error.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SERVING_MODE", "multi", "SERVING_MODE must be 'dedicated' or 'shared' (unset: dedicated), got 'multi'"),
        ("LORA_BUCKET", "Bad_Bucket", "LORA_BUCKET must be the S3 bucket"),
        ("LORA_BUCKET", "lora-artifacts\n", "LORA_BUCKET must be the S3 bucket"),
        ("LORA_PREFIX", "models", "LORA_PREFIX must be an S3 key prefix ending in '/'"),
        ("LORA_PREFIX", "/loras/", "LORA_PREFIX must be an S3 key prefix"),
        ("LORA_PREFIX", "loras/../", "LORA_PREFIX must be a prefix with no '.' or '..' segment"),
        ("LORA_REGISTRY_TABLE", "a/b", "LORA_REGISTRY_TABLE must be the registry's DynamoDB table name or ARN"),
        ("AWS_DEFAULT_REGION", "Europe", "AWS_DEFAULT_REGION must be the AWS region"),
        ("LORA_CACHE_DISK_BYTES", "20GB", "LORA_CACHE_DISK_BYTES must be a whole number of bytes from 1"),
        ("LORA_CACHE_GPU_BYTES", "0", "LORA_CACHE_GPU_BYTES must be a whole number of bytes from 1"),
        ("LORA_CACHE_HOST_BYTES", "-5", "LORA_CACHE_HOST_BYTES must be a whole number"),
        ("LORA_REGISTRY_TTL_SECONDS", "301", "LORA_REGISTRY_TTL_SECONDS must be a number from 0 to 300"),
        ("METRICS_NAMESPACE", "AWS/SageMaker", "METRICS_NAMESPACE must be a CloudWatch namespace"),
    ],
)
def test_a_bad_shared_variable_is_refused_naming_it(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({**SHARED, variable: value})
    Settings.from_env(SHARED)  # the control: the same settings without it are accepted

"""Registry items and LoRA files as the workflow writes them, for the shared-mode tests (through boto3 against moto)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lora_server.settings import Settings

from .conftest import SD15_MODULES, SDXL_MODULES, lora_shapes, settings_for, write_safetensors
from .moto_server import BUCKET, REGION, TABLE

BASE_MODEL = "runwayml/stable-diffusion-v1-5"


def shared_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "serving_mode": "shared",
        "served_base_model": BASE_MODEL,
        "lora_registry_table": TABLE,
        "lora_bucket": BUCKET,
        "lora_prefix": "loras/",
        "aws_region": REGION,
        "lora_cache_dir": tmp_path / "lora-cache",
        "lora_registry_ttl_seconds": 0.0,
        **overrides,
    }
    return settings_for(tmp_path, **values)


def lora_bytes(tmp_path: Path, model_type: str = "sd15", rank: int = 4, tag: str = "") -> bytes:
    """A valid kohya-ss LoRA file's bytes; `tag` (metadata) makes files of the same shape differ."""
    modules = SD15_MODULES if model_type == "sd15" else SDXL_MODULES
    path = write_safetensors(tmp_path / f"lora-{model_type}-{rank}-{tag}.safetensors", lora_shapes(modules, rank=rank), {"tag": tag})
    return path.read_bytes()


def put_lora(
    dynamodb: Any,
    s3: Any,
    name: str,
    version: int,
    data: bytes,
    current: bool = True,
    upload: bool = True,
    **attributes: Any,
) -> dict[str, Any]:
    """Writes the version item (and its file to S3), and the head with `latest` (and `current` if asked).

    `attributes` override the item's attributes (plain values; None removes one).
    """
    key = f"loras/{name}/{version}.safetensors"  # where the registry function copies each LoRA
    values: dict[str, Any] = {
        "status": "ready",
        "modelType": "sd15",
        "baseModel": BASE_MODEL,
        "s3Uri": f"s3://{BUCKET}/{key}",
        "sha256": hashlib.sha256(data).hexdigest(),
        "sizeBytes": len(data),
        "rank": 4,
        "createdAt": "2026-12-06T00:00:00Z",
        **attributes,
    }
    item = {"name": {"S": name}, "version": {"N": str(version)}}
    for attribute, value in values.items():
        if value is not None:
            item[attribute] = {"N": str(value)} if isinstance(value, int) else {"S": str(value)}
    dynamodb.put_item(TableName=TABLE, Item=item)
    head = dynamodb.get_item(TableName=TABLE, Key={"name": {"S": name}, "version": {"N": "0"}}, ConsistentRead=True).get("Item")
    latest = max(version, int(head["latest"]["N"]) if head else 0)
    new_head = {"name": {"S": name}, "version": {"N": "0"}, "latest": {"N": str(latest)}, "updatedAt": {"S": "2026-12-06T00:00:00Z"}}
    if current:
        new_head["current"] = {"N": str(version)}
    elif head and "current" in head:
        new_head["current"] = head["current"]
    dynamodb.put_item(TableName=TABLE, Item=new_head)
    if upload and values["s3Uri"].startswith(f"s3://{BUCKET}/"):
        s3.put_object(Bucket=BUCKET, Key=values["s3Uri"].removeprefix(f"s3://{BUCKET}/"), Body=data)
    return values

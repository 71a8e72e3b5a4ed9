"""Registry resolution through the real boto3 against moto's DynamoDB: every rule, each with its control."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lora_server.registry import LoraGone, LoraNotFound, LoraRefused, LoraTimeout, LoraUnavailable, Registry, check_name, check_s3_uri
from lora_server.shared_types import LoraRef

from .moto_server import BUCKET, Moto, moto, moto_server  # noqa: F401 - pytest fixtures
from .registry_items import BASE_MODEL, lora_bytes, put_lora, shared_settings


@pytest.fixture
def aws(moto: Moto) -> tuple[Any, Any]:  # noqa: F811 - the fixture
    return moto.create_registry(), moto.client("s3")


def registry(tmp_path: Path, dynamodb: Any, **settings: Any) -> Registry:
    return Registry(shared_settings(tmp_path, **settings), dynamodb)


def test_a_name_resolves_to_its_current_version(tmp_path: Path, aws: tuple[Any, Any]) -> None:
    dynamodb, s3 = aws
    data = lora_bytes(tmp_path)
    put_lora(dynamodb, s3, "style", 1, data)
    item = put_lora(dynamodb, s3, "style", 2, data, current=False)  # newer, not made current
    found = registry(tmp_path, dynamodb).resolve(LoraRef("style", None, 1.0))
    assert (found.name, found.version, found.status) == ("style", 1, "ready")
    assert found.sha256 == item["sha256"] and found.size_bytes == len(data) and found.base_model == BASE_MODEL
    # An explicit version gets that version, current or not.
    assert registry(tmp_path, dynamodb).resolve(LoraRef("style", 2, 1.0)).version == 2


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (LoraRef("nobody", None, 1.0), "no LoRA is named 'nobody'"),
        (LoraRef("nobody", 1, 1.0), r"LoRA nobody@1 does not exist"),
        (LoraRef("style", 9, 1.0), r"LoRA style@9 does not exist"),
        (LoraRef("orphan", None, 1.0), "LoRA orphan has no current version"),
    ],
)
def test_unknown_names_and_versions_are_404_naming_them(tmp_path: Path, aws: tuple[Any, Any], ref: LoraRef, message: str) -> None:
    dynamodb, s3 = aws
    put_lora(dynamodb, s3, "style", 1, lora_bytes(tmp_path))
    put_lora(dynamodb, s3, "orphan", 1, lora_bytes(tmp_path), current=False, status="pending")
    with pytest.raises(LoraNotFound, match=message) as raised:
        registry(tmp_path, dynamodb).resolve(ref)
    assert raised.value.status == 404 and raised.value.field == "lora"


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"status": "retired", "retiredAt": "2026-12-01T00:00:00Z"}, "style@1 was retired at 2026-12-01T00:00:00Z"),
        ({"status": "failed", "failure": "endpoint answered 500"}, r"style@1 failed its check after training \(endpoint answered 500\)"),
    ],
)
def test_retired_and_failed_versions_are_410(tmp_path: Path, aws: tuple[Any, Any], attributes: dict[str, str], message: str) -> None:
    dynamodb, s3 = aws
    put_lora(dynamodb, s3, "style", 1, lora_bytes(tmp_path), **attributes)
    for ref in (LoraRef("style", 1, 1.0), LoraRef("style", None, 1.0)):
        with pytest.raises(LoraGone, match=message) as raised:
            registry(tmp_path, dynamodb).resolve(ref)
        assert raised.value.status == 410


def test_a_pending_version_is_served_only_when_named_with_its_version(tmp_path: Path, aws: tuple[Any, Any]) -> None:
    dynamodb, s3 = aws
    put_lora(dynamodb, s3, "style", 1, lora_bytes(tmp_path), status="pending")  # head.current -> a pending one
    assert registry(tmp_path, dynamodb).resolve(LoraRef("style", 1, 1.0)).status == "pending"
    with pytest.raises(LoraNotFound, match="style@1 has not passed its check yet; name it as style@1"):
        registry(tmp_path, dynamodb).resolve(LoraRef("style", None, 1.0))


@pytest.mark.parametrize(
    ("attributes", "settings", "message"),
    [
        ({"modelType": "sdxl"}, {}, "style@1 is an sdxl LoRA; this endpoint serves sd15"),
        ({"baseModel": "other/model"}, {}, "trained on base model 'other/model'; this endpoint serves 'runwayml/stable-diffusion-v1-5'"),
        ({}, {"model_type": "sdxl"}, "style@1 is an sd15 LoRA; this endpoint serves sdxl"),
        ({"s3Uri": f"s3://{BUCKET}/other/x.safetensors"}, {}, "is not a .safetensors under s3://lora-artifacts/loras/"),
        ({"s3Uri": f"s3://{BUCKET}/loras/../secrets/x.safetensors"}, {}, "never fetched"),
        ({"s3Uri": f"s3://{BUCKET}/loras/a/model.tar.gz"}, {}, "never fetched"),
        ({"s3Uri": "s3://another-bucket/loras/a.safetensors"}, {}, "never fetched"),
        ({"sha256": "ABC"}, {}, "sha256 is not 64 lowercase hex digits"),
        ({"sizeBytes": None}, {}, "has no whole sizeBytes"),
        ({"status": "archived"}, {}, "its registry status is 'archived'"),
    ],
)
def test_items_this_endpoint_cannot_serve_are_400(
    tmp_path: Path, aws: tuple[Any, Any], attributes: dict[str, Any], settings: dict[str, Any], message: str
) -> None:
    dynamodb, s3 = aws
    put_lora(dynamodb, s3, "style", 1, lora_bytes(tmp_path), **attributes)
    with pytest.raises(LoraRefused, match=message) as raised:
        registry(tmp_path, dynamodb, **settings).resolve(LoraRef("style", 1, 1.0))
    assert raised.value.status == 400


def test_malformed_names_are_400_and_never_read(tmp_path: Path, aws: tuple[Any, Any]) -> None:
    dynamodb, _ = aws
    reg = registry(tmp_path, dynamodb)
    for name in ("../etc", "a/b", "", "-lead", "x" * 64, "name@1", "a b", "style\n"):
        with pytest.raises(LoraRefused, match="a LoRA name must be 1 to 63 letters"):
            reg.resolve(LoraRef(name, None, 1.0))
    assert reg.reads == 0
    assert check_name("A" + "b" * 62) == "A" + "b" * 62  # the longest name passes


def test_reads_are_cached_for_the_ttl_so_a_retirement_takes_effect_within_it(tmp_path: Path, aws: tuple[Any, Any]) -> None:
    dynamodb, s3 = aws
    data = lora_bytes(tmp_path)
    put_lora(dynamodb, s3, "style", 1, data)
    now = [100.0]
    reg = Registry(shared_settings(tmp_path, lora_registry_ttl_seconds=10.0), dynamodb, clock=lambda: now[0])
    assert reg.resolve(LoraRef("style", None, 1.0)).version == 1
    reads = reg.reads
    put_lora(dynamodb, s3, "style", 1, data, status="retired")
    now[0] += 9.9
    assert reg.resolve(LoraRef("style", None, 1.0)).version == 1 and reg.reads == reads  # cached
    now[0] += 0.2
    with pytest.raises(LoraGone):
        reg.resolve(LoraRef("style", None, 1.0))  # past the TTL: read again


def test_s3_uri_check_accepts_the_workflows_own_layout() -> None:
    key = check_s3_uri(f"s3://{BUCKET}/loras/style/1.safetensors", BUCKET, "loras/", "x")
    assert key == "loras/style/1.safetensors"
    with pytest.raises(LoraRefused):
        check_s3_uri(f"s3://{BUCKET}/loras-other/style.safetensors", BUCKET, "loras/", "x")
    with pytest.raises(LoraRefused):
        check_s3_uri(f"s3://{BUCKET}/loras//style.safetensors", BUCKET, "loras/", "x")


class StubDynamoDb:
    """A client whose get_item raises `error` (moto cannot throttle) or answers `item`; counts its calls."""

    def __init__(self, error: Exception | None = None, item: dict[str, Any] | None = None) -> None:
        self.error = error
        self.item = item
        self.calls = 0

    def get_item(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return {"Item": self.item} if self.item else {}


def client_error(code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}}, "GetItem")


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "InternalServerError"])
def test_a_throttled_registry_is_503(tmp_path: Path, code: str) -> None:
    reg = Registry(shared_settings(tmp_path), StubDynamoDb(client_error(code)))
    with pytest.raises(LoraUnavailable, match=f"the LoRA registry is busy \\({code}\\); retry shortly") as raised:
        reg.resolve(LoraRef("style", 1, 1.0))
    assert raised.value.status == 503


def test_an_unreachable_registry_is_503_and_a_deployment_fault_is_raised_as_is(tmp_path: Path) -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    for error in (EndpointConnectionError(endpoint_url="https://dynamodb"), ReadTimeoutError(endpoint_url="https://dynamodb")):
        with pytest.raises(LoraUnavailable, match=f"could not be reached \\({type(error).__name__}\\)"):
            Registry(shared_settings(tmp_path), StubDynamoDb(error)).resolve(LoraRef("style", 1, 1.0))
    # The control: a missing table or permission is not "retry": the ClientError reaches the app (500).
    for code in ("ResourceNotFoundException", "AccessDeniedException"):
        with pytest.raises(ClientError, match=code):
            Registry(shared_settings(tmp_path), StubDynamoDb(client_error(code))).resolve(LoraRef("style", 1, 1.0))


def test_no_registry_read_starts_after_the_requests_deadline(tmp_path: Path, aws: tuple[Any, Any]) -> None:
    dynamodb, s3 = aws
    put_lora(dynamodb, s3, "style", 1, lora_bytes(tmp_path))
    now = [100.0]
    reg = Registry(shared_settings(tmp_path, lora_registry_ttl_seconds=10.0), dynamodb, clock=lambda: now[0])
    with pytest.raises(LoraTimeout, match="time limit passed while resolving LoRA style; retry") as raised:
        reg.resolve(LoraRef("style", None, 1.0), deadline=99.0)
    assert raised.value.status == 504 and reg.reads == 0
    assert reg.resolve(LoraRef("style", None, 1.0), deadline=101.0).version == 1  # the control: in time, read
    reads = reg.reads
    # Cached answers need no read: a request past its deadline still gets them (the fetch then decides).
    assert reg.resolve(LoraRef("style", None, 1.0), deadline=99.0).version == 1 and reg.reads == reads


def test_the_read_cache_is_a_capped_lru(tmp_path: Path) -> None:
    stub = StubDynamoDb()  # every name absent: each answer (None) is cached too
    reg = Registry(shared_settings(tmp_path, lora_registry_ttl_seconds=300.0), stub, cache_entries=3)
    for name in ("a", "b", "c"):
        with pytest.raises(LoraNotFound):
            reg.resolve(LoraRef(name, 1, 1.0))
    with pytest.raises(LoraNotFound):
        reg.resolve(LoraRef("a", 1, 1.0))  # a cached hit makes "a" the most recently used
    assert stub.calls == 3
    with pytest.raises(LoraNotFound):
        reg.resolve(LoraRef("d", 1, 1.0))  # evicts "b", the least recently used
    assert len(reg._cache) == 3 and stub.calls == 4  # noqa: SLF001
    for name, calls in (("a", 4), ("c", 4), ("b", 5)):  # "a" and "c" still cached; "b" read again
        with pytest.raises(LoraNotFound):
            reg.resolve(LoraRef(name, 1, 1.0))
        assert stub.calls == calls, name

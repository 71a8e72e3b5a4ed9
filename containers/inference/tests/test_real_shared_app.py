"""Shared mode end to end: HTTP → registry (boto3 on moto's DynamoDB) → S3 download (moto) → the real diffusers.

The tiny SD 1.5 pipeline loaded by production's load_shared_pipeline, LoRAs written by kohya-ss, on CPU
in float32: images are compared byte for byte (tolerance: none), as in test_real_shared.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from lora_server import validation
from lora_server.app import create_app
from lora_server.logs import JsonLog

from .conftest import wait_for
from .moto_server import BUCKET, REGION, TABLE, Moto, moto_server  # noqa: F401 - pytest fixture
from .registry_items import BASE_MODEL, put_lora
from .test_real_diffusers import LOAD_SECONDS, PROMPT, SIDE, mount
from .test_real_shared import lora_files  # noqa: F401 - pytest fixture: kohya-ss LoRAs for the tiny models


@pytest.fixture(scope="module", autouse=True)
def tiny_sides() -> Iterator[None]:
    """The tiny models' 64-pixel side, for the whole module (its server and images are made once)."""
    monkeypatch = pytest.MonkeyPatch()
    _, high, _ = validation.SIDES["sd15"]
    monkeypatch.setitem(validation.SIDES, "sd15", (SIDE, high, SIDE))
    yield
    monkeypatch.undo()


class Served:
    def __init__(self, client: Any, log: io.StringIO) -> None:
        self.client = client
        self.log = log

    def invoke(self, **body: Any) -> Any:
        request = {"prompt": PROMPT, "num_inference_steps": 3, "width": SIDE, "height": SIDE, "seed": 42, **body}
        return self.client.post("/invocations", json=request)

    def pixels(self, **body: Any) -> bytes:
        response = self.invoke(**body)
        assert response.status_code == 200, response.get_json()
        [encoded] = response.get_json()["images"]
        return Image.open(io.BytesIO(base64.b64decode(encoded))).tobytes()


@pytest.fixture(scope="module")
def served(
    moto_server: Moto, tiny_models: Any, lora_files: Any, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
) -> Iterator[Served]:
    """One shared server for the module: a, b, c (kohya-ss LoRAs), and registry items that must be refused."""
    moto_server.reset()
    dynamodb, s3 = moto_server.create_registry(), moto_server.client("s3")
    files = [path.read_bytes() for path in lora_files("sd15")]
    for name, data in zip("abc", files, strict=True):
        put_lora(dynamodb, s3, name, 1, data)
    put_lora(dynamodb, s3, "old", 1, files[0], status="retired", retiredAt="2026-12-01T00:00:00Z")
    put_lora(dynamodb, s3, "xl", 1, files[0], modelType="sdxl")
    put_lora(dynamodb, s3, "tampered", 1, files[1], sha256="0" * 64)
    folder = tmp_path_factory.mktemp("shared-app")
    settings = mount(
        folder, tiny_models("sd15"), lora_files("sd15")[0], "sd15", "folder",
        serving_mode="shared", served_base_model=BASE_MODEL, lora_registry_table=TABLE, lora_bucket=BUCKET,
        lora_prefix="loras/", aws_region=REGION, lora_cache_dir=folder / "lora-cache", lora_registry_ttl_seconds=0.0,
    )
    monkeypatch = pytest.MonkeyPatch()
    for name, value in {"AWS_ENDPOINT_URL": moto_server.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    log = io.StringIO()
    app = create_app(settings, log=JsonLog(log))  # production's loader and production's boto3 clients
    client = app.test_client()
    wait_for(lambda: client.get("/ping").status_code != 503, LOAD_SECONDS)
    assert client.get("/ping").status_code == 200, log.getvalue()[-2000:]
    yield Served(client, log)
    monkeypatch.undo()


@pytest.fixture(scope="module")
def alone(served: Served) -> dict[str, bytes]:
    """Each LoRA's image served alone right after the base model, and the base model's."""
    images = {"base": served.pixels()}
    for name in "abc":
        images[name] = served.pixels(lora=name)
        served.pixels()  # back to the base model between them
    return images


def test_a_miss_downloads_through_s3_and_each_lora_gives_its_own_image(served: Served, alone: dict[str, bytes]) -> None:
    assert len(set(alone.values())) == 4  # each LoRA changes the image, each differently
    # Served alternately, each gives the image it gave alone.
    for name in "abacbca":
        assert served.pixels(lora=name) == alone[name], name
    assert served.pixels() == alone["base"]
    response = served.invoke(lora="b@1", lora_scale=1.0)
    assert [(e["name"], e["version"]) for e in response.get_json()["loras"]] == [("b", 1)]


def test_two_loras_combined_differ_from_each_alone(served: Served, alone: dict[str, bytes]) -> None:
    both = served.pixels(loras=[{"name": "a"}, {"name": "b", "scale": 0.6}])
    assert both not in alone.values()
    assert served.pixels(loras=[{"name": "a"}, {"name": "b", "scale": 0.6}]) == both
    assert served.pixels(lora="a") == alone["a"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"lora": "nobody"}, 404, "no LoRA is named 'nobody'"),
        ({"lora": "a@2"}, 404, "LoRA a@2 does not exist"),
        ({"lora": "old"}, 410, "old@1 was retired"),
        ({"lora": "xl"}, 400, "is an sdxl LoRA; this endpoint serves sd15"),
        ({"lora": "../a"}, 400, "lora must be a LoRA name"),
        ({"lora": "tampered"}, 400, "SHA-256 mismatch"),
    ],
)
def test_refusals_leave_the_next_request_served_exactly(
    served: Served, alone: dict[str, bytes], body: dict[str, Any], status: int, message: str
) -> None:
    response = served.invoke(**body)
    assert response.status_code == status and message in response.get_json()["error"], response.get_json()
    assert served.pixels(lora="c") == alone["c"]


def test_concurrent_requests_for_different_loras_each_get_their_own_image(served: Served, alone: dict[str, bytes]) -> None:
    results: dict[str, bytes] = {}

    def call(name: str) -> None:
        results[name] = served.pixels(lora=name)

    threads = [threading.Thread(target=call, args=(name,)) for name in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == {name: alone[name] for name in "abc"}
    lines = [json.loads(line) for line in served.log.getvalue().splitlines()]
    assert {tuple(e.get("loras", [])) for e in lines if e["event"] == "invocation" and e["status"] == 200} >= {("a@1",), ("b@1",), ("c@1",)}

"""The shared-mode HTTP flow with a fake pipeline, on the real registry and disk tier (boto3 against moto).

What is real here: request validation, registry resolution, S3 download and verification, the GPU
lock and time budget, the responses, the logs and the metrics. Only the diffusers pipeline is fake.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lora_server.app import create_app
from lora_server.logs import JsonLog
from lora_server.lora_cache import CacheError, TooLarge
from lora_server.lora_fetch import DiskTier
from lora_server.metrics import Metrics
from lora_server.registry import Registry
from lora_server.service import SharedLoras
from lora_server.shared_types import LocalLora
from lora_server.validation import GenerationParams

from .conftest import wait_for
from .moto_server import Moto, moto, moto_server  # noqa: F401 - pytest fixtures
from .registry_items import lora_bytes, put_lora, shared_settings

PROMPT = "Green pokemon with menacing face"


@dataclass
class FakeSharedPipeline:
    """Records the LoRAs each call gets (their files must exist then); `hold` keeps a call on the GPU."""

    hold: threading.Event | None = None
    calls: list[list[tuple[str, float]]] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    entered: threading.Event = field(default_factory=threading.Event)
    unhealthy: str | None = None  # as SharedDiffusersPipeline's, when a conversion left PEFT layers

    def generate(self, params: GenerationParams, deadline: float, loras: list[LocalLora]) -> list[Image.Image]:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            assert all(lora.path.is_file() for lora in loras)  # pinned: not evicted while in use
            self.calls.append([(lora.key, lora.scale) for lora in loras])
            self.entered.set()
            if self.hold is not None:
                self.hold.wait(10)
            return [Image.new("RGB", (params.width, params.height), (len(loras) * 40, 0, 0))] * params.num_images
        finally:
            self.running -= 1


@dataclass
class SharedServer:
    client: Any
    pipeline: FakeSharedPipeline
    log: io.StringIO
    emf: list[dict[str, Any]]
    registry: Registry
    disk: DiskTier
    dynamodb: Any
    s3: Any

    def invoke(self, accept: str | None = None, **body: Any) -> Any:
        headers = {"Accept": accept} if accept else {}
        return self.client.post("/invocations", data=json.dumps({"prompt": PROMPT, **body}), headers=headers, content_type="application/json")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in map(json.loads, self.log.getvalue().splitlines()) if e["event"] == name]


@pytest.fixture
def shared_server(tmp_path: Path, moto: Moto) -> Any:  # noqa: F811 - the fixture
    def make(pipeline: FakeSharedPipeline | None = None, **settings: Any) -> SharedServer:
        pipeline = pipeline or FakeSharedPipeline()
        dynamodb, s3 = moto.create_registry(), moto.client("s3")
        config = shared_settings(tmp_path, **settings)
        log = io.StringIO()
        emf: list[dict[str, Any]] = []
        metrics = Metrics(config.metrics_namespace, {"ModelType": config.model_type}, emit=lambda line: emf.append(json.loads(line)))
        registry = Registry(config, dynamodb)
        disk = DiskTier(config, s3, metrics, JsonLog(log))

        def loader(_settings: Any, _log: Any, given: Metrics) -> FakeSharedPipeline:
            assert given is metrics  # the pipeline records its tiers' metrics into the request's line
            return pipeline

        app = create_app(config, loader=loader, log=JsonLog(log), shared=SharedLoras(registry, disk, metrics))
        server = SharedServer(app.test_client(), pipeline, log, emf, registry, disk, dynamodb, s3)
        wait_for(lambda: server.client.get("/ping").status_code == 200)
        return server

    return make


def add(server: SharedServer, tmp_path: Path, name: str, version: int = 1, **attributes: Any) -> dict[str, Any]:
    return put_lora(server.dynamodb, server.s3, name, version, lora_bytes(tmp_path, tag=f"{name}{version}"), **attributes)


def test_a_named_lora_is_fetched_applied_and_named_in_the_response_log_and_metrics(tmp_path: Path, shared_server: Any) -> None:
    server = shared_server()
    item = add(server, tmp_path, "style")
    response = server.invoke(lora="style", lora_scale=0.7, seed=5)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["loras"] == [{"name": "style", "version": 1, "scale": 0.7, "sha256": item["sha256"]}]
    assert server.pipeline.calls == [[("style@1", 0.7)]]
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).getpixel((0, 0)) == (40, 0, 0)
    [line] = server.events("invocation")
    assert (line["loras"], line["loras_requested"]) == (["style@1"], ["style"])
    assert server.emf[-1]["LoraMiss"] == 1 and "GenerationMs" in server.emf[-1] and server.emf[-1]["ModelType"] == "sd15"
    # The second request finds the file on disk: no download, and the metrics say so.
    assert server.invoke(lora="style@1").status_code == 200
    assert server.disk.downloads == 1 and server.emf[-1]["LoraHitDisk"] == 1 and "LoraMiss" not in server.emf[-1]
    assert len(server.emf) == 2  # one EMF line per request


def test_without_lora_the_base_model_alone_is_used(tmp_path: Path, shared_server: Any) -> None:
    server = shared_server()
    response = server.invoke()
    assert (response.status_code, response.get_json()["loras"]) == (200, [])
    assert server.pipeline.calls == [[]]
    assert server.events("invocation")[0]["loras"] == []


def test_loras_combine_with_their_own_scales(tmp_path: Path, shared_server: Any) -> None:
    server = shared_server()
    add(server, tmp_path, "style", 1)
    add(server, tmp_path, "style", 2, current=False)
    add(server, tmp_path, "face")
    response = server.invoke(loras=[{"name": "style", "version": 2, "scale": 0.5}, {"name": "face"}])
    assert response.status_code == 200, response.get_json()
    assert [(e["name"], e["version"], e["scale"]) for e in response.get_json()["loras"]] == [("style", 2, 0.5), ("face", 1, 1.0)]
    assert server.pipeline.calls == [[("style@2", 0.5), ("face@1", 1.0)]]


def test_an_image_response_names_the_loras_in_its_custom_attributes(tmp_path: Path, shared_server: Any) -> None:
    server = shared_server()
    add(server, tmp_path, "style", 3)
    add(server, tmp_path, "face")
    response = server.invoke(accept="image/png", loras=[{"name": "style"}, {"name": "face", "version": 1}], seed=9)
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "seed=9; loras=style@3,face@1"


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        ({"lora": "nobody"}, 404, "lora", "no LoRA is named 'nobody'"),
        ({"lora": "style@7"}, 404, "lora", "LoRA style@7 does not exist"),
        ({"lora": "old"}, 410, "lora", "old@1 was retired"),
        ({"lora": "broken@1"}, 410, "lora", "broken@1 failed its check"),
        ({"loras": [{"name": "xl"}]}, 400, "loras", "xl@1 is an sdxl LoRA; this endpoint serves sd15"),
        ({"lora": "../../etc/passwd"}, 400, "lora", "lora must be a LoRA name"),
        ({"lora": "style", "loras": [{"name": "style"}]}, 400, "loras", "either lora or loras, not both"),
        ({"loras": [{"name": "style"}], "lora_scale": 0.5}, 400, "lora_scale", "lora_scale applies to lora"),
        ({"loras": [{"name": "style"}, {"name": "style", "version": 1}]}, 400, "loras", "loras names style@1 twice"),
        ({"loras": [{"name": "style", "scale": 3}]}, 400, "loras", r"loras\[0\].scale must be a number from 0 to 2"),
    ],
)
def test_errors_name_the_lora_and_the_next_request_is_served_normally(
    tmp_path: Path, shared_server: Any, body: dict[str, Any], status: int, field: str, message: str
) -> None:
    server = shared_server()
    add(server, tmp_path, "style")
    add(server, tmp_path, "old", status="retired")
    add(server, tmp_path, "broken", status="failed", failure="the endpoint answered 500")
    add(server, tmp_path, "xl", modelType="sdxl")
    response = server.invoke(**body)
    payload = response.get_json()
    assert (response.status_code, payload["field"]) == (status, field), payload
    assert re.search(message, payload["error"]), payload["error"]
    assert server.pipeline.calls == []  # refused before the GPU
    assert server.events("invocation")[0]["status"] == status
    # The control: the next request, for a good LoRA, is served.
    assert server.invoke(lora="style").status_code == 200


def test_a_malformed_name_reads_nothing(tmp_path: Path, shared_server: Any) -> None:
    server = shared_server()
    assert server.invoke(lora="a/../../b").status_code == 400
    assert server.registry.reads == 0 and server.disk.downloads == 0


def test_a_sha256_mismatch_is_refused_with_400_and_the_next_request_is_served(tmp_path: Path, shared_server: Any) -> None:
    server = shared_server()
    add(server, tmp_path, "tampered", sha256="0" * 64)
    add(server, tmp_path, "style")
    response = server.invoke(lora="tampered")
    assert response.status_code == 400 and "SHA-256 mismatch" in response.get_json()["error"]
    assert server.invoke(lora="style").status_code == 200


def test_concurrent_requests_for_different_loras_fetch_outside_the_gpu_lock(tmp_path: Path, shared_server: Any) -> None:
    hold = threading.Event()
    server = shared_server(FakeSharedPipeline(hold=hold))
    for name in ("a", "b", "c"):
        add(server, tmp_path, name)
    results: dict[str, Any] = {}

    def call(name: str) -> None:
        results[name] = server.invoke(lora=name).get_json()

    first = threading.Thread(target=call, args=("a",))
    first.start()
    assert server.pipeline.entered.wait(10)  # a holds the GPU now
    others = [threading.Thread(target=call, args=(name,)) for name in ("b", "c")]
    for thread in others:
        thread.start()
    # b's and c's files are downloaded while a still holds the GPU: fetching never waits for it.
    wait_for(lambda: server.disk.downloads == 3)
    assert server.pipeline.calls == [[("a@1", 1.0)]]
    hold.set()
    for thread in (first, *others):
        thread.join(10)
    assert {name: [e["name"] for e in body["loras"]] for name, body in results.items()} == {"a": ["a"], "b": ["b"], "c": ["c"]}
    assert server.pipeline.max_running == 1  # GPU work stays serialized
    assert sorted(call[0][0] for call in server.pipeline.calls) == ["a@1", "b@1", "c@1"]


def test_a_fetch_counts_against_the_requests_time_budget(tmp_path: Path, shared_server: Any) -> None:
    server = shared_server(request_timeout_seconds=3.0)  # 3 s less the 2.26 s reserved after denoising: 0.74 s
    add(server, tmp_path, "style")
    real = server.disk._s3  # noqa: SLF001 - a slow S3 for this test

    class SlowS3:
        def get_object(self, **kwargs: Any) -> Any:
            time.sleep(1.0)
            return real.get_object(**kwargs)

    server.disk._s3 = SlowS3()  # noqa: SLF001
    response = server.invoke(lora="style")
    assert response.status_code == 504 and "time limit" in response.get_json()["error"]
    assert server.pipeline.calls == []
    server.disk._s3 = real  # noqa: SLF001 - the control: a prompt S3 serves it within the same budget
    assert server.invoke(lora="style").status_code == 200


def test_a_dedicated_server_refuses_lora_fields(make_server: Any) -> None:
    server = make_server()
    for body in ({"prompt": PROMPT, "lora": "style"}, {"prompt": PROMPT, "loras": [{"name": "style"}]}):
        response = server.invoke(body)
        assert response.status_code == 400
        assert response.get_json()["field"] in ("lora", "loras") and "dedicated" in response.get_json()["error"]
    ok = server.invoke({"prompt": PROMPT})
    assert ok.status_code == 200 and "loras" not in ok.get_json()  # a dedicated response is as it was


def test_production_wiring_builds_its_clients_from_the_settings(
    tmp_path: Path, moto: Moto, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    """create_app() as gunicorn calls it in shared mode: boto3 clients in AWS_DEFAULT_REGION, EMF on stdout."""
    for name, value in {"AWS_ENDPOINT_URL": moto.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    dynamodb, s3 = moto.create_registry(), moto.client("s3")
    put_lora(dynamodb, s3, "style", 1, lora_bytes(tmp_path))
    pipeline = FakeSharedPipeline()
    app = create_app(shared_settings(tmp_path), loader=lambda *_: pipeline, log=JsonLog(io.StringIO()))
    client = app.test_client()
    wait_for(lambda: client.get("/ping").status_code == 200)
    response = client.post("/invocations", json={"prompt": PROMPT, "lora": "style"})
    assert response.status_code == 200, response.get_json()
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert len(emf) == 1 and emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "SageMakerLoraPipeline/Serving"
    assert emf[0]["LoraMiss"] == 1
    # Short timeouts, two attempts in all: a stalled read cannot hold a request far past its time limit.
    shared = app.extensions["model_service"]._shared  # noqa: SLF001
    for client, timeouts in ((shared.registry._client, (1.0, 2.0)), (shared.disk._s3, (2.0, 5.0))):  # noqa: SLF001
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == timeouts
        assert config.retries == {"total_max_attempts": 2, "mode": "standard"}


def test_a_lora_the_pipeline_cannot_apply_is_400_naming_it(tmp_path: Path, shared_server: Any) -> None:
    from lora_server.lora_file import LoraFileError

    class Refusing(FakeSharedPipeline):
        def generate(self, params: GenerationParams, deadline: float, loras: list[LocalLora]) -> list[Image.Image]:
            if loras and loras[0].key == "odd@1":
                raise LoraFileError("3 modules have no place in this U-Net")
            return super().generate(params, deadline, loras)

    server = shared_server(Refusing())
    add(server, tmp_path, "odd")
    add(server, tmp_path, "style")
    response = server.invoke(loras=[{"name": "odd"}])
    assert (response.status_code, response.get_json()["field"]) == (400, "loras")
    assert response.get_json()["error"] == "LoRA odd@1 cannot be applied to this endpoint's base model: 3 modules have no place in this U-Net"
    assert server.invoke(lora="style").status_code == 200  # the control, and the next request is served


@pytest.mark.parametrize(
    ("error", "status"),
    [(TooLarge("host LoRA cache: odd@1 is 9 bytes, more than the whole cache"), 400), (CacheError("GPU LoRA cache: no room"), 503)],
)
def test_a_pipeline_cache_tier_refusal_is_mapped(tmp_path: Path, shared_server: Any, error: Exception, status: int) -> None:
    class Full(FakeSharedPipeline):
        def generate(self, params: GenerationParams, deadline: float, loras: list[LocalLora]) -> list[Image.Image]:
            if loras:
                raise error
            return super().generate(params, deadline, loras)

    server = shared_server(Full())
    add(server, tmp_path, "odd")
    response = server.invoke(lora="odd")
    assert response.status_code == status and str(error) in response.get_json()["error"]
    assert response.get_json()["field"] == ("lora" if status == 400 else None)  # a refusal names the request's field
    assert server.invoke().status_code == 200


def test_a_conversion_failure_is_400_naming_only_that_lora(tmp_path: Path, shared_server: Any) -> None:
    from lora_server.shared_pipeline import LoraConversionError

    class Refusing(FakeSharedPipeline):
        def generate(self, params: GenerationParams, deadline: float, loras: list[LocalLora]) -> list[Image.Image]:
            if any(lora.key == "odd@1" for lora in loras):
                raise LoraConversionError("odd@1", "x.safetensors: diffusers could not load it as a LoRA: RuntimeError: size mismatch")
            return super().generate(params, deadline, loras)

    server = shared_server(Refusing())
    add(server, tmp_path, "style")
    add(server, tmp_path, "odd")
    response = server.invoke(loras=[{"name": "style"}, {"name": "odd"}])
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("LoRA odd@1 cannot be applied")  # not "LoRA style@1, odd@1"
    assert server.invoke(lora="style").status_code == 200


def test_an_unhealthy_pipeline_fails_ping_and_refuses_requests(tmp_path: Path, shared_server: Any) -> None:
    server = shared_server()
    add(server, tmp_path, "style")
    assert server.client.get("/ping").status_code == 200 and server.invoke(lora="style").status_code == 200  # the control
    server.pipeline.unhealthy = "a LoRA conversion left the model changed: unet: PEFT layers left"
    ping = server.client.get("/ping")
    assert ping.status_code == 500 and "PEFT layers left" in ping.get_json()["reason"]
    response = server.invoke(lora="style")
    assert response.status_code == 503 and response.get_json()["error"].startswith("the model is unhealthy: a LoRA conversion")


def test_busy_says_where_the_time_went() -> None:
    from lora_server.service import _time_spent

    assert _time_spent(10.0, 10.0, 14.0) == "waited 4.0 s for the GPU behind other requests"
    # After a long fetch, the time is not blamed on the GPU queue.
    assert _time_spent(10.0, 18.0, 18.5) == "spent 8.0 s fetching its LoRAs and waited 0.5 s for the GPU behind other requests"


def test_a_registry_read_past_the_deadline_is_504(tmp_path: Path, shared_server: Any) -> None:
    server = shared_server(request_timeout_seconds=3.0)  # 0.74 s to denoise
    add(server, tmp_path, "style")
    real = server.registry._client  # noqa: SLF001 - a slow registry for this test

    class SlowDynamoDb:
        def get_item(self, **kwargs: Any) -> Any:
            time.sleep(1.0)
            return real.get_item(**kwargs)

    server.registry._client = SlowDynamoDb()  # noqa: SLF001
    response = server.invoke(lora="style")  # the head's read takes the whole budget: the version's never starts
    assert response.status_code == 504 and "time limit passed while resolving LoRA style@1" in response.get_json()["error"]
    server.registry._client = real  # noqa: SLF001 - the control
    assert server.invoke(lora="style").status_code == 200

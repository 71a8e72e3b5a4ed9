"""The HTTP contract: /ping, /invocations, validation, content negotiation, limits, error isolation, logs."""

from __future__ import annotations

import base64
import io
import json
import runpy
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lora_server import imaging
from lora_server.app import create_app
from lora_server.imaging import MAX_RESPONSE_BYTES
from lora_server.logs import JsonLog
from lora_server.__main__ import GUNICORN_CONFIG
from lora_server.service import GenerationTimeout, NotEnoughTime
from lora_server.settings import MAX_INVOCATIONS_IN_FLIGHT
from lora_server.validation import GenerationParams

from .conftest import SDXL_MODULES, FakePipeline, lora_shapes, settings_for, wait_for, write_safetensors

PROMPT = "Green pokemon with menacing face"


def image_of(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# --- /ping -------------------------------------------------------------------------------------


def test_ping_is_not_healthy_while_loading_and_healthy_once_loaded(make_server: Any) -> None:
    server = make_server(loaded=False)
    started = time.monotonic()
    loading = server.client.get("/ping")
    assert time.monotonic() - started < 2
    assert (loading.status_code, loading.get_json()) == (503, {"status": "loading", "reason": None})
    assert server.invoke().status_code == 503

    server.release.set()
    wait_for(lambda: server.client.get("/ping").status_code == 200)
    assert server.client.get("/ping").get_json() == {"status": "ready"}
    assert server.invoke().status_code == 200
    assert [e["event"] for e in server.events("model_loaded")] == ["model_loaded"]


def test_a_failed_load_leaves_ping_unhealthy_and_logs_the_reason(make_server: Any) -> None:
    server = make_server(loaded=False, load_error=ValueError("no base model"))
    server.release.set()
    wait_for(lambda: server.client.get("/ping").status_code != 503)
    ping = server.client.get("/ping")
    assert (ping.status_code, ping.get_json()) == (500, {"status": "failed", "reason": "ValueError: no base model"})
    [failed] = server.events("model_load_failed")
    assert (failed["level"], failed["reason"]) == ("error", "ValueError: no base model")
    refused = server.invoke()
    assert refused.status_code == 503
    assert "the model failed to load: ValueError: no base model" in refused.get_json()["error"]


def test_the_real_loader_refuses_a_lora_of_the_wrong_model_type_before_loading_anything(tmp_path: Path) -> None:
    # Production's loader (no fake): the header check fails before diffusers would even be imported.
    (tmp_path / "model").mkdir()
    write_safetensors(tmp_path / "model" / "pokemon.safetensors", lora_shapes(SDXL_MODULES))
    log = io.StringIO()
    client = create_app(settings_for(tmp_path, model_type="sd15"), log=JsonLog(log)).test_client()
    wait_for(lambda: client.get("/ping").status_code != 503)
    ping = client.get("/ping")
    assert ping.status_code == 500
    assert "pokemon.safetensors: is an SDXL LoRA but MODEL_TYPE is sd15" in ping.get_json()["reason"]
    assert "is an SDXL LoRA but MODEL_TYPE is sd15" in log.getvalue()


def test_ping_answers_at_once_while_a_generation_holds_the_gpu(make_server: Any) -> None:
    hold = threading.Event()
    server = make_server(FakePipeline(hold=hold))
    worker = threading.Thread(target=server.invoke)
    worker.start()
    wait_for(lambda: server.pipeline.running == 1)
    started = time.monotonic()
    assert server.client.get("/ping").status_code == 200
    assert time.monotonic() - started < 2
    hold.set()
    worker.join()


# --- request validation -------------------------------------------------------------------------

BAD_FIELDS = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"negative_prompt": ["blurry"]}, "negative_prompt"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": 101}, "num_inference_steps"),
    ({"num_inference_steps": 2.5}, "num_inference_steps"),
    ({"num_inference_steps": "25"}, "num_inference_steps"),
    ({"num_inference_steps": True}, "num_inference_steps"),
    ({"guidance_scale": -0.5}, "guidance_scale"),
    ({"guidance_scale": 20.5}, "guidance_scale"),
    ({"guidance_scale": "7.5"}, "guidance_scale"),
    ({"width": 516}, "width"),
    ({"width": 248}, "width"),
    ({"width": 1032}, "width"),
    ({"height": 1030}, "height"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"num_images": 0}, "num_images"),
    ({"num_images": 5}, "num_images"),
    ({"lora_scale": -0.1}, "lora_scale"),
    ({"lora_scale": 2.01}, "lora_scale"),
    ({"lora_scale": False}, "lora_scale"),
    ({"scheduler": "euler-a"}, "scheduler"),
    ({"scheduler": ["euler"]}, "scheduler"),
    ({"output_format": "gif"}, "output_format"),
    ({"steps": 30}, "steps"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_FIELDS, ids=[f"{f}={json.dumps(v)[:20]}" for v, f in BAD_FIELDS])
def test_every_bad_field_gives_400_naming_it(make_server: Any, fields: dict[str, Any], field: str) -> None:
    server = make_server()
    body = {"prompt": PROMPT, **fields} if field != "prompt" or fields else {}
    response = server.invoke(body)
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert field in response.get_json()["error"]
    assert server.pipeline.calls == []


def test_the_limits_of_each_field_are_accepted(make_server: Any) -> None:
    # Negative control for the table above: the boundary values themselves are valid.
    server = make_server()
    for fields in (
        {"num_inference_steps": 1, "guidance_scale": 0, "width": 256, "height": 1024, "seed": 0, "num_images": 4, "lora_scale": 0},
        {"num_inference_steps": 100, "guidance_scale": 20, "width": 1024, "height": 256, "seed": 2**32 - 1, "lora_scale": 2},
        {"negative_prompt": "blurry", "scheduler": "dpmpp_2m_karras", "output_format": "jpeg", "num_inference_steps": 30.0},
    ):
        response = server.invoke({"prompt": PROMPT, **fields})
        assert response.status_code == 200, response.get_json()


def test_null_takes_the_default_for_every_optional_field(make_server: Any) -> None:
    server = make_server(lora_scale=0.8)
    optional = [name for name in GenerationParams.__dataclass_fields__ if name != "prompt"]
    nulls = server.invoke({"prompt": PROMPT, **dict.fromkeys(optional, None)}, accept="image/jpeg")
    assert nulls.status_code == 200, nulls.get_json()
    assert (nulls.mimetype, nulls.headers["X-Amzn-SageMaker-Custom-Attributes"].startswith("seed=")) == ("image/jpeg", True)
    parameters = server.invoke({"prompt": PROMPT, "seed": None, "negative_prompt": None}).get_json()["parameters"]
    assert isinstance(parameters["seed"], int) and parameters["negative_prompt"] is None
    absent = server.invoke({"prompt": PROMPT}).get_json()["parameters"]
    assert {k: v for k, v in parameters.items() if k != "seed"} == {k: v for k, v in absent.items() if k != "seed"}
    # Negative control: the required prompt may not be null.
    refused = server.invoke({"prompt": None})
    assert (refused.status_code, refused.get_json()["field"], refused.get_json()["error"]) == (400, "prompt", "prompt is required")


def test_sizes_are_bounded_per_model_type(make_server: Any) -> None:
    server = make_server(model_type="sdxl")
    assert server.invoke({"prompt": PROMPT, "width": 1536, "height": 512}).status_code == 200
    assert server.invoke({"prompt": PROMPT, "width": 504}).get_json()["field"] == "width"
    defaults = server.invoke({"prompt": PROMPT}).get_json()["parameters"]
    assert (defaults["width"], defaults["height"]) == (1024, 1024)


def test_defaults_follow_the_issue_and_the_deployed_lora_scale(make_server: Any) -> None:
    server = make_server(lora_scale=0.8)
    parameters = server.invoke({"prompt": PROMPT}).get_json()["parameters"]
    assert parameters == {
        "prompt": PROMPT,
        "negative_prompt": None,
        "num_inference_steps": 25,
        "guidance_scale": 7.5,
        "width": 512,
        "height": 512,
        "seed": parameters["seed"],
        "num_images": 1,
        "lora_scale": 0.8,
        "scheduler": "default",
        "output_format": "png",
    }


@pytest.mark.parametrize(
    "data",
    [b'{"prompt": "x"', b"prompt=x", b'{"prompt": "x", "guidance_scale": NaN}', b'{"prompt": "x", "seed": Infinity}', b"\xff\xfe", b""],
)
def test_malformed_json_gives_400(make_server: Any, data: bytes) -> None:
    response = make_server().invoke(data=data)
    assert response.status_code == 400
    assert response.get_json()["field"] is None
    assert "not valid JSON" in response.get_json()["error"]


@pytest.mark.parametrize("data", [b"[]", b'"prompt"', b"null", b"3"])
def test_a_body_that_is_not_an_object_gives_400(make_server: Any, data: bytes) -> None:
    response = make_server().invoke(data=data)
    assert (response.status_code, response.get_json()["field"]) == (400, None)
    assert "must be a JSON object" in response.get_json()["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "image/png", ""])
def test_an_unsupported_content_type_gives_415(make_server: Any, content_type: str) -> None:
    response = make_server().invoke(content_type=content_type)
    assert response.status_code == 415
    assert "application/json" in response.get_json()["error"]


def test_json_with_a_charset_is_accepted(make_server: Any) -> None:
    assert make_server().invoke(content_type="application/json; charset=utf-8").status_code == 200


def test_a_request_body_over_the_limit_gives_413(make_server: Any) -> None:
    response = make_server().invoke(data=json.dumps({"prompt": "x" * 70_000}))
    assert (response.status_code, response.get_json()["field"]) == (413, None)
    assert "request body is over 65536 bytes" in response.get_json()["error"]


# --- content negotiation -------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "application/json, image/png;q=0.5"])
def test_json_response_holds_every_image_the_seed_parameters_and_timings(make_server: Any, accept: str | None) -> None:
    server = make_server()
    response = server.invoke({"prompt": PROMPT, "num_images": 3, "seed": 41, "width": 256, "height": 384}, accept=accept)
    assert (response.status_code, response.mimetype) == (200, "application/json")
    body = response.get_json()
    images = [image_of(base64.b64decode(b)) for b in body["images"]]
    assert [(i.format, i.size) for i in images] == [("PNG", (256, 384))] * 3
    # One seed per image: seed, seed + 1, ... (the fake paints the seed into the pixels).
    assert [i.getpixel((0, 0))[0] for i in images] == [41, 42, 43]
    assert body["seed"] == 41
    assert body["parameters"]["num_images"] == 3
    assert set(body["timings"]) == {"wait_ms", "generate_ms", "encode_ms"}


def test_json_response_encodes_jpeg_on_request(make_server: Any) -> None:
    body = make_server().invoke({"prompt": PROMPT, "output_format": "jpeg"}).get_json()
    assert image_of(base64.b64decode(body["images"][0])).format == "JPEG"


@pytest.mark.parametrize(
    ("accept", "fields", "expected"),
    [
        ("image/png", {}, ("image/png", "PNG")),
        ("image/jpeg", {}, ("image/jpeg", "JPEG")),
        ("image/*", {"output_format": "jpeg"}, ("image/jpeg", "JPEG")),
        ("image/*", {}, ("image/png", "PNG")),
        ("image/jpeg;q=0.9, image/png;q=0.5", {}, ("image/jpeg", "JPEG")),
        ("image/png", {"output_format": "png"}, ("image/png", "PNG")),
    ],
)
def test_an_image_accept_returns_the_first_image_raw(make_server: Any, accept: str, fields: dict[str, Any], expected: tuple[str, str]) -> None:
    response = make_server().invoke({"prompt": PROMPT, "seed": 7, "num_images": 2, **fields}, accept=accept)
    assert response.status_code == 200
    assert (response.mimetype, image_of(response.data).format) == expected
    assert image_of(response.data).convert("RGB").getpixel((0, 0))[0] in range(5, 10)  # seed 7, the first image
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "seed=7"


def test_an_output_format_that_contradicts_accept_gives_400(make_server: Any) -> None:
    response = make_server().invoke({"prompt": PROMPT, "output_format": "jpeg"}, accept="image/png")
    assert (response.status_code, response.get_json()["field"]) == (400, "output_format")


def test_an_accept_nothing_can_satisfy_gives_406(make_server: Any) -> None:
    response = make_server().invoke(accept="text/html")
    assert response.status_code == 406
    assert "application/json" in response.get_json()["error"]


# --- limits ----------------------------------------------------------------------------------------


def test_a_response_over_six_megabytes_gives_413_saying_what_to_reduce(make_server: Any) -> None:
    server = make_server(FakePipeline(noise=True))
    response = server.invoke({"prompt": PROMPT, "num_images": 2, "width": 1024, "height": 1024})
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert f"limit of {MAX_RESPONSE_BYTES} bytes" in error
    assert "fewer num_images" in error and "output_format jpeg" in error
    # Negative control: the same images one at a time fit, as PNG too.
    assert server.invoke({"prompt": PROMPT, "width": 1024, "height": 1024}).status_code == 200


def test_the_limit_is_six_million_bytes_less_a_margin_not_six_mebibytes() -> None:
    assert 5_950_000 < MAX_RESPONSE_BYTES < 6_000_000
    imaging.check_size(MAX_RESPONSE_BYTES, 1, "png")
    # Over 6 MB (6,000,000 bytes) but under 6 MiB (6,291,456): SageMaker would refuse it.
    with pytest.raises(imaging.ResponseTooLarge, match="6100000 bytes"):
        imaging.check_size(6_100_000, 1, "png")


def test_a_response_that_cannot_fit_is_refused_before_generating(make_server: Any) -> None:
    server = make_server(model_type="sdxl")
    # 2 x 1536 x 1536 PNG, base64 in JSON: at least 1 byte a pixel, 6.3 MB.
    response = server.invoke({"prompt": PROMPT, "num_images": 2, "width": 1536, "height": 1536})
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert "would be at least about 6291456 bytes" in error
    assert "fewer num_images" in error and "output_format jpeg" in error
    assert server.pipeline.calls == []
    # Negative controls: one such image fits, and so does the first of them alone, raw.
    assert server.invoke({"prompt": PROMPT, "width": 1536, "height": 1536}).status_code == 200
    assert server.invoke({"prompt": PROMPT, "num_images": 2, "width": 1024, "height": 1536}, accept="image/png").status_code == 200


@pytest.mark.parametrize(
    ("model_type", "fields", "status"),
    [
        ("sdxl", {"num_images": 2, "width": 1536, "height": 1536, "output_format": "jpeg"}, 400),
        ("sdxl", {"num_images": 4, "width": 1536, "height": 1536, "output_format": "jpeg"}, 400),
        ("sdxl", {"num_images": 4, "width": 1024, "height": 1024, "output_format": "jpeg"}, 200),
        ("sdxl", {"num_images": 1, "width": 1536, "height": 1536, "output_format": "jpeg"}, 200),
        ("sd15", {"num_images": 4, "width": 1024, "height": 1024, "output_format": "jpeg"}, 200),
    ],
)
def test_the_pixels_of_a_request_are_capped_per_model_type(make_server: Any, model_type: str, fields: dict[str, Any], status: int) -> None:
    server = make_server(model_type=model_type)
    response = server.invoke({"prompt": PROMPT, **fields})
    assert response.status_code == status
    if status == 400:
        assert response.get_json()["field"] == "num_images"
        assert "must be at most 4194304 pixels for sdxl" in response.get_json()["error"]
        assert server.pipeline.calls == []


def test_one_raw_png_of_the_largest_size_fits(make_server: Any) -> None:
    server = make_server(FakePipeline(noise=True))
    # 1024 x 1024 of noise is ~3 MB as PNG: under the limit raw, over it twice as base64 in JSON.
    assert server.invoke({"prompt": PROMPT, "width": 1024, "height": 1024}, accept="image/png").status_code == 200


def test_gpu_work_is_serialized(make_server: Any) -> None:
    hold = threading.Event()
    server = make_server(FakePipeline(hold=hold))
    results: list[int] = []
    workers = [threading.Thread(target=lambda: results.append(server.invoke().status_code)) for _ in range(3)]
    for worker in workers:
        worker.start()
    wait_for(lambda: server.pipeline.running == 1)
    time.sleep(0.1)
    hold.set()
    for worker in workers:
        worker.join()
    assert (results, server.pipeline.max_running) == ([200, 200, 200], 1)


def test_a_request_that_waits_for_the_gpu_past_its_time_limit_gives_503(make_server: Any) -> None:
    hold = threading.Event()
    # 4 s from arrival, of which a 512 x 512 image reserves 2.26 s for decoding and encoding.
    server = make_server(FakePipeline(hold=hold), request_timeout_seconds=4.0)
    first = threading.Thread(target=server.invoke)
    first.start()
    wait_for(lambda: server.pipeline.running == 1)
    started = time.monotonic()
    waited = server.invoke()
    assert (waited.status_code, 1.5 < time.monotonic() - started < 3) == (503, True)
    assert "waited 1.7 s for the GPU behind other requests" in waited.get_json()["error"]
    hold.set()
    first.join()


def test_denoising_must_end_early_enough_to_decode_and_encode_within_the_time_limit(make_server: Any) -> None:
    server = make_server(model_type="sdxl", request_timeout_seconds=50.0)
    before = time.monotonic()
    server.invoke({"prompt": PROMPT, "width": 1024, "height": 1024, "num_images": 2})
    server.invoke({"prompt": PROMPT, "width": 512, "height": 512})
    large, small = (deadline - before for deadline in server.pipeline.deadlines)
    # 2 s plus 2 s per megapixel for SDXL: 2 x 1024 x 1024 is 2.1 MP, 512 x 512 is 0.26 MP.
    assert 50 - 2 - 2 * 2.097152 <= large < 50 - 2 - 2 * 2.097152 + 0.5
    assert 50 - 2 - 2 * 0.262144 <= small < 50 - 2 - 2 * 0.262144 + 0.5


def test_a_request_whose_finishing_alone_exceeds_the_time_limit_gives_504_at_once(make_server: Any) -> None:
    server = make_server(request_timeout_seconds=3.0)
    response = server.invoke({"prompt": PROMPT, "width": 1024, "height": 1024, "num_images": 4})
    assert response.status_code == 504
    assert "longer to decode and encode than its time limit of 3 s" in response.get_json()["error"]
    assert server.pipeline.calls == []


@pytest.mark.parametrize(
    ("needed", "status", "message"),
    [
        # It would fit in a whole budget: the time went waiting, so retrying is the answer.
        (20.0, 503, "needs about 20 s of denoising, 3 s are left; retry"),
        # It would not fit even alone: the request must ask for less.
        (70.0, 504, "needs about 70 s of denoising, 3 s are left, more than its time limit allows; ask for fewer"),
    ],
)
def test_a_request_the_pipeline_estimates_too_long_is_refused_before_denoising(
    make_server: Any, needed: float, status: int, message: str
) -> None:
    server = make_server(FakePipeline(failures=[NotEnoughTime(needed, 3.0)]))
    response = server.invoke()
    assert response.status_code == status
    assert message in response.get_json()["error"]
    assert server.invoke().status_code == 200


# --- admission: /ping always has a thread ------------------------------------------------------------


def test_invocations_beyond_those_in_flight_are_refused_at_once_with_503(make_server: Any) -> None:
    hold = threading.Event()
    server = make_server(FakePipeline(hold=hold))
    results: list[int] = []
    workers = [threading.Thread(target=lambda: results.append(server.invoke().status_code)) for _ in range(MAX_INVOCATIONS_IN_FLIGHT)]
    for worker in workers:
        worker.start()
    # One generates, the others wait for the GPU: all are admitted.
    wait_for(lambda: server.pipeline.running == 1 and server.app_service._in_flight == MAX_INVOCATIONS_IN_FLIGHT)
    started = time.monotonic()
    refused = server.invoke()
    assert (refused.status_code, time.monotonic() - started < 0.5) == (503, True)
    assert refused.get_json()["error"].startswith(f"busy: {MAX_INVOCATIONS_IN_FLIGHT} requests are running or waiting for the GPU; retry")
    hold.set()
    for worker in workers:
        worker.join()
    # Negative control: the admitted ones all succeed, and a request after them is admitted again.
    assert results == [200] * MAX_INVOCATIONS_IN_FLIGHT
    assert server.invoke().status_code == 200


def _ping_under_load(server: Any, threads: int, invocations: int) -> float | None:
    """Sends `invocations` and then one /ping through one pool of `threads` threads, as gunicorn's
    gthread worker does (workers/gthread.py: every request goes to ThreadPoolExecutor(max_workers=threads));
    returns how long /ping took, or None if it had no answer within 2 s."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        calls = [pool.submit(server.invoke) for _ in range(invocations)]
        wait_for(lambda: server.pipeline.running == 1)
        time.sleep(0.05)  # the others reach the admission check or the GPU lock
        started = time.monotonic()
        ping = pool.submit(lambda: server.client.get("/ping").status_code)
        try:
            assert ping.result(timeout=2) == 200
            took: float | None = time.monotonic() - started
        except FuturesTimeout:
            took = None
        server.pipeline.hold.set()
        for call in calls:
            call.result(timeout=10)
    return took


def test_ping_answers_within_two_seconds_while_many_invocations_are_in_flight(make_server: Any) -> None:
    gunicorn = runpy.run_path(str(GUNICORN_CONFIG))
    server = make_server(FakePipeline(hold=threading.Event()))
    took = _ping_under_load(server, threads=gunicorn["threads"], invocations=3 * gunicorn["threads"])
    assert took is not None and took < 2
    statuses = [e["status"] for e in server.events("invocation")]
    assert statuses.count(200) == MAX_INVOCATIONS_IN_FLIGHT and set(statuses) == {200, 503}


def test_negative_control_without_admission_ping_queues_behind_waiting_invocations(make_server: Any) -> None:
    # The former set-up: 4 threads and every invocation admitted to wait for the GPU.
    server = make_server(FakePipeline(hold=threading.Event()), max_in_flight=100)
    assert _ping_under_load(server, threads=4, invocations=4) is None


# --- error isolation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "status", "message"),
    [
        (RuntimeError("CUDA error: device-side assert triggered"), 500, "internal error: RuntimeError: CUDA error"),
        (GenerationTimeout("stopped after 20 of 25 steps"), 504, "stopped after 20 of 25 steps"),
    ],
)
def test_a_failing_request_is_followed_by_one_that_succeeds(make_server: Any, failure: Exception, status: int, message: str) -> None:
    server = make_server(FakePipeline(failures=[failure]))
    failed = server.invoke()
    assert failed.status_code == status
    assert failed.get_json()["error"].startswith(message)
    assert server.invoke().status_code == 200
    assert server.client.get("/ping").status_code == 200


def test_a_bad_request_is_followed_by_one_that_succeeds(make_server: Any) -> None:
    server = make_server()
    assert server.invoke(data=b"{").status_code == 400
    assert server.invoke().status_code == 200


def test_unknown_routes_and_methods_answer_in_json(make_server: Any) -> None:
    server = make_server()
    assert (server.client.get("/invocations").status_code, server.client.get("/nope").status_code) == (405, 404)
    assert server.client.get("/nope").get_json()["field"] is None


# --- logs ------------------------------------------------------------------------------------------


def test_each_invocation_logs_status_latency_and_parameters_without_prompts_or_images(make_server: Any) -> None:
    server = make_server()
    response = server.invoke({"prompt": PROMPT, "negative_prompt": "blurry", "seed": 3})
    server.invoke({"prompt": PROMPT, "seed": "x"})
    ok, bad = server.events("invocation")
    assert (ok["status"], ok["level"], ok["images"]) == (200, "info", 1)
    assert ok["latency_ms"] >= 0 and ok["response_bytes"] == response.content_length
    assert ok["parameters"]["seed"] == 3
    assert (ok["parameters"]["prompt"], ok["parameters"]["negative_prompt"]) == (f"<{len(PROMPT)} chars>", "<6 chars>")
    assert (bad["status"], bad["error"]) == (400, 'seed must be an integer from 0 to 4294967295, got "x"')
    log = server.log.getvalue()
    assert PROMPT not in log
    # Negative control: the response does carry an image, which the log must not.
    assert response.get_json()["images"][0][:40] not in log


def test_prompts_are_logged_only_when_asked(make_server: Any) -> None:
    server = make_server(log_prompts=True)
    server.invoke()
    assert server.events("invocation")[0]["parameters"]["prompt"] == PROMPT

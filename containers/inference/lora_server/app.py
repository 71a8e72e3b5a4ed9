"""The HTTP side of the SageMaker hosting contract: GET /ping and POST /invocations on port 8080."""

from __future__ import annotations

import base64
import os
import secrets
import time
import traceback
from dataclasses import replace
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import imaging
from .logs import JsonLog
from .lora_cache import CacheError, TooLarge
from .metrics import Metrics
from .registry import LoraError, label
from .service import Busy, GenerationTimeout, Loader, ModelService, NotReady, SharedLoras
from .settings import Settings, SettingsError
from .validation import RequestError, check_output_pixels, parse_json, split_loras, validate

# A request is a small JSON document; anything near this size is not one.
MAX_REQUEST_BYTES = 64 * 1024
JSON = "application/json"
# Server preference when the client accepts several (or */*, or sends no Accept): JSON first.
RESPONSE_TYPES = [JSON, "image/png", "image/jpeg"]


def create_app(
    settings: Settings | None = None, loader: Loader | None = None, log: JsonLog | None = None, shared: SharedLoras | None = None
) -> Flask:
    """The WSGI app. Production (gunicorn) calls it with no arguments; tests pass a fake loader (and, shared, fake AWS)."""
    log = log or JsonLog()
    if settings is None:
        try:
            settings = Settings.from_env(os.environ)
        except SettingsError as e:
            log("settings_invalid", level="error", reason=str(e))
            raise
    if settings.shared and shared is None:
        shared = _shared_loras(settings, log)
    if loader is None:
        # Imported here so that nothing imports torch or diffusers unless production loads a model.
        if settings.shared:
            from .shared_pipeline import load_shared_pipeline

            loader = load_shared_pipeline
        else:
            from .diffusers_pipeline import load_pipeline

            loader = load_pipeline
    service = ModelService(settings, loader, log, shared)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions["model_service"] = service

    @app.get("/ping")
    def ping() -> tuple[Response, int]:
        state, reason = service.status
        if state == "ready":
            return jsonify(status=state), 200
        return jsonify(status=state, reason=reason), 503 if state == "loading" else 500

    @app.post("/invocations")
    def invocations() -> Response | tuple[Response, int]:
        received = time.monotonic()
        context: dict[str, Any] = {}
        try:
            response = _invoke(service, settings, received, context)
        except Exception as e:  # noqa: BLE001 - one request's failure must never take the server down
            response = _error_response(e)
            context["error"] = response.get_json()["error"]
        finally:
            if shared is not None:
                shared.metrics.flush()  # one EMF line per request, whatever its outcome
        status = response.status_code
        log(
            "invocation",
            level="info" if status < 500 else "error",
            status=status,
            latency_ms=round((time.monotonic() - received) * 1000),
            **context,
        )
        return response

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> tuple[Response, int]:
        # 404, 405, and 413 for a request body over MAX_REQUEST_BYTES, in the same JSON shape as ours.
        return jsonify(error=e.description, field=None), e.code or 500

    service.start()
    return app


def _invoke(service: ModelService, settings: Settings, received: float, context: dict[str, Any]) -> Response:
    if request.mimetype != JSON:
        return _json_error(415, f"Content-Type must be {JSON}, got {request.mimetype or 'none'!r}")
    accept = request.accept_mimetypes
    response_type = accept.best_match(RESPONSE_TYPES) if request.headers.get("Accept") else JSON
    if response_type is None:
        return _json_error(406, f"Accept must allow one of {', '.join(RESPONSE_TYPES)}, got {request.headers['Accept']!r}")

    raw = parse_json(request.get_data(cache=False))
    body, refs = split_loras(raw, settings.shared, settings.lora_scale)
    params = validate(body, settings.model_type, settings.lora_scale, secrets.randbelow(2**32), settings.flux_variant)
    if response_type != JSON:
        wanted = f"image/{params.output_format}"
        if body.get("output_format") is None:
            params = replace(params, output_format=response_type.removeprefix("image/"))
        elif accept.quality(wanted) <= 0:
            raise RequestError(f"output_format {params.output_format} conflicts with Accept {request.headers['Accept']!r}", "output_format")
    context.update(parameters=params.for_log(settings.log_prompts), response_type=response_type)
    imaging.check_can_fit(params.width, params.height, params.num_images, params.output_format, response_type == JSON)
    check_output_pixels(params, settings.model_type)

    if settings.shared:
        context["loras_requested"] = [label(r.name, r.version) for r in refs]
    generation = service.generate(params, received, refs, "loras" if raw.get("loras") is not None else "lora")
    used = [lora.key for lora in generation.loras]
    if settings.shared:
        context["loras"] = used
    encode_started = time.monotonic()
    encoded = [imaging.encode(image, params.output_format) for image in generation.images]
    timings = {"wait_ms": generation.wait_ms, "generate_ms": generation.generate_ms}
    if response_type == JSON:
        payload = {
            "images": [base64.b64encode(data).decode("ascii") for data in encoded],
            "seed": params.seed,
            "parameters": params.for_log(include_prompts=True),
            "timings": {**timings, "encode_ms": round((time.monotonic() - encode_started) * 1000)},
        }
        if settings.shared:
            payload["loras"] = [
                {"name": lora.version.name, "version": lora.version.version, "scale": lora.scale, "sha256": lora.version.sha256}
                for lora in generation.loras
            ]
        response = jsonify(payload)
    else:
        # The first image, raw; the seed travels in the header SageMaker returns as CustomAttributes.
        response = Response(encoded[0], mimetype=imaging.MEDIA_TYPES[params.output_format])
        attributes = f"seed={params.seed}" + (f"; loras={','.join(used)}" if settings.shared else "")
        response.headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
    imaging.check_size(response.content_length or 0, params.num_images, params.output_format)
    context.update(timings, response_bytes=response.content_length, images=len(encoded))
    return response


def _json_error(status: int, message: str, field: str | None = None) -> Response:
    response = jsonify(error=message, field=field)
    response.status_code = status
    return response


def _error_response(e: Exception) -> Response:
    if isinstance(e, RequestError):
        return _json_error(400, str(e), e.field)
    if isinstance(e, LoraError):
        return _json_error(e.status, str(e), e.field)
    if isinstance(e, TooLarge):
        return _json_error(400, f"a LoRA of this request cannot be served: {e}")  # never fits this deployment's cache
    if isinstance(e, CacheError):
        return _json_error(503, f"{e}")  # a tier is full of LoRAs other requests are using: retry (its own set fits)
    if isinstance(e, RequestEntityTooLarge):
        return _json_error(413, f"the request body is over {MAX_REQUEST_BYTES} bytes; a request is a small JSON object")
    if isinstance(e, imaging.ResponseTooLarge):
        return _json_error(413, str(e))
    if isinstance(e, (NotReady, Busy)):
        return _json_error(503, str(e))
    if isinstance(e, GenerationTimeout):
        return _json_error(504, str(e))
    traceback.print_exc()
    return _json_error(500, f"internal error: {type(e).__name__}: {e}"[:500])


def _client_config(connect: float, read: float) -> Any:
    from botocore.config import Config

    # Two attempts in all (total_max_attempts counts the first; max_attempts would not): a request has under a
    # minute, and a further retry is the caller's.
    return Config(connect_timeout=connect, read_timeout=read, retries={"total_max_attempts": 2, "mode": "standard"})


# A GetItem answers in milliseconds: 2 attempts x (1 + 2) s bound a stalled read to ~6 s of a request.
REGISTRY_TIMEOUTS = (1.0, 2.0)
# A stalled S3 chunk fails after 5 s; a download's whole time is bounded by lora_fetch.DOWNLOAD_SECONDS.
S3_TIMEOUTS = (2.0, 5.0)


def _shared_loras(settings: Settings, log: JsonLog) -> SharedLoras:
    """The registry and disk cache of a shared server, on boto3 clients in its region."""
    import boto3

    from .lora_fetch import DiskTier
    from .registry import Registry

    session = boto3.session.Session(region_name=settings.aws_region)
    metrics = Metrics(settings.metrics_namespace, {"ModelType": settings.model_type})
    return SharedLoras(
        registry=Registry(settings, session.client("dynamodb", config=_client_config(*REGISTRY_TIMEOUTS))),
        disk=DiskTier(settings, session.client("s3", config=_client_config(*S3_TIMEOUTS)), metrics, log),
        metrics=metrics,
    )

"""The server on the real diffusers 0.40, transformers 5.17 and PEFT 0.21, on CPU, with tiny models.

Tiny random-weight SD 1.5- and SDXL-shaped pipelines (tiny_pipelines.py), each mounted as a diffusers
folder and as a single file with the configs folder `from_single_file` reads, and LoRAs written by
kohya-ss's own code (kohya_lora_fixture.py), go through production's `load_pipeline` and HTTP app.
The tiny models run at 64 px: validation's smallest sides (256 and 512, for the real models) are
lowered for these tests only, by the autouse fixture below.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from lora_server import diffusers_pipeline, validation
from lora_server.app import create_app
from lora_server.budget import finish_seconds
from lora_server.diffusers_pipeline import DiffusersPipeline, load_pipeline, lora_layers
from lora_server.kohya_names import modules_per_component
from lora_server.logs import JsonLog
from lora_server.lora_file import LoraFileError, read_header
from lora_server.pacing import Pacer
from lora_server.service import GenerationTimeout, ModelService
from lora_server.settings import Settings
from lora_server.validation import SCHEDULERS

from .conftest import settings_for, wait_for
from .test_diffusers_pipeline import params

MODEL_TYPES = ["sd15", "sdxl"]
KINDS = ["folder", "single_file"]
SIDE = 64
STEPS = 3
# What each model's requests ask for unless a test says otherwise. SDXL's tiny U-Net is kohya's least
# SDXL layout (53M parameters), so its requests take 2 steps without guidance's doubled batch.
REQUEST_DEFAULTS: dict[str, dict[str, Any]] = {"sd15": {"num_inference_steps": STEPS}, "sdxl": {"num_inference_steps": 2, "guidance_scale": 1.0}}
PROMPT = "Green pokemon with menacing face"
# The tiny models' own schedulers: SD 1.5's and SDXL's reference configs use these.
DEFAULT_SCHEDULERS = {"sd15": "PNDMScheduler", "sdxl": "EulerDiscreteScheduler"}
LOAD_SECONDS = 180


@pytest.fixture(autouse=True)
def tiny_sides(monkeypatch: pytest.MonkeyPatch) -> None:
    for model_type, (_, largest, _) in list(validation.SIDES.items()):
        monkeypatch.setitem(validation.SIDES, model_type, (SIDE, largest, SIDE))


def mount(folder: Path, tiny: dict[str, Path], lora: Path, model_type: str, kind: str, **overrides: Any) -> Settings:
    """Lays out what SageMaker mounts: the LoRA in MODEL_DIR, the base model (folder, or a channel holding one file)."""
    model_dir = folder / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(lora, model_dir / "pokemon.safetensors")
    base = tiny["folder"] if kind == "folder" else tiny["single_file"].parent
    values: dict[str, Any] = {
        "model_type": model_type, "model_dir": model_dir, "base_model_path": base, "configs_dir": tiny["configs"],
        "device": "cpu", "dtype": "float32", **overrides,
    }
    return settings_for(folder, **values)


@dataclass
class RealServer:
    client: Any
    log: io.StringIO
    service: ModelService
    model_type: str = "sd15"

    @property
    def pipeline(self) -> DiffusersPipeline:
        pipeline = self.service._pipeline
        assert isinstance(pipeline, DiffusersPipeline), self.service.status
        return pipeline

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in map(json.loads, self.log.getvalue().splitlines()) if e["event"] == name]

    def post(self, accept: str = "image/png", **fields: Any) -> Any:
        body = {"prompt": PROMPT, "seed": 42, "width": SIDE, "height": SIDE, **REQUEST_DEFAULTS[self.model_type], **fields}
        return self.client.post("/invocations", json=body, headers={"Accept": accept})

    def pixels(self, **fields: Any) -> bytes:
        response = self.post(**fields)
        assert response.status_code == 200, response.get_json()
        return pixels_of(response.data)


def pixels_of(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    assert image.size == (SIDE, SIDE)
    low, high = zip(*image.convert("RGB").getextrema(), strict=True)
    assert max(high) - min(low) > 16, "a flat image: the pipeline produced nothing (NaNs decode to black)"
    return image.convert("RGB").tobytes()


def start(settings: Settings, loader: Callable[[Settings, JsonLog], Any] = load_pipeline) -> RealServer:
    log = io.StringIO()
    app = create_app(settings, loader=loader, log=JsonLog(log))
    server = RealServer(app.test_client(), log, app.extensions["model_service"], settings.model_type)
    wait_for(lambda: server.client.get("/ping").status_code != 503, seconds=LOAD_SECONDS)
    return server


@pytest.fixture(scope="session")
def real_servers(
    tiny_models: Callable[[str], dict[str, Path]], kohya_loras: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str, str], RealServer]]:
    """`real_servers(model_type, kind)`: the app with production's loader on the tiny model, loaded once per session."""
    started: dict[tuple[str, str], RealServer] = {}
    offline = os.environ.get("HF_HUB_OFFLINE")

    def get(model_type: str, kind: str) -> RealServer:
        if (model_type, kind) not in started:
            folder = tmp_path_factory.mktemp(f"{model_type}-{kind}")
            server = start(mount(folder, tiny_models(model_type), kohya_loras(model_type), model_type, kind))
            ping = server.client.get("/ping")
            assert ping.status_code == 200, ping.get_json()
            started[model_type, kind] = server
        return started[model_type, kind]

    yield get
    # load_pipeline switches the Hub off for a mounted base model; the rest of the session gets it back.
    if offline is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = offline


@pytest.fixture
def load_real(tmp_path: Path, tiny_models: Any, kohya_loras: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., DiffusersPipeline]:
    """`load_real(model_type="sd15", lora=None, **settings)`: production's load_pipeline on the mounted tiny folder, Hub off."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def load(model_type: str = "sd15", lora: Path | None = None, **overrides: Any) -> DiffusersPipeline:
        settings = mount(tmp_path, tiny_models(model_type), lora or kohya_loras(model_type), model_type, "folder", **overrides)
        return load_pipeline(settings, JsonLog(io.StringIO()))

    return load


@pytest.fixture
def decode_spy(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], list[int]]:
    """`decode_spy(pipe)`: a list that gets an element at each call of the pipe's `vae.decode`."""

    def spy(pipe: Any) -> list[int]:
        calls: list[int] = []
        decode = pipe.vae.decode
        monkeypatch.setattr(pipe.vae, "decode", lambda *a, **k: calls.append(1) or decode(*a, **k))
        return calls

    return spy


@pytest.fixture
def pace_by(monkeypatch: pytest.MonkeyPatch) -> Callable[[DiffusersPipeline, Callable[[], float]], None]:
    """`pace_by(pipeline, clock)`: the pipeline times requests on `clock`, with nothing measured yet (undone after the test)."""

    def use(pipeline: DiffusersPipeline, clock: Callable[[], float]) -> None:
        monkeypatch.setattr(pipeline, "_pacer", Pacer(clock, lambda: None, lambda p: finish_seconds("sd15", p)))

    return use


# --- loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_real_diffusers_loads_every_kohya_module_text_encoders_included_fused_at_lora_scale(
    real_servers: Any, kohya_loras: Any, model_type: str, kind: str
) -> None:
    server = real_servers(model_type, kind)
    pipe = server.pipeline._pipe
    header, _ = read_header(kohya_loras(model_type))
    expected = modules_per_component(header)
    encoders = {"text_encoder", "text_encoder_2"} if model_type == "sdxl" else {"text_encoder"}
    assert set(expected) == {"unet", *encoders}
    per_component = lora_layers(pipe)
    assert {component: len(per_component[component]) for component in expected} == expected
    # Fused at LORA_SCALE (1.0): every layer merged, at that scale.
    layers = [layer for component in expected for _, layer in per_component[component]]
    assert all(layer.merged for layer in layers)
    # PEFT's scaling is the adapter weight times kohya's alpha / rank.
    assert {layer.scaling["trained"] * layer.r["trained"] / layer.lora_alpha["trained"] for layer in layers} == {1.0}
    assert server.pipeline.fused_scale == 1.0
    assert (pipe.unet.dtype, pipe.vae.dtype, pipe.device.type) == (torch.float32, torch.float32, "cpu")
    assert pipe.vae.use_slicing
    if model_type == "sd15":
        assert (pipe.safety_checker, pipe.feature_extractor) == (None, None)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert [e["kind"] for e in server.events("base_model")] == [kind]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_negative_control_without_renaming_a_text_encoder_matching_nothing_fails_with_a_clear_error(
    load_real: Any, model_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # transformers 5's CLIPTextModel has no `text_model`: kohya's names match nothing, and diffusers
    # 0.40 fails with a bare IndexError (get_peft_kwargs), which the server turns into this.
    monkeypatch.setattr(diffusers_pipeline, "prefixes_to_strip", lambda pipe: [])
    prefix = "lora_te_" if model_type == "sd15" else "lora_te1_"
    with pytest.raises(LoraFileError) as failed:
        load_real(model_type)
    assert str(failed.value).startswith(
        "pokemon.safetensors: 12 LoRA modules are for the text_encoder, but 0 of its layers took one (no layer for "
        f"{prefix}text_model_encoder_layers_0_mlp_fc1, {prefix}text_model_encoder_layers_0_mlp_fc2, "
        f"{prefix}text_model_encoder_layers_0_self_attn_k_proj, …)"
    ), failed.value
    assert f"serve it with the base model it was trained on (MODEL_TYPE={model_type}" in str(failed.value)
    assert isinstance(failed.value.__cause__, IndexError)


def test_real_diffusers_a_lora_module_that_matches_no_layer_fails_the_load_naming_the_modules(load_real: Any, kohya_loras: Any, tmp_path: Path) -> None:
    # diffusers only warns about some text-encoder names it cannot place; the server refuses to serve half a LoRA.
    from safetensors.torch import load_file, save_file

    lora = tmp_path / "renamed.safetensors"
    tensors = load_file(str(kohya_loras("sd15")))
    save_file({k.replace("_layers_1_", "_layers_7_") if k.startswith("lora_te_") else k: v for k, v in tensors.items()}, str(lora))
    with pytest.raises(LoraFileError) as failed:
        load_real("sd15", lora)
    assert str(failed.value).startswith(
        "pokemon.safetensors: 12 LoRA modules are for the text_encoder, but 6 of its layers took one (no layer for "
        "lora_te_text_model_encoder_layers_7_mlp_fc1, lora_te_text_model_encoder_layers_7_mlp_fc2, "
        "lora_te_text_model_encoder_layers_7_self_attn_k_proj, …); its module names do not match this base model's layers; "
        "serve it with the base model it was trained on (MODEL_TYPE=sd15"
    ), failed.value


def test_real_diffusers_sd15_ping_is_503_while_the_real_loader_runs_then_200(tmp_path: Path, tiny_models: Any, kohya_loras: Any) -> None:
    gate = threading.Event()

    def loader(settings: Settings, log: JsonLog) -> DiffusersPipeline:
        gate.wait(LOAD_SECONDS)
        return load_pipeline(settings, log)

    log = io.StringIO()
    app = create_app(mount(tmp_path, tiny_models("sd15"), kohya_loras("sd15"), "sd15", "folder"), loader=loader, log=JsonLog(log))
    server = RealServer(app.test_client(), log, app.extensions["model_service"])
    try:
        loading = server.client.get("/ping")
        assert (loading.status_code, loading.get_json()) == (503, {"status": "loading", "reason": None})
        assert server.post().status_code == 503
    finally:
        gate.set()
    wait_for(lambda: server.client.get("/ping").status_code != 503, seconds=LOAD_SECONDS)
    assert server.client.get("/ping").status_code == 200
    assert server.post().status_code == 200


def test_real_diffusers_a_corrupt_base_model_gives_ping_500_with_the_reason(tmp_path: Path, tiny_models: Any, kohya_loras: Any) -> None:
    tiny = tiny_models("sd15")
    channel = tmp_path / "base_model"
    channel.mkdir()
    data = tiny["single_file"].read_bytes()
    (channel / "base.safetensors").write_bytes(data[: len(data) // 2])  # an upload cut short
    server = start(mount(tmp_path, tiny, kohya_loras("sd15"), "sd15", "single_file", base_model_path=channel))
    ping = server.client.get("/ping")
    assert (ping.status_code, ping.get_json()["status"]) == (500, "failed")
    reason = ping.get_json()["reason"]
    # diffusers' own words, naming the file: enough to see which upload to check.
    assert reason.startswith("OSError: Unable to load weights from checkpoint file"), reason
    assert str(channel / "base.safetensors") in reason
    assert [e["reason"] for e in server.events("model_load_failed")] == [reason]


def test_real_diffusers_an_sdxl_lora_on_an_sd15_endpoint_gives_ping_500_naming_both(tmp_path: Path, tiny_models: Any, kohya_loras: Any) -> None:
    server = start(mount(tmp_path, tiny_models("sd15"), kohya_loras("sdxl"), "sd15", "folder"))
    ping = server.client.get("/ping")
    assert ping.status_code == 500
    assert "pokemon.safetensors: is an SDXL LoRA but MODEL_TYPE is sd15" in ping.get_json()["reason"]


def test_real_diffusers_device_cuda_without_a_gpu_fails_the_load_and_says_device_cpu(load_real: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only instance, whatever this machine has
    with pytest.raises(RuntimeError, match=r"no CUDA GPU is visible.*DEVICE=cpu"):
        load_real("sd15", device="cuda", dtype="float16")


def test_real_diffusers_sd15_runs_in_bfloat16_on_cpu(load_real: Any) -> None:
    pipeline = load_real("sd15", dtype="bfloat16")
    assert {p.dtype for p in pipeline._pipe.unet.parameters()} == {torch.bfloat16}
    [image] = pipeline.generate(params(width=SIDE, height=SIDE, num_inference_steps=STEPS, lora_scale=1.0), deadline=float("inf"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pixels_of(buffer.getvalue())


def test_real_diffusers_loads_with_dtype_not_the_deprecated_torch_dtype(load_real: Any, tiny_models: Any) -> None:
    import diffusers

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_real("sd15")
    assert not [w for w in caught if "torch_dtype" in str(w.message)]
    # Negative control: the deprecated argument does warn.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diffusers.StableDiffusionPipeline.from_pretrained(str(tiny_models("sd15")["folder"]), torch_dtype=torch.float32, local_files_only=True)
    assert [w for w in caught if "torch_dtype" in str(w.message)]


def test_real_diffusers_base_model_id_is_loaded_with_the_hub_allowed(
    tmp_path: Path, tiny_models: Any, kohya_loras: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A local folder stands for a Hub id (from_pretrained takes either), so nothing is downloaded.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (tmp_path / "empty-channel").mkdir()
    tiny = tiny_models("sd15")
    settings = mount(tmp_path, tiny, kohya_loras("sd15"), "sd15", "folder", base_model_path=tmp_path / "empty-channel", base_model_id=str(tiny["folder"]))
    log = io.StringIO()
    load_pipeline(settings, JsonLog(log))
    assert "HF_HUB_OFFLINE" not in os.environ
    assert [e["kind"] for e in map(json.loads, log.getvalue().splitlines()) if e["event"] == "base_model"] == ["hub"]


# --- generating -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_real_diffusers_single_file_gives_the_folders_images(real_servers: Any, model_type: str) -> None:
    as_json = real_servers(model_type, "single_file").post(accept="application/json")
    assert as_json.status_code == 200, as_json.get_json()
    assert pixels_of(base64.b64decode(as_json.get_json()["images"][0])) == real_servers(model_type, "folder").pixels()


def test_real_diffusers_sd15_folder_answers_json_png_and_jpeg(real_servers: Any) -> None:
    server = real_servers("sd15", "folder")
    as_json = server.post(accept="application/json", seed=7)
    assert as_json.status_code == 200, as_json.get_json()
    body = as_json.get_json()
    assert (body["seed"], body["parameters"]["width"], len(body["images"])) == (7, SIDE, 1)
    png = server.post(accept="image/png", seed=7)
    assert (png.status_code, png.mimetype, png.headers["X-Amzn-SageMaker-Custom-Attributes"]) == (200, "image/png", "seed=7")
    assert pixels_of(png.data) == pixels_of(base64.b64decode(body["images"][0]))
    jpeg = server.post(accept="image/jpeg", seed=7)
    assert (jpeg.status_code, jpeg.mimetype) == (200, "image/jpeg")
    assert Image.open(io.BytesIO(jpeg.data)).format == "JPEG"
    pixels_of(jpeg.data)


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_real_diffusers_every_allowed_scheduler_generates(real_servers: Any, model_type: str, scheduler: str) -> None:
    server = real_servers(model_type, "folder")
    server.pixels(scheduler=scheduler, guidance_scale=1.0, num_inference_steps=2)  # 2 steps: the fewest a multistep scheduler uses
    used = server.pipeline._pipe.scheduler
    spec = SCHEDULERS[scheduler]
    assert type(used).__name__ == (spec[0] if spec else DEFAULT_SCHEDULERS[model_type])
    for option, value in (spec[1] if spec else {}).items():
        assert used.config[option] == value


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_real_diffusers_lora_scale_0_differs_and_the_default_asked_explicitly_is_bit_identical(real_servers: Any, model_type: str) -> None:
    server = real_servers(model_type, "folder")
    default = server.pixels()
    assert server.pixels(lora_scale=1.0) == default
    assert server.pixels(lora_scale=0.0) != default


def test_real_diffusers_sd15_lora_scale_0_is_the_base_model_alone(real_servers: Any, tiny_models: Any) -> None:
    import diffusers

    server = real_servers("sd15", "folder")
    base = diffusers.StableDiffusionPipeline.from_pretrained(str(tiny_models("sd15")["folder"]), dtype=torch.float32, local_files_only=True)
    base.set_progress_bar_config(disable=True)
    call = {"prompt": PROMPT, "num_inference_steps": STEPS, "width": SIDE, "height": SIDE, "output_type": "np"}
    alone = base(**call, generator=[torch.Generator().manual_seed(42)]).images

    def served(scale: float) -> Any:
        server.pipeline.apply_lora_scale(scale)
        return server.pipeline._pipe(**call, generator=[torch.Generator().manual_seed(42)]).images

    at_0, at_1 = served(0.0), served(1.0)
    # fp32 rounding of unfuse/fuse only, against the LoRA's whole effect.
    assert abs(at_0 - alone).max() < 1e-3 < abs(at_1 - alone).max()


def lora_targeted_weights(pipe: Any) -> list[torch.Tensor]:
    """A copy of the base weights of every LoRA layer of every component."""
    return [layer.get_base_layer().weight.detach().clone() for layers in lora_layers(pipe).values() for _, layer in layers]


# SD 1.5 re-fuses in milliseconds, SDXL's 722 layers in about a second: the same code, fewer rounds.
SCALE_CHANGES = {"sd15": [0.3, 1.0, 2.0, 1.0, 1.5, 0.7, 0.0] * 5, "sdxl": [0.3, 2.0, 0.0]}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_real_diffusers_no_drift_after_many_scale_changes(real_servers: Any, model_type: str) -> None:
    server = real_servers(model_type, "folder")
    at_15, default = server.pixels(lora_scale=1.5), server.pixels()
    weights = lora_targeted_weights(server.pipeline._pipe)
    for scale in SCALE_CHANGES[model_type]:
        server.pipeline.apply_lora_scale(scale)
    assert server.pixels(lora_scale=1.5) == at_15
    assert server.pixels() == default
    assert all(torch.equal(w, saved) for w, saved in zip(lora_targeted_weights(server.pipeline._pipe), weights, strict=True))


def test_negative_control_real_peft_refusing_without_the_copy_drifts(load_real: Any) -> None:
    pipe = load_real("sd15")._pipe
    weights = [layer.get_base_layer().weight for _, layer in lora_layers(pipe)["unet"]]
    fused = [w.detach().clone() for w in weights]
    for scale in [0.3, 1.0, 2.0, 1.0] * 5:
        pipe.unfuse_lora()
        pipe.set_adapters(["trained"], adapter_weights=[scale])
        pipe.fuse_lora(adapter_names=["trained"])
    assert not all(torch.equal(w, saved) for w, saved in zip(weights, fused, strict=True))


# --- the deadline ---------------------------------------------------------------------------------


class Clock:
    """A clock that moves `step` seconds each time it is read: each denoising step reads it once."""

    def __init__(self, step: float) -> None:
        self.now, self.step = time.monotonic(), step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


# PNDM (SD 1.5's default scheduler, skip_prk_steps) makes one more U-Net call than num_inference_steps.
UNET_CALLS_FOR_4_STEPS = {"default": 5, "dpmpp_2m": 4}


@pytest.mark.parametrize("scheduler", ["default", "dpmpp_2m"])
def test_real_diffusers_sd15_a_request_stopped_at_its_deadline_is_not_decoded_and_leaves_nothing_behind(
    real_servers: Any, scheduler: str, decode_spy: Any, pace_by: Any
) -> None:
    pipeline = real_servers("sd15", "folder").pipeline
    request = params(width=SIDE, height=SIDE, num_inference_steps=4, lora_scale=1.0, scheduler=scheduler, num_images=2)
    reference = [image.tobytes() for image in pipeline.generate(request, deadline=float("inf"))]
    decodes = decode_spy(pipeline._pipe)
    # 10 s a step: after the second, 2 or 3 more steps would end at +50 s or +60 s, past the deadline at +35 s.
    clock = Clock(10.0)
    pace_by(pipeline, clock)  # no estimate: denoising starts, and is stopped
    start = clock.now
    with pytest.raises(GenerationTimeout, match=f"stopped after 2 of {UNET_CALLS_FOR_4_STEPS[scheduler]} denoising steps"):
        pipeline.generate(request, deadline=start + 35.0)
    assert decodes == []
    pace_by(pipeline, time.monotonic)
    assert [image.tobytes() for image in pipeline.generate(request, deadline=float("inf"))] == reference
    assert decodes == [1]  # the next request is decoded (both images in one call, sliced inside it)


def test_negative_control_real_diffusers_interrupting_instead_still_decodes(real_servers: Any, decode_spy: Any) -> None:
    # Setting diffusers' `_interrupt` skips the remaining steps but not the decode: hence the raise.
    pipe = real_servers("sd15", "folder").pipeline._pipe
    decodes = decode_spy(pipe)
    steps: list[int] = []

    def interrupt(p: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        steps.append(step)
        p._interrupt = True
        return callback_kwargs

    pipe(prompt=PROMPT, num_inference_steps=4, width=SIDE, height=SIDE, callback_on_step_end=interrupt)
    assert (steps, decodes) == ([0], [1])


def test_real_diffusers_sd15_pndm_is_paced_per_unet_call_and_stopped_before_the_extra_call(
    real_servers: Any, pace_by: Any
) -> None:
    pipeline = real_servers("sd15", "folder").pipeline
    request = params(width=SIDE, height=SIDE, num_inference_steps=4, lora_scale=1.0, guidance_scale=1.0)
    assert pipeline.unet_calls(request) == 5
    clock = Clock(10.0)
    pace_by(pipeline, clock)
    pipeline.generate(request, deadline=float("inf"))
    assert pipeline.estimate_seconds(request) == pytest.approx(5 * 10.0)
    # At 10 s a call, 4 calls would end by the deadline and 5 not: stopped at the second, not run past it.
    pace_by(pipeline, clock)
    with pytest.raises(GenerationTimeout, match="stopped after 2 of 5 denoising steps"):
        pipeline.generate(request, deadline=clock.now + 55.0)


def test_real_diffusers_sd15_the_decode_is_timed_from_the_last_step(real_servers: Any, pace_by: Any) -> None:
    pipeline = real_servers("sd15", "folder").pipeline
    request = params(width=SIDE, height=SIDE, num_inference_steps=2, lora_scale=1.0, num_images=3)
    # The clock moves 10 s at each reading: the start, the steps' readings, then one after the call returns.
    pace_by(pipeline, Clock(10.0))
    for _ in range(2):  # the first decode of a size is warm-up
        pipeline.generate(request, deadline=float("inf"))
    assert pipeline.decode_excess(request) == pytest.approx(10.0 - finish_seconds("sd15", request))


def test_real_diffusers_sd15_a_request_past_its_deadline_answers_504_without_decoding(
    real_servers: Any, decode_spy: Any, pace_by: Any
) -> None:
    server = real_servers("sd15", "folder")
    decodes = decode_spy(server.pipeline._pipe)
    # Each step takes a minute on this clock: the first one already ends past the 50 s budget. No
    # pace or decode measured for this size: denoising starts, and the step callback stops it.
    pace_by(server.pipeline, Clock(60.0))
    response = server.post(accept="application/json", num_inference_steps=4, num_images=3)
    assert response.status_code == 504, response.get_json()
    assert "stopped after 1 of 5 denoising steps" in response.get_json()["error"]
    assert decodes == []

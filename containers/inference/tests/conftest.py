"""Shared test material: synthetic safetensors files, a fake pipeline, and an app wired to it.

Only these tests swap the fake in: `create_app(loader=...)` is the single injection point, and
production (`create_app()` under gunicorn) always loads the real diffusers pipeline.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import pytest
from PIL import Image

from lora_server.app import create_app
from lora_server.logs import JsonLog
from lora_server.settings import Settings
from lora_server.validation import GenerationParams


def pytest_configure(config: pytest.Config) -> None:
    # The test machines' few cores are shared: torch's default of one thread per core then contends
    # with the other processes and runs several times slower than one thread (a tiny SDXL generation
    # on 2 shared cores: 0.4 s with one thread, 2 to 10 s with two).
    import torch

    torch.set_num_threads(1)
    # diffusers 0.40's schedulers call np.array(tensor, copy=False), which torch answers with a
    # DeprecationWarning under numpy 2 on every scheduler built: not the server's to fix.
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def write_safetensors(path: Path, shapes: dict[str, list[int]], metadata: dict[str, str] | None = None) -> Path:
    """A valid safetensors file: header, then zero-filled fp16 data for each tensor."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


# The in_features a module's lora_down takes where the model fixes it: the text encoders' hidden
# size (SD 1.5 and SDXL's first 768, SDXL's second 1280) and the cross-attention context (768 for
# SD 1.5, 2048 for SDXL); 8 elsewhere, to keep the files small.
TE_WIDTHS = {"lora_te_": 768, "lora_te1_": 768, "lora_te2_": 1280}


def in_features(module: str) -> int:
    for prefix, width in TE_WIDTHS.items():
        if module.startswith(prefix) and ("_self_attn_" in module or module.endswith("_mlp_fc1")):
            return width
    if module.endswith(("_attn2_to_k", "_attn2_to_v")):
        return 2048 if module.startswith(("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")) else 768
    return 8


def lora_shapes(modules: list[str], rank: int = 4, width: int | None = None) -> dict[str, list[int]]:
    """kohya's tensors for `modules`; `width` overrides every in_features (to make a foreign model's LoRA)."""
    shapes: dict[str, list[int]] = {}
    for module in modules:
        shapes[f"{module}.lora_down.weight"] = [rank, width or in_features(module)]
        shapes[f"{module}.lora_up.weight"] = [8, rank]
        shapes[f"{module}.alpha"] = []
    return shapes


# Module names as kohya-ss sd-scripts (networks/lora.py) writes them for each family.
SD15_MODULES = [
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te_text_model_encoder_layers_0_mlp_fc1",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "lora_unet_mid_block_attentions_0_proj_in",
    "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2",
]
SDXL_MODULES = [
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te2_text_model_encoder_layers_31_mlp_fc2",
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k",
    "lora_unet_middle_block_1_transformer_blocks_9_attn2_to_v",
    "lora_unet_output_blocks_2_1_proj_out",
]


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    base = Settings(
        model_type="sd15",
        model_dir=tmp_path / "model",
        base_model_path=tmp_path / "base_model",
        base_model_id=None,
        lora_scale=1.0,
        request_timeout_seconds=50.0,
        log_prompts=False,
        configs_dir=tmp_path / "configs",
    )
    return replace(base, **overrides)


@dataclass
class FakePipeline:
    """Stands in for the loaded diffusers pipeline: makes plain images, or misbehaves on request."""

    failures: list[Exception] = field(default_factory=list)
    hold: threading.Event | None = None
    noise: bool = False
    calls: list[GenerationParams] = field(default_factory=list)
    deadlines: list[float] = field(default_factory=list)
    running: int = 0
    max_running: int = 0

    def generate(self, params: GenerationParams, deadline: float) -> list[Image.Image]:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            self.calls.append(params)
            self.deadlines.append(deadline)
            if self.hold is not None:
                self.hold.wait(5)
            if self.failures:
                raise self.failures.pop(0)
            return [self._image(params, i) for i in range(params.num_images)]
        finally:
            self.running -= 1

    def _image(self, params: GenerationParams, index: int) -> Image.Image:
        size = (params.width, params.height)
        if self.noise:
            # Incompressible pixels, so the encoded size is known: about 3 bytes a pixel.
            import os

            return Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
        return Image.new("RGB", size, ((params.seed + index) % 256, 64, 128))


@dataclass
class Server:
    client: Any
    pipeline: FakePipeline
    log: io.StringIO
    release: threading.Event
    app_service: Any = None

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in map(json.loads, self.log.getvalue().splitlines()) if e["event"] == name]

    def invoke(self, body: Any = None, accept: str | None = None, **kwargs: Any) -> Any:
        headers = {"Accept": accept} if accept else {}
        data = kwargs.pop("data", None)
        if data is None:
            data = json.dumps({"prompt": "Green pokemon with menacing face"} if body is None else body)
        return self.client.post(
            "/invocations", data=data, headers=headers, content_type=kwargs.pop("content_type", "application/json"), **kwargs
        )


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Builds the real app with a fake loader; `loaded=False` keeps it loading until `release` is set."""
    releases: list[threading.Event] = []

    def make(pipeline: FakePipeline | None = None, loaded: bool = True, load_error: Exception | None = None, **settings: Any) -> Server:
        pipeline = pipeline or FakePipeline()
        release = threading.Event()
        releases.append(release)
        if loaded:
            release.set()
        log = io.StringIO()

        def loader(_settings: Settings, _log: JsonLog) -> FakePipeline:
            release.wait(10)
            if load_error is not None:
                raise load_error
            return pipeline

        app = create_app(settings_for(tmp_path, **settings), loader=loader, log=JsonLog(log))
        server = Server(app.test_client(), pipeline, log, release, app.extensions["model_service"])
        if loaded:
            wait_for(lambda: server.client.get("/ping").status_code != 503)
        return server

    yield make
    for release in releases:
        release.set()


# --- the real diffusers: tiny models and kohya-ss LoRAs, made once per session ------------------------

KOHYA_FIXTURE = Path(__file__).with_name("kohya_lora_fixture.py")


def skip_or_fail(message: str) -> NoReturn:
    """A test the runner cannot give what it needs: a failure in CI (CI=1 or true), where every test must run; else a skip."""
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


REPO = Path(__file__).resolve().parents[3]
TSX = REPO / "node_modules" / ".bin" / "tsx"


def run_tsx(script: str, scratch: Path, *args: str) -> dict[str, Any]:
    """Runs a TypeScript `script` (written to `scratch`) with the repository's tsx, and returns the JSON it prints."""
    if not TSX.is_file() or shutil.which("node") is None:
        skip_or_fail(f"{TSX} or node is missing: run npm ci at the repository's root")
    path = scratch / "script.ts"
    path.write_text(script)
    run = subprocess.run([str(TSX), str(path), *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def required_env(name: str, what: str) -> str:
    """An environment variable the test runner sets; its absence fails under CI=true, else skips."""
    value = os.environ.get(name)
    if value:
        return value
    skip_or_fail(f"{name} is not set: it must name {what} (the test runner sets it; set it when running pytest by hand)")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Path]]:
    """`tiny_models(model_type)`: the tiny pipeline's `folder`, `single_file` and `configs` (CONFIGS_DIR)."""
    built: dict[str, dict[str, Path]] = {}

    def get(model_type: str) -> dict[str, Path]:
        if model_type not in built:
            from .tiny_pipelines import save_all

            built[model_type] = save_all(model_type, tmp_path_factory.mktemp(f"tiny-{model_type}"))
        return built[model_type]

    return get


@pytest.fixture(scope="session")
def kohya_loras(tiny_models: Callable[[str], dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`kohya_loras(model_type)`: a LoRA for the tiny pipeline, written by kohya-ss's own code (kohya_lora_fixture.py).

    Kept in LORA_TEST_CACHE under a hash of what it is made from (the script, the pipeline's configs,
    sd-scripts' networks/lora.py and .pinned, the training venv's transformers), so a later run reuses it; without LORA_TEST_CACHE (outside CI) it is made in a temporary folder.
    """
    python = required_env("LORA_TEST_PYTHON_TRAINING", "the training venv's python")
    sd_scripts = required_env("LORA_TEST_SD_SCRIPTS", "the kohya-ss sd-scripts folder")
    cache_env = os.environ.get("LORA_TEST_CACHE") or (required_env("LORA_TEST_CACHE", "a scratch folder") if os.environ.get("CI", "").lower() in ("1", "true") else "")
    cache = Path(cache_env) / "inference-kohya-loras" if cache_env else tmp_path_factory.mktemp("kohya-loras")
    made: dict[str, Path] = {}
    trainer_identity = kohya_trainer_identity(python, Path(sd_scripts))

    def get(model_type: str) -> Path:
        if model_type in made:
            return made[model_type]
        folder = tiny_models(model_type)["folder"]
        digest = hashlib.sha256(KOHYA_FIXTURE.read_bytes())
        for config in sorted(folder.glob("*/config.json")):
            digest.update(config.read_bytes())
        digest.update(trainer_identity)
        output = cache / f"{model_type}-{digest.hexdigest()[:16]}.safetensors"
        if not output.is_file():
            partial = output.with_suffix(".partial.safetensors")
            run = subprocess.run(
                [python, str(KOHYA_FIXTURE), str(folder), model_type, str(partial), "--sd-scripts", sd_scripts],
                capture_output=True, text=True, timeout=600, check=False,
            )
            assert run.returncode == 0, f"kohya_lora_fixture.py failed:\n{run.stderr[-3000:]}"
            partial.replace(output)
        made[model_type] = output
        return output

    return get


def kohya_trainer_identity(python: str, sd_scripts: Path) -> bytes:
    """What in the training venv decides the LoRA kohya writes: sd-scripts' LoRA code and pin, and transformers' version."""
    parts = [(sd_scripts / name).read_bytes() if (sd_scripts / name).is_file() else b"-" for name in ("networks/lora.py", ".pinned")]
    version = subprocess.run(
        [python, "-c", "from importlib.metadata import version; print(version('transformers'))"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()
    return b"\0".join([*parts, version.encode()])

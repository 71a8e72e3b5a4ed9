"""Shared mode on the real diffusers 0.40 and PEFT 0.21, on CPU, with tiny models and LoRAs written by kohya-ss.

Tolerance: none. On the CPU in float32 a LoRA set's weights are bit-identical to diffusers' own
fuse of the same adapters at the same scales, so images are compared byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from lora_server.diffusers_pipeline import DiffusersPipeline, load_base_pipeline, load_kohya_lora, load_pipeline
from lora_server.logs import JsonLog
from lora_server.lora_file import LoraFileError
from lora_server.metrics import Metrics
from lora_server.service import GenerationTimeout
from lora_server.shared_pipeline import SharedDiffusersPipeline, convert_lora, load_shared_pipeline
from lora_server.shared_types import LocalLora, LoraVersion

from .conftest import KOHYA_FIXTURE, kohya_trainer_identity, required_env, settings_for
from .test_diffusers_pipeline import params
from .test_real_diffusers import REQUEST_DEFAULTS, SIDE, Clock, mount, tiny_sides  # noqa: F401 - autouse fixture: the tiny models' 64 px

MODEL_TYPES = ["sd15", "sdxl"]
# Beside conftest's LoRA (seed 0): more kohya-ss LoRAs, other seeds; SD 1.5's third has another rank and alpha.
EXTRA_LORAS: dict[str, list[list[str]]] = {
    "sd15": [["--seed", "1"], ["--seed", "2", "--rank", "8", "--alpha", "4"]],
    "sdxl": [["--seed", "1"]],
}
MB = 1024 * 1024


@pytest.fixture(scope="session")
def lora_files(tiny_models: Any, kohya_loras: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[Path]]:
    """`lora_files(model_type)`: conftest's kohya-ss LoRA, then EXTRA_LORAS's, cached as conftest caches its own."""
    python = required_env("LORA_TEST_PYTHON_TRAINING", "the training venv's python")
    sd_scripts = required_env("LORA_TEST_SD_SCRIPTS", "the kohya-ss sd-scripts folder")
    cache = Path(required_env("LORA_TEST_CACHE", "a scratch folder")) / "inference-kohya-loras"
    identity = kohya_trainer_identity(python, Path(sd_scripts))
    made: dict[str, list[Path]] = {}

    def get(model_type: str) -> list[Path]:
        if model_type in made:
            return made[model_type]
        folder = tiny_models(model_type)["folder"]
        files = [kohya_loras(model_type)]
        for options in EXTRA_LORAS[model_type]:
            digest = hashlib.sha256(KOHYA_FIXTURE.read_bytes() + identity + " ".join(options).encode())
            for config in sorted(folder.glob("*/config.json")):
                digest.update(config.read_bytes())
            output = cache / f"{model_type}-extra-{digest.hexdigest()[:16]}.safetensors"
            if not output.is_file():
                partial = output.with_suffix(".partial.safetensors")
                run = subprocess.run(
                    [python, str(KOHYA_FIXTURE), str(folder), model_type, str(partial), "--sd-scripts", sd_scripts, *options],
                    capture_output=True, text=True, timeout=600, check=False,
                )
                assert run.returncode == 0, f"kohya_lora_fixture.py failed:\n{run.stderr[-3000:]}"
                partial.replace(output)
            files.append(output)
        made[model_type] = files
        return files

    return get


def local(path: Path, name: str, scale: float = 1.0, model_type: str = "sd15") -> LocalLora:
    version = LoraVersion(
        name=name, version=1, status="ready", model_type=model_type, base_model="tiny", s3_uri=f"s3://bucket/loras/{name}/1.safetensors",
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(), size_bytes=path.stat().st_size,
    )
    return LocalLora(version=version, path=path, scale=scale)


class Recorded:
    """A Metrics that keeps its EMF lines; `take()` flushes and returns this request's values."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.metrics = Metrics("Test", {"Endpoint": "tiny"}, emit=self.lines.append)

    def take(self) -> dict[str, Any]:
        self.metrics.flush()
        if not self.lines:
            return {}
        line = json.loads(self.lines.pop())
        return {k: v for k, v in line.items() if k not in ("_aws", "Endpoint")}


def request(model_type: str, **fields: Any) -> Any:
    return params(width=SIDE, height=SIDE, seed=42, **{**REQUEST_DEFAULTS[model_type], **fields})


def image(pipeline: Any, model_type: str, *loras: LocalLora) -> bytes:
    if isinstance(pipeline, SharedDiffusersPipeline):
        [result] = pipeline.generate(request(model_type), float("inf"), list(loras))
    else:
        [result] = pipeline.generate(request(model_type, lora_scale=pipeline.fused_scale), float("inf"))
    return result.tobytes()


def state(pipe: Any) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the LoRA-loadable components, copied; of a PEFT layer (dedicated), its base layer's."""
    components = ("unet", "text_encoder", "text_encoder_2")
    return {
        f"{c}.{k.replace('.base_layer.', '.')}": v.detach().clone()
        for c in components
        if getattr(pipe, c, None) is not None
        for k, v in getattr(pipe, c).state_dict().items()
        if ".lora_A." not in k and ".lora_B." not in k
    }


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def structure(pipe: Any) -> list[tuple[str, str]]:
    return [(f"{c}.{path}", type(m).__name__) for c in ("unet", "text_encoder", "text_encoder_2") if getattr(pipe, c, None) is not None for path, m in getattr(pipe, c).named_modules()]


@pytest.fixture
def load_shared(tmp_path: Path, tiny_models: Any, kohya_loras: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[SharedDiffusersPipeline, Recorded, io.StringIO]]:
    """`load_shared(model_type, **settings)`: production's load_shared_pipeline on the tiny folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def load(model_type: str = "sd15", **overrides: Any) -> tuple[SharedDiffusersPipeline, Recorded, io.StringIO]:
        settings = mount(tmp_path / "shared", tiny_models(model_type), kohya_loras(model_type), model_type, "folder", serving_mode="shared", **overrides)
        recorded, log = Recorded(), io.StringIO()
        return load_shared_pipeline(settings, JsonLog(log), recorded.metrics), recorded, log

    return load


@pytest.fixture(scope="session")
def dedicated_images(tiny_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, Path, float], tuple[bytes, dict[str, torch.Tensor]]]]:
    """`dedicated_images(model_type, lora, scale)`: the dedicated server's image and weights, that LoRA fused at LORA_SCALE=scale."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def get(model_type: str, lora: Path, scale: float) -> tuple[bytes, dict[str, torch.Tensor]]:
        folder = tmp_path_factory.mktemp(f"dedicated-{model_type}")
        pipeline = load_pipeline(mount(folder, tiny_models(model_type), lora, model_type, "folder", lora_scale=scale), JsonLog(io.StringIO()))
        assert isinstance(pipeline, DiffusersPipeline)
        return image(pipeline, model_type), state(pipeline._pipe)

    yield get
    monkeypatch.undo()


# --- serving ----------------------------------------------------------------------------------------


SCALES = {"sd15": [1.0, 0.8, 1.0], "sdxl": [1.0, 0.7]}
# The LoRAs checked against a dedicated server: SDXL's dedicated load fuses 746 modules through PEFT (7 s on
# this CPU), so only its first; the others are checked against their own first image (served alone, after base).
AGAINST_DEDICATED = {"sd15": 3, "sdxl": 1}
ORDER = {"sd15": [0, 1, 2, 1, 0, 2, 0], "sdxl": [0, 1, 0, 1, 0]}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_loras_served_alternately_each_give_the_dedicated_servers_image_and_base_only_the_base_image(
    load_shared: Any, lora_files: Any, dedicated_images: Any, model_type: str
) -> None:
    shared, _, _ = load_shared(model_type)
    pristine, base = state(shared._pipe), image(shared, model_type)
    loras = [local(path, f"lora{i}", scale, model_type) for i, (path, scale) in enumerate(zip(lora_files(model_type), SCALES[model_type], strict=True))]
    expected = {lora.key: dedicated_images(model_type, lora.path, lora.scale) for lora in loras[: AGAINST_DEDICATED[model_type]]}
    for lora in (loras[i] for i in ORDER[model_type]):
        served = image(shared, model_type, lora)
        expected.setdefault(lora.key, (served, {}))
        assert served == expected[lora.key][0], lora.key
    assert len({pixels for pixels, _ in expected.values()} | {base}) == len(loras) + 1
    # The weights of the last one (the first LoRA), every parameter of every component: exactly the dedicated server's.
    assert same(state(shared._pipe), expected[loras[0].key][1])
    assert image(shared, model_type) == base
    assert same(state(shared._pipe), pristine)


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")  # the reference loads two adapters
def test_two_loras_combined_differ_from_each_alone_and_are_diffusers_own_fuse_of_both(
    load_shared: Any, lora_files: Any, tiny_models: Any, tmp_path: Path
) -> None:
    shared, _, _ = load_shared("sd15")
    first, second, _ = lora_files("sd15")
    a, b = local(first, "a", 1.0), local(second, "b", 0.6)
    alone = {image(shared, "sd15", a), image(shared, "sd15", b)}
    combined = image(shared, "sd15", a, b)
    assert combined not in alone
    # The expectation: diffusers loads both as adapters and fuses them at these scales (PEFT merges one after the other).
    settings = settings_for(tmp_path, model_type="sd15", base_model_path=tiny_models("sd15")["folder"], configs_dir=tiny_models("sd15")["configs"], device="cpu", dtype="float32")
    reference = load_base_pipeline(settings, JsonLog(io.StringIO()))
    for name, path in (("a", first), ("b", second)):
        load_kohya_lora(reference, path, "sd15", JsonLog(io.StringIO()), adapter_name=name)
    reference.set_adapters(["a", "b"], adapter_weights=[1.0, 0.6])
    reference.fuse_lora(adapter_names=["a", "b"])
    reference.unload_lora_weights()
    assert same(state(shared._pipe), state(reference))


def test_no_drift_after_many_switches_and_negative_control_subtracting_instead_of_restoring_drifts(
    load_shared: Any, lora_files: Any
) -> None:
    shared, _, _ = load_shared("sd15")
    a, b, c = (local(path, f"l{i}") for i, path in enumerate(lora_files("sd15")))
    sets = [[a], [b, c], [c], [a, b], [], [b]]
    first = []
    for loras in sets:
        image(shared, "sd15", *loras)
        first.append(state(shared._pipe))
    for _ in range(5):
        for i, loras in enumerate(sets):
            shared.apply(loras)
            assert same(state(shared._pipe), first[i])
    # Negative control: switching a -> b -> a by subtracting one LoRA's delta and adding the other's, in place.
    shared.apply([a])
    weights_a = state(shared._pipe)
    deltas = {lora.key: shared._on_device(lora, [lora]) for lora in (a, b)}
    for old, new in [(a, b), (b, a)] * 3:
        for key, part in deltas[new.key].layers.items():
            weight = shared._layer(*key).weight
            with torch.no_grad():
                weight -= deltas[old.key].layers[key].delta(1.0)
                weight += part.delta(1.0)
    assert not same(state(shared._pipe), weights_a)
    shared.switch._current = None  # this test wrote behind the switch's back: make the next switch rewrite every layer


def test_the_lru_tiers_evict_by_bytes_and_count_hits_per_tier(load_shared: Any, lora_files: Any, tmp_path: Path) -> None:
    first, second, _ = lora_files("sd15")
    third = tmp_path / "copy-of-first.safetensors"  # another name, the same bytes: the same size
    third.write_bytes(first.read_bytes())
    probe, _, _ = load_shared("sd15")
    size = probe._convert(first).nbytes
    # Room for 2 LoRAs on the host, for 1 on the GPU (the same size: rank 4).
    shared, recorded, log = load_shared("sd15", lora_cache_host_bytes=2 * size + 100, lora_cache_gpu_bytes=size + 100)
    a, b, c = local(first, "a"), local(second, "b"), local(third, "c")

    def serve(lora: LocalLora) -> dict[str, Any]:
        image(shared, "sd15", lora)
        return recorded.take()

    loaded = serve(a)
    assert (loaded["LoraHitGpu"], loaded["LoraHitHost"]) == (0, 0) and loaded["LoraLoadMs"] >= 0 and "LoraSwitchMs" in loaded
    assert serve(a) == {"LoraHitGpu": 1}  # the same set: nothing switched, nothing loaded
    serve(b)
    serve(c)
    assert (shared.gpu_tier.keys(), shared.host_tier.keys()) == (["c@1"], ["b@1", "c@1"])
    assert (shared.gpu_tier.used_bytes, shared.host_tier.used_bytes) == (size, 2 * size)
    from_host = serve(b)
    assert (from_host["LoraHitGpu"], from_host["LoraHitHost"]) == (0, 1)
    conversions = len([line for line in log.getvalue().splitlines() if '"lora_names_adapted"' in line])
    from_disk = serve(a)  # evicted from both tiers: read from its file again
    assert (from_disk["LoraHitGpu"], from_disk["LoraHitHost"]) == (0, 0)
    assert len([line for line in log.getvalue().splitlines() if '"lora_names_adapted"' in line]) == conversions + 1
    assert shared.host_tier.keys() == ["b@1", "a@1"]


def test_the_loras_of_one_request_are_pinned_a_tier_too_small_for_them_is_400_before_any_weight_changes(
    load_shared: Any, lora_files: Any, tmp_path: Path
) -> None:
    first, second, _ = lora_files("sd15")
    third = tmp_path / "copy-of-first.safetensors"  # another name, the same bytes: the same size
    third.write_bytes(first.read_bytes())
    probe, _, _ = load_shared("sd15")
    size = probe._convert(first).nbytes
    # Room for 2 LoRAs (rank 4) on the GPU tier: the third of one request may not evict the request's first two.
    shared, _, _ = load_shared("sd15", lora_cache_gpu_bytes=2 * size + 100)
    a, b, c = local(first, "a"), local(second, "b"), local(third, "c")
    with_a = image(shared, "sd15", a)
    before = state(shared._pipe)
    from lora_server.lora_cache import TooLarge

    # The request's own LoRAs can never fit this tier: TooLarge (400), not a CacheError (503) to retry forever.
    with pytest.raises(TooLarge, match=rf"LORA_CACHE_GPU_BYTES GPU LoRA cache: this request's LoRAs a@1, b@1, c@1 need {3 * size} bytes "
                       rf"together, more than its {2 * size + 100} bytes"):
        shared.generate(request("sd15"), float("inf"), [a, b, c])
    assert same(state(shared._pipe), before) and shared.switch.current == (("a@1", 1.0),)
    assert shared.gpu_tier.keys() == ["a@1", "b@1"]
    # Unpinned once the request has failed: the next request's LoRA evicts the least recently used.
    assert image(shared, "sd15", c) == with_a  # c is a's file under another name
    assert shared.gpu_tier.keys() == ["b@1", "c@1"]


# --- conversion -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_a_conversion_leaves_no_peft_layer_or_config_and_the_weights_unchanged(load_shared: Any, lora_files: Any, model_type: str) -> None:
    shared, _, _ = load_shared(model_type)
    pipe = shared._pipe
    before, modules = state(pipe), structure(pipe)
    weights = convert_lora(pipe, lora_files(model_type)[0], model_type, JsonLog(io.StringIO()))
    assert same(state(pipe), before) and structure(pipe) == modules
    for name in ("unet", "text_encoder", "text_encoder_2"):
        component = getattr(pipe, name, None)
        if component is not None:
            assert not getattr(component, "peft_config", None) and not getattr(component, "_hf_peft_config_loaded", False), name
    # kohya's alpha 2 over rank 4, each module of the file a layer of its component.
    assert {(part.alpha, part.rank) for part in weights.layers.values()} == {(2.0, 4)}
    components = {component for component, _ in weights.layers}
    assert components == ({"unet", "text_encoder", "text_encoder_2"} if model_type == "sdxl" else {"unet", "text_encoder"})


def test_an_sdxl_lora_on_an_sd15_endpoint_is_refused_before_any_weight_changes(load_shared: Any, lora_files: Any) -> None:
    shared, _, _ = load_shared("sd15")
    a = local(lora_files("sd15")[0], "a")
    with_a = image(shared, "sd15", a)
    before, modules = state(shared._pipe), structure(shared._pipe)
    wrong = local(lora_files("sdxl")[0], "xl", model_type="sdxl")
    with pytest.raises(LoraFileError, match="is an SDXL LoRA but MODEL_TYPE is sd15"):
        shared.generate(request("sd15"), float("inf"), [a, wrong])
    assert same(state(shared._pipe), before) and structure(shared._pipe) == modules
    assert (shared.switch.current, shared.host_tier.keys()) == ((("a@1", 1.0),), ["a@1"])
    assert image(shared, "sd15", a) == with_a


def test_a_lora_whose_modules_match_no_layer_is_refused_and_its_peft_layers_removed(load_shared: Any, lora_files: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    shared, _, _ = load_shared("sd15")
    renamed = tmp_path / "renamed.safetensors"
    tensors = load_file(str(lora_files("sd15")[0]))
    save_file({k.replace("_layers_1_", "_layers_7_") if k.startswith("lora_te_") else k: v for k, v in tensors.items()}, str(renamed))
    before, modules = state(shared._pipe), structure(shared._pipe)
    with pytest.raises(LoraFileError, match="12 LoRA modules are for the text_encoder, but 6 of its layers took one"):
        shared.generate(request("sd15"), float("inf"), [local(renamed, "renamed")])
    assert same(state(shared._pipe), before) and structure(shared._pipe) == modules


def test_a_diffusers_load_error_is_a_lora_file_error_naming_that_lora_and_remembered(
    load_shared: Any, lora_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lora_server import shared_pipeline

    shared, _, _ = load_shared("sd15")
    first, second, third = lora_files("sd15")
    a, b, c = local(first, "a"), local(second, "b"), local(third, "c")
    with_a = image(shared, "sd15", a)
    before, modules = state(shared._pipe), structure(shared._pipe)
    loads: list[Path] = []

    def size_mismatch(pipe: Any, path: Path, *args: Any, **kwargs: Any) -> None:
        loads.append(path)
        raise RuntimeError("Error(s) in loading state_dict for Linear: size mismatch for lora_A")

    monkeypatch.setattr(shared_pipeline, "load_kohya_lora", size_mismatch)
    with pytest.raises(shared_pipeline.LoraConversionError, match="diffusers could not load it as a LoRA: RuntimeError: .*size mismatch") as raised:
        shared.generate(request("sd15"), float("inf"), [a, b])
    assert raised.value.lora_key == "b@1" and loads == [second]  # named alone; a came from its tier
    with pytest.raises(shared_pipeline.LoraConversionError, match="remembered from an earlier attempt"):
        shared.generate(request("sd15"), float("inf"), [b])
    assert loads == [second]  # the same bytes are not loaded again
    monkeypatch.setattr(shared_pipeline, "FAILED_CONVERSIONS", 1)
    with pytest.raises(shared_pipeline.LoraConversionError):
        shared.generate(request("sd15"), float("inf"), [c])  # the control: another file is tried
    assert loads == [second, third] and list(shared._failed) == [c.version.sha256]  # bounded: b's entry went
    assert same(state(shared._pipe), before) and structure(shared._pipe) == modules
    assert image(shared, "sd15", a) == with_a


def test_peft_layers_left_after_a_conversion_make_the_server_unhealthy(load_shared: Any, lora_files: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lora_server import shared_pipeline

    shared, _, log = load_shared("sd15")
    assert shared.unhealthy is None
    a = local(lora_files("sd15")[0], "a")

    def left_behind(pipe: Any) -> None:
        raise shared_pipeline.ModelNotPlain("unet: unload_lora_weights left PEFT layers (['x']) or a peft_config behind")

    monkeypatch.setattr(shared_pipeline, "assert_plain", left_behind)
    with pytest.raises(shared_pipeline.ModelNotPlain):
        shared.generate(request("sd15"), float("inf"), [a])
    assert shared.unhealthy is not None and "left PEFT layers" in shared.unhealthy
    assert '"model_unhealthy"' in log.getvalue()


# --- the deadline -----------------------------------------------------------------------------------


def test_a_request_stopped_at_its_deadline_leaves_the_next_one_served_as_before(load_shared: Any, lora_files: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lora_server.pacing import Pacer
    from lora_server.budget import finish_seconds

    shared, _, _ = load_shared("sd15")
    a, b = (local(path, name) for path, name in zip(lora_files("sd15"), "ab", strict=False))
    with_a = image(shared, "sd15", a)
    clock = Clock(60.0)  # each reading a minute later: the first step already ends past the deadline
    monkeypatch.setattr(shared, "_pacer", Pacer(clock, lambda: None, lambda p: finish_seconds("sd15", p)))
    with pytest.raises(GenerationTimeout, match="stopped after 1 of"):
        shared.generate(request("sd15"), clock.now + 30, [b])
    monkeypatch.undo()
    assert image(shared, "sd15", a) == with_a

"""FLUX.1 on the real diffusers 0.40, transformers 5.17 and PEFT 0.21, on CPU, with a tiny FLUX-shaped pipeline.

The tiny pipeline (tiny_flux.py) keeps FLUX.1's transformer width, which diffusers' kohya conversion
and single-file loader assume; its LoRA is written by sd-scripts' own `networks/lora_flux.py` on a tiny
`library.flux_models.Flux` of the same sizes, and its BFL transformer file by sd-scripts' own converter
(kohya_flux_fixture.py, run with the training interpreter). The key formats are where kohya FLUX
LoRAs fail in diffusers (silently no effect, or "incompatible keys"): every module must become its
transformer layers and the image must change, in both serving modes; a foreign module is refused.
Float32 on the CPU, so images are compared byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_server import flux_pipeline, validation
from lora_server.app import create_app
from lora_server.configs import check
from lora_server.diffusers_pipeline import DiffusersPipeline, load_base_pipeline, load_kohya_lora, load_pipeline, lora_layers
from lora_server.flux_files import FluxFilesError, check_transformer_variant
from lora_server.kohya_names import flux_layers_per_component
from lora_server.logs import JsonLog
from lora_server.lora_file import LoraFileError, inspect_lora
from lora_server.metrics import Metrics
from lora_server.model_files import BaseModel
from lora_server.settings import Settings
from lora_server.shared_pipeline import SharedDiffusersPipeline, assert_plain, convert_lora, load_shared_pipeline
from lora_server.shared_types import LocalLora, LoraVersion

from .conftest import REPO, kohya_trainer_identity, required_env, run_tsx, settings_for, wait_for
from .test_diffusers_pipeline import params

FIXTURE = Path(__file__).with_name("kohya_flux_fixture.py")
SIDE = 64
STEPS = 2
# The tiny T5 reads 16 tokens: production's 256 (schnell) or 512 (dev) would only pad.
T5_TOKENS = 16
PROMPT = "a green pokemon"
# kohya's modules of the tiny transformer (1 double, 1 single block) and the layers diffusers makes of them.
KOHYA_MODULES = 13
TRANSFORMER_LAYERS = 20


@pytest.fixture(autouse=True)
def tiny_flux_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(validation.SIDES, "flux1", (SIDE, validation.SIDES["flux1"][1], SIDE))
    for variant in ("schnell", "dev"):
        monkeypatch.setitem(flux_pipeline.T5_MAX_TOKENS, variant, T5_TOKENS)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def run_fixture(*args: str) -> dict[str, Any]:
    python = required_env("LORA_TEST_PYTHON_TRAINING", "the training venv's python")
    sd_scripts = required_env("LORA_TEST_SD_SCRIPTS", "the kohya-ss sd-scripts folder")
    run = subprocess.run([python, str(FIXTURE), *args, "--sd-scripts", sd_scripts], capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, f"kohya_flux_fixture.py failed:\n{run.stderr[-3000:]}"
    return json.loads(run.stdout)


@pytest.fixture(scope="session")
def flux_models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Path]]:
    """`flux_models(variant)`: the tiny pipeline's `folder`, `configs` and `single_files` (BFL transformer by kohya's converter)."""
    built: dict[str, dict[str, Path]] = {}

    def get(variant: str) -> dict[str, Path]:
        if variant not in built:
            from .tiny_flux import save_all

            paths = save_all(variant, tmp_path_factory.mktemp(f"tiny-flux-{variant}"))
            written = run_fixture("bfl", str(paths["single_files"] / f"flux1-{variant}.safetensors"), "--pipeline", str(paths["folder"]))
            # kohya's own reading of the file it wrote: BFL layout, the variant by its guidance_in keys.
            assert written["is_diffusers"] is False and written["is_schnell"] is (variant == "schnell"), written
            built[variant] = paths
        return built[variant]

    return get


@pytest.fixture(scope="session")
def flux_lora(flux_models: Callable[[str], dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`flux_lora(variant, *options)`: the kohya-ss FLUX LoRA of the tiny transformer (fixture options, e.g. --in-dims),
    kept in LORA_TEST_CACHE by what makes it."""
    python = required_env("LORA_TEST_PYTHON_TRAINING", "the training venv's python")
    sd_scripts = Path(required_env("LORA_TEST_SD_SCRIPTS", "the kohya-ss sd-scripts folder"))
    cache = Path(required_env("LORA_TEST_CACHE", "a scratch folder")) / "inference-kohya-loras"
    identity = kohya_trainer_identity(python, sd_scripts) + (sd_scripts / "networks" / "lora_flux.py").read_bytes()
    made: dict[tuple[str, ...], Path] = {}

    def get(variant: str, *options: str) -> Path:
        key = (variant, *options)
        if key not in made:
            folder = flux_models(variant)["folder"]
            digest = hashlib.sha256(FIXTURE.read_bytes() + FIXTURE.with_name("kohya_lora_fixture.py").read_bytes() + identity)
            digest.update((folder / "transformer" / "config.json").read_bytes() + json.dumps(options).encode())
            output = cache / f"flux1-{variant}-{digest.hexdigest()[:16]}.safetensors"
            if not output.is_file():
                partial = output.with_suffix(".partial.safetensors")
                written = run_fixture("lora", str(partial), "--pipeline", str(folder), *options)
                assert options or written["modules"] == KOHYA_MODULES, written
                partial.replace(output)
            made[key] = output
        return made[key]

    return get


def flux_settings(root: Path, models: dict[str, Path], lora: Path | None, kind: str, variant: str = "schnell", **overrides: Any) -> Settings:
    """What SageMaker mounts: the LoRA in MODEL_DIR, the base model as a diffusers folder or the four S3 files."""
    model_dir = root / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    if lora is not None:
        (model_dir / "pokemon.safetensors").write_bytes(lora.read_bytes())
    base = models["folder"] if kind == "folder" else models["single_files"]
    values: dict[str, Any] = {
        "model_type": "flux1",
        "flux_variant": variant,
        "model_dir": model_dir,
        "base_model_path": base,
        "configs_dir": models["configs"],
        "device": "cpu",
        "dtype": "float32",
        **overrides,
    }
    return settings_for(root, **values)


def request(variant: str = "schnell", **fields: Any) -> Any:
    values = {"prompt": PROMPT, "width": SIDE, "height": SIDE, "seed": 42, "num_inference_steps": STEPS}
    return validation.validate({**values, **fields}, "flux1", 1.0, 0, variant)


def image(pipeline: Any, *loras: LocalLora, variant: str = "schnell", **fields: Any) -> bytes:
    if isinstance(pipeline, SharedDiffusersPipeline):
        [result] = pipeline.generate(request(variant, **fields), float("inf"), list(loras))
    else:
        [result] = pipeline.generate(request(variant, lora_scale=pipeline.fused_scale, **fields), float("inf"))
    low, high = zip(*result.convert("RGB").getextrema(), strict=True)
    assert max(high) - min(low) > 16, "a flat image: the pipeline produced nothing (NaNs decode to black)"
    return result.tobytes()


def local(path: Path, name: str, scale: float = 1.0) -> LocalLora:
    version = LoraVersion(
        name=name,
        version=1,
        status="ready",
        model_type="flux1",
        base_model="tiny",
        s3_uri=f"s3://bucket/loras/{name}/1.safetensors",
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        size_bytes=path.stat().st_size,
    )
    return LocalLora(version=version, path=path, scale=scale)


@pytest.fixture(scope="module")
def dedicated(flux_models: Any, flux_lora: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiffusersPipeline]:
    """The dedicated server's pipeline on the tiny schnell's four S3 files, kohya's LoRA fused at 1."""
    settings = flux_settings(tmp_path_factory.mktemp("flux-dedicated"), flux_models("schnell"), flux_lora("schnell"), "flux_files")
    pipeline = load_pipeline(settings, JsonLog(io.StringIO()))
    assert isinstance(pipeline, DiffusersPipeline)
    yield pipeline


def test_every_kohya_flux_module_becomes_its_transformer_layers_and_changes_the_image(dedicated: DiffusersPipeline, flux_lora: Any) -> None:
    path = flux_lora("schnell")
    assert inspect_lora(path, "flux1").modules == KOHYA_MODULES
    layers = lora_layers(dedicated._pipe)
    # Every module consumed: qkv -> 3 layers, linear1 -> 4, the rest 1 each; nothing on the text encoders.
    assert flux_layers_per_component(load_file(str(path))) == {"transformer": TRANSFORMER_LAYERS}
    assert len(layers["transformer"]) == TRANSFORMER_LAYERS
    assert not layers["text_encoder"] and not layers["text_encoder_2"]
    with_lora = image(dedicated)
    dedicated.apply_lora_scale(0.0)
    without = image(dedicated)
    dedicated.apply_lora_scale(1.0)
    assert with_lora != without, "the LoRA had no effect on the image"
    assert image(dedicated) == with_lora, "back at LORA_SCALE, the load-time weights"


def test_the_four_s3_files_load_the_same_model_as_the_diffusers_folder(flux_models: Any, tmp_path: Path) -> None:
    models = flux_models("schnell")
    from_folder = load_base_pipeline(flux_settings(tmp_path / "folder", models, None, "folder"), JsonLog(io.StringIO()))
    log = io.StringIO()
    from_files = load_base_pipeline(flux_settings(tmp_path / "files", models, None, "flux_files"), JsonLog(log))
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(from_folder, name).state_dict(), getattr(from_files, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs"
    for name in ("transformer", "vae"):
        configs = [{k: v for k, v in dict(getattr(pipe, name).config).items() if k != "_name_or_path"} for pipe in (from_folder, from_files)]
        assert configs[0] == configs[1], name
    assert dict(from_folder.scheduler.config) == dict(from_files.scheduler.config)
    for name in ("tokenizer", "tokenizer_2"):
        assert getattr(from_folder, name)(PROMPT)["input_ids"] == getattr(from_files, name)(PROMPT)["input_ids"]
    # One component at a time onto the device, the transformer (the largest) last.
    loaded = [json.loads(line)["component"] for line in log.getvalue().splitlines() if '"flux_component_loaded"' in line]
    assert loaded[-1] == "transformer" and sorted(loaded) == sorted(
        ["scheduler", "tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "vae", "transformer"]
    )


def test_a_kohya_flux_lora_with_a_module_of_no_layer_is_refused(flux_models: Any, flux_lora: Any, tmp_path: Path) -> None:
    state = load_file(str(flux_lora("schnell")))
    # Block 1 does not exist in the tiny transformer: diffusers would skip the module and serve the rest.
    for suffix in ("lora_down.weight", "lora_up.weight", "alpha"):
        state[f"lora_unet_double_blocks_1_img_attn_proj.{suffix}"] = state[f"lora_unet_double_blocks_0_img_attn_proj.{suffix}"].clone()
    foreign = tmp_path / "foreign.safetensors"
    save_file(state, str(foreign), {"ss_base_model_version": "flux1"})
    settings = flux_settings(tmp_path / "base", flux_models("schnell"), None, "folder")
    pipe = load_base_pipeline(settings, JsonLog(io.StringIO()))
    with pytest.raises(
        LoraFileError, match=r"21 LoRA layers \(kohya's fused qkv and linear1 modules split by diffusers\) are for the transformer, but 20 of its"
    ):
        convert_lora(pipe, foreign, "flux1", JsonLog(io.StringIO()))
    assert_plain(pipe)
    # Negative control: the same pipeline converts kohya's own file, every layer.
    assert len(convert_lora(pipe, flux_lora("schnell"), "flux1", JsonLog(io.StringIO())).layers) == TRANSFORMER_LAYERS


def test_a_kohya_flux_lora_with_in_dims_modules_is_refused_as_diffusers_drops_them(flux_models: Any, flux_lora: Any, tmp_path: Path) -> None:
    # lora_flux.py's in_dims: LoRA on the input layers (img, time, vector, txt; no guidance in schnell): 6 more modules.
    path = flux_lora("schnell", "--in-dims", "[4,4,4,0,4]")
    with pytest.raises(LoraFileError, match=r"kohya's in_dims modules \(first: lora_unet_img_in\)"):
        inspect_lora(path, "flux1")
    # Why: diffusers 0.40 converts them to names without the "transformer." prefix, then drops them without a word
    # (LoadCheck, behind the header check, sees it too). If a diffusers upgrade loads them, this fails: accept them then.
    pipe = load_base_pipeline(flux_settings(tmp_path, flux_models("schnell"), None, "folder"), JsonLog(io.StringIO()))
    with pytest.raises(LoraFileError, match=rf"{TRANSFORMER_LAYERS + 6} LoRA layers .* are for the transformer, but {TRANSFORMER_LAYERS} of"):
        load_kohya_lora(pipe, path, "flux1", JsonLog(io.StringIO()))


def test_shared_mode_serves_the_flux_lora_as_the_dedicated_server_and_the_base_without_it(
    dedicated: DiffusersPipeline, flux_models: Any, flux_lora: Any, tmp_path: Path
) -> None:
    settings = flux_settings(tmp_path, flux_models("schnell"), None, "flux_files", serving_mode="shared")
    shared = load_shared_pipeline(settings, JsonLog(io.StringIO()), Metrics("Test", {}, emit=lambda line: None))
    base = image(shared)
    lora = local(flux_lora("schnell"), "pokemon")
    assert image(shared, lora) == image(dedicated), "shared and dedicated differ for the same LoRA at the same scale"
    assert image(shared) == base, "the base model's weights came back exactly"
    assert base != image(shared, lora)
    assert len(shared.switch._pristine) == TRANSFORMER_LAYERS
    assert_plain(shared._pipe)


def test_the_dev_variant_loads_from_its_s3_files_with_its_guidance_embedder_and_guidance_changes_the_image(
    flux_models: Any, flux_lora: Any, tmp_path: Path
) -> None:
    settings = flux_settings(tmp_path, flux_models("dev"), flux_lora("dev"), "flux_files", variant="dev")
    pipeline = load_pipeline(settings, JsonLog(io.StringIO()))
    pipe = pipeline._pipe
    # Baked from schnell's configs, with dev's differences (flux_pipeline.FLUX_DEV_OVERRIDES).
    assert pipe.transformer.config.guidance_embeds is True
    assert pipe.scheduler.config.use_dynamic_shifting is True and pipe.scheduler.config.shift == 3.0
    assert request("dev").guidance_scale == 3.5 and request("dev", num_inference_steps=None).num_inference_steps == 28
    assert image(pipeline, variant="dev", guidance_scale=3.5) != image(pipeline, variant="dev", guidance_scale=1.0)


def test_the_hub_path_loads_the_pinned_revision_with_the_token_from_the_secret(
    flux_models: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = flux_models("schnell")["folder"]
    secrets: list[str | None] = []
    monkeypatch.setitem(flux_pipeline.HUB_REPOS, "schnell", str(folder))
    monkeypatch.setattr(flux_pipeline, "read_hub_token", lambda secret_id: secrets.append(secret_id) or "hf_not_a_real_token")
    import diffusers

    calls: list[dict[str, Any]] = []
    original = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained.__func__  # type: ignore[attr-defined]

    def recorded(cls: Any, source: str, **kwargs: Any) -> Any:
        calls.append({"source": source, **kwargs})
        return original(cls, source, **{k: v for k, v in kwargs.items() if k != "token"})

    monkeypatch.setattr(diffusers.FlowMatchEulerDiscreteScheduler, "from_pretrained", classmethod(recorded))
    settings = flux_settings(tmp_path, flux_models("schnell"), None, "folder", hf_token_secret_id="hf-token")
    loaders = flux_pipeline._repository_loaders(settings, BaseModel("hub", "black-forest-labs/FLUX.1-schnell"), "schnell", torch.float32)
    loaders["scheduler"]()
    assert secrets == ["hf-token"]
    assert calls == [
        {"source": str(folder), "subfolder": "scheduler", "revision": flux_pipeline.HUB_REVISIONS["schnell"], "token": "hf_not_a_real_token"}
    ]


def test_a_flux_request_through_the_app_takes_the_variants_defaults(dedicated: DiffusersPipeline) -> None:
    log = io.StringIO()
    settings = settings_for(Path("/nonexistent"), model_type="flux1", flux_variant="schnell", device="cpu", dtype="float32")
    app = create_app(settings, loader=lambda _settings, _log: dedicated, log=JsonLog(log))
    client = app.test_client()
    wait_for(lambda: client.get("/ping").status_code != 503, seconds=30)
    response = client.post("/invocations", json={"prompt": PROMPT, "seed": 42}, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["parameters"] | {"prompt": None} == {
        **params(
            prompt=None, negative_prompt=None, num_inference_steps=4, guidance_scale=0.0, width=SIDE, height=SIDE, seed=42, lora_scale=1.0
        ).for_log(True),
    }
    refused = client.post("/invocations", json={"prompt": PROMPT, "negative_prompt": "blurry"})
    assert refused.status_code == 400 and refused.get_json()["field"] == "negative_prompt"


def test_the_flux1_configs_bake_loads_offline_and_a_missing_tokenizer_fails_it(
    flux_models: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tiny pipeline's configs folder has the layout the Dockerfile bakes from FLUX.1-schnell's repository.
    shutil.copytree(flux_models("schnell")["configs"] / "flux1", tmp_path / "flux1")
    check(tmp_path, ("flux1",))
    assert capsys.readouterr().out.splitlines() == [f"{tmp_path / 'flux1'}: configs and tokenizers load offline"]
    (tmp_path / "flux1" / "tokenizer_2" / "tokenizer.json").unlink()
    # Negative control: transformers 5 would build an empty T5 tokenizer without its file; the check refuses it.
    with pytest.raises(SystemExit, match="tokenizer_2: the tokenizer produced no tokens, or unknown ones"):
        check(tmp_path, ("flux1",))


PARITY = """
import {{ readFileSync }} from 'node:fs';
import {{ headerLength, parseHeader }} from {safetensors};
import {{ inspectLora }} from {lora_header};
const bytes = readFileSync(process.argv[2]);
const header = parseHeader(bytes.subarray(8, 8 + headerLength(bytes.subarray(0, 8), bytes.length)), bytes.length);
const answer = (expected: 'sd15' | 'sdxl' | 'flux1') => {{
  try {{ return inspectLora(header, expected); }} catch (e) {{ return {{ error: (e as Error).message }}; }}
}};
console.log(JSON.stringify({{ sd15: answer('sd15'), sdxl: answer('sdxl'), flux1: answer('flux1') }}));
"""


def test_the_registry_reads_the_kohya_flux_lora_as_the_server_does(flux_lora: Any, tmp_path: Path) -> None:
    path = flux_lora("schnell")
    script = PARITY.format(
        safetensors=json.dumps(str(REPO / "lambda" / "shared" / "safetensors.ts")),
        lora_header=json.dumps(str(REPO / "lambda" / "registry" / "lora-header.ts")),
    )
    reading = run_tsx(script, tmp_path, str(path))
    assert reading["flux1"] == {"modelType": "flux1", "components": ["transformer"], "rank": inspect_lora(path, "flux1").rank}
    # The control: read as another family, the file is refused on both sides.
    for other in ("sd15", "sdxl"):
        assert "error" in reading[other]
        with pytest.raises(LoraFileError):
            inspect_lora(path, other)  # type: ignore[arg-type]


def test_a_transformer_file_named_after_the_other_variant_is_refused_before_loading(flux_models: Any, tmp_path: Path) -> None:
    dev = flux_models("dev")["single_files"]
    renamed = tmp_path / "files"
    renamed.mkdir()
    for file in dev.iterdir():
        (renamed / file.name.replace("flux1-dev", "flux1-schnell")).symlink_to(file)
    models = {**flux_models("dev"), "single_files": renamed}
    with pytest.raises(FluxFilesError, match=r"flux1-schnell.safetensors names FLUX.1-schnell, but its weights are dev"):
        load_base_pipeline(flux_settings(tmp_path, models, None, "flux_files", variant="schnell"), JsonLog(io.StringIO()))
    # The control: under its own name the same file loads as dev.
    check_transformer_variant(dev / "flux1-dev.safetensors", "dev")

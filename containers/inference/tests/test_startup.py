"""What happens before the model loads: settings, finding the files, the baked configs, the entry point."""

from __future__ import annotations

import io
import json
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lora_server import __main__ as entry
from lora_server.app import create_app
from lora_server.configs import CONFIG_REPOS, DIFFUSERS_CONFIGS, check, is_baked
from lora_server.logs import JsonLog
from lora_server.model_files import BaseModel, ModelFilesError, find_lora_file, resolve_base_model
from lora_server.settings import BASE_MODEL_PATH, MAX_INVOCATIONS_IN_FLIGHT, MODEL_DIR, Settings, SettingsError
from lora_server.validation import SCHEDULERS

from .conftest import settings_for

# --- settings ---------------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings.from_env({"MODEL_TYPE": "sdxl"})
    assert settings == Settings(
        model_type="sdxl",
        model_dir=Path(MODEL_DIR),
        base_model_path=Path(BASE_MODEL_PATH),
        base_model_id=None,
        lora_scale=1.0,
        request_timeout_seconds=50.0,
        log_prompts=False,
        configs_dir=Path("/opt/lora-server/configs"),
    )
    assert BASE_MODEL_PATH == "/opt/ml/additional-model-data-sources/base_model"


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {"MODEL_TYPE": "sd15", "LORA_SCALE": "0.8", "REQUEST_TIMEOUT_SECONDS": "40", "LOG_PROMPTS": "true", "BASE_MODEL_ID": "owner/model"}
    )
    assert (settings.lora_scale, settings.request_timeout_seconds, settings.log_prompts, settings.base_model_id) == (0.8, 40.0, True, "owner/model")


def test_every_bad_setting_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"MODEL_TYPE": "sd2", "LORA_SCALE": "2.5", "REQUEST_TIMEOUT_SECONDS": "60", "LOG_PROMPTS": "yes"})
    message = str(error.value)
    for expected in ("MODEL_TYPE must be 'sd15' or 'sdxl', got 'sd2'", "LORA_SCALE must be a number from 0 to 2, got '2.5'",
                     "REQUEST_TIMEOUT_SECONDS must be a number from 1 to 55, got '60'", "LOG_PROMPTS must be 'true' or 'false'"):
        assert expected in message


@pytest.mark.parametrize("value", ["nan", "abc", "-0.1"])
def test_lora_scale_must_be_a_number_in_range(value: str) -> None:
    with pytest.raises(SettingsError, match="LORA_SCALE"):
        Settings.from_env({"MODEL_TYPE": "sd15", "LORA_SCALE": value})


def test_model_type_is_required() -> None:
    with pytest.raises(SettingsError, match="MODEL_TYPE must be"):
        Settings.from_env({})


def test_the_server_refuses_to_start_with_bad_settings_and_logs_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_TYPE", "sd3")
    log = io.StringIO()
    with pytest.raises(SettingsError):
        create_app(log=JsonLog(log))
    [line] = map(json.loads, log.getvalue().splitlines())
    assert (line["event"], line["level"]) == ("settings_invalid", "error")
    assert "MODEL_TYPE must be 'sd15' or 'sdxl', got 'sd3'" in line["reason"]


# --- the LoRA and the base model on disk ----------------------------------------------------------


def test_the_lora_is_the_one_safetensors_in_the_model_dir(tmp_path: Path) -> None:
    (tmp_path / "pokemon.safetensors").write_bytes(b"")
    (tmp_path / "training-metadata.json").write_text("{}")
    assert find_lora_file(tmp_path) == tmp_path / "pokemon.safetensors"


@pytest.mark.parametrize(("files", "message"), [([], r"found 0 \(it holds: nothing\)"), (["a.safetensors", "b.safetensors"], "found 2")])
def test_no_lora_or_several_is_an_error(tmp_path: Path, files: list[str], message: str) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ModelFilesError, match=message):
        find_lora_file(tmp_path)


def test_a_missing_model_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match="does not exist"):
        find_lora_file(tmp_path / "model")


def test_a_mounted_diffusers_folder_is_the_base_model(tmp_path: Path) -> None:
    base = tmp_path / "base_model"
    (base / "unet").mkdir(parents=True)
    (base / "model_index.json").write_text("{}")
    (base / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    resolved = resolve_base_model(settings_for(tmp_path, base_model_id="owner/ignored"))
    assert (resolved, resolved.offline) == (BaseModel("folder", str(base)), True)


def test_a_mounted_single_file_is_the_base_model_wherever_it_lies_in_the_channel(tmp_path: Path) -> None:
    nested = tmp_path / "base_model" / "models" / "sd"
    nested.mkdir(parents=True)
    (nested / "chilloutmix_NiPrunedFp32Fix.safetensors").write_bytes(b"")
    resolved = resolve_base_model(settings_for(tmp_path))
    assert resolved == BaseModel("single_file", str(nested / "chilloutmix_NiPrunedFp32Fix.safetensors"))


def test_base_model_path_may_name_the_file_itself(tmp_path: Path) -> None:
    (tmp_path / "base.ckpt").write_bytes(b"")
    assert resolve_base_model(settings_for(tmp_path, base_model_path=tmp_path / "base.ckpt")).kind == "single_file"


def test_an_ambiguous_mount_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "base_model").mkdir()
    (tmp_path / "base_model" / "a.safetensors").write_bytes(b"")
    (tmp_path / "base_model" / "b.ckpt").write_bytes(b"")
    with pytest.raises(ModelFilesError, match="found 2: a.safetensors, b.ckpt"):
        resolve_base_model(settings_for(tmp_path))


def test_without_a_mount_the_hugging_face_id_is_used_online(tmp_path: Path) -> None:
    (tmp_path / "base_model").mkdir()  # an empty channel folder counts as nothing mounted
    resolved = resolve_base_model(settings_for(tmp_path, base_model_id="stable-diffusion-v1-5/stable-diffusion-v1-5"))
    assert (resolved.kind, resolved.offline) == ("hub", False)


def test_no_base_model_at_all_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match="BASE_MODEL_ID is not set"):
        resolve_base_model(settings_for(tmp_path))


# --- baked configs, schedulers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "baked"),
    [
        ("model_index.json", True),
        ("unet/config.json", True),
        ("scheduler/scheduler_config.json", True),
        ("tokenizer/vocab.json", True),
        ("tokenizer_2/merges.txt", True),
        ("unet/diffusion_pytorch_model.safetensors", False),
        ("unet/diffusion_pytorch_model.fp16.safetensors", False),
        ("text_encoder/model.safetensors", False),
        ("v1-5-pruned-emaonly.ckpt", False),
        ("vae/diffusion_pytorch_model.bin", False),
    ],
)
def test_only_configs_and_tokenizers_are_baked(path: str, baked: bool) -> None:
    assert is_baked(path) is baked


# diffusers v0.40.0, src/diffusers/loaders/single_file_utils.py, DIFFUSERS_DEFAULT_PIPELINE_PATHS: the
# repositories whose configs from_single_file uses for a checkpoint it infers to be "v1" or "xl_base".
DIFFUSERS_DEFAULT_PIPELINE_PATHS = {"v1": "stable-diffusion-v1-5/stable-diffusion-v1-5", "xl_base": "stabilityai/stable-diffusion-xl-base-1.0"}
# diffusers v0.40.0, src/diffusers/schedulers/__init__.py: the scheduler classes it exports, and the
# one option used, DPMSolverMultistepScheduler.__init__'s use_karras_sigmas.
DIFFUSERS_SCHEDULERS = {
    "DDIMScheduler", "DDPMScheduler", "DEISMultistepScheduler", "DPMSolverMultistepScheduler", "DPMSolverSDEScheduler",
    "DPMSolverSinglestepScheduler", "EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler",
    "LMSDiscreteScheduler", "PNDMScheduler", "UniPCMultistepScheduler",
}


def test_configs_are_baked_for_each_model_type_from_the_repos_diffusers_uses() -> None:
    assert CONFIG_REPOS == {"sd15": DIFFUSERS_DEFAULT_PIPELINE_PATHS["v1"], "sdxl": DIFFUSERS_DEFAULT_PIPELINE_PATHS["xl_base"]}


def test_every_scheduler_but_default_names_a_diffusers_class_with_its_options() -> None:
    classes = {name: spec and spec[0] for name, spec in SCHEDULERS.items()}
    assert classes == {"default": None, "ddim": "DDIMScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler",
                       "dpmpp_2m_karras": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler",
                       "euler_a": "EulerAncestralDiscreteScheduler", "pndm": "PNDMScheduler", "unipc": "UniPCMultistepScheduler"}
    assert set(classes.values()) - {None} <= DIFFUSERS_SCHEDULERS
    assert {name: spec[1] for name, spec in SCHEDULERS.items() if spec and spec[1]} == {"dpmpp_2m_karras": {"use_karras_sigmas": True}}


class Recorder:
    """Stands in for a diffusers or transformers class: records each load."""

    def __init__(self, calls: list[tuple[Any, ...]], name: str) -> None:
        self._calls, self._name = calls, name

    def load_config(self, folder: str, **kwargs: Any) -> dict[str, Any]:
        self._calls.append((self._name, folder, kwargs))
        return {}

    def from_pretrained(self, folder: str, **kwargs: Any) -> Any:
        self._calls.append((self._name, folder, kwargs))
        return lambda text: {"input_ids": [49406, 49407]}


def test_the_baked_configs_and_tokenizers_are_loaded_offline_at_build_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    names = ["DiffusionPipeline", *DIFFUSERS_CONFIGS.values(), "CLIPTextConfig", "CLIPTokenizer"]
    module = SimpleNamespace(**{name: Recorder(calls, name) for name in names})
    monkeypatch.setitem(sys.modules, "diffusers", module)
    monkeypatch.setitem(sys.modules, "transformers", module)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(SystemExit, match="HF_HUB_OFFLINE=1"):
        check(tmp_path)
    assert calls == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check(tmp_path)
    sdxl = str(tmp_path / "sdxl")
    assert {(name, folder, tuple(sorted(kwargs.items()))) for name, folder, kwargs in calls if folder.startswith(sdxl)} == {
        ("DiffusionPipeline", sdxl, (("local_files_only", True),)),
        ("UNet2DConditionModel", sdxl, (("local_files_only", True), ("subfolder", "unet"))),
        ("AutoencoderKL", sdxl, (("local_files_only", True), ("subfolder", "vae"))),
        ("DDIMScheduler", sdxl, (("local_files_only", True), ("subfolder", "scheduler"))),
        ("CLIPTextConfig", f"{sdxl}/text_encoder", (("local_files_only", True),)),
        ("CLIPTextConfig", f"{sdxl}/text_encoder_2", (("local_files_only", True),)),
        ("CLIPTokenizer", f"{sdxl}/tokenizer", (("local_files_only", True),)),
        ("CLIPTokenizer", f"{sdxl}/tokenizer_2", (("local_files_only", True),)),
    }
    assert len(calls) == 8 + 6  # SD 1.5 has one text encoder and one tokenizer


# --- entry point ------------------------------------------------------------------------------------


def test_serve_execs_gunicorn_with_the_app_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    executed: list[list[str]] = []
    monkeypatch.setattr(entry.os, "execv", lambda path, args: executed.append(args))
    entry.main(["serve"])
    [command] = executed
    assert command[1:4] == ["-m", "gunicorn", "--config"]
    assert command[-1] == "lora_server.app:create_app()"


def test_anything_but_serve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entry.os, "execv", lambda *_: pytest.fail("must not start"))
    with pytest.raises(SystemExit) as exit_:
        entry.main(["train"])
    assert exit_.value.code == 2


def test_gunicorn_listens_on_8080_with_one_worker_and_stops_within_sagemakers_30_seconds() -> None:
    config: dict[str, Any] = runpy.run_path(str(entry.GUNICORN_CONFIG))
    assert (config["bind"], config["workers"], config["worker_class"]) == ("0.0.0.0:8080", 1, "gthread")
    # /ping needs a thread while every admitted invocation holds one (see test_app's ping-under-load tests).
    assert config["threads"] > MAX_INVOCATIONS_IN_FLIGHT
    assert config["graceful_timeout"] < 30
    assert config["preload_app"] is False

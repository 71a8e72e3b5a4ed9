"""What happens before the model loads: settings, finding the files, the baked configs, the entry point."""

from __future__ import annotations

import io
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lora_server import __main__ as entry
from lora_server.app import create_app
from lora_server.configs import CONFIG_REPOS, check, is_baked
from lora_server.logs import JsonLog
from lora_server.model_files import BaseModel, ModelFilesError, find_lora_file, resolve_base_model
from lora_server.settings import BASE_MODEL_PATH, MAX_INVOCATIONS_IN_FLIGHT, MODEL_DIR, Settings, SettingsError
from lora_server.validation import SCHEDULERS

from .conftest import settings_for
from .test_shared_settings import SHARED

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
        device="cuda",
        dtype="float16",
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
    for expected in ("MODEL_TYPE must be 'sd15', 'sdxl' or 'flux1', got 'sd2'", "LORA_SCALE must be a number from 0 to 2, got '2.5'",
                     "REQUEST_TIMEOUT_SECONDS must be a number from 1 to 55, got '60'", "LOG_PROMPTS must be 'true' or 'false'"):
        assert expected in message


@pytest.mark.parametrize("value", ["nan", "abc", "-0.1"])
def test_lora_scale_must_be_a_number_in_range(value: str) -> None:
    with pytest.raises(SettingsError, match="LORA_SCALE"):
        Settings.from_env({"MODEL_TYPE": "sd15", "LORA_SCALE": value})


def test_model_type_is_required() -> None:
    with pytest.raises(SettingsError, match="MODEL_TYPE must be 'sd15', 'sdxl' or 'flux1', it is not set"):
        Settings.from_env({})


@pytest.mark.parametrize(
    ("env", "device", "dtype"),
    [({}, "cuda", "float16"), ({"DEVICE": "cpu"}, "cpu", "float32"), ({"DEVICE": "cpu", "DTYPE": "bfloat16"}, "cpu", "bfloat16"),
     ({"DTYPE": "float32"}, "cuda", "float32"), ({"DEVICE": "cuda", "DTYPE": "bfloat16"}, "cuda", "bfloat16")],
)
def test_device_and_dtype(env: dict[str, str], device: str, dtype: str) -> None:
    settings = Settings.from_env({"MODEL_TYPE": "sd15", **env})
    assert (settings.device, settings.dtype) == (device, dtype)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEVICE": "cpu", "DTYPE": "float16"}, "DTYPE must be 'float32' or 'bfloat16' with DEVICE=cpu (float16 is for CUDA), got 'float16'"),
        ({"DEVICE": "gpu"}, "DEVICE must be 'cuda' or 'cpu', got 'gpu'"),
        ({"DTYPE": "fp16"}, "DTYPE must be 'float16', 'bfloat16' or 'float32', got 'fp16'"),
    ],
)
def test_a_bad_device_or_dtype_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"MODEL_TYPE": "sd15", **env})
    assert message in str(error.value)


def test_the_server_refuses_to_start_with_bad_settings_and_logs_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_TYPE", "sd3")
    log = io.StringIO()
    with pytest.raises(SettingsError):
        create_app(log=JsonLog(log))
    [line] = map(json.loads, log.getvalue().splitlines())
    assert (line["event"], line["level"]) == ("settings_invalid", "error")
    assert "MODEL_TYPE must be 'sd15', 'sdxl' or 'flux1', got 'sd3'" in line["reason"]


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
# options used, DPMSolverMultistepScheduler.__init__'s use_karras_sigmas and PNDMScheduler.__init__'s skip_prk_steps.
DIFFUSERS_SCHEDULERS = {
    "DDIMScheduler", "DDPMScheduler", "DEISMultistepScheduler", "DPMSolverMultistepScheduler", "DPMSolverSDEScheduler",
    "DPMSolverSinglestepScheduler", "EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler",
    "LMSDiscreteScheduler", "PNDMScheduler", "UniPCMultistepScheduler",
}


def test_configs_are_baked_for_each_model_type_from_the_repos_diffusers_uses() -> None:
    # FLUX.1's four S3 files take FLUX.1-schnell's configs and tokenizers (flux_pipeline applies dev's differences).
    assert CONFIG_REPOS == {
        "sd15": DIFFUSERS_DEFAULT_PIPELINE_PATHS["v1"], "sdxl": DIFFUSERS_DEFAULT_PIPELINE_PATHS["xl_base"], "flux1": "black-forest-labs/FLUX.1-schnell",
    }


def test_every_scheduler_but_default_names_a_diffusers_class_with_its_options() -> None:
    classes = {name: spec and spec[0] for name, spec in SCHEDULERS.items()}
    assert classes == {"default": None, "ddim": "DDIMScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler",
                       "dpmpp_2m_karras": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler",
                       "euler_a": "EulerAncestralDiscreteScheduler", "pndm": "PNDMScheduler", "unipc": "UniPCMultistepScheduler"}
    assert set(classes.values()) - {None} <= DIFFUSERS_SCHEDULERS
    assert {name: spec[1] for name, spec in SCHEDULERS.items() if spec and spec[1]} == {
        "dpmpp_2m_karras": {"use_karras_sigmas": True}, "pndm": {"skip_prk_steps": True},
    }


def test_the_baked_configs_and_tokenizers_load_offline_with_the_real_libraries(
    tiny_models: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tiny models' configs folders have the layout the Dockerfile bakes (see tiny_pipelines.save_all);
    # flux1's bake is checked in test_real_flux, which builds the tiny FLUX.1 pipeline.
    model_types = ("sd15", "sdxl")
    for model_type in model_types:
        shutil.copytree(tiny_models(model_type)["configs"] / model_type, tmp_path / model_type)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(SystemExit, match="HF_HUB_OFFLINE=1"):
        check(tmp_path, model_types)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check(tmp_path, model_types)
    assert capsys.readouterr().out.splitlines() == [f"{tmp_path / m}: configs and tokenizers load offline" for m in model_types]
    # Negative control: a file from_single_file needs is missing.
    (tmp_path / "sdxl" / "tokenizer_2" / "merges.txt").unlink()
    with pytest.raises(Exception, match="merges"):
        check(tmp_path, model_types)


# --- entry point ------------------------------------------------------------------------------------


def test_serve_execs_gunicorn_with_the_app_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_TYPE", "sd15")
    executed: list[list[str]] = []
    monkeypatch.setattr(entry.os, "execv", lambda path, args: executed.append(args))
    entry.main(["serve"])
    [command] = executed
    assert command[1:4] == ["-m", "gunicorn", "--config"]
    assert command[-1] == "lora_server.app:create_app()"


INFERENCE_DIR = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("env", "problems"),
    [
        ({}, [{"variable": "MODEL_TYPE", "value": None, "allowed": "'sd15', 'sdxl' or 'flux1'"}]),
        ({"MODEL_TYPE": "sd15", "LORA_SCALE": "3"}, [{"variable": "LORA_SCALE", "value": "3", "allowed": "a number from 0 to 2"}]),
        (
            {"MODEL_TYPE": "sdxl", "DEVICE": "cpu", "DTYPE": "float16"},
            [{"variable": "DTYPE", "value": "float16", "allowed": "'float32' or 'bfloat16' with DEVICE=cpu (float16 is for CUDA)"}],
        ),
        (
            {k: v for k, v in SHARED.items() if k != "LORA_BUCKET"},
            [{"variable": "LORA_BUCKET", "value": None, "allowed": "the S3 bucket of the LoRA files"}],
        ),
    ],
)
def test_serve_with_a_bad_setting_exits_before_gunicorn_with_one_json_line(env: dict[str, str], problems: list[dict[str, Any]]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "lora_server", "serve"],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(INFERENCE_DIR), **env},
        cwd=INFERENCE_DIR, capture_output=True, text=True, timeout=60, check=False,
    )
    assert (run.returncode, run.stderr) == (entry.EXIT_BAD_SETTINGS, "")
    [line] = run.stdout.splitlines()
    record = json.loads(line)
    assert (record["event"], record["level"], record["problems"]) == ("settings_invalid", "error", problems)
    assert record["reason"].startswith(f"invalid configuration: {problems[0]['variable']} must be {problems[0]['allowed']}")


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

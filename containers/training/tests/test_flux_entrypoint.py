"""FLUX.1 runs through the real entrypoint with fake_kohya.py in place of flux_train_network.py:
the base model's four files from the channel or from the Hub, the flags they become, the samples'
FLUX settings, and the Hugging Face token that never leaves the download."""

import json

import boto3
import pytest
from botocore.stub import Stubber

from conftest import fake_trainer
from flux_fixtures import write_flux_files
from lora_trainer import flux_files, hub_token
from lora_trainer.main import main

TOKEN = "hf_NeverPrintedToken0123456789"


def train(opt_ml, image):
    return main(["train"], opt_ml.paths, image, fake_trainer())


def flag(argv, name):
    return argv[argv.index(name) + 1]


def test_a_schnell_channel_trains_offline_with_the_four_files(opt_ml, image, capsys):
    opt_ml.captioned_images(2)
    channel = write_flux_files(opt_ml.paths.channel("base_model"), "schnell")
    opt_ml.hyperparameters({"model_type": "flux1", "max_train_epochs": "2", "resolution": "512"})
    assert train(opt_ml, image) == 0, opt_ml.failure()
    [run] = opt_ml.runs()
    argv = run["argv"]
    assert run["hf_offline"] == "1"
    assert [flag(argv, f) for f in ("--pretrained_model_name_or_path", "--clip_l", "--t5xxl", "--ae")] == [
        str(channel / n) for n in ("flux1-schnell.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors")
    ]
    assert flag(argv, "--network_module") == "networks.lora_flux" and flag(argv, "--mixed_precision") == "bf16"
    assert "--sample_sampler" not in argv and "--fp8_base" in argv
    metadata = json.loads((opt_ml.paths.model / "training-metadata.json").read_text())
    assert metadata["base_model"] == {"kind": "FLUX.1 files", "name": "flux1-schnell.safetensors", "variant": "schnell"}
    assert metadata["model_type"] == "flux1"
    # kohya's FLUX sampling: schnell's 4 steps, embedded guidance, CFG off.
    prompts = json.loads((opt_ml.paths.work / "sample-prompts.json").read_text())
    assert [(p["sample_steps"], p["guidance_scale"], p["scale"], "sample_sampler" in p) for p in prompts] == [(4, 3.5, 1.0, False)] * 2
    assert "flux1 (schnell) LoRA 'lora' on FLUX.1 files" in capsys.readouterr().out
    samples = json.loads((opt_ml.paths.checkpoints / "sample" / "samples.json").read_text())
    assert {p["sampler"] for p in samples["prompts"]} == {None} and len(samples["images"]) == 6


def test_a_misnamed_transformer_fails_before_training(opt_ml, image):
    opt_ml.captioned_images(1)
    write_flux_files(opt_ml.paths.channel("base_model"), "dev", transformer_name="flux1-schnell.safetensors")
    opt_ml.hyperparameters({"model_type": "flux1"})
    assert train(opt_ml, image) == 1
    assert "flux1-schnell.safetensors has the guidance embedder of FLUX.1 dev" in opt_ml.failure()
    assert opt_ml.runs() == []


@pytest.fixture
def secrets(monkeypatch):
    """Secrets Manager as botocore's Stubber answers for it: the one secret, read once."""
    client = boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    stub.add_response("get_secret_value", {"Name": "hf", "SecretString": TOKEN}, {"SecretId": "hf"})
    monkeypatch.setattr(hub_token, "_secrets_client", lambda secret_id: client)
    monkeypatch.setenv("HF_TOKEN_SECRET_ID", "hf")
    with stub:
        yield stub
    stub.assert_no_pending_responses()


@pytest.fixture
def hub_files(opt_ml, monkeypatch):
    """The Hub files already where the download puts them, with huggingface_hub offline."""
    import huggingface_hub
    from huggingface_hub.utils import reset_sessions

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    reset_sessions()
    yield write_flux_files(opt_ml.paths.hub_base_model, "dev")
    reset_sessions()


def test_a_gated_dev_model_is_fetched_with_the_secrets_token_which_goes_nowhere_else(opt_ml, image, secrets, hub_files, monkeypatch, capsys):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"model_type": "flux1", "base_model": "black-forest-labs/FLUX.1-dev", "max_train_epochs": "1"})
    monkeypatch.setenv("FAKE_KOHYA_FORBIDDEN", TOKEN)
    assert train(opt_ml, image) == 0, opt_ml.failure()
    [run] = opt_ml.runs()
    assert flag(run["argv"], "--pretrained_model_name_or_path") == str(hub_files / "flux1-dev.safetensors")
    assert flag(run["argv"], "--t5xxl") == str(hub_files / "t5xxl_fp16.safetensors")
    assert run["hf_offline"] == "1" and run["forbidden_in_env"] == []
    metadata = json.loads((opt_ml.paths.model / "training-metadata.json").read_text())
    assert metadata["base_model"] == {
        "kind": "Hugging Face id",
        "name": "black-forest-labs/FLUX.1-dev",
        "variant": "dev",
        "revision": flux_files.HUB_REVISIONS["dev"],
    }
    # dev's sampling default is kohya's 20 steps.
    assert {p["sample_steps"] for p in json.loads((opt_ml.paths.work / "sample-prompts.json").read_text())} == {20}
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    written = [p for p in opt_ml.paths.root.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert written == [] and TOKEN not in json.dumps(run)


def test_a_finished_hub_run_restarted_downloads_nothing(opt_ml, image, hub_files, monkeypatch):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters(
        {"model_type": "flux1", "base_model": "black-forest-labs/FLUX.1-dev", "max_train_epochs": "1", "sample_every_n_epochs": "0"}
    )
    assert train(opt_ml, image) == 0, opt_ml.failure()
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    assert train(opt_ml, image) == 0, opt_ml.failure()
    assert len(opt_ml.runs()) == 1


def test_an_unreadable_secret_fails_the_job_before_training(opt_ml, image, monkeypatch):
    opt_ml.captioned_images(1)
    opt_ml.hyperparameters({"model_type": "flux1", "base_model": "black-forest-labs/FLUX.1-dev"})
    client = boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    stub.add_client_error("get_secret_value", service_error_code="AccessDeniedException", expected_params={"SecretId": "hf"})
    monkeypatch.setattr(hub_token, "_secrets_client", lambda secret_id: client)
    monkeypatch.setenv("HF_TOKEN_SECRET_ID", "hf")
    with stub:
        assert train(opt_ml, image) == 1
    assert opt_ml.failure() == "Cannot read the Hugging Face token secret hf (AccessDeniedException); check huggingFaceTokenSecret."
    assert opt_ml.runs() == []

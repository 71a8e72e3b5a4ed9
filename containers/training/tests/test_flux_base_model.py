"""FLUX.1 base models: the four files of an S3 prefix (the base_model channel), or of a Hub model
downloaded at pinned commits with the token from Secrets Manager."""

import io

import boto3
import pytest
from botocore.stub import Stubber

from flux_fixtures import transformer_bytes, write_flux_files
from lora_trainer import flux_files
from lora_trainer.base_model import resolve_base_model
from lora_trainer.hub_download import fetch_flux_files
from lora_trainer.errors import TrainingError
from lora_trainer.hub_token import read_hf_token

TOKEN = "hf_NeverPrintedToken0123456789"
SECRET = "lora-pipeline/hf-token"


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_a_channel_with_the_four_files(tmp_path, variant):
    channel = write_flux_files(tmp_path / "base_model", variant)
    (channel / "README.md").write_text("other files are left alone")
    base = resolve_base_model(channel, "black-forest-labs/FLUX.1-schnell", False, "flux1")
    assert (base.kind, base.variant, base.local, base.name_or_path) == ("FLUX.1 files", variant, True, str(channel / flux_files.TRANSFORMER[variant]))
    assert (base.flux.ae, base.flux.clip_l, base.flux.t5xxl) == (
        channel / "ae.safetensors",
        channel / "clip_l.safetensors",
        channel / "t5xxl_fp16.safetensors",
    )


@pytest.mark.parametrize(
    "setup, message",
    [
        (dict(variant="dev", skip=("t5xxl_fp16.safetensors", "ae.safetensors")), "lacks ae.safetensors, t5xxl_fp16.safetensors"),
        (dict(variant="dev", skip=("flux1-dev.safetensors",)), "lacks flux1-dev.safetensors or flux1-schnell.safetensors"),
        (
            dict(variant="schnell", transformer_name="flux1-dev.safetensors"),
            "flux1-dev.safetensors has no guidance embedder (guidance_in), as FLUX.1 schnell",
        ),
        (dict(variant="dev", transformer_name="flux1-schnell.safetensors"), "flux1-schnell.safetensors has the guidance embedder of FLUX.1 dev"),
    ],
)
def test_a_channel_that_is_not_the_four_files_is_refused(tmp_path, setup, message):
    channel = write_flux_files(tmp_path / "base_model", **setup)
    with pytest.raises(TrainingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_base_model(channel, "black-forest-labs/FLUX.1-schnell", False, "flux1")


def test_both_transformers_are_refused(tmp_path):
    channel = write_flux_files(tmp_path / "base_model", "dev")
    (channel / "flux1-schnell.safetensors").write_bytes(transformer_bytes("schnell"))
    with pytest.raises(TrainingError, match="holds both flux1-dev.safetensors and flux1-schnell.safetensors"):
        resolve_base_model(channel, "black-forest-labs/FLUX.1-schnell", False, "flux1")


def test_a_single_file_channel_is_no_flux_model(tmp_path):
    channel = tmp_path / "base_model"
    channel.mkdir()
    (channel / "model.safetensors").write_bytes(transformer_bytes("dev"))
    with pytest.raises(TrainingError, match="lacks flux1-dev.safetensors or flux1-schnell.safetensors, ae.safetensors"):
        resolve_base_model(channel, "black-forest-labs/FLUX.1-schnell", False, "flux1")
    assert resolve_base_model(channel, "x/y", False, "sd15").kind == "single file"  # negative control: SD's rules


def test_a_hub_model_is_only_named_until_its_files_are_fetched(tmp_path):
    base = resolve_base_model(tmp_path / "absent", "black-forest-labs/FLUX.1-dev", True, "flux1")
    assert (base.kind, base.variant, base.local, base.flux) == ("Hugging Face id", "dev", False, None)
    assert resolve_base_model(tmp_path / "absent", "black-forest-labs/FLUX.1-dev", True, "sdxl").variant is None


@pytest.fixture
def offline_hub(monkeypatch):
    """huggingface_hub's own offline mode: hf_hub_download finds a file already in local_dir and
    reaches no server, as on this machine; a missing file fails as a download would."""
    import huggingface_hub
    from huggingface_hub.utils import reset_sessions

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    reset_sessions()
    yield
    reset_sessions()


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_fetched_files_are_the_pinned_ones_and_checked(tmp_path, offline_hub, variant, capsys):
    folder = write_flux_files(tmp_path / "hub", variant)
    base = resolve_base_model(tmp_path / "absent", flux_files.HUB_REPOS[variant], True, "flux1")
    fetched = fetch_flux_files(base, folder, TOKEN)
    assert fetched.flux.transformer == folder / flux_files.TRANSFORMER[variant] and fetched.name_or_path == base.name_or_path
    out = capsys.readouterr().out
    assert (
        f"downloading {flux_files.TRANSFORMER[variant]} (transformer) from {flux_files.HUB_REPOS[variant]} at {flux_files.HUB_REVISIONS[variant][:12]}"
        in out
    )
    assert "t5xxl_fp16.safetensors (t5xxl) from comfyanonymous/flux_text_encoders at 6af2a98e3f61" in out
    assert TOKEN not in out


def test_a_fetched_transformer_of_the_other_variant_is_refused(tmp_path, offline_hub):
    folder = write_flux_files(tmp_path / "hub", "schnell", transformer_name="flux1-dev.safetensors")
    base = resolve_base_model(tmp_path / "absent", "black-forest-labs/FLUX.1-dev", True, "flux1")
    with pytest.raises(TrainingError, match="it is the schnell transformer"):
        fetch_flux_files(base, folder, None)


def test_a_failed_download_says_so_without_the_token(tmp_path, offline_hub):
    folder = write_flux_files(tmp_path / "hub", "dev", skip=("clip_l.safetensors",))
    base = resolve_base_model(tmp_path / "absent", "black-forest-labs/FLUX.1-dev", True, "flux1")
    with pytest.raises(TrainingError) as raised:
        fetch_flux_files(base, folder, TOKEN)
    assert str(raised.value).startswith("Downloading clip_l.safetensors from comfyanonymous/flux_text_encoders at 6af2a98")
    assert TOKEN not in str(raised.value)


@pytest.mark.parametrize(
    "token, says", [(None, "set huggingFaceTokenSecret"), (TOKEN, "cannot read black-forest-labs/FLUX.1-dev (GatedRepoError): accept")]
)
def test_a_gated_model_says_what_to_do(tmp_path, monkeypatch, token, says):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(repo_id, filename, **kwargs):
        assert kwargs["token"] == token and kwargs["revision"] == flux_files.HUB_REVISIONS["dev"]
        raise GatedRepoError(f"401 Client Error. Access to model {repo_id} is restricted. Authorization: Bearer {kwargs['token']}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    base = resolve_base_model(tmp_path / "absent", "black-forest-labs/FLUX.1-dev", True, "flux1")
    with pytest.raises(TrainingError) as raised:
        fetch_flux_files(base, tmp_path / "hub", token)
    assert says in str(raised.value) and TOKEN not in str(raised.value)


def stubbed_secrets():
    client = boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def test_the_token_comes_from_the_named_secret():
    client, stub = stubbed_secrets()
    stub.add_response("get_secret_value", {"Name": SECRET, "SecretString": f" {TOKEN}\n"}, {"SecretId": SECRET})
    with stub:
        assert read_hf_token({"HF_TOKEN_SECRET_ID": SECRET}, lambda secret_id: client) == TOKEN
    stub.assert_no_pending_responses()


def test_without_a_secret_id_no_call_is_made():
    def no_client(secret_id):
        raise AssertionError("Secrets Manager was called")

    assert read_hf_token({}, no_client) is None
    assert read_hf_token({"HF_TOKEN_SECRET_ID": "  "}, no_client) is None


@pytest.mark.parametrize(
    "response, message",
    [
        (dict(service_error_code="AccessDeniedException"), f"Cannot read the Hugging Face token secret {SECRET} (AccessDeniedException)"),
        (dict(service_error_code="ResourceNotFoundException"), "(ResourceNotFoundException); check huggingFaceTokenSecret"),
        ({"SecretBinary": io.BytesIO(b"x").read()}, "has no SecretString"),
    ],
)
def test_an_unreadable_secret_is_a_clear_failure(response, message):
    client, stub = stubbed_secrets()
    if "service_error_code" in response:
        stub.add_client_error("get_secret_value", expected_params={"SecretId": SECRET}, **response)
    else:
        stub.add_response("get_secret_value", {"Name": SECRET, **response}, {"SecretId": SECRET})
    with stub, pytest.raises(TrainingError) as raised:
        read_hf_token({"HF_TOKEN_SECRET_ID": SECRET}, lambda secret_id: client)
    assert message in str(raised.value)


def test_a_secret_arn_names_the_region_a_name_leaves_it_to_boto3(monkeypatch):
    from lora_trainer.hub_token import _secrets_client

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    arn = "arn:aws:secretsmanager:ap-southeast-2:123456789012:secret:hf-token-AbCdEf"
    assert _secrets_client(arn).meta.region_name == "ap-southeast-2"
    assert _secrets_client("hf-token").meta.region_name == "eu-west-1"


def test_the_images_t5_tokenizer_comes_from_the_pinned_schnell_commit():
    # One commit for the downloaded files and the baked tokenizer (Dockerfile ARG FLUX_SCHNELL_REVISION).
    import re
    from pathlib import Path

    dockerfile = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
    assert re.search(r"^ARG FLUX_SCHNELL_REVISION=(\w+)$", dockerfile, re.M)[1] == flux_files.HUB_REVISIONS["schnell"]
    assert "save_pretrained('/opt/tokenizers/google_t5-v1_1-xxl')" in dockerfile  # where kohya's FluxTokenizeStrategy looks


def test_a_transformer_file_without_flux_blocks_is_refused(tmp_path):
    # e.g. an SD checkpoint renamed: kohya would fail on it only once loading (test_kohya_flux.py).
    from flux_fixtures import safetensors_with

    channel = write_flux_files(tmp_path / "base_model", "schnell")
    (channel / "flux1-schnell.safetensors").write_bytes(safetensors_with(["model.diffusion_model.input_blocks.0.0.weight"]))
    with pytest.raises(TrainingError, match="flux1-schnell.safetensors is not a FLUX.1 transformer: it has none of FLUX's double and single blocks"):
        resolve_base_model(channel, "black-forest-labs/FLUX.1-schnell", False, "flux1")

"""A FLUX.1 Hub base model's four files, downloaded from the Hugging Face Hub at the commits
flux_files.py pins, with the token from hub_token.py (never logged, never in a message)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import flux_files
from .base_model import BaseModel, check_variant, flux_files_in
from .errors import TrainingError


def fetch_flux_files(base: BaseModel, folder: Path, token: str | None) -> BaseModel:
    """A Hub FLUX.1 model's four files, downloaded at their pinned commits into `folder` (on the
    training volume: the transformer alone is 23.8 GB) and checked like a channel's."""
    if base.local or base.variant is None:
        return base
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # tqdm's carriage returns would flood the job log
    folder.mkdir(parents=True, exist_ok=True)
    for role, (repo, revision, name) in flux_files.hub_files(base.variant).items():
        _download(role, repo, revision, name, folder, token)
    files = flux_files_in(folder, base.variant)
    check_variant(files.transformer, base.variant)
    return replace(base, flux=files)


def _download(role: str, repo: str, revision: str, name: str, folder: Path, token: str | None) -> None:
    """One file into `folder`; a Hub error becomes a message of our own (the library's quotes the request)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    print(f"lora-trainer: downloading {name} ({role}) from {repo} at {revision[:12]}", flush=True)
    try:
        hf_hub_download(repo, name, revision=revision, token=token, local_dir=folder)
    except (GatedRepoError, RepositoryNotFoundError) as error:
        raise TrainingError(_access_message(repo, token, error)) from None
    except HfHubHTTPError as error:
        why = f"HTTP {error.response.status_code}" if error.response is not None else "the Hub was not reached"
        raise TrainingError(f"Downloading {name} from {repo} at {revision} failed ({why}); a restarted job tries again.") from None


def _access_message(repo: str, token: str | None, error: Exception) -> str:
    """Never the token, never the library's message (which quotes the request)."""
    if token is None:
        return (
            f"{repo} is gated ({type(error).__name__}): set huggingFaceTokenSecret to a Secrets Manager secret holding a "
            "Hugging Face token whose account has accepted the model's licence."
        )
    return (
        f"The Hugging Face token from HF_TOKEN_SECRET_ID cannot read {repo} ({type(error).__name__}): "
        "accept the model's licence on its Hub page with the token's account, or use a token of an account that has."
    )

"""The Hugging Face token for a gated Hub base model: read from the Secrets Manager secret named by
HF_TOKEN_SECRET_ID (the stack grants this job's role that one secret). The token is only ever
returned: never printed, written or put in a message."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from .errors import TrainingError

SECRET_ID_VARIABLE = "HF_TOKEN_SECRET_ID"


def _secrets_client(secret_id: str) -> Any:
    """A full ARN names its region; a name is looked up in the job's (boto3's usual sources)."""
    import boto3  # only a job given a secret needs it

    region = secret_id.split(":")[3] if secret_id.startswith("arn:") and secret_id.count(":") >= 6 else None
    return boto3.client("secretsmanager", region_name=region or None)


def read_hf_token(environ: Mapping[str, str] | None = None, client: Callable[[str], Any] | None = None) -> str | None:
    """None without HF_TOKEN_SECRET_ID (an ungated model, or an S3 base model under network isolation)."""
    secret_id = (os.environ if environ is None else environ).get(SECRET_ID_VARIABLE, "").strip()
    if not secret_id:
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        secret = (client or _secrets_client)(secret_id).get_secret_value(SecretId=secret_id)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise TrainingError(f"Cannot read the Hugging Face token secret {secret_id} ({code}); check huggingFaceTokenSecret.") from None
    except BotoCoreError as error:
        raise TrainingError(f"Cannot read the Hugging Face token secret {secret_id} ({type(error).__name__}).") from None
    token = (secret.get("SecretString") or "").strip()
    if not token:
        raise TrainingError(f"The Hugging Face token secret {secret_id} has no SecretString; store the token as the secret's plain text.")
    return token

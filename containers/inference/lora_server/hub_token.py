"""The Hugging Face token for a gated base model (FLUX.1-dev), read from Secrets Manager at load.

The deployment names only the secret (HF_TOKEN_SECRET_ID); its value is read here, handed to
huggingface_hub as `token=`, and never logged, written to disk or put in an error message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class HubTokenError(Exception):
    """The token's secret could not be read or is empty; the message names the secret, never its value."""


def region_of(secret_id: str) -> str | None:
    """The region of a secret given by ARN (arn:aws:secretsmanager:<region>:...); None for a name."""
    parts = secret_id.split(":")
    return parts[3] if secret_id.startswith("arn:") and len(parts) > 3 and parts[3] else None


def read_hub_token(secret_id: str | None, client: Callable[[str | None], Any] | None = None) -> str | None:
    """The token in the secret's SecretString (surrounding whitespace dropped); None when no secret is named."""
    if not secret_id:
        return None
    if client is None:
        import boto3

        def client(region: str | None) -> Any:
            return boto3.client("secretsmanager", region_name=region)

    try:
        value = client(region_of(secret_id)).get_secret_value(SecretId=secret_id).get("SecretString")
    except Exception as e:  # botocore's errors name the secret and the refusal, not a value
        raise HubTokenError(f"HF_TOKEN_SECRET_ID {secret_id}: cannot read the secret ({type(e).__name__}: {e})") from None
    token = (value or "").strip()
    if not token:
        raise HubTokenError(f"HF_TOKEN_SECRET_ID {secret_id}: the secret has no SecretString; it must hold a Hugging Face token")
    return token

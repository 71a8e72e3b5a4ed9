"""Resolving the LoRA a request names to a checked registry version item (DynamoDB GetItem reads).

The table (see docs/design.md): partition key `name`, sort key `version`. The head item (version 0)
holds `latest` and `current`; each version item (version >= 1) its status, family, base model, S3
location and SHA-256. Reads are cached for LORA_REGISTRY_TTL_SECONDS, so a retirement reaches
every instance within that time. Nothing from an item is trusted before it is checked here.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .settings import Settings
from .shared_types import LoraRef, LoraVersion

# The names the server accepts (the workflow's LoRA names): never used to build a path.
# validation.py parses a request's `lora`/`loras` with the same NAME and NAME_RULE.
NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"
NAME_PATTERN = re.compile(rf"^{NAME}\Z")
NAME_RULE = "1 to 63 letters, digits, '_' or '-', starting with a letter or digit"
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
STATUSES = ("pending", "ready", "failed", "retired")
# DynamoDB errors that say "try again": the caller gets a 503.
CACHE_ENTRIES = 10_000  # a flood of unknown names must not grow memory without bound
_TRANSIENT = ("ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable")


class LoraError(Exception):
    """A named LoRA the server will not use; `status` is the HTTP status, `field` the request field."""

    status = 400

    def __init__(self, message: str, field: str = "lora") -> None:
        super().__init__(message)
        self.field = field


class LoraNotFound(LoraError):
    """No such name, version, or current version (404)."""

    status = 404


class LoraGone(LoraError):
    """The version was retired or failed its check (410)."""

    status = 410


class LoraRefused(LoraError):
    """Not servable here: another family or base model, a malformed name, or an unsafe or corrupt item (400)."""

    status = 400


class LoraTimeout(LoraError):
    """The request's time limit passed while its LoRAs were being resolved or fetched (504)."""

    status = 504


class LoraUnavailable(LoraError):
    """The registry or S3 could not answer now (503: retry)."""

    status = 503


def check_name(name: object, field: str = "lora") -> str:
    """The name if it matches NAME_PATTERN; else LoraRefused (400)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise LoraRefused(f"a LoRA name must be {NAME_RULE}, got {name!r}", field)
    return name


def label(name: str, version: int | None) -> str:
    return name if version is None else f"{name}@{version}"


class Registry:
    """Reads and checks registry items for one endpoint (its family, base model, bucket and prefix)."""

    def __init__(
        self, settings: Settings, dynamodb: Any, clock: Callable[[], float] = time.monotonic, cache_entries: int = CACHE_ENTRIES
    ) -> None:
        assert settings.lora_registry_table and settings.lora_bucket and settings.lora_prefix and settings.served_base_model
        self._settings = settings
        self._table = settings.lora_registry_table
        self._client = dynamodb
        self._clock = clock
        self._ttl = settings.lora_registry_ttl_seconds
        # Least recently used first: past `cache_entries`, the oldest entry goes (O(1) per insert).
        self._cache: OrderedDict[tuple[str, int], tuple[float, dict[str, Any] | None]] = OrderedDict()
        self._cache_entries = cache_entries
        self._lock = threading.Lock()
        self.reads = 0  # GetItem calls made, for tests and logs

    def resolve(self, ref: LoraRef, field: str = "lora", deadline: float | None = None) -> LoraVersion:
        """The version `ref` names, checked; raises a LoraError subclass saying why it cannot be served.

        No registry read starts after `deadline` (this clock's time): LoraTimeout (504) instead.
        """
        name = check_name(ref.name, field)
        version = ref.version
        if version is None:
            version = self._current(name, field, deadline)
        item = self._item(name, version, field, deadline)
        if item is None:
            raise LoraNotFound(f"LoRA {name}@{version} does not exist", field)
        lora = self._parse(name, version, item, field)
        self._check_status(lora, item, named_version=ref.version is not None, field=field)
        self._check_fit(lora, field)
        return lora

    def _current(self, name: str, field: str, deadline: float | None) -> int:
        head = self._item(name, 0, field, deadline)
        if head is None:
            raise LoraNotFound(f"no LoRA is named {name!r}", field)
        current = head.get("current", {}).get("N")
        if current is None:
            latest = head.get("latest", {}).get("N", "0")
            raise LoraNotFound(
                f"LoRA {name} has no current version (none of its {latest} versions passed its check, or all were retired); "
                "name a version as name@version",
                field,
            )
        return int(current)

    def _item(self, name: str, version: int, field: str, deadline: float | None) -> dict[str, Any] | None:
        """The item's attributes (DynamoDB's typed form), or None; cached for the TTL, absences too."""
        key = (name, version)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                self._cache.move_to_end(key)
                return cached[1]
        if deadline is not None and now > deadline:
            raise LoraTimeout(f"the request's time limit passed while resolving LoRA {label(name, version or None)}; retry", field)
        item = self._get_item(name, version, field)
        with self._lock:
            self._cache[key] = (now + self._ttl, item)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        return item

    def _get_item(self, name: str, version: int, field: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.reads += 1
        try:
            # Strongly consistent: the workflow's check asks for a version registered a second earlier.
            answer = self._client.get_item(
                TableName=self._table, Key={"name": {"S": name}, "version": {"N": str(version)}}, ConsistentRead=True
            )
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in _TRANSIENT:
                raise LoraUnavailable(f"the LoRA registry is busy ({code}); retry shortly", field) from e
            raise  # a missing table or permission is the deployment's fault: a 500 with its message
        except BotoCoreError as e:
            raise LoraUnavailable(f"the LoRA registry could not be reached ({type(e).__name__}); retry shortly", field) from e
        return answer.get("Item")

    def _parse(self, name: str, version: int, item: dict[str, Any], field: str) -> LoraVersion:
        """The version item's fields, each of the type the registry writes; a corrupt item is refused."""

        def text(attribute: str) -> str:
            value = item.get(attribute, {}).get("S")
            if not isinstance(value, str) or not value:
                raise LoraRefused(f"LoRA {name}@{version} cannot be served: its registry item has no {attribute}", field)
            return value

        def whole(attribute: str) -> int:
            value = item.get(attribute, {}).get("N")
            if not isinstance(value, str) or not value.isdigit():
                raise LoraRefused(f"LoRA {name}@{version} cannot be served: its registry item has no whole {attribute}", field)
            return int(value)

        sha256 = text("sha256")
        if not _SHA256.match(sha256):
            raise LoraRefused(f"LoRA {name}@{version} cannot be served: its registry sha256 is not 64 lowercase hex digits", field)
        return LoraVersion(
            name=name,
            version=version,
            status=text("status"),
            model_type=text("modelType"),
            base_model=text("baseModel"),
            s3_uri=text("s3Uri"),
            sha256=sha256,
            size_bytes=whole("sizeBytes"),
        )

    @staticmethod
    def _check_status(lora: LoraVersion, item: dict[str, Any], named_version: bool, field: str) -> None:
        where = f"LoRA {lora.name}@{lora.version}"
        if lora.status == "ready":
            return
        if lora.status == "retired":
            since = item.get("retiredAt", {}).get("S")
            raise LoraGone(f"{where} was retired{f' at {since}' if since else ''}; use another version", field)
        if lora.status == "failed":
            reason = item.get("failure", {}).get("S") or "no reason recorded"
            raise LoraGone(f"{where} failed its check after training ({reason}); it is never served", field)
        if lora.status == "pending" and named_version:
            return  # the workflow's check of a new version names it exactly
        if lora.status == "pending":
            raise LoraNotFound(f"{where} has not passed its check yet; name it as {lora.name}@{lora.version} to try it", field)
        raise LoraRefused(f"{where} cannot be served: its registry status is {lora.status!r}, not one of {', '.join(STATUSES)}", field)

    def _check_fit(self, lora: LoraVersion, field: str) -> None:
        """Family, base model and S3 location must be this endpoint's before anything is fetched."""
        settings = self._settings
        where = f"LoRA {lora.name}@{lora.version}"
        if lora.model_type != settings.model_type:
            raise LoraRefused(
                f"{where} is an {lora.model_type} LoRA; this endpoint serves {settings.model_type}: "
                "call the shared endpoint of its family",
                field,
            )
        if lora.base_model != settings.served_base_model:
            raise LoraRefused(
                f"{where} was trained on base model {lora.base_model!r}; this endpoint serves {settings.served_base_model!r}",
                field,
            )
        check_s3_uri(lora.s3_uri, settings.lora_bucket or "", settings.lora_prefix or "", where, field)


def check_s3_uri(uri: str, bucket: str, prefix: str, where: str, field: str = "lora") -> str:
    """The object key of `uri` if it is a .safetensors under s3://bucket/prefix with no '.', '..' or empty segment."""
    expected = f"s3://{bucket}/{prefix}"
    key = uri.removeprefix(f"s3://{bucket}/")
    segments = key.split("/")
    if (
        not uri.startswith(expected)
        or not key.endswith(".safetensors")
        or any(part in ("", ".", "..") for part in segments)
        or any(ord(c) < 32 or c == "\\" for c in key)
    ):
        raise LoraRefused(
            f"{where} cannot be served: its file {uri!r} is not a .safetensors under {expected}; it is never fetched", field
        )
    return key

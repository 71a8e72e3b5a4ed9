"""The disk tier of the LoRA caches: files fetched from S3, verified, kept by least recent use.

A file is named after its SHA-256 (never after the request's name), so no name reaches a path, and
two versions with the same bytes share one file. A download is streamed through SHA-256 and written
to a temporary file; only a file whose size and digest match the registry, and whose header is a
kohya-ss LoRA of the endpoint's family, becomes `<sha256>.safetensors`. Downloads run outside the
GPU lock, on a small pool of their own, each bounded by DOWNLOAD_SECONDS (not by the request that
started it); concurrent requests for one file wait for a single download, each until its own time limit.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .logs import JsonLog
from .lora_cache import ByteLru, CacheError, TooLarge
from .lora_file import LoraFileError, inspect_lora
from .metrics import Metrics
from .registry import LoraError, LoraNotFound, LoraRefused, LoraTimeout, LoraUnavailable, check_s3_uri
from .settings import Settings
from .shared_types import LocalLora, LoraVersion

CHUNK_BYTES = 1024 * 1024
_OWN_FILE = re.compile(r"^[0-9a-f]{64}(\.safetensors|\.[0-9a-f]{16}\.part)\Z")


class FetchTimeout(LoraTimeout):
    """The file could not be fetched within the request's time limit (504)."""


# A download's own time limit, whatever the request that started it: a file slower than one request's
# budget still arrives for the requests after it, and a stalled download cannot hold its room forever.
DOWNLOAD_SECONDS = 300.0
DOWNLOAD_WORKERS = 3  # at most max_in_flight (3) requests x 3 LoRAs wait at once; 3 streams saturate a g4dn link


class DiskTier:
    """Verified LoRA files in `settings.lora_cache_dir`, at most `lora_cache_disk_bytes` of them."""

    def __init__(
        self,
        settings: Settings,
        s3: Any,
        metrics: Metrics,
        log: JsonLog,
        clock: Callable[[], float] = time.monotonic,
        download_seconds: float = DOWNLOAD_SECONDS,
    ) -> None:
        self._settings = settings
        self._s3 = s3
        self._metrics = metrics
        self._log = log
        self._clock = clock
        self._download_seconds = download_seconds
        self.directory = settings.lora_cache_dir
        self.cache: ByteLru[str, Path] = ByteLru(settings.lora_cache_disk_bytes, name="LORA_CACHE_DISK_BYTES disk cache")
        self._downloads: dict[str, Future[Path]] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(DOWNLOAD_WORKERS, thread_name_prefix="lora-download")
        self.downloads = 0  # completed S3 downloads, for tests and logs
        self._clear_leftovers()

    def _clear_leftovers(self) -> None:
        """Files of an earlier worker are not in this one's accounting: its own kind of file is deleted."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.iterdir():
            if _OWN_FILE.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)

    @contextmanager
    def use(self, versions: list[LoraVersion], scales: list[float], deadline: float) -> Iterator[list[LocalLora]]:
        """The verified local files of `versions`, kept from eviction until the block ends.

        Every missing file is fetched at once (concurrently); the request waits for them until its own
        `deadline`, then answers 504 while the downloads go on for the requests after it.
        """
        self._check_room(versions)
        keys = [v.sha256 for v in versions]
        self.cache.pin(keys)
        try:
            futures = [self._lookup(version) for version in versions]  # every download started before any wait
            paths = [self._wait(version, future, deadline) for version, future in zip(versions, futures, strict=True)]
            yield [LocalLora(version, path, scale) for version, path, scale in zip(versions, paths, scales, strict=True)]
        finally:
            self.cache.unpin(keys)

    def _check_room(self, versions: list[LoraVersion]) -> None:
        """A set of files larger in all than the disk tier can never be served: 400, not a 503 to retry forever."""
        sizes = {v.sha256: (f"{v.name}@{v.version}", v.size_bytes) for v in versions}
        total = sum(size for _, size in sizes.values())
        if len(sizes) > 1 and total > self.cache.capacity_bytes:
            each = ", ".join(f"{where} ({size} bytes)" for where, size in sizes.values())
            raise LoraRefused(
                f"LoRAs {each} need {total} bytes together, more than the {self.cache.name} ({self.cache.capacity_bytes} bytes); "
                "ask for fewer LoRAs at once, or raise the cache size",
                "loras",
            )

    def _lookup(self, version: LoraVersion) -> Future[Path]:
        """The file's future: done on a disk hit, else the download in progress, else a new download."""
        with self._lock:
            pending = self._downloads.get(version.sha256)
            path = None if pending is not None else self.cache.get(version.sha256)
            # 1 or 0 per lookup, as the other tiers record theirs: the average is the hit rate.
            self._metrics.record("LoraHitDisk", int(path is not None), "Count")
            if path is not None:
                done: Future[Path] = Future()
                done.set_result(path)
                return done
            if pending is not None:
                return pending
            future = self._reserve(version)
        self._metrics.record("LoraMiss", 1, "Count")
        self._executor.submit(self._download, version, future)
        return future

    def _wait(self, version: LoraVersion, future: Future[Path], deadline: float) -> Path:
        try:
            left = deadline - self._clock()
            path = future.result(timeout=None if math.isinf(left) else max(0.0, left))  # inf: no limit (benchmarks)
        except FuturesTimeout as e:
            raise FetchTimeout(
                f"LoRA {version.name}@{version.version} was still downloading at the request's time limit; "
                "the download goes on: retry shortly"
            ) from e
        fetch_ms = getattr(future, "fetch_ms", None)
        if fetch_ms is not None and not getattr(future, "reported", False):
            future.reported = True  # type: ignore[attr-defined]  # one LoraFetchMs per download
            self._metrics.record("LoraFetchMs", fetch_ms, "Milliseconds")
        return path

    def _reserve(self, version: LoraVersion) -> Future[Path]:
        """Room on disk for the file (evicting others), and the future its waiters share. Under the lock."""
        final = self.directory / f"{version.sha256}.safetensors"
        try:
            self.cache.put(version.sha256, final, version.size_bytes, on_evict=_delete)
        except TooLarge as e:
            raise LoraRefused(f"LoRA {version.name}@{version.version} cannot be served: {e}") from e
        except CacheError as e:
            raise LoraUnavailable(f"LoRA {version.name}@{version.version}: {e}") from e
        # The download pins its own file: it may outlive every request waiting for it.
        self.cache.pin([version.sha256])
        future: Future[Path] = Future()
        self._downloads[version.sha256] = future
        return future

    def _download(self, version: LoraVersion, future: Future[Path]) -> None:
        """Fetches, verifies and publishes the file; on any failure frees its room and fails its waiters."""
        final = self.directory / f"{version.sha256}.safetensors"
        partial = self.directory / f"{version.sha256}.{os.urandom(8).hex()}.part"
        started = self._clock()
        try:
            self._fetch_verified(version, partial, started + self._download_seconds)
            partial.replace(final)
        except BaseException as e:
            partial.unlink(missing_ok=True)
            with self._lock:
                del self._downloads[version.sha256]
                self.cache.unpin([version.sha256])
                self.cache.remove(version.sha256)
            future.set_exception(e if isinstance(e, Exception) else RuntimeError(str(e)))
            if isinstance(e, LoraError):
                self._log("lora_fetch_failed", level="warning", lora=f"{version.name}@{version.version}", reason=str(e))
            elif not isinstance(e, Exception):
                raise
            return
        with self._lock:
            del self._downloads[version.sha256]
            self.cache.unpin([version.sha256])
            self.downloads += 1
        future.fetch_ms = round((self._clock() - started) * 1000)  # type: ignore[attr-defined]
        future.set_result(final)

    def _fetch_verified(self, version: LoraVersion, partial: Path, deadline: float) -> None:
        where = f"LoRA {version.name}@{version.version}"
        # Checked again here, so that nothing reaches S3 that the registry check would not have passed.
        key = check_s3_uri(version.s3_uri, self._settings.lora_bucket or "", self._settings.lora_prefix or "", where)
        digest = hashlib.sha256()
        size = 0
        with partial.open("wb") as out:
            for chunk in self._chunks(version, key, where):
                size += len(chunk)
                if size > version.size_bytes:
                    raise LoraRefused(f"{where} cannot be served: {version.s3_uri} is larger than its registry sizeBytes {version.size_bytes}")
                if self._clock() > deadline:
                    raise FetchTimeout(f"{where}: downloading {version.s3_uri} took longer than {self._download_seconds:g} s; retry")
                digest.update(chunk)
                out.write(chunk)
        if size != version.size_bytes:
            raise LoraRefused(f"{where} cannot be served: {version.s3_uri} holds {size} bytes, its registry sizeBytes says {version.size_bytes}")
        if digest.hexdigest() != version.sha256:
            raise LoraRefused(
                f"{where} cannot be served: SHA-256 mismatch: the registry says {version.sha256}, "
                f"{version.s3_uri} has {digest.hexdigest()}; the file was changed after registration"
            )
        try:
            inspect_lora(partial, self._settings.model_type)  # type: ignore[arg-type]  # settings checked it
        except LoraFileError as e:
            raise LoraRefused(f"{where} cannot be served: its file is not a usable {self._settings.model_type} LoRA: {e}") from e

    def _chunks(self, version: LoraVersion, key: str, where: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self._s3.get_object(Bucket=self._settings.lora_bucket, Key=key)["Body"]
            yield from body.iter_chunks(CHUNK_BYTES)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise LoraNotFound(f"{where}: its file {version.s3_uri} does not exist") from e
            if code in ("AccessDenied", "403"):
                # The role's ListBucket is prefix-scoped and a GetObject carries no s3:prefix: a missing key is a 403.
                self._log("lora_file_unreadable", level="error", lora=where.removeprefix("LoRA "), s3_uri=version.s3_uri, code=code)
                raise LoraNotFound(
                    f"{where}: its file {version.s3_uri} does not exist, or the endpoint's role may not read it (S3 AccessDenied)"
                ) from e
            if code in ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"):
                raise LoraUnavailable(f"{where}: S3 is busy ({code}); retry shortly") from e
            raise  # a missing bucket or another fault of the deployment: a 500 with its message
        except BotoCoreError as e:
            raise LoraUnavailable(f"{where}: {version.s3_uri} could not be read ({type(e).__name__}); retry shortly") from e


def _delete(path: Path) -> None:
    path.unlink(missing_ok=True)

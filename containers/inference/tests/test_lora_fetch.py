"""The disk tier through the real boto3 against moto's S3: download, verification, eviction by bytes, one download per file."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lora_server.logs import JsonLog
from lora_server.lora_fetch import DiskTier, FetchTimeout
from lora_server.metrics import Metrics
from lora_server.registry import LoraNotFound, LoraRefused, LoraUnavailable
from lora_server.shared_types import LoraVersion

from .moto_server import BUCKET, Moto, moto, moto_server  # noqa: F401 - pytest fixtures
from .registry_items import BASE_MODEL, lora_bytes, shared_settings


class CountingS3:
    """The real client, counting get_object calls; `gate` (if set) holds each call until it opens."""

    def __init__(self, client: Any, gate: threading.Event | None = None) -> None:
        self.client = client
        self.keys: list[str] = []
        self.gate = gate
        self.error: Exception | None = None  # raised by get_object instead of reading, when set

    def get_object(self, **kwargs: Any) -> Any:
        self.keys.append(kwargs["Key"])
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return self.client.get_object(**kwargs)


@pytest.fixture
def s3(moto: Moto) -> CountingS3:  # noqa: F811 - the fixture
    client = moto.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return CountingS3(client)


def upload(s3: CountingS3, data: bytes, name: str = "style", version: int = 1, **overrides: Any) -> LoraVersion:
    key = f"loras/{name}/{version}.safetensors"  # where the registry function copies each LoRA
    s3.client.put_object(Bucket=BUCKET, Key=key, Body=data)
    values: dict[str, Any] = {
        "name": name, "version": version, "status": "ready", "model_type": "sd15", "base_model": BASE_MODEL,
        "s3_uri": f"s3://{BUCKET}/{key}", "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data), **overrides,
    }
    return LoraVersion(**values)


def make_disk(tmp_path: Path, s3: CountingS3, **settings: Any) -> tuple[DiskTier, list[dict], io.StringIO]:
    lines: list[dict] = []
    metrics = Metrics("Test", {"ModelType": "sd15"}, emit=lambda line: lines.append(json.loads(line)))
    log = io.StringIO()
    disk = DiskTier(shared_settings(tmp_path, **settings), s3, metrics, JsonLog(log))
    disk.metrics = metrics  # type: ignore[attr-defined]  # for the tests' flush
    return disk, lines, log


def fetch(disk: DiskTier, *versions: LoraVersion) -> list[Path]:
    with disk.use(list(versions), [1.0] * len(versions), time.monotonic() + 30) as local:
        return [lora.path for lora in local]


def test_a_miss_downloads_and_verifies_then_a_hit_reads_the_disk(tmp_path: Path, s3: CountingS3) -> None:
    data = lora_bytes(tmp_path)
    version = upload(s3, data)
    disk, lines, _ = make_disk(tmp_path, s3)
    (path,) = fetch(disk, version)
    assert path == tmp_path / "lora-cache" / f"{version.sha256}.safetensors"  # named by digest, never by name
    assert path.read_bytes() == data and len(s3.keys) == 1
    disk.metrics.flush()  # type: ignore[attr-defined]
    assert (lines[-1]["LoraMiss"], lines[-1]["LoraHitDisk"]) == (1, 0) and "LoraFetchMs" in lines[-1]
    assert fetch(disk, version) == [path] and len(s3.keys) == 1  # the control: no second download
    disk.metrics.flush()  # type: ignore[attr-defined]
    assert lines[-1]["LoraHitDisk"] == 1 and "LoraMiss" not in lines[-1]


def test_a_sha256_mismatch_is_refused_and_nothing_is_kept(tmp_path: Path, s3: CountingS3) -> None:
    data = lora_bytes(tmp_path)
    version = upload(s3, data, sha256=hashlib.sha256(b"what was registered").hexdigest())
    disk, _, log = make_disk(tmp_path, s3)
    with pytest.raises(LoraRefused, match="SHA-256 mismatch: the registry says .* has " + hashlib.sha256(data).hexdigest()):
        fetch(disk, version)
    assert list((tmp_path / "lora-cache").iterdir()) == [] and disk.cache.used_bytes == 0
    assert "lora_fetch_failed" in log.getvalue()
    # The control: the same bytes with the right digest are served (and the refusal left nothing behind).
    assert fetch(disk, upload(s3, data, version=2))[0].read_bytes() == data


def test_a_file_longer_than_registered_is_cut_off(tmp_path: Path, s3: CountingS3) -> None:
    data = lora_bytes(tmp_path)
    version = upload(s3, data, size_bytes=len(data) - 1)
    disk, _, _ = make_disk(tmp_path, s3)
    with pytest.raises(LoraRefused, match="is larger than its registry sizeBytes"):
        fetch(disk, version)
    assert list((tmp_path / "lora-cache").iterdir()) == []


def test_the_header_is_checked_before_use(tmp_path: Path, s3: CountingS3) -> None:
    disk, _, _ = make_disk(tmp_path, s3)
    sdxl = upload(s3, lora_bytes(tmp_path, "sdxl"))  # registered as sd15, but its keys are SDXL's
    with pytest.raises(LoraRefused, match="its file is not a usable sd15 LoRA: .*is an SDXL LoRA"):
        fetch(disk, sdxl)
    not_lora = upload(s3, b"\x02\x00\x00\x00\x00\x00\x00\x00{}", name="empty")
    with pytest.raises(LoraRefused, match="holds no tensors"):
        fetch(disk, not_lora)
    assert list((tmp_path / "lora-cache").iterdir()) == []


def test_a_missing_file_is_404(tmp_path: Path, s3: CountingS3) -> None:
    version = upload(s3, lora_bytes(tmp_path))
    s3.client.delete_object(Bucket=BUCKET, Key=version.s3_uri.removeprefix(f"s3://{BUCKET}/"))
    disk, _, _ = make_disk(tmp_path, s3)
    with pytest.raises(LoraNotFound, match="does not exist"):
        fetch(disk, version)


def test_an_s3_uri_outside_the_prefix_is_never_fetched(tmp_path: Path, s3: CountingS3) -> None:
    data = lora_bytes(tmp_path)
    inside = upload(s3, data)
    s3.client.put_object(Bucket=BUCKET, Key="secrets/style.safetensors", Body=data)
    disk, _, _ = make_disk(tmp_path, s3)
    for uri in (f"s3://{BUCKET}/secrets/style.safetensors", f"s3://{BUCKET}/loras/../secrets/style.safetensors"):
        with pytest.raises(LoraRefused, match="never fetched"):
            fetch(disk, LoraVersion(**{**inside.__dict__, "s3_uri": uri}))
    assert s3.keys == []
    fetch(disk, inside)  # the control: inside the prefix, it is fetched
    assert len(s3.keys) == 1


def test_eviction_by_bytes_deletes_the_least_recently_used_files(tmp_path: Path, s3: CountingS3) -> None:
    files = [lora_bytes(tmp_path, tag=str(i)) for i in range(3)]
    versions = [upload(s3, data, name=f"l{i}") for i, data in enumerate(files)]
    size = max(len(f) for f in files)
    disk, _, _ = make_disk(tmp_path, s3, lora_cache_disk_bytes=2 * size + 1)  # room for two
    a, b = fetch(disk, versions[0])[0], fetch(disk, versions[1])[0]
    fetch(disk, versions[0])  # a is now the most recently used
    c = fetch(disk, versions[2])[0]
    assert a.exists() and c.exists() and not b.exists()
    assert disk.cache.keys() == [versions[0].sha256, versions[2].sha256]
    assert sum(p.stat().st_size for p in (tmp_path / "lora-cache").iterdir()) == disk.cache.used_bytes <= 2 * size + 1
    fetch(disk, versions[1])  # evicted: downloaded again
    assert len(s3.keys) == 4


def test_files_a_request_uses_are_never_evicted_for_another(tmp_path: Path, s3: CountingS3) -> None:
    files = [lora_bytes(tmp_path, tag=str(i)) for i in range(2)]
    versions = [upload(s3, data, name=f"l{i}") for i, data in enumerate(files)]
    disk, _, _ = make_disk(tmp_path, s3, lora_cache_disk_bytes=max(map(len, files)) + 1)
    with disk.use([versions[0]], [1.0], time.monotonic() + 30) as held:
        with pytest.raises(LoraUnavailable, match="held by requests in progress; retry shortly"):
            fetch(disk, versions[1])
        assert held[0].path.exists()
    fetch(disk, versions[1])  # the control: once released, it makes room


def test_a_file_larger_than_the_disk_cache_is_refused_before_any_download(tmp_path: Path, s3: CountingS3) -> None:
    data = lora_bytes(tmp_path)
    disk, _, _ = make_disk(tmp_path, s3, lora_cache_disk_bytes=len(data) - 1)
    with pytest.raises(LoraRefused, match="more than the whole cache"):
        fetch(disk, upload(s3, data))
    assert s3.keys == []


def test_concurrent_requests_for_one_file_download_it_once(tmp_path: Path, s3: CountingS3) -> None:
    data = lora_bytes(tmp_path)
    version = upload(s3, data)
    s3.gate = threading.Event()
    disk, _, _ = make_disk(tmp_path, s3)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.extend(fetch(disk, version))) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # all three are in: one downloading (held at the gate), two waiting for it
    assert len(s3.keys) == 1
    assert results == []  # none is given the file before it is downloaded and verified
    s3.gate.set()
    for thread in threads:
        thread.join(10)
    assert results == [results[0]] * 3 and results[0].read_bytes() == data
    assert len(s3.keys) == 1 and disk.downloads == 1
    # The control: another file is a download of its own.
    fetch(disk, upload(s3, lora_bytes(tmp_path, tag="other"), name="other"))
    assert len(s3.keys) == 2


def test_a_failed_download_fails_its_waiters_and_the_next_request_retries(tmp_path: Path, s3: CountingS3) -> None:
    data = lora_bytes(tmp_path)
    version = upload(s3, data, sha256="0" * 64)
    s3.gate = threading.Event()
    disk, _, _ = make_disk(tmp_path, s3)
    errors: list[Exception] = []

    def request() -> None:
        try:
            fetch(disk, version)
        except LoraRefused as e:
            errors.append(e)

    threads = [threading.Thread(target=request) for _ in range(2)]  # the starter and a waiter
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    assert len(s3.keys) == 1
    s3.gate.set()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 2 and all("SHA-256 mismatch" in str(e) for e in errors)
    good = LoraVersion(**{**version.__dict__, "sha256": hashlib.sha256(data).hexdigest()})
    assert fetch(disk, good)[0].read_bytes() == data  # the next request downloads again
    assert len(s3.keys) == 2


def test_a_short_budget_starter_times_out_alone_and_the_download_goes_on_for_its_waiter(tmp_path: Path, s3: CountingS3) -> None:
    data = lora_bytes(tmp_path)
    version = upload(s3, data)
    s3.gate = threading.Event()
    disk, _, _ = make_disk(tmp_path, s3)
    got: list[Path] = []
    waiter = threading.Thread(target=lambda: got.extend(fetch(disk, version)))  # a 30 s budget
    started = time.monotonic()
    with pytest.raises(FetchTimeout, match="still downloading at the request's time limit; the download goes on"):
        with disk.use([version], [1.0], time.monotonic() + 0.3):  # the starter: 0.3 s
            pass
    assert time.monotonic() - started < 2  # it answered at its own time limit, not the download's
    waiter.start()
    time.sleep(0.2)
    s3.gate.set()  # S3 answers after the starter gave up
    waiter.join(10)
    assert got and got[0].read_bytes() == data and len(s3.keys) == 1  # one download, finished for the waiter
    assert fetch(disk, version) == got and len(s3.keys) == 1  # and kept for the next request


def test_a_waiter_answers_504_at_its_own_time_limit_while_the_starter_gets_the_file(tmp_path: Path, s3: CountingS3) -> None:
    data = lora_bytes(tmp_path)
    version = upload(s3, data)
    s3.gate = threading.Event()
    disk, _, _ = make_disk(tmp_path, s3)
    got: list[Path] = []
    starter = threading.Thread(target=lambda: got.extend(fetch(disk, version)))
    starter.start()
    time.sleep(0.2)
    with pytest.raises(FetchTimeout):
        with disk.use([version], [1.0], time.monotonic() + 0.2):
            pass
    s3.gate.set()
    starter.join(10)
    assert got and got[0].read_bytes() == data and len(s3.keys) == 1


def test_a_download_is_bounded_by_its_own_time_limit(tmp_path: Path, s3: CountingS3) -> None:
    version = upload(s3, lora_bytes(tmp_path))
    disk, _, _ = make_disk(tmp_path, s3)
    disk._download_seconds = -1.0  # noqa: SLF001 - a limit already passed at the first chunk
    with pytest.raises(FetchTimeout, match="took longer than -1 s"):
        fetch(disk, version)  # the request's own budget (30 s) is not what stops it
    assert list((tmp_path / "lora-cache").iterdir()) == [] and disk.cache.used_bytes == 0
    disk._download_seconds = 300.0  # noqa: SLF001 - the control
    assert fetch(disk, version)[0].exists()


def test_a_requests_cold_files_are_fetched_concurrently(tmp_path: Path, s3: CountingS3) -> None:
    versions = [upload(s3, lora_bytes(tmp_path, tag=str(i)), name=f"l{i}") for i in range(3)]
    s3.gate = threading.Event()
    disk, _, _ = make_disk(tmp_path, s3)
    got: list[Path] = []
    thread = threading.Thread(target=lambda: got.extend(fetch(disk, *versions)))
    thread.start()
    time.sleep(0.3)
    assert len(s3.keys) == 3  # all three downloads started before any finished (one after another: 1)
    s3.gate.set()
    thread.join(10)
    assert [p.name for p in got] == [f"{v.sha256}.safetensors" for v in versions]


def test_a_set_larger_than_the_disk_tier_is_400_naming_sizes_and_other_pins_are_503(tmp_path: Path, s3: CountingS3) -> None:
    files = [lora_bytes(tmp_path, tag=str(i)) for i in range(2)]
    versions = [upload(s3, data, name=f"l{i}") for i, data in enumerate(files)]
    capacity = max(map(len, files)) + 1  # each fits alone, never both
    disk, _, _ = make_disk(tmp_path, s3, lora_cache_disk_bytes=capacity)
    with pytest.raises(LoraRefused, match=rf"l0@1 \({len(files[0])} bytes\), l1@1 \({len(files[1])} bytes\) need .* more than the "
                       rf"LORA_CACHE_DISK_BYTES disk cache \({capacity} bytes\)") as refused:
        fetch(disk, *versions)
    assert refused.value.status == 400 and s3.keys == []
    # The control: each alone is served; held by another request in progress, the other is a 503 (retry).
    with disk.use([versions[0]], [1.0], time.monotonic() + 30):
        with pytest.raises(LoraUnavailable) as busy:
            fetch(disk, versions[1])
    assert busy.value.status == 503


def client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def test_access_denied_on_get_object_is_404_naming_both_causes_and_logged_as_an_error(tmp_path: Path, s3: CountingS3) -> None:
    version = upload(s3, lora_bytes(tmp_path))
    disk, _, log = make_disk(tmp_path, s3)
    s3.error = client_error("AccessDenied", 403)  # what S3 answers for a missing key without s3:ListBucket
    with pytest.raises(LoraNotFound, match="does not exist, or the endpoint's role may not read it") as raised:
        fetch(disk, version)
    assert raised.value.status == 404
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert any(line["event"] == "lora_file_unreadable" and line["level"] == "error" for line in lines)
    s3.error = client_error("NoSuchBucket", 404)  # the control: another client error stays a 500 (raised as is)
    with pytest.raises(Exception, match="NoSuchBucket") as other:
        fetch(disk, version)
    assert not isinstance(other.value, LoraNotFound)


@pytest.mark.parametrize("code", ["SlowDown", "ServiceUnavailable", "InternalError"])
def test_s3_throttling_is_503(tmp_path: Path, s3: CountingS3, code: str) -> None:
    version = upload(s3, lora_bytes(tmp_path))
    disk, _, _ = make_disk(tmp_path, s3)
    s3.error = client_error(code, 503)
    with pytest.raises(LoraUnavailable, match=f"S3 is busy \\({code}\\); retry shortly"):
        fetch(disk, version)
    s3.error = None  # the control: nothing of the failure is kept
    assert fetch(disk, version)[0].exists()


def test_an_unreachable_s3_is_503(tmp_path: Path, s3: CountingS3) -> None:
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    version = upload(s3, lora_bytes(tmp_path))
    disk, _, _ = make_disk(tmp_path, s3)
    for error in (EndpointConnectionError(endpoint_url="https://s3"), ReadTimeoutError(endpoint_url="https://s3")):
        s3.error = error
        with pytest.raises(LoraUnavailable, match=f"could not be read \\({type(error).__name__}\\); retry shortly"):
            fetch(disk, version)


def test_leftover_files_of_an_earlier_worker_are_removed(tmp_path: Path, s3: CountingS3) -> None:
    cache = tmp_path / "lora-cache"
    cache.mkdir()
    (cache / f"{'a' * 64}.safetensors").write_bytes(b"old")
    (cache / f"{'b' * 64}.{'c' * 16}.part").write_bytes(b"half")
    (cache / "not-ours.txt").write_bytes(b"keep")
    make_disk(tmp_path, s3)
    assert sorted(p.name for p in cache.iterdir()) == ["not-ours.txt"]


def test_an_unbounded_deadline_waits_for_the_download(tmp_path: Path, s3: CountingS3) -> None:
    version = upload(s3, lora_bytes(tmp_path))
    disk, _, _ = make_disk(tmp_path, s3)
    with disk.use([version], [1.0], float("inf")) as local:  # the benchmark's deadline: Future.result(timeout=inf) overflows
        assert local[0].path.exists()

"""A local moto server (DynamoDB and S3 as AWS answers them) for the shared-mode tests, through the real boto3.

moto lives in the tools environment (.venv/tools, LORA_TEST_PYTHON_TOOLS), not in the server's: the
server's image must not carry it. It runs as its own process on a port the OS picks, and dies with
the test process even if that is killed outright (PR_SET_PDEATHSIG, as test/support/moto.ts does).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import required_env, skip_or_fail

REGION = "us-east-1"
TABLE = "lora-registry"
BUCKET = "lora-artifacts"
LISTENING = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")
LAUNCHER = "\n".join(
    [
        "import ctypes, runpy, signal, sys",
        "try:",
        "    ctypes.CDLL(None).prctl(1, signal.SIGTERM)",
        "except (OSError, AttributeError):",
        "    pass",
        "sys.argv = ['moto_server', '-H', '127.0.0.1', '-p', '0']",
        "runpy.run_module('moto.server', run_name='__main__')",
    ]
)


@dataclass
class Moto:
    endpoint: str

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
        )

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10).read()

    def create_registry(self) -> Any:
        """The registry table as the stack defines it (name: S hash, version: N range) and the bucket."""
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}, {"AttributeName": "version", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}, {"AttributeName": "version", "AttributeType": "N"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.client("s3").create_bucket(Bucket=BUCKET)
        return dynamodb


def start_moto(python: str, timeout: float = 60.0) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([python, "-c", LAUNCHER], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: list[str] = []
    log: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:  # keep draining, so the server never blocks on a full pipe
            log.append(line)
            match = LISTENING.search(line)
            if match and not found:
                found.append(match.group(1))

    threading.Thread(target=read, daemon=True).start()
    end = time.monotonic() + timeout
    while not found:
        if process.poll() is not None or time.monotonic() > end:
            process.kill()
            skip_or_fail(f"moto's server did not start with {python}: {''.join(log)[-2000:]}")
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{found[0]}"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    python = required_env("LORA_TEST_PYTHON_TOOLS", "the tools venv's python, which has moto")
    check = subprocess.run([python, "-c", "import moto.server, flask_cors"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        skip_or_fail(f"moto's server is not available to {python} ({check.stderr.strip()[-300:]}); npm test makes .venv/tools")
    process, endpoint = start_moto(python)
    try:
        yield Moto(endpoint)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def moto(moto_server: Moto) -> Iterator[Moto]:
    """The session's moto server, emptied before each test."""
    moto_server.reset()
    yield moto_server

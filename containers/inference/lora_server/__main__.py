"""Container entry point. SageMaker starts the image as `docker run <image> serve`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

GUNICORN_CONFIG = Path(__file__).with_name("gunicorn_config.py")


def gunicorn_command() -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG), "lora_server.app:create_app()"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lora_server", description=__doc__)
    parser.add_argument("command", choices=["serve"], help="serve: answer /ping and /invocations on port 8080")
    parser.parse_args(argv)
    # exec: gunicorn becomes the container's main process and receives SageMaker's SIGTERM itself.
    command = gunicorn_command()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()

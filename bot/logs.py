"""Content-free logging: ids, counts, sizes and timings reach the output; message text never does.

Our own `bot.*` loggers log only ids, counts, sizes and timings. Third-party libraries
(slack_bolt, slack_sdk, anthropic, httpx2, aiohttp, botocore) print request and response bodies at DEBUG,
and slack_bolt prints raw bodies at INFO on a bad signature, so their records are dropped below
WARNING and their text is withheld above it: only the logger name, level and exception class
remain. Exceptions, ours included, are printed as a stack of frames without their message,
because an exception message can quote what it failed on.
"""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType
from typing import TextIO

OURS = "bot"
THIRD_PARTY = (
    *("slack_bolt", "slack_sdk", "anthropic", "httpx", "httpx2", "httpcore", "aiohttp", "asyncio"),
    *("botocore", "boto3", "google", "urllib3"),  # under the Bedrock and Vertex clients
    "redis",  # redis-py: the shared state (REDIS_URL)
)
# Bolt hands this logger to every client it builds (Socket Mode included); kept at WARNING.
BOLT_LOGGER = "slack_bolt.app"
# slack_sdk decides whether to build a call's DEBUG text (its parameters, the whole response body) by
# its client logger's own level, not the effective one: set too, so that text is never even built.
SLACK_CLIENT_LOGGERS = ("slack_sdk.web.async_base_client", "slack_sdk.webhook.async_client")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def is_ours(record: logging.LogRecord) -> bool:
    return record.name == OURS or record.name.startswith(OURS + ".")


class ContentFreeFilter(logging.Filter):
    """Lets our records through; drops third-party records below WARNING and withholds their text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if is_ours(record):
            return True
        if record.levelno < logging.WARNING:
            return False
        exc_class = record.exc_info[1].__class__.__name__ if record.exc_info and record.exc_info[1] else None
        record.msg = "third-party %s: text withheld (it may quote Slack or Claude content)%s"
        record.args = (record.levelname.lower(), f"; exception {exc_class}" if exc_class else "")
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


class ContentFreeFormatter(logging.Formatter):
    def formatException(self, ei: ExcInfo | tuple[None, None, None]) -> str:  # noqa: N802 (stdlib name)
        return describe_exception(ei[1]) if ei[1] is not None else ""

    def formatStack(self, _stack_info: str) -> str:  # noqa: N802 (stdlib name)
        return ""


def describe_exception(exc: BaseException) -> str:
    """The exception's class and where it was raised, never its message."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = " < ".join(
        f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}" for frame in frames[::-1]
    )
    return f"{exc.__class__.__name__} at {where or 'unknown'}"


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Route every record through one content-free handler; `level` governs `bot.*` only."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContentFreeFilter())
    handler.setFormatter(ContentFreeFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger(OURS).setLevel(level)
    # Their DEBUG text would be dropped anyway; not formatting it saves CPU per request.
    for name in (*THIRD_PARTY, BOLT_LOGGER, *SLACK_CLIENT_LOGGERS):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(_kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger(OURS).critical("uncaught %s", describe_exception(exc.with_traceback(tb)))

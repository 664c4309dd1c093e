"""One way to see a Slack call fail: `with slack_call("conversations.replies"): ...` turns Slack's refusal
(slack_sdk's `SlackApiError`) and a call that never completed (aiohttp's `ClientError`, a timeout) into
one `SlackCallFailed`, which each caller handles in its own way: the reader raises ContextUnavailable,
the writer ReplyFailed, the access check refuses, progress shrugs, start-up stops.

    SlackCallFailed(method, error, status)
     ├── refused   Slack answered no: `error` is its code ("channel_not_found"), `status` its HTTP status
     └── failed    no answer came: `error` is the transport error's class name, `status` is None

It carries no text of Slack's response or of the exception, only the code or class name; each is
counted in `bot.metrics` by method and code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from slack_sdk.errors import SlackApiError

from bot import metrics


class SlackCallFailed(Exception):
    def __init__(self, method: str, error: str, status: int | None = None) -> None:
        super().__init__(f"{method} {error}")
        self.method = method
        self.error = error
        self.status = status

    @property
    def refused(self) -> bool:
        """Slack answered, and said no (else the call never got an answer)."""
        return self.status is not None

    @property
    def rate_limited(self) -> bool:
        return self.status == 429 or self.error == "ratelimited"


@contextmanager
def slack_call(method: str) -> Iterator[None]:
    """Within it, a Slack refusal or a failed transport raises SlackCallFailed naming `method`."""
    try:
        yield
    except SlackApiError as exc:
        response = exc.response
        if isinstance(response, aiohttp.ClientResponse):  # an answer that is not JSON: the raw response
            error, status = "invalid_response", response.status
        else:
            error, status = str(response.get("error", "unknown")), response.status_code
        metrics.slack_failed(method, error)
        raise SlackCallFailed(method, error, status) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        metrics.slack_failed(method, exc)
        raise SlackCallFailed(method, exc.__class__.__name__) from None

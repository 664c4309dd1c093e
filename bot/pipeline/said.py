"""What a person is told when their request is refused, fails or ends early: each such error, and each
notice that is not an error, carries its own sentence, so `bot.pipeline.reply` needs no table of them.

    VisibleError             raised; its class says what the person is told
     ├── Refused             bot.pipeline.access: who may not ask, and why (said privately)
     ├── ContextUnavailable  bot.pipeline.context: Slack would not give the conversation
     ├── ClaudeError         bot.pipeline.claude: busy, unavailable, rejected, misconfigured
     └── ReplyFailed         bot.pipeline.reply: Slack refused a post
    Notice                   never raised: the deadline, a restart, a hand-over, per-person limits, Stop

A sentence is ours, never the text of an exception (which may quote the SDK, a URL or a message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

FALLBACK_SENTENCE = "Something went wrong while I was answering. Please try again."


class VisibleError(Exception):
    """An error a person may be told about; `sentence` is what they are told."""

    sentence: ClassVar[str] = FALLBACK_SENTENCE


@dataclass(frozen=True, slots=True)
class Notice:
    """Why an answer ends early, or is not given, when nothing failed."""

    sentence: str


TOOK_TOO_LONG = Notice("This took too long, so I stopped. Please try again.")
RESTARTING = Notice("I'm restarting, so I couldn't finish this. Please ask again in a minute.")
HANDED_OVER = Notice("I'm restarting, so I'll answer this again in a moment.")  # another replica will
TOO_MANY_REQUESTS = Notice("You've asked me a lot in the last minute. Please wait a moment, then ask again.")
OUT_OF_TOKENS = Notice(  # USER_TOKENS_PER_DAY
    "You've used your share of Claude for today, so I can't answer this. It renews at midnight UTC."
)
STOPPED = Notice("Stopped.")  # the reader pressed Stop: shown under a partial answer only


def sentence_of(why: Notice | Exception) -> str:
    """What the person is told: the notice's or the error's own sentence; for any other exception, the
    fallback (its text is never shown)."""
    return why.sentence if isinstance(why, Notice | VisibleError) else FALLBACK_SENTENCE

"""Slack message links in the question, and the threads they point to.

Only the question itself is looked at (never older messages), at most MAX_LINKS distinct threads, each
read only if the asker may read its channel now (`AccessCheck.may_read`: the channel lists, never a DM
nor another organization's channel, a private one only while the asker is a member). A thread from
another conversation than the one answered in makes the answer private where others could read it (its
readers are not the asker's: a partner in a Slack Connect channel, a guest, another workspace of the
org); the answer then goes by `reply.EphemeralAnswer`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

MAX_LINKS = 3
LINK_NOT_READ = (
    "I couldn't read a Slack link in your question, so I answered without it. (I read only channels an "
    "admin enabled and I was invited to, and a private one only if you're a member.)"
)
ANSWERED_PRIVATELY = (
    "I answered you privately: your question links to another conversation, which not everyone here may "
    "be able to see."
)
# A permalink, as Slack writes it in text (`<url|label>` or `<url>`, `&` as `&amp;`) or bare, on
# slack.com or GovSlack's slack-gov.com (SLACK_API_URL=https://slack-gov.com/api/).
_PERMALINK = re.compile(
    r"https://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.slack(?:-gov)?\.com"
    r"/archives/([CGD][A-Z0-9]{2,})/p(\d+)(\d{6})"
    r"(?:\?([^\s|>]*))?"
)
_QUERY_TS = re.compile(r"(?:^|&)thread_ts=(\d+\.\d{6})(?:&|$)")


@dataclass(frozen=True, slots=True)
class Link:
    """A linked message's channel and the thread it belongs to (its own ts when it names no thread)."""

    channel: str
    thread_ts: str


def find_links(question: str) -> list[Link]:
    """The first MAX_LINKS distinct threads the question links to, in the order they appear."""
    links: list[Link] = []
    for match in _PERMALINK.finditer(question):
        channel, seconds, micros, query = match.groups()
        thread = _QUERY_TS.search(html.unescape(query or ""))
        link = Link(channel, thread.group(1) if thread else f"{seconds}.{micros}")
        if link not in links:
            links.append(link)
        if len(links) == MAX_LINKS:
            break
    return links

"""Nothing is kept in memory: after requests complete, no live object holds their message text, answer,
files or the URLs they used (a scan of every object the garbage collector tracks).

Library caches count as memory. aiohttp turns every URL into a `yarl.URL`, and yarl's module-level LRU
caches (`encode_url`, `build_pre_encoded_url`, ...) kept the last URLs after the request: a file's
`url_private`, whose path is the file's name, and a command's `response_url`, which can post to the asker
for 30 minutes. `urllib.parse.urlsplit` (behind files.py's `urlparse`) kept them too, in its lru_cache of
128. No yarl constructor bypasses its caches, so `bot.pipeline.url_caches` empties them as each request
ends; this test, with SEND_FILES=on, a canary in a file's name and one in the response_url, failed
before that (yarl.URL, SplitResult and the caches' own dicts and tuples held them)."""

from __future__ import annotations

import gc
import time
import uuid
from collections import deque
from dataclasses import fields, is_dataclass

import pytest
from aiohttp import web_request, web_response

from tests.conftest import ALICE, BOB, CHANNEL, DM, bot_said, direct_message, mention, said

# Objects only the fakes' servers make (a kept-alive connection holds its last response): the bot runs
# no aiohttp server in Socket Mode.
FAKE_SIDE = (web_request.Request, web_request.BaseRequest, web_response.Response, web_response.StreamResponse)


def fake_data(bot) -> list[object]:
    """What the fakes record on purpose: it plays Slack's and Anthropic's side, so it holds content."""
    slack, claude = bot.slack, bot.claude
    return [vars(slack), vars(claude)]


def reachable(roots: list[object]) -> set[int]:
    """Ids of the plain data reachable from `roots` (containers and dataclasses, not loops or sockets)."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            stack.extend(obj)
        elif is_dataclass(obj) and not isinstance(obj, type):
            stack.extend(getattr(obj, f.name) for f in fields(obj))
    return seen


def holders_of(canaries: list[str], exclude: set[int]) -> list[str]:
    """Types of the live objects that hold a canary. The collector lists only the containers it
    tracks, so untracked ones (a dict of strings, a tuple of strings) are reached through them."""
    gc.collect()
    exclude = exclude | {id(canaries)}
    roots = [obj for obj in gc.get_objects() if id(obj) not in exclude and type(obj) not in FAKE_SIDE]
    seen = exclude | {id(obj) for obj in roots}
    stack, found = roots, []
    while stack:
        obj = stack.pop()
        for ref in gc.get_referents(obj):
            if isinstance(ref, (str, bytes, bytearray)):
                text = ref if isinstance(ref, str) else ref.decode(errors="ignore")
                if any(canary in text for canary in canaries):
                    found.append(f"{type(obj).__module__}.{type(obj).__qualname__}")
            elif id(ref) not in seen and not gc.is_tracked(ref) and type(ref) not in FAKE_SIDE:
                seen.add(id(ref))
                stack.append(ref)
    return found


@pytest.mark.parametrize("bot_overrides", [{"SEND_FILES": "on"}], indirect=True)
async def test_no_live_object_holds_a_finished_requests_text(bot):
    canaries: list[str] = []

    def canary(label: str) -> str:
        canaries.append(f"CANARY{label}{uuid.uuid4().hex}")
        return canaries[-1]

    bot.claude.responder = lambda _body: f"An **answer** {canary('answer')}"
    secret = f"xoxb-1234567890-{uuid.uuid4().hex}"  # held by the request's Redactor while it lives
    canaries.append(secret)
    # A file's name is in its url_private, and a response_url is a capability: neither may be kept.
    shared = bot.slack.add_file(canary("file").encode(), "text/plain", f"{canary('filename')}.txt", user=BOB)
    bot.slack.add_thread(
        CHANNEL,
        [
            {**said(BOB, f"{canary('thread')} with {secret}", "100.000001"), "files": [shared]},
            bot_said(canary("earlier"), "100.000002"),
            said(ALICE, f"<@U0BOT> {canary('question')}", "100.000003"),
        ],
    )
    now = f"{time.time():.6f}"
    bot.slack.add_history(DM, [said(ALICE, canary("dm"), now)])
    await bot.send_event(mention(f"<@U0BOT> {canary('question')}", ts="100.000003", thread_ts="100.000001"))
    await bot.send_event(direct_message(canary("dm-question"), ts=now))
    await bot.send_command(canary("command"), response_url=bot.slack.response_url(canary("response-url")))
    await bot.finished(count=2)
    [private_answer] = await bot.slack.wait_for("response_url")
    await bot.pipeline.wait_idle()
    assert private_answer.params["_name"].startswith("CANARYresponse-url")  # it was used
    assert [call.params["file"] for call in bot.slack.calls_to("url_private")] == [shared["id"]]  # fetched
    # slack_sdk's Socket Mode loop keeps the last raw frame it received until the next one arrives (a
    # pong, at least every ping interval); one more frame, as any ping or event would, lets it go.
    await bot.send_event({"type": "reaction_added", "user": BOB, "reaction": "eyes"})

    assert secret not in str([request.body for request in bot.claude.requests])  # it was redacted
    del secret  # this test's own reference; the scan must find none in the bot
    exclude = reachable(fake_data(bot))
    holders = holders_of(canaries, exclude)
    assert holders == [], "\n".join(holders)

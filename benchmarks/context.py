"""Context assembly, in-process: read a long thread, look up names, build Claude's prompt.

`full` is what the bot does before asking Claude, against FakeSlack at zero latency in this same process:
read_conversation (every page) + look_up_names + build_prompt, redacting secrets as the bot does by
default. `pure` is the bot's own work on pages already fetched: slim each raw message, find the people to
name, build_prompt. The difference is the HTTP round trips and JSON on both sides, plus the fake's own
paging, so Slack's side shows apart from the bot's work: `decode` is the bot's share of it (json.loads of
the page bodies, as its client does) and `fake` the time inside FakeSlack's conversations.replies handler
(which re-sorts the whole thread for every page). `plain` is the baseline, measured in the same run: a
plain bot's read of the same thread through the same client (`plain_read`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from benchmarks.stats import Summary
from bot.app import build_slack_client
from bot.config import Settings
from bot.pipeline.ask import Ask, BotIdentity, InConversation, Origin, Reaction, SlackMessage, Thread
from bot.pipeline.context import (
    MAX_NAME_LOOKUPS,
    NAME_LOOKUPS_AT_ONCE,
    PAGE_SIZE,
    look_up_names,
    read_conversation,
    slim,
)
from bot.pipeline.prompt import Prompt, build_prompt, people_to_name
from bot.pipeline.redaction import Redactor
from tests.fakes.slack_api import FakeSlack

BOT_USER, BOT_ID = "U0BOT", "B0BOT"


def default_redactor(settings: Settings) -> Redactor:
    """As the bot makes one per request: secrets on by default, personal data as configured."""
    return Redactor(secrets=settings.outbound.redact_secrets, personal=settings.outbound.redact_personal)


PARTICIPANTS = 20
CHANNEL = "C0CONTEXT"
WORDS = (
    "deploy migration schema staging rollback config cache latency queue worker retry index review "
    "ticket owner alert dashboard metric incident runbook release branch test flaky timeout"
).split()


@dataclass
class ContextResult:
    messages: int
    pages: int
    round_trips: int  # sequential Slack calls: every page, then the name lookups in waves
    kept: int
    omitted: int
    prompt_chars: int
    full: Summary  # milliseconds, as are the rest
    pure: Summary
    decode: Summary
    fake: Summary
    plain: Summary  # the baseline: plain_read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _PagingTimedSlack(FakeSlack):
    """FakeSlack that adds up the time its conversations.replies handler takes: the fake's own work."""

    handler_seconds = 0.0

    def _replies(self, params: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            return super()._replies(params)
        finally:
            self.handler_seconds += time.perf_counter() - start


def make_thread(size: int, seed: int) -> list[dict[str, Any]]:
    """A thread of `size` messages by PARTICIPANTS people: 10-80 words each, some mentions, some
    earlier answers by the bot, and a few joins (which the bot drops)."""
    rng = random.Random(seed)
    root = 1_700_000_000
    thread: list[dict[str, Any]] = []
    for i in range(size):
        ts = f"{root + i}.{i % 1_000_000:06d}"
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 80)))
        user = f"U0P{rng.randrange(PARTICIPANTS):04d}"
        if i == 0:
            thread.append({"user": user, "text": words, "ts": ts})
        elif i == size - 1:
            thread.append({"user": user, "text": f"<@{BOT_USER}> sum this up please", "ts": ts})
        elif rng.random() < 0.05:
            thread.append({"user": BOT_USER, "bot_id": BOT_ID, "text": words, "ts": ts})
        elif rng.random() < 0.02:
            thread.append({"user": user, "subtype": "channel_join", "text": "joined", "ts": ts})
        else:
            mention = f"<@U0P{rng.randrange(PARTICIPANTS):04d}> " if rng.random() < 0.2 else ""
            thread.append({"user": user, "text": mention + words, "ts": ts})
    return thread


async def assemble(client: AsyncWebClient, ask: Ask, settings: Settings) -> tuple[Prompt, dict[str, str]]:
    """What the bot does before asking Claude about a thread (answer.py's _prompt_for, minus the
    agent-view extras): read it, look up the names it needs, build the prompt."""
    read = await read_conversation(client, ask, dm_window_seconds=settings.dm_context_hours * 3600)
    conversation = read.messages  # no budget given: every page, as far as MAX_PAGES go
    names = await look_up_names(client, people_to_name(conversation, ask.bot))
    prompt = build_prompt(
        conversation,
        bot=ask.bot,
        names=names,
        system=settings.system_prompt,
        budget_tokens=settings.context_budget_tokens,
        redact=default_redactor(settings),
    )
    return prompt, names


async def plain_read(client: AsyncWebClient, thread_ts: str) -> str:
    """The baseline: the read a plain bot would make with the same client. Every page of the thread,
    every author's users.info at once (but the bot's), then "name: text" lines; no slimming, budget or
    redaction."""
    messages: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await client.conversations_replies(
            channel=CHANNEL, ts=thread_ts, limit=PAGE_SIZE, inclusive=True, cursor=cursor
        )
        messages += page.get("messages") or []
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            break
    people = sorted({str(m["user"]) for m in messages if m.get("user") and m["user"] != BOT_USER})
    found = await asyncio.gather(*(client.users_info(user=person) for person in people))
    names = {p: str((f.get("user") or {}).get("name", p)) for p, f in zip(people, found, strict=True)}
    return "\n".join(f"{names.get(m.get('user', ''), '?')}: {m.get('text', '')}" for m in messages)


async def _fetch_pages(client: AsyncWebClient, thread_ts: str) -> list[bytes]:
    """The raw page bodies the bot's read gets, fetched once, for the pure and decode timings."""
    pages: list[bytes] = []
    cursor = None
    while True:
        response = await client.conversations_replies(
            channel=CHANNEL, ts=thread_ts, limit=PAGE_SIZE, inclusive=True, cursor=cursor
        )
        pages.append(json.dumps(response.data).encode())
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return pages


async def run_context(sizes: tuple[int, ...], repeats: int, page_size: int) -> list[ContextResult]:
    async with _PagingTimedSlack(bot_user_id=BOT_USER, bot_id=BOT_ID, page_size=page_size) as slack:
        for n in range(PARTICIPANTS):
            slack.add_user(
                f"U0P{n:04d}", display_name=f"Participant {n}", real_name=f"Participant Number {n}"
            )
        settings = Settings.from_env(
            {
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_APP_TOKEN": slack.app_token,
                "SLACK_API_URL": slack.api_url,
                "ANTHROPIC_API_KEY": "bench-key",
            }
        )
        client = build_slack_client(settings)
        try:
            return await _measure_sizes(slack, client, settings, sizes, repeats)
        finally:
            if client.session is not None:  # the bot's client may keep a connection pool
                await client.session.close()


async def _measure_sizes(
    slack: _PagingTimedSlack,
    client: AsyncWebClient,
    settings: Settings,
    sizes: tuple[int, ...],
    repeats: int,
) -> list[ContextResult]:
    results = []
    bot = BotIdentity(BOT_USER, BOT_ID)
    for size in sizes:
        thread = make_thread(size, seed=size)
        channel_thread = slack.add_thread(CHANNEL, thread)
        root, last = channel_thread[0]["ts"], channel_thread[-1]
        ask = Ask(
            request_id=f"context-{size}",
            surface="mention",
            origin=Origin(last["user"], slack.team_id),
            message=SlackMessage(ts=last["ts"], text=last["text"], user=last["user"]),
            history=Thread(CHANNEL, root),
            reply_to=InConversation(CHANNEL, root),
            bot=bot,
            progress=Reaction(CHANNEL, last["ts"]),
        )
        prompt, names = await assemble(client, ask, settings)  # warm-up, and the prompt's shape
        pages = await _fetch_pages(client, root)
        name_waves = math.ceil(min(len(names), MAX_NAME_LOOKUPS) / NAME_LOOKUPS_AT_ONCE)
        full_ms, pure_ms, decode_ms, fake_ms, plain_ms = [], [], [], [], []
        await plain_read(client, root)  # its warm-up
        for _ in range(repeats):
            gc.collect()  # every run starts from the same heap; collections it triggers still count
            start = time.perf_counter()
            await plain_read(client, root)
            plain_ms.append((time.perf_counter() - start) * 1000)

            gc.collect()
            slack.handler_seconds = 0.0
            start = time.perf_counter()
            await assemble(client, ask, settings)
            full_ms.append((time.perf_counter() - start) * 1000)
            fake_ms.append(slack.handler_seconds * 1000)

            start = time.perf_counter()
            decoded = [json.loads(page) for page in pages]
            decode_ms.append((time.perf_counter() - start) * 1000)

            start = time.perf_counter()
            messages: list[SlackMessage] = [
                m for page in decoded for raw in page["messages"] if (m := slim(raw)) is not None
            ]
            people_to_name(messages, bot)
            build_prompt(
                messages,
                bot=bot,
                names=names,
                system=settings.system_prompt,
                budget_tokens=settings.context_budget_tokens,
                redact=default_redactor(settings),
            )
            pure_ms.append((time.perf_counter() - start) * 1000)
        results.append(
            ContextResult(
                messages=size,
                pages=len(pages),
                round_trips=len(pages) + name_waves,
                kept=prompt.kept,
                omitted=prompt.omitted,
                prompt_chars=len(prompt.system) + sum(len(str(m["content"])) for m in prompt.messages),
                full=Summary.of(full_ms),
                pure=Summary.of(pure_ms),
                decode=Summary.of(decode_ms),
                fake=Summary.of(fake_ms),
                plain=Summary.of(plain_ms),
            )
        )
    return results

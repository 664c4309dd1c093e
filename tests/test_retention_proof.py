"""The retention promise, end to end: `python -m bot` runs against the fakes and no content escapes it.

Every Slack message, display name and Claude answer carries a unique canary. The bot runs as its own
process at LOG_LEVEL=DEBUG (and at INFO for bad signatures, which slack_bolt logs with the raw body);
no canary may appear in what it printed or in any file under its working directory, HOME or TMPDIR.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from urllib.parse import urlencode

import aiohttp
import redis.asyncio as aioredis
from slack_sdk.signature import SignatureVerifier

from bot.policy import REDIS_KEYS
from bot.state import RedisState
from tests.bot_process import BotProcess
from tests.conftest import (
    ALICE,
    BOB,
    CHANNEL,
    DM,
    bot_env,
    bot_said,
    direct_message,
    mention,
    running_bot,
    said,
)
from tests.fakes.slack_api import FakeSlack

SECRET = "proof-signing-secret"


class Canaries:
    def __init__(self) -> None:
        self.issued: list[str] = []

    def __call__(self, label: str = "") -> str:
        canary = f"CANARY{label}{uuid.uuid4().hex}"
        self.issued.append(canary)
        return canary

    def found_in(self, text: str) -> list[str]:
        return [canary for canary in self.issued if canary in text]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def now_ts(offset: float = 0.0) -> str:
    return f"{time.time() + offset:.6f}"


async def test_every_surface_at_debug_keeps_content_and_secrets_out_of_logs_and_files(claude, tmp_path):
    canary = Canaries()
    tokens = {"bot_token": f"xoxb-{canary('bot-token')}", "app_token": f"xapp-{canary('app-token')}"}
    async with FakeSlack(**tokens) as slack:
        slack.add_user(ALICE, display_name=canary("name"), real_name=canary("name"))
        slack.add_user(BOB, display_name=canary("name"), real_name=canary("name"))
        claude.responder = lambda _body: f"Answer with **markdown** {canary('answer')}"
        root, reply, mention_ts = now_ts(-30), now_ts(-20), now_ts(-10)
        file_content = canary("file-content")  # SEND_FILES=on: fetched into memory and sent to Claude
        shared_file = slack.add_file(file_content.encode(), "text/plain", f"{canary('file')}.txt", user=BOB)
        slack.add_thread(
            CHANNEL,
            [
                said(BOB, canary("thread"), root) | {"files": [shared_file]},
                bot_said(canary("earlier-answer"), reply),
                said(ALICE, f"<@U0BOT> {canary('question')}", mention_ts),
            ],
        )
        slack.add_history(CHANNEL, [said(BOB, canary("channel-history"), now_ts(-40))])
        dm_now, agent_root, agent_question = now_ts(), now_ts(-5), now_ts(-4)
        slack.add_history(DM, [said(ALICE, canary("dm-history"), now_ts(-60))])
        slack.add_thread(DM, [said(ALICE, f"Summarize this channel {canary('agent')}", agent_question)])
        env = bot_env(slack, claude, LOG_LEVEL="DEBUG", ANTHROPIC_API_KEY=canary("api-key"), SEND_FILES="on")

        bot = BotProcess(tmp_path, env)
        await bot.start()
        try:
            await slack.wait_for_socket(timeout=30)

            async def deliver(frame: dict) -> None:
                await slack.send_envelope(frame)
                await slack.wait_for_ack(frame["envelope_id"], timeout=30)

            # A mention in a thread, a DM, the slash command: each answered.
            await deliver(
                slack.events_api_envelope(mention(f"<@U0BOT> {canary('q')}", ts=mention_ts, thread_ts=root))
            )
            await deliver(slack.events_api_envelope(direct_message(canary("dm"), ts=dm_now)))
            await deliver(slack.slash_command_envelope("/claude", canary("command")))
            await slack.wait_for("reactions.remove", count=2, timeout=30)
            await slack.wait_for("response_url", timeout=30)
            # The agent surface: a thread starts while viewing the channel, then a question about it.
            await deliver(
                slack.assistant_thread_started_envelope(thread_ts=agent_root, context_channel_id=CHANNEL)
            )
            await deliver(slack.app_home_opened_envelope())
            agent_message = direct_message(f"Summarize this channel {canary('agent')}", ts=agent_question)
            await deliver(slack.events_api_envelope(agent_message | {"thread_ts": agent_root}))
            await slack.wait_for("conversations.history", count=2, timeout=30)  # the DM, then the channel
            await slack.wait_for("chat.stopStream", count=2, timeout=30)
            await deliver(
                slack.agent_session_stopped_envelope(
                    channel_id=DM, user_id=ALICE, thread_ts=agent_root, streaming_message_ts=[]
                )
            )
            # Both message shortcuts, the modal's question included.
            message = {"type": "message", "user": BOB, "text": canary("shortcut-message"), "ts": root}
            await deliver(slack.message_shortcut_envelope("summarize_thread", message=message))
            await slack.wait_for("response_url", count=3, timeout=30)  # the working note and the summary
            await deliver(slack.message_shortcut_envelope("ask_about_thread", message=message))
            await slack.wait_for("views.open", timeout=30)
            values = {"question": {"text": {"type": "plain_text_input", "value": canary("modal-question")}}}
            await deliver(slack.view_submission_envelope("ask_about_thread", values=values))
            await slack.wait_for("response_url", count=5, timeout=30)
            # Ignored, redelivered and failing requests log too.
            await deliver(
                slack.events_api_envelope(
                    direct_message(canary("bot"), ts=now_ts(), subtype="bot_message", bot_id="B0OTHER")
                )
            )
            await deliver(
                slack.events_api_envelope(
                    direct_message(canary("edit"), ts=now_ts(), subtype="message_changed"), retry_attempt=1
                )
            )
            claude.fail(500)
            await deliver(slack.events_api_envelope(mention(f"<@U0BOT> {canary('failing')}", ts=now_ts())))
            await slack.wait_for("reactions.remove", count=3, timeout=30)
        finally:
            output = await bot.stop()

    assert "answered" in output and "ignored: from_a_bot" in output  # it did log, at DEBUG too
    assert len(claude.requests) == 7
    assert slack.calls_to("url_private") and any(file_content in json.dumps(r.body) for r in claude.requests)
    assert canary.found_in(output) == []
    assert canary.found_in(bot.written_files()) == []


async def test_http_mode_bad_signatures_at_info_keep_no_content_in_logs(slack, claude, tmp_path):
    canary = Canaries()
    claude.responder = lambda _body: canary("answer")
    port = free_port()
    env = bot_env(
        slack, claude, SLACK_APP_TOKEN="", SLACK_SIGNING_SECRET=SECRET, PORT=str(port), LOG_LEVEL="INFO"
    )
    bot = BotProcess(tmp_path, env)
    await bot.start()
    url = f"http://127.0.0.1:{port}/slack/events"
    try:
        await bot.wait_listening()
        async with aiohttp.ClientSession() as session:

            async def post(body: str, content_type: str, secret: str) -> int:
                timestamp = str(int(time.time()))
                headers = {
                    "Content-Type": content_type,
                    "X-Slack-Request-Timestamp": timestamp,
                    "X-Slack-Signature": SignatureVerifier(secret).generate_signature(
                        timestamp=timestamp, body=body
                    ),
                }
                async with session.post(url, data=body, headers=headers) as response:
                    return response.status

            event = slack.events_api_envelope(mention(f"<@U0BOT> {canary('forged')}", ts=now_ts()))["payload"]
            command = urlencode({"command": "/claude", "text": canary("forged-command"), "user_id": ALICE})
            assert await post(json.dumps(event), "application/json", "forged-secret") == 401
            assert await post(command, "application/x-www-form-urlencoded", "forged-secret") == 401
            genuine = slack.events_api_envelope(mention(f"<@U0BOT> {canary('genuine')}", ts=now_ts()))[
                "payload"
            ]
            assert await post(json.dumps(genuine), "application/json", SECRET) == 200
            await slack.wait_for("reactions.remove", timeout=30)
    finally:
        output = await bot.stop()

    assert "listening over HTTP" in output
    assert len(claude.requests) == 1
    assert canary.found_in(output) == []
    assert canary.found_in(bot.written_files()) == []


async def test_bot_token_rejected_at_start_is_one_line_naming_it(slack, claude, tmp_path):
    bot = BotProcess(tmp_path, bot_env(slack, claude, SLACK_BOT_TOKEN="xoxb-revoked"))
    await bot.start()
    output = await bot.stop(signal_first=False)  # it exits by itself
    assert bot.process.returncode == 1
    assert output == "startup error: SLACK_BOT_TOKEN: Slack rejected it (invalid_auth)\n"


async def test_app_token_rejected_at_start_is_one_line_naming_it(slack, claude, tmp_path):
    bot = BotProcess(tmp_path, bot_env(slack, claude, SLACK_APP_TOKEN="xapp-revoked"))
    await bot.start()
    try:
        output = await bot.stop(signal_first=False)  # it exits by itself, not retrying a refused token
    finally:
        if bot.process.returncode is None:
            bot.process.kill()
            await bot.process.wait()
    assert bot.process.returncode == 1
    assert output.endswith("startup error: SLACK_APP_TOKEN: Slack rejected it (invalid_auth)\n")
    assert "third-party" not in output


# --- Redis: what several processes share -------------------------------------------------------------

REDIS_DB = 7  # a database of its own on the session's Redis, emptied first: every key found is this run's
USER_ID = re.compile(r"(?<![A-Za-z0-9])[UW][A-Z0-9]{6,}(?![A-Za-z0-9])")  # U…/W…, a raw Slack user id
KEYED_HASH = re.compile(r"[0-9a-f]{16,64}")  # what bot.state.StateKeys.of makes


def own_database(url: str) -> str:
    return f"{url.rsplit('/', 1)[0]}/{REDIS_DB}"


async def values_of(raw: aioredis.Redis, key: str) -> list[str] | None:
    """Everything a key holds, whatever its type; None for a type this proof cannot read."""
    kind = await raw.type(key)
    if kind == "string":
        return [await raw.get(key) or ""]
    if kind == "hash":
        return [part for pair in (await raw.hgetall(key)).items() for part in pair]
    if kind == "set":
        return list(await raw.smembers(key))
    if kind == "list":
        return list(await raw.lrange(key, 0, -1))
    if kind == "zset":
        return [member for member, _ in await raw.zrange(key, 0, -1, withscores=True)]
    if kind == "none":  # expired since the scan
        return []
    return None


async def redis_findings(raw: aioredis.Redis, forbidden: list[str], team_ids: list[str]) -> list[str]:
    """Every way what Redis holds breaks the policy: a key without a time limit, a key not under one of
    the documented prefixes (bot.policy.REDIS_KEYS) followed by a keyed hash, a canary or a user id
    anywhere, a team id in a key or in a value not documented as holding one."""
    findings = []
    async for key in raw.scan_iter(count=1000):
        documented = next((k for k in REDIS_KEYS if key.startswith(k.prefix)), None)
        if documented is None:
            findings.append(f"{key}: not under a documented prefix")
        elif not KEYED_HASH.fullmatch(key.removeprefix(documented.prefix)):
            findings.append(f"{key}: not a keyed hash after {documented.prefix}")
        ttl = await raw.pttl(key)
        if ttl == -1:
            findings.append(f"{key}: no time limit")
        values = await values_of(raw, key)
        if values is None:
            findings.append(f"{key}: a value this proof cannot read")
            values = []
        allowed_teams = documented is not None and documented.workspace_ids
        for where, texts, never in (
            ("key", [key], forbidden + team_ids),
            ("value", values, forbidden if allowed_teams else forbidden + team_ids),
        ):
            found = [word for word in never for text in texts if word in text]
            found += [m for text in texts for m in USER_ID.findall(text)]
            if found:
                findings.append(f"{key}: its {where} holds {sorted(set(found))}")
    return findings


async def test_with_redis_every_key_expires_is_documented_and_holds_no_content_and_no_persons_id(
    slack, claude, redis_server
):
    """Every surface the bot answers, through a real Redis: then, and midway through an answer, every key
    Redis holds has a time limit, is one bot.policy.REDIS_KEYS documents, and holds no canary, no user id
    and no team id (except where the policy says a workspace id is kept)."""
    canary = Canaries()
    raw = aioredis.Redis.from_url(own_database(redis_server.url), decode_responses=True)
    await raw.flushdb()
    state = RedisState(own_database(redis_server.url))
    slack.add_user(ALICE, display_name=canary("name"), real_name=canary("name"))
    slack.add_user(BOB, display_name=canary("name"), real_name=canary("name"))
    claude.responder = lambda _body: f"Answer with **markdown** {canary('answer')}"
    root, reply, mention_ts = now_ts(-30), now_ts(-20), now_ts(-10)
    slack.add_thread(
        CHANNEL,
        [
            said(BOB, canary("thread"), root),
            bot_said(canary("earlier-answer"), reply),
            said(ALICE, f"<@U0BOT> {canary('question')}", mention_ts),
        ],
    )
    slack.add_history(CHANNEL, [said(BOB, canary("channel-history"), now_ts(-40))])
    dm_now, agent_root, agent_question, long_root = now_ts(), now_ts(-5), now_ts(-4), now_ts(-3)
    slack.add_history(DM, [said(ALICE, canary("dm-history"), now_ts(-60))])
    slack.add_thread(DM, [said(ALICE, f"Summarize this channel {canary('agent')}", agent_question)])
    slack.add_thread(DM, [said(ALICE, canary("long-question"), long_root)])
    forbidden = [ALICE, BOB]
    try:
        # Every kind of key: the daily token budget's counter too.
        overrides = {"REDIS_URL": own_database(redis_server.url), "USER_TOKENS_PER_DAY": "1000000"}
        async with running_bot(slack, claude, overrides, state) as bot:

            async def deliver(frame: dict) -> None:
                await slack.send_envelope(frame)
                await slack.wait_for_ack(frame["envelope_id"], timeout=30)

            async def findings() -> list[str]:
                return await redis_findings(raw, canary.issued + forbidden, [slack.team_id])

            # A mention in a thread, a DM, the slash command.
            await deliver(
                slack.events_api_envelope(mention(f"<@U0BOT> {canary('q')}", ts=mention_ts, thread_ts=root))
            )
            await deliver(slack.events_api_envelope(direct_message(canary("dm"), ts=dm_now)))
            await deliver(slack.slash_command_envelope("/claude", canary("command")))
            await slack.wait_for("reactions.remove", count=2, timeout=30)
            await slack.wait_for("response_url", timeout=30)
            # The agent view: a thread opened while viewing a channel, the view moved, a question about it.
            await deliver(
                slack.assistant_thread_started_envelope(thread_ts=agent_root, context_channel_id="C0OTHER")
            )
            await deliver(
                slack.assistant_context_changed_envelope(thread_ts=agent_root, context_channel_id=CHANNEL)
            )
            agent_message = direct_message(f"Summarize this channel {canary('agent')}", ts=agent_question)
            await deliver(slack.events_api_envelope(agent_message | {"thread_ts": agent_root}))
            await slack.wait_for("conversations.history", count=2, timeout=30)  # the DM, then the channel
            await slack.wait_for("chat.stopStream", count=2, timeout=30)
            # Both message shortcuts, the modal's question included.
            message = {"type": "message", "user": BOB, "text": canary("shortcut-message"), "ts": root}
            await deliver(slack.message_shortcut_envelope("summarize_thread", message=message))
            await slack.wait_for("response_url", count=3, timeout=30)  # the working note and the summary
            await deliver(slack.message_shortcut_envelope("ask_about_thread", message=message))
            await slack.wait_for("views.open", timeout=30)
            values = {"question": {"text": {"type": "plain_text_input", "value": canary("modal-question")}}}
            await deliver(slack.view_submission_envelope("ask_about_thread", values=values))
            await slack.wait_for("response_url", count=5, timeout=30)
            await bot.pipeline.wait_idle()
            assert len(claude.requests) == 6
            assert await findings() == []

            # Midway through an answer (in flight, streaming, stoppable), then after its Stop.
            claude.chunk_chars, claude.chunk_delay = 5, 0.05
            claude.responder = lambda _body: f"{canary('long-answer')} " + "a long answer nobody reads " * 40
            appended = len(slack.calls_to("chat.appendStream"))
            await deliver(
                slack.events_api_envelope(
                    direct_message(canary("long"), ts=long_root) | {"thread_ts": long_root}
                )
            )
            append = (await slack.wait_for("chat.appendStream", count=appended + 1, timeout=30))[appended]
            assert append.params["channel"] == DM
            assert await findings() == []
            await deliver(
                slack.agent_session_stopped_envelope(
                    channel_id=DM,
                    user_id=ALICE,
                    thread_ts=long_root,
                    streaming_message_ts=[append.params["ts"]],
                )
            )
            await claude.wait_for_abandoned(timeout=30)
            await bot.pipeline.wait_idle()
            assert await findings() == []
            kept = [key async for key in raw.scan_iter(count=1000)]
            assert any(key.startswith("dedupe:event:") for key in kept)  # it did use Redis
    finally:
        await state.close()
        await raw.flushdb()
        await raw.aclose()


async def test_the_redis_proof_finds_each_kind_of_key_the_policy_forbids(redis_server):
    """The proof above passes only if it can fail: each key planted here breaks one rule and is found."""
    raw = aioredis.Redis.from_url(own_database(redis_server.url), decode_responses=True)
    await raw.flushdb()
    good = "0123456789abcdef0123456789abcdef"
    try:
        await raw.set(f"dedupe:event:{good}", "1", px=60_000)  # as the bot writes them: not a finding
        await raw.set(f"person:{good}", '{"team":"T0TEAM","guest":false}', px=60_000)  # documented
        await raw.set(f"rate:{good}", "1")  # no time limit
        await raw.set(f"cache:{good}", "1", px=60_000)  # not documented
        await raw.set(f"rate:{ALICE}", "1", px=60_000)  # a user id in the key
        await raw.set(f"viewed:{good}", "CANARYplanted", px=60_000)  # content
        await raw.hset(f"stop:{good}", mapping={"who": "W0SOMEONE9"})  # a user id, in a hash
        await raw.pexpire(f"stop:{good}", 60_000)
        await raw.set(f"lease:{good}", "T0TEAM", px=60_000)  # a team id where none is documented
        await raw.set(f"answer:{good}:{good}", "1", px=60_000)  # more than a keyed hash after the prefix

        findings = await redis_findings(raw, ["CANARYplanted", ALICE], ["T0TEAM"])
    finally:
        await raw.flushdb()
        await raw.aclose()

    assert sorted(findings) == sorted(
        [
            f"rate:{good}: no time limit",
            f"cache:{good}: not under a documented prefix",
            f"rate:{ALICE}: not a keyed hash after rate:",
            f"rate:{ALICE}: its key holds ['{ALICE}']",
            f"viewed:{good}: its value holds ['CANARYplanted']",
            f"stop:{good}: its value holds ['W0SOMEONE9']",
            f"lease:{good}: its value holds ['T0TEAM']",
            f"answer:{good}:{good}: not a keyed hash after answer:",
        ]
    )

"""`python -m benchmarks.plain_bot`: the baseline the bot is measured against, in the same run.

A plain async bot, as one would write it without Bolt, limits or guards: the same clients as the bot
(slack_sdk's Socket Mode and Web API clients over one aiohttp session, the Anthropic SDK over aiohttp)
and the same Slack calls before the first words (users.info of the asker; reactions.add beside
conversations.replies; users.info of the others), then Claude's stream appended into Slack every half
second, as the bot does. No access rules, redaction, formatting, ceilings or dedupe: what is left of the
bot's figures over these is the bot's own cost. Configured by the bot's variables; benchmark use only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import aiohttp
from anthropic import AsyncAnthropic, DefaultAioHttpClient
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline.claude import opaque_user_id
from bot.state import StateKeys

INTERVAL = 0.5  # seconds between appendStream calls, as the bot's NativeStream


class PlainBot:
    def __init__(self, slack: AsyncWebClient, claude: AsyncAnthropic, team: str, bot_user: str) -> None:
        self.slack, self.claude, self.team, self.bot_user = slack, claude, team, bot_user
        self.keys = StateKeys(slack.token or "")  # the bot's own, so that the benchmark knows whose answer
        self.tasks: set[asyncio.Task[None]] = set()

    async def on_request(self, client: SocketModeClient, req: SocketModeRequest) -> None:
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        event = (req.payload or {}).get("event") or {}
        if req.type == "events_api" and event.get("type") == "app_mention":
            task = asyncio.create_task(self.answer(event))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def answer(self, event: dict[str, Any]) -> None:
        channel, ts, user = event["channel"], event["ts"], event["user"]
        thread = event.get("thread_ts") or ts
        await self.slack.users_info(user=user)
        _, replies = await asyncio.gather(
            self.slack.reactions_add(channel=channel, timestamp=ts, name="eyes"),
            self.slack.conversations_replies(
                channel=channel, ts=thread, latest=ts, limit=200, inclusive=True
            ),
        )
        messages = replies.get("messages") or []
        known = {user, self.bot_user}
        others = sorted({m["user"] for m in messages if m.get("user") and m["user"] not in known})
        found = await asyncio.gather(*(self.slack.users_info(user=other) for other in others))
        names = {o: (n.get("user") or {}).get("name", o) for o, n in zip(others, found, strict=True)}
        turns = "\n".join(f"{names.get(m.get('user'), m.get('user'))}: {m.get('text', '')}" for m in messages)
        stream_ts, pending, last = None, "", 0.0
        async with self.claude.messages.with_streaming_response.create(
            model="claude-sonnet-4-5",
            max_tokens=1024,
            messages=[{"role": "user", "content": turns}],
            metadata={"user_id": opaque_user_id(self.keys, self.team, user)},
            stream=True,
        ) as response:
            async for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = json.loads(line[5:])
                if data.get("type") != "content_block_delta":
                    continue
                pending += data["delta"].get("text", "")
                if pending and time.monotonic() - last >= INTERVAL:
                    stream_ts = await self.write(channel, thread, user, stream_ts, pending)
                    pending, last = "", time.monotonic()
        stream_ts = await self.write(channel, thread, user, stream_ts, pending) if pending else stream_ts
        if stream_ts is not None:
            await self.slack.chat_stopStream(channel=channel, ts=stream_ts)
        await self.slack.reactions_remove(channel=channel, timestamp=ts, name="eyes")

    async def write(self, channel: str, thread: str, user: str, stream_ts: str | None, text: str) -> str:
        if stream_ts is None:
            started = await self.slack.chat_startStream(
                channel=channel,
                thread_ts=thread,
                markdown_text=text,
                recipient_user_id=user,
                recipient_team_id=self.team,
            )
            return str(started["ts"])
        await self.slack.chat_appendStream(channel=channel, ts=stream_ts, markdown_text=text)
        return stream_ts


async def main() -> None:
    env = os.environ
    session = aiohttp.ClientSession()
    slack = AsyncWebClient(token=env["SLACK_BOT_TOKEN"], base_url=env["SLACK_API_URL"], session=session)
    claude = AsyncAnthropic(
        api_key=env["ANTHROPIC_API_KEY"],
        base_url=env["ANTHROPIC_BASE_URL"],
        http_client=DefaultAioHttpClient(),
    )
    identity = await slack.auth_test()
    bot = PlainBot(slack, claude, str(identity["team_id"]), str(identity["user_id"]))
    socket = SocketModeClient(app_token=env["SLACK_APP_TOKEN"], web_client=slack)
    socket.socket_mode_request_listeners.append(bot.on_request)  # type: ignore[arg-type]
    await socket.connect()  # type: ignore[no-untyped-call]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await socket.close()  # type: ignore[no-untyped-call]
    await claude.close()
    if slack.session is not None:
        await slack.session.close()


if __name__ == "__main__":
    asyncio.run(main())

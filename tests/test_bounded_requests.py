"""A flood is bounded as a whole: a request waiting for its turn has read nothing of Slack yet (no thread,
no files), a burst starts its answers a few at a time in the order they came, and display-name lookups,
however many requests want them, never crowd out the lookups the access check makes of each asker."""

from __future__ import annotations

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.pipeline import context, lane
from bot.pipeline.progress import STATUS, WAITING_STATUS
from bot.pipeline.said import RESTARTING
from tests.conftest import ALICE, BOB, CHANNEL, DM, direct_message, mention, said
from tests.fakes.slack_api import FakeSlack

ANSWER = "Hello from fake Claude."
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def one_at_a_time(**settings: str):
    return pytest.mark.parametrize(
        "bot_overrides", [{"MAX_CONCURRENT_ANSWERS": "1", "SEND_FILES": "on", **settings}], indirect=True
    )


async def a_waiting_request(bot) -> str:
    """The first answer holds the only slot (Claude hangs); a second ask, in an agent thread with a
    photo, is shown waiting. Returns the second thread's ts."""
    bot.claude.hang()
    bot.slack.add_thread(CHANNEL, [said(BOB, "root", "1.000000"), said(ALICE, "<@U0BOT> first", "1.000001")])
    await bot.send_event(mention("<@U0BOT> first", ts="1.000001", thread_ts="1.000000"))
    await bot.claude.wait_for_requests(1)

    photo = bot.slack.add_file(PNG, "image/png", "whiteboard.png")
    root = {**said(ALICE, "the whiteboard", "2.000001"), "files": [photo], "upload": True}
    bot.slack.add_thread(DM, [root, said(ALICE, "what does it say?", "2.000002")])
    await bot.send_event(direct_message("what does it say?", ts="2.000002", thread_ts="2.000001"))
    statuses = await bot.slack.wait_for("assistant.threads.setStatus", count=2)
    assert [call.params["status"] for call in statuses][1] == WAITING_STATUS
    return "2.000001"


def read_of(bot, channel: str, thread_ts: str) -> list:
    return [
        call
        for call in bot.slack.calls_to("conversations.replies")
        if (call.params["channel"], call.params["ts"]) == (channel, thread_ts)
    ]


@one_at_a_time()
async def test_a_request_waiting_for_its_turn_reads_nothing_until_one_ends(bot):
    waiting = await a_waiting_request(bot)

    # Shown waiting, and nothing of it read: neither its thread nor its file.
    assert not read_of(bot, DM, waiting)
    assert not bot.slack.calls_to("url_private")
    assert len(bot.claude.requests) == 1

    assert await bot.pipeline.stop(CHANNEL, "1.000000")  # the first ends (its reader pressed Stop)
    await bot.slack.wait_for("assistant.threads.setStatus", count=4)  # the second's: thinking, cleared
    assert read_of(bot, DM, waiting)
    assert len(bot.slack.calls_to("url_private")) == 1
    assert bot.replies(DM, waiting) == [ANSWER]
    [_, second] = bot.claude.requests
    assert second.body["messages"][0]["content"][1]["type"] == "image"  # its photo, fetched in its turn


@one_at_a_time()
async def test_a_request_whose_turn_comes_no_longer_says_it_is_waiting(bot):
    """While it reads and Claude thinks, its status says so, not "waiting for a free moment"."""
    waiting = await a_waiting_request(bot)

    assert await bot.pipeline.stop(CHANNEL, "1.000000")
    await bot.pipeline.wait_idle()

    statuses = [c.params["status"] for c in bot.slack.calls_to("assistant.threads.setStatus")]
    assert statuses[1:] == [WAITING_STATUS, STATUS, ""]
    assert bot.replies(DM, waiting) == [ANSWER]


@one_at_a_time()
async def test_a_drain_tells_a_waiting_request_to_come_back_and_it_reads_nothing(bot):
    waiting = await a_waiting_request(bot)

    assert await bot.pipeline.drain(grace_seconds=0) == 2
    assert bot.replies(DM, waiting) == [f":warning: {RESTARTING.sentence}"]
    assert not read_of(bot, DM, waiting)
    assert not bot.slack.calls_to("url_private")
    assert len(bot.claude.requests) == 1


@pytest.fixture
def patient_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    """Places in the lane held as long as the test needs (set up before `bot`, which builds the lane)."""
    monkeypatch.setattr(lane, "HOLD_SECONDS", 60.0)


@pytest.mark.usefixtures("patient_lane")
async def test_a_burst_starts_its_answers_a_few_at_a_time_in_the_order_they_came(bot):
    askers = [f"U0BURST{n}" for n in range(lane.WIDTH + 2)]
    for n, asker in enumerate(askers):
        bot.slack.add_user(asker, display_name=asker.lower())
        root, question = (
            said(asker, "deploy", f"{20 + n}.000000"),
            said(asker, "<@U0BOT> status?", f"{20 + n}.000001"),
        )
        bot.slack.add_thread(CHANNEL, [root, question])
    bot.slack.hold("users.info")  # each asker's access check waits on Slack
    for n, asker in enumerate(askers):
        await bot.send_event(
            mention("<@U0BOT> status?", ts=f"{20 + n}.000001", thread_ts=f"{20 + n}.000000", user=asker)
        )
    await bot.slack.wait_for("users.info", count=lane.WIDTH)
    bot.slack.let_go("users.info")
    await bot.finished(count=len(askers))

    checked = [call.params["user"] for call in bot.slack.calls_to("users.info")]
    assert set(checked[: lane.WIDTH]) == set(askers[: lane.WIDTH])
    # The later ones started only once an earlier one had read its thread and left for Claude.
    order = [(call.method, call.params.get("user")) for call in bot.slack.calls]
    first_read = order.index(("conversations.replies", None))
    assert all(order.index(("users.info", asker)) > first_read for asker in askers[lane.WIDTH :])
    assert all(bot.replies(CHANNEL, f"{20 + n}.000000") == [ANSWER] for n in range(len(askers)))


async def test_a_drain_tells_requests_still_being_let_in_to_come_back(bot):
    """Cancelled in the access check or waiting to start: nothing was read, and they are told."""
    askers = [f"U0DRAIN{n}" for n in range(lane.WIDTH + 1)]
    for n, asker in enumerate(askers):
        bot.slack.add_user(asker, display_name=asker.lower())
        bot.slack.add_thread(CHANNEL, [said(asker, "<@U0BOT> status?", f"{30 + n}.000001")])
    bot.slack.hold("users.info")
    for n, asker in enumerate(askers):
        await bot.send_event(mention("<@U0BOT> status?", ts=f"{30 + n}.000001", user=asker))
    await bot.slack.wait_for("users.info", count=lane.WIDTH)

    assert await bot.pipeline.drain(grace_seconds=0) == len(askers)
    for n in range(len(askers)):
        assert bot.replies(CHANNEL, f"{30 + n}.000001") == [f":warning: {RESTARTING.sentence}"]
    assert not bot.slack.calls_to("conversations.replies")
    assert not bot.claude.requests
    bot.slack.let_go("users.info")


AUTHORS = [f"U0AUTH{n:03d}" for n in range(30)]
FIRST_WAVE = [f"U0ASKA{n}" for n in range(10)]
SECOND_WAVE = [f"U0ASKB{n}" for n in range(6)]


def a_thread_of_many_authors(bot, asker: str, n: int) -> str:
    root = f"{10 + n}.000000"
    messages = [
        said(author, f"note {i} from the incident", f"{10 + n}.{i:06d}") for i, author in enumerate(AUTHORS)
    ]
    bot.slack.add_thread(CHANNEL, [*messages, said(asker, "<@U0BOT> summarize", f"{10 + n}.000999")])
    return root


async def test_name_lookups_under_a_flood_leave_room_for_the_askers_access_lookups(bot):
    """Slack allows as many users.info at once as name lookups may use, plus one per asker: enough, as long
    as the names of other requests' threads never take what the askers' own lookups need."""
    for user in [*AUTHORS, *FIRST_WAVE, *SECOND_WAVE]:
        bot.slack.add_user(user, display_name=user.lower())
    bot.slack.page_size = 200
    bot.slack.delay("users.info", 0.02)
    bot.slack.users_info_at_once = context.NAME_LOOKUPS_AT_ONCE + len(FIRST_WAVE) + len(SECOND_WAVE)
    asks = [
        (asker, a_thread_of_many_authors(bot, asker, n)) for n, asker in enumerate(FIRST_WAVE + SECOND_WAVE)
    ]

    def ask(asker: str, root: str) -> dict:
        return mention(
            "<@U0BOT> summarize", ts=root.replace(".000000", ".000999"), thread_ts=root, user=asker
        )

    for asker, root in asks[: len(FIRST_WAVE)]:
        await bot.send_event(ask(asker, root))
    await bot.slack.wait_for("users.info", count=len(FIRST_WAVE) + 20)  # their names are being looked up
    for asker, root in asks[len(FIRST_WAVE) :]:
        await bot.send_event(ask(asker, root))

    await bot.finished(count=len(asks))
    askers = set(FIRST_WAVE + SECOND_WAVE)
    assert not [call for call in bot.slack.rate_limited if call.params["user"] in askers]
    assert not bot.slack.calls_to("chat.postEphemeral")  # nobody was refused as unverified
    assert len(bot.claude.requests) == len(asks)
    assert all(bot.replies(CHANNEL, root) == [ANSWER] for _, root in asks)


async def test_after_slack_rate_limits_a_name_lookup_the_next_ones_wait_and_leave_ids(slack: FakeSlack):
    """Names are a courtesy: once Slack says users.info is limited, they stop for a while, so the lookups
    that decide who may ask get what Slack still allows."""
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)  # no retries: see the first 429
    slack.fail("users.info", status=429, error="ratelimited", retry_after=30)
    names = context.NameLookups(at_once=1)
    assert await context.look_up_names(client, [ALICE, BOB], lookups=names) == {}
    assert len(slack.calls_to("users.info")) == 1  # Bob's lookup was not made
    assert await context.look_up_names(client, [BOB], lookups=names) == {}
    assert len(slack.calls_to("users.info")) == 1

"""Threads the question links to: read only from the question, at most three, only what the asker may
read now, and an answer holding a private thread goes to the asker alone when others could see it."""

from __future__ import annotations

import asyncio
import re

import pytest

from bot.pipeline.ask import BotIdentity, SlackMessage
from bot.pipeline.links import ANSWERED_PRIVATELY, LINK_NOT_READ, Link, find_links
from bot.pipeline.prompt import SHORTENED, build_prompt
from bot.pipeline.tokens import CHARS_PER_TOKEN
from tests.conftest import ALICE, BOB, BOT_USER, CHANNEL, said

ANSWER = "Hello from fake Claude."
PUBLIC, SECRET = "C0RELEASE", "G0SECRET"


def last_user_turn(bot, n: int = 0) -> str:
    content = bot.claude.requests[n].body["messages"][-1]["content"]
    return content if isinstance(content, str) else "\n".join(b.get("text", "") for b in content)


def replies_read(bot, channel: str) -> int:
    return len([c for c in bot.slack.calls_to("conversations.replies") if c.params.get("channel") == channel])


def ephemerals(bot) -> list[str]:
    return [c.params["text"] for c in bot.slack.calls_to("chat.postEphemeral")]


async def ask(bot, question: str, root: str = "500.000001") -> None:
    asked = f"{root[:-1]}2"
    bot.slack.add_thread(CHANNEL, [said(BOB, "root", root), said(ALICE, question, asked)])
    await bot.send_event(
        {
            "type": "app_mention",
            "user": ALICE,
            "text": question,
            "ts": asked,
            "channel": CHANNEL,
            "event_ts": asked,
            "thread_ts": root,
        }
    )
    await bot.finished()


def link_to(bot, channel: str, ts: str, *, thread_ts: str | None = None, label: str | None = None) -> str:
    url = bot.slack.permalink(channel, ts, thread_ts).replace("&", "&amp;")
    return f"<{url}|{label}>" if label else f"<{url}>"


def test_links_are_found_in_slack_text_with_labels_and_escaped_ampersands():
    text = (
        "see <https://acme.slack.com/archives/C0A/p1700000000000100?thread_ts=1700000000.000050&amp;cid=C0A|this>"
        " and https://acme.slack.com/archives/G0B/p1700000001000200 and again "
        "<https://acme.slack.com/archives/C0A/p1700000000000050>"
    )
    assert find_links(text) == [Link("C0A", "1700000000.000050"), Link("G0B", "1700000001.000200")]


@pytest.mark.parametrize(
    "host",
    ["acme.slack-gov.com", "acme.enterprise.slack-gov.com", "acme.enterprise.slack.com"],
    ids=["govslack", "govslack-grid", "grid"],
)
def test_links_are_found_on_govslack_and_enterprise_grid_hosts(host):
    """GovSlack (SLACK_API_URL=https://slack-gov.com/api/) writes its permalinks on slack-gov.com: a link
    there names a thread as one on slack.com does, so it is read, or the asker told it was not."""
    text = f"see <https://{host}/archives/C0A/p1700000000000100?thread_ts=1700000000.000050&amp;cid=C0A|this>"
    assert find_links(text) == [Link("C0A", "1700000000.000050")]


@pytest.mark.parametrize(
    "asked_in",
    [
        pytest.param({}, id="an-internal-channel"),
        pytest.param(
            {"is_shared": True, "is_ext_shared": True, "conversation_host_id": "T0TEAM"}, id="slack-connect"
        ),
        pytest.param({"shared_team_ids": ["T0TEAM", "T0SISTER"]}, id="shared-with-another-workspace"),
    ],
)
async def test_a_public_channels_linked_thread_is_read_and_answered_to_the_asker_alone(bot, asked_in):
    """Who reads the channel asked in is not who may read the one linked: a partner in a Slack Connect
    channel, a guest, or someone from another workspace of the Grid org may not see it."""
    bot.slack.add_channel(CHANNEL, **asked_in)
    bot.slack.add_thread(
        PUBLIC, [said(BOB, "Ship 2.0 on Friday.", "400.000001"), said(BOB, "Agreed.", "400.000002")]
    )

    await ask(
        bot,
        f"<@{BOT_USER}> what did they decide in "
        + link_to(bot, PUBLIC, "400.000002", thread_ts="400.000001", label="thread"),
    )

    turn = last_user_turn(bot)
    assert f"linked from #{PUBLIC}" in turn
    assert "Ship 2.0 on Friday." in turn and "Agreed." in turn
    assert "Ship 2.0" not in bot.claude.requests[0].body["system"]  # the cached prefix stays the same
    assert bot.replies(CHANNEL, "500.000001") == []  # nothing in the thread others read
    assert ephemerals(bot) == [ANSWERED_PRIVATELY, ANSWER]


async def test_a_thread_linked_from_the_channel_asked_in_is_answered_there(bot):
    bot.slack.add_thread(CHANNEL, [said(BOB, "Ship 2.0 on Friday.", "400.000001")])

    await ask(bot, f"<@{BOT_USER}> what did they decide in {link_to(bot, CHANNEL, '400.000001')}")

    assert "Ship 2.0 on Friday." in last_user_turn(bot)
    assert bot.replies(CHANNEL, "500.000001")[-1] == ANSWER
    assert not ephemerals(bot)


async def test_a_link_in_an_older_message_is_not_read(bot):
    bot.slack.add_thread(PUBLIC, [said(BOB, "Ship 2.0 on Friday.", "400.000001")])
    old = said(BOB, f"see {link_to(bot, PUBLIC, '400.000001')}", "500.000002")
    question = said(ALICE, f"<@{BOT_USER}> summarize", "500.000003")
    bot.slack.add_thread(CHANNEL, [said(BOB, "root", "500.000001"), old, question])
    await bot.send_event(
        {
            "type": "app_mention",
            "user": ALICE,
            "text": question["text"],
            "ts": "500.000003",
            "channel": CHANNEL,
            "event_ts": "500.000003",
            "thread_ts": "500.000001",
        }
    )
    await bot.finished()

    assert replies_read(bot, PUBLIC) == 0
    assert "linked from" not in last_user_turn(bot)


async def test_at_most_three_linked_threads_are_read(bot):
    channels = [f"C0LINK{i}" for i in range(5)]
    for channel in channels:
        bot.slack.add_thread(channel, [said(BOB, f"News from {channel}.", "400.000001")])

    await ask(bot, f"<@{BOT_USER}> compare " + " ".join(link_to(bot, c, "400.000001") for c in channels))

    assert [replies_read(bot, c) for c in channels] == [1, 1, 1, 0, 0]
    assert last_user_turn(bot).count("linked from #") == 3


async def test_a_direct_message_link_is_never_read(bot):
    bot.slack.add_history("D0BOBCAROL", [said(BOB, "The offer is 120k.", "400.000001")])

    await ask(bot, f"<@{BOT_USER}> what about {link_to(bot, 'D0BOBCAROL', '400.000001')}")

    assert not [c for c in bot.slack.calls if c.params.get("channel") == "D0BOBCAROL"]
    assert "offer" not in last_user_turn(bot)
    assert ephemerals(bot) == [LINK_NOT_READ]
    assert bot.replies(CHANNEL, "500.000001")[-1] == ANSWER


async def test_a_private_thread_linked_by_a_member_is_read_and_answered_privately(bot):
    bot.slack.add_thread(SECRET, [said(BOB, "Reorg on Monday.", "400.000001")])
    bot.slack.set_members(SECRET, [BOB, ALICE])

    await ask(bot, f"<@{BOT_USER}> what was decided? {link_to(bot, SECRET, '400.000001')}")

    assert "Reorg on Monday." in last_user_turn(bot)
    assert bot.replies(CHANNEL, "500.000001") == []  # nothing in the public thread
    private = bot.slack.calls_to("chat.postEphemeral")
    assert [c.params["text"] for c in private] == [ANSWERED_PRIVATELY, ANSWER]
    assert all(c.params["user"] == ALICE and c.params["thread_ts"] == "500.000001" for c in private)


async def test_a_private_thread_linked_by_a_non_member_is_not_read(bot):
    bot.slack.add_channel("C0HUSH", is_private=True)
    bot.slack.add_thread("C0HUSH", [said(BOB, "Reorg on Monday.", "400.000001")])
    bot.slack.set_members("C0HUSH", [BOB])

    await ask(bot, f"<@{BOT_USER}> what was decided? {link_to(bot, 'C0HUSH', '400.000001')}")

    assert replies_read(bot, "C0HUSH") == 0
    assert "Reorg" not in last_user_turn(bot)
    assert ephemerals(bot) == [LINK_NOT_READ]
    assert bot.replies(CHANNEL, "500.000001")[-1] == ANSWER  # from the thread alone, in public


@pytest.mark.parametrize("bot_overrides", [{"ALLOWED_CHANNELS": f"{CHANNEL}"}], indirect=True)
async def test_a_channel_outside_the_allow_list_is_not_read(bot):
    bot.slack.add_thread(PUBLIC, [said(BOB, "Ship 2.0 on Friday.", "400.000001")])

    await ask(bot, f"<@{BOT_USER}> see {link_to(bot, PUBLIC, '400.000001')}")

    assert replies_read(bot, PUBLIC) == 0
    assert ephemerals(bot) == [LINK_NOT_READ]


async def test_another_organizations_channel_is_not_read(bot):
    bot.slack.add_channel(PUBLIC, is_shared=True, is_ext_shared=True, conversation_host_id="T0PARTNER")
    bot.slack.add_thread(PUBLIC, [said(BOB, "Partner roadmap.", "400.000001")])

    await ask(bot, f"<@{BOT_USER}> see {link_to(bot, PUBLIC, '400.000001')}")

    assert replies_read(bot, PUBLIC) == 0
    assert ephemerals(bot) == [LINK_NOT_READ]


@pytest.mark.parametrize(
    "alice_teams, channel_teams, members, told",
    [
        pytest.param(["T0SISTER"], ["T0TEAM"], [BOB], [LINK_NOT_READ], id="another-workspace-of-the-org"),
        pytest.param(
            ["T0SISTER"], ["T0TEAM"], [BOB, ALICE], [ANSWERED_PRIVATELY, ANSWER], id="a-member-from-elsewhere"
        ),
        pytest.param(
            ["T0SISTER", "T0TEAM"],
            ["T0TEAM"],
            [BOB],
            [ANSWERED_PRIVATELY, ANSWER],
            id="also-in-its-workspace",
        ),
        pytest.param(
            ["T0SISTER"], ["T0TEAM", "T0SISTER"], [BOB], [ANSWERED_PRIVATELY, ANSWER], id="shared-with-hers"
        ),
        pytest.param(["T0SISTER"], None, [BOB], [LINK_NOT_READ], id="a-channel-naming-none-is-the-bots"),
    ],
)
async def test_a_public_channel_in_the_grid_org_is_read_only_for_its_workspaces_or_its_members(
    bot, alice_teams, channel_teams, members, told
):
    """On Enterprise Grid a public channel is public to the workspaces it is in, not to the whole org."""
    bot.slack.enterprise_id = "E0ORG"
    bot.slack.add_user(
        ALICE,
        display_name="Alice",
        team_id="T0SISTER",
        enterprise_user={"id": "W0ALICE", "enterprise_id": "E0ORG", "teams": alice_teams},
    )
    channel = bot.slack.add_channel(PUBLIC, context_team_id="T0TEAM", shared_team_ids=channel_teams)
    if channel_teams is None:
        del channel["context_team_id"], channel["shared_team_ids"]
    bot.slack.set_members(PUBLIC, members)
    bot.slack.add_thread(PUBLIC, [said(BOB, "Ship 2.0 on Friday.", "400.000001")])

    await ask(bot, f"<@{BOT_USER}> see {link_to(bot, PUBLIC, '400.000001')}")

    read = told != [LINK_NOT_READ]
    assert replies_read(bot, PUBLIC) == int(read)
    assert ("Ship 2.0" in last_user_turn(bot)) is read
    assert ephemerals(bot) == told


@pytest.mark.parametrize(
    "bot_overrides, channel_teams",
    [
        pytest.param({"ALLOWED_WORKSPACES": "T0TEAM"}, ["T0SISTER"], id="outside-the-allowlist"),
        pytest.param(
            {"DENIED_WORKSPACES": "T0SISTER"}, ["T0TEAM", "T0SISTER"], id="shared-with-a-denied-one"
        ),
    ],
    indirect=["bot_overrides"],
)
async def test_the_workspace_lists_apply_to_the_channels_read(bot, channel_teams):
    """An admin who leaves a workspace out has its channels left out too, not only its people."""
    bot.slack.enterprise_id = "E0ORG"
    bot.slack.add_user(
        ALICE,
        display_name="Alice",
        enterprise_user={"id": "W0ALICE", "enterprise_id": "E0ORG", "teams": ["T0TEAM", "T0SISTER"]},
    )
    bot.slack.add_channel(PUBLIC, context_team_id=channel_teams[0], shared_team_ids=channel_teams)
    bot.slack.set_members(PUBLIC, [BOB, ALICE])
    bot.slack.add_thread(PUBLIC, [said(BOB, "Ship 2.0 on Friday.", "400.000001")])

    await ask(bot, f"<@{BOT_USER}> see {link_to(bot, PUBLIC, '400.000001')}")

    assert replies_read(bot, PUBLIC) == 0
    assert ephemerals(bot) == [LINK_NOT_READ]
    assert bot.replies(CHANNEL, "500.000001")[-1] == ANSWER


async def test_a_private_answer_cut_off_midway_stays_private_with_what_was_written(bot):
    """Claude failing halfway through an answer drawn on another conversation: the words so far and the
    note go to the asker, as the answer would have, not to the thread everyone reads."""
    bot.slack.add_thread(SECRET, [said(BOB, "Reorg on Monday.", "400.000001")])
    bot.slack.set_members(SECRET, [BOB, ALICE])
    bot.claude.chunk_chars = 5
    bot.claude.reply("First words, then more words that never arrive.")
    bot.claude.fail_midstream(after_chunks=2)

    await ask(bot, f"<@{BOT_USER}> what was decided? {link_to(bot, SECRET, '400.000001')}")

    assert bot.replies(CHANNEL, "500.000001") == []
    told = ephemerals(bot)
    assert told[0] == ANSWERED_PRIVATELY
    assert told[1].startswith("First word\n\n_(Cut off:")


async def test_a_linked_thread_of_several_pages_is_read(bot):
    bot.slack.page_size = 15  # Slack's page for apps not in the Marketplace
    stamps = [f"{1_700_000_000 + n}.000100" for n in range(45)]
    bot.slack.add_thread(PUBLIC, [said(BOB, f"message {n:03d}: ship it", ts) for n, ts in enumerate(stamps)])
    question = f"<@{BOT_USER}> what did they decide in <{bot.slack.permalink(PUBLIC, stamps[0])}>"
    bot.slack.add_thread(CHANNEL, [said(BOB, "root", "500.000001"), said(ALICE, question, "500.000002")])

    await bot.send_event(
        {
            "type": "app_mention",
            "user": ALICE,
            "text": question,
            "ts": "500.000002",
            "channel": CHANNEL,
            "event_ts": "500.000002",
            "thread_ts": "500.000001",
        }
    )
    await bot.slack.wait_for("chat.postEphemeral", count=2)

    [request] = bot.claude.requests
    linked = request.body["messages"][-1]["content"]
    assert [int(n) for n in re.findall(r"message (\d{3}): ship it", linked)] == list(range(45))


@pytest.mark.parametrize("where", ["linked", "viewed"])
def test_a_huge_newest_message_of_a_linked_thread_or_viewed_channel_is_shortened_to_its_share(where):
    budget = 5_000
    question = SlackMessage(ts="500.000002", text=f"<@{BOT_USER}> what went wrong here?", user=ALICE)
    paste = [SlackMessage(ts="400.000001", text="x" * 40_000, user=BOB)]  # Slack's longest: ~10,000 tokens
    read = {"linked": [(PUBLIC, paste)]} if where == "linked" else {"viewed": paste}

    prompt = build_prompt(
        [question], bot=BotIdentity(BOT_USER, "B0BOT"), names={}, system="", budget_tokens=budget, **read
    )

    sent = len(prompt.system) + sum(len(m["content"]) for m in prompt.messages)
    assert sent <= budget * CHARS_PER_TOKEN
    assert SHORTENED in prompt.system + prompt.messages[-1]["content"]


def reads_still_running() -> list[str]:
    """The reads of a request (its conversation, a linked thread, the viewed channel) still going on."""
    names = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", "")
        if not task.done() and name.startswith(("Pipeline._read", "read_conversation")):
            names.append(name)
    return sorted(names)


async def test_when_the_conversation_cannot_be_read_no_linked_thread_is_read_after_the_answer_ended(bot):
    """The answer failed at once (its own thread could not be read), while a linked private channel's
    membership was still being checked: that check and the linked read end with it. Left running, the
    linked thread would be read after the request was over, for nobody, and a late private note could
    tell the asker their question was answered without the link, after the error."""
    bot.slack.add_thread(SECRET, [said(BOB, "Reorg on Monday.", "400.000001")])
    bot.slack.set_members(SECRET, [BOB, ALICE])
    bot.slack.hold("conversations.members")
    bot.slack.fail("conversations.replies", error="not_in_channel")  # the thread asked in: refused
    question = f"<@{BOT_USER}> what was decided? {link_to(bot, SECRET, '400.000001')}"
    bot.slack.add_thread(CHANNEL, [said(BOB, "root", "500.000001"), said(ALICE, question, "500.000002")])

    await bot.send_event(
        {
            "type": "app_mention",
            "user": ALICE,
            "text": question,
            "ts": "500.000002",
            "channel": CHANNEL,
            "event_ts": "500.000002",
            "thread_ts": "500.000001",
        }
    )
    await bot.finished()
    await bot.pipeline.wait_idle()
    try:
        assert bot.replies(CHANNEL, "500.000001")[-1].startswith(":warning:")
        assert reads_still_running() == []
    finally:
        bot.slack.let_go("conversations.members")
    assert not bot.claude.requests

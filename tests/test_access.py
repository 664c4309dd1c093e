"""Who may use the bot: id lists, DMs on or off, Slack Connect and guests, failing closed.

A refusal is one private message (ephemeral, or through the response_url), and nothing of the
conversation is read: no conversations.* call and no request to Claude."""

from __future__ import annotations

import asyncio

import pytest

from bot.pipeline import access as rules
from bot.pipeline.access import (
    ChannelNotEnabled,
    DirectMessagesOff,
    ExternalUser,
    GuestAccount,
    Unverified,
    UserNotEnabled,
    WorkspaceNotEnabled,
)
from bot.state import MemoryState
from tests.conftest import ALICE, BOB, CHANNEL, DM, direct_message, mention, running_bot, said

ANSWER = "Hello from fake Claude."
OTHER_ORG_USER, GUEST, GRID_COLLEAGUE = "U0PARTNER", "U0GUEST", "U0SISTER"


def access(**settings: str):
    return pytest.mark.parametrize("bot_overrides", [settings], indirect=True)


async def refusal_to(bot, user: str = ALICE) -> str:
    [call] = await bot.slack.wait_for("chat.postEphemeral")
    assert call.params["user"] == user
    return call.params["text"]


def nothing_was_read(bot) -> None:
    assert not bot.slack.calls_to("conversations.replies")
    assert not bot.slack.calls_to("conversations.history")
    assert not bot.claude.requests
    assert not bot.slack.calls_to("reactions.add")  # not even progress was shown


async def ask_in_thread(bot, user: str = ALICE, channel: str = CHANNEL, **envelope) -> None:
    bot.slack.add_thread(channel, [said(BOB, "root", "1.000000"), said(user, "<@U0BOT> hi", "1.000001")])
    await bot.send_event(
        mention("<@U0BOT> hi", ts="1.000001", thread_ts="1.000000", user=user, channel=channel), **envelope
    )


@access(DENIED_WORKSPACES="T0TEAM")
async def test_a_denied_workspace_is_refused_privately_and_nothing_is_read(bot):
    await ask_in_thread(bot)

    assert await refusal_to(bot) == WorkspaceNotEnabled.sentence
    [call] = bot.slack.calls_to("chat.postEphemeral")
    assert (call.params["channel"], call.params["thread_ts"]) == (CHANNEL, "1.000000")
    nothing_was_read(bot)
    assert not bot.slack.calls_to("users.info")  # the lists need no lookup


@access(ALLOWED_WORKSPACES="T0ELSEWHERE")
async def test_a_workspace_outside_the_allowlist_is_refused(bot):
    await ask_in_thread(bot)
    assert await refusal_to(bot) == WorkspaceNotEnabled.sentence
    nothing_was_read(bot)


@access(ALLOWED_WORKSPACES="E0ORG")
async def test_an_enterprise_grid_org_on_the_allowlist_lets_its_workspaces_in(bot):
    bot.slack.enterprise_id = "E0ORG"  # the bot's own org, as auth.test names it
    bot.slack.add_user(ALICE, display_name="Alice", enterprise_user={"enterprise_id": "E0ORG"})
    await bot.send_command("what is a mutex?")

    [response] = await bot.slack.wait_for("response_url")
    assert ANSWER in response.params["text"]
    assert not bot.slack.calls_to("chat.postEphemeral")


@access(ALLOWED_CHANNELS="C0ALLOWED")
async def test_a_channel_outside_the_allowlist_is_refused_and_an_allowed_one_answered(bot):
    await ask_in_thread(bot)
    assert await refusal_to(bot) == ChannelNotEnabled.sentence
    nothing_was_read(bot)

    bot.slack.add_thread("C0ALLOWED", [said(ALICE, "<@U0BOT> hi", "2.000000")])
    await bot.send_event(mention("<@U0BOT> hi", ts="2.000000", channel="C0ALLOWED"))
    await bot.finished()
    assert bot.replies("C0ALLOWED", "2.000000") == [ANSWER]


@access(DENIED_CHANNELS="C0GENERAL")
async def test_a_slash_command_in_a_denied_channel_is_refused_through_its_response_url(bot):
    await bot.send_command("what is a mutex?", channel_id=CHANNEL)

    responses = await bot.slack.wait_for("response_url", count=1)
    assert responses[-1].params["text"] == ChannelNotEnabled.sentence
    assert responses[-1].params["response_type"] == "ephemeral"
    assert not bot.claude.requests


@access(DENIED_USERS=ALICE)
async def test_a_denied_user_is_refused_and_others_are_answered(bot):
    await ask_in_thread(bot)
    assert await refusal_to(bot) == UserNotEnabled.sentence
    nothing_was_read(bot)

    await bot.send_event(mention("<@U0BOT> hi", ts="3.000000", user=BOB))
    await bot.finished()
    assert bot.replies(CHANNEL, "3.000000") == [ANSWER]


@access(DIRECT_MESSAGES="off")
async def test_direct_messages_can_be_turned_off(bot):
    await bot.send_event(direct_message("hello", ts="4.000000"))

    [call] = await bot.slack.wait_for("chat.postEphemeral")
    assert (call.params["channel"], call.params["text"]) == (DM, DirectMessagesOff.sentence)
    assert not bot.slack.top_level_texts(DM)
    nothing_was_read(bot)


async def test_a_person_from_another_organization_is_refused_by_default(bot):
    bot.slack.add_user(OTHER_ORG_USER, display_name="Pat", team_id="T0PARTNER")
    await ask_in_thread(bot, user=OTHER_ORG_USER)

    assert await refusal_to(bot, OTHER_ORG_USER) == ExternalUser.sentence
    nothing_was_read(bot)


@access(ALLOW_EXTERNAL_USERS="on")
async def test_people_from_other_organizations_can_be_allowed(bot):
    bot.slack.add_user(OTHER_ORG_USER, display_name="Pat", team_id="T0PARTNER")
    await ask_in_thread(bot, user=OTHER_ORG_USER)

    await bot.finished()
    assert bot.replies(CHANNEL, "1.000000") == [ANSWER]


async def test_a_colleague_from_another_workspace_of_the_bots_grid_org_is_not_external(bot):
    bot.slack.enterprise_id = "E0ORG"  # auth.test says the bot is installed in this org
    bot.slack.add_user(
        GRID_COLLEAGUE, display_name="Sam", team_id="T0SISTER", enterprise_user={"enterprise_id": "E0ORG"}
    )
    # The event names no org: which org is ours comes from auth.test, not from the payload.
    await bot.send_event(mention("<@U0BOT> hi", ts="5.000000", user=GRID_COLLEAGUE))

    await bot.finished()
    assert bot.replies(CHANNEL, "5.000000") == [ANSWER]
    assert not bot.slack.calls_to("chat.postEphemeral")


async def test_an_org_a_payload_names_is_not_ours_unless_auth_test_says_so(bot):
    bot.slack.add_user(
        GRID_COLLEAGUE, display_name="Sam", team_id="T0SISTER", enterprise_user={"enterprise_id": "E0ORG"}
    )
    frame = bot.slack.events_api_envelope(mention("<@U0BOT> hi", ts="5.000000", user=GRID_COLLEAGUE))
    frame["payload"]["enterprise_id"] = "E0ORG"  # the bot itself is installed outside any org
    await bot.slack.send_envelope(frame)

    assert await refusal_to(bot, GRID_COLLEAGUE) == ExternalUser.sentence
    nothing_was_read(bot)


def partner_payload(bot, surface: str) -> dict:
    """A slash command or message shortcut by a partner in a shared channel: such payloads name the
    asker's own team, not the one that installed the bot."""
    if surface == "slash_command":
        frame = bot.slack.slash_command_envelope(
            bot.settings.slash_command, "what is a mutex?", user_id=OTHER_ORG_USER
        )
        frame["payload"]["team_id"] = "T0PARTNER"
        return frame
    frame = bot.slack.message_shortcut_envelope(
        "summarize_thread", message=said(BOB, "root", "1.000000"), user_id=OTHER_ORG_USER
    )
    frame["payload"]["team"]["id"] = frame["payload"]["user"]["team_id"] = "T0PARTNER"
    return frame


@pytest.mark.parametrize("surface", ["slash_command", "shortcut"])
async def test_a_partner_is_external_whatever_team_the_payload_names(bot, surface):
    bot.slack.add_user(OTHER_ORG_USER, display_name="Pat", team_id="T0PARTNER")
    bot.slack.add_thread(CHANNEL, [said(BOB, "root", "1.000000")])
    await bot.slack.send_envelope(partner_payload(bot, surface))

    [refusal] = await bot.slack.wait_for("response_url")
    assert refusal.params["text"] == ExternalUser.sentence
    assert refusal.params["response_type"] == "ephemeral"
    nothing_was_read(bot)


@pytest.mark.parametrize(
    "bot_overrides",
    [
        {"ALLOW_EXTERNAL_USERS": "on", "DENIED_WORKSPACES": "T0PARTNER"},
        {"ALLOW_EXTERNAL_USERS": "on", "ALLOWED_WORKSPACES": "T0TEAM"},
    ],
    ids=["denylist", "allowlist"],
    indirect=True,
)
async def test_the_workspace_lists_apply_to_the_askers_own_workspace_in_shared_channels(bot):
    bot.slack.add_user(OTHER_ORG_USER, display_name="Pat", team_id="T0PARTNER")
    await ask_in_thread(bot, user=OTHER_ORG_USER)

    assert await refusal_to(bot, OTHER_ORG_USER) == WorkspaceNotEnabled.sentence
    nothing_was_read(bot)


@access(DENIED_WORKSPACES="T0SISTER")
async def test_the_workspace_lists_apply_to_the_channel_asked_in(bot):
    """As to a channel linked: a channel shared with a workspace left out is left out too, since its
    people there would read the answer and what they wrote would go to Claude."""
    bot.slack.enterprise_id = "E0ORG"
    bot.slack.add_channel(CHANNEL, context_team_id="T0TEAM", shared_team_ids=["T0TEAM", "T0SISTER"])
    await ask_in_thread(bot)

    assert await refusal_to(bot) == WorkspaceNotEnabled.sentence
    nothing_was_read(bot)


@access(DENIED_WORKSPACES="T0SISTER")
async def test_a_channel_asked_in_that_cannot_be_looked_up_is_not_answered(bot):
    """The channel's workspaces matter only when a list is set; then a failed lookup says no."""
    bot.slack.fail("conversations.info", error="internal_error", status=500, times=10)
    await ask_in_thread(bot)

    assert await refusal_to(bot) == Unverified.sentence
    nothing_was_read(bot)


@access(ALLOW_EXTERNAL_USERS="on", ALLOW_GUESTS="on", DENIED_WORKSPACES="T0PARTNER")
async def test_with_a_workspace_list_the_asker_is_looked_up_even_when_everyone_else_may_ask(bot):
    bot.slack.add_user(OTHER_ORG_USER, display_name="Pat", team_id="T0PARTNER")
    bot.slack.add_user(GRID_COLLEAGUE, display_name="Sam", team_id="T0SISTER")
    await bot.send_command("what is a mutex?", user_id=OTHER_ORG_USER)
    [refusal] = await bot.slack.wait_for("response_url")
    assert refusal.params["text"] == WorkspaceNotEnabled.sentence
    assert not bot.claude.requests

    await bot.send_command("what is a mutex?", user_id=GRID_COLLEAGUE)  # another org, not denied
    responses = await bot.slack.wait_for("response_url", count=2)
    assert ANSWER in responses[-1].params["text"]


@pytest.mark.parametrize(
    "bot_overrides", [{}, {"ALLOW_GUESTS": "on", "ALLOW_EXTERNAL_USERS": "on"}], indirect=True
)
async def test_a_deactivated_account_is_refused(bot):
    bot.slack.add_user("U0GONE", display_name="Gone", deleted=True)
    await ask_in_thread(bot, user="U0GONE")

    assert await refusal_to(bot, "U0GONE") == rules.DeactivatedAccount.sentence
    nothing_was_read(bot)


@pytest.mark.parametrize("flag", ["is_restricted", "is_ultra_restricted"])
async def test_guests_are_refused_by_default(bot, flag):
    bot.slack.add_user(GUEST, display_name="Gus", **{flag: True})
    await ask_in_thread(bot, user=GUEST)

    assert await refusal_to(bot, GUEST) == GuestAccount.sentence
    nothing_was_read(bot)


@access(ALLOW_GUESTS="true")
async def test_guests_can_be_allowed(bot):
    bot.slack.add_user(GUEST, display_name="Gus", is_restricted=True)
    await ask_in_thread(bot, user=GUEST)

    await bot.finished()
    assert bot.replies(CHANNEL, "1.000000") == [ANSWER]


@pytest.mark.parametrize("failure", [{"error": "user_not_found"}, {"error": "internal_error", "status": 500}])
async def test_when_the_asker_cannot_be_looked_up_the_answer_is_no(bot, failure):
    bot.slack.fail("users.info", times=5, **failure)
    await ask_in_thread(bot)

    assert await refusal_to(bot) == Unverified.sentence
    nothing_was_read(bot)


async def test_the_lookup_is_remembered_briefly_and_shared_with_the_names(bot):
    await ask_in_thread(bot)
    await bot.finished()
    assert [c.params["user"] for c in bot.slack.calls_to("users.info")].count(ALICE) == 1  # not twice

    bot.slack.fail("users.info", times=5, error="internal_error", status=500)
    await bot.send_event(mention("<@U0BOT> again", ts="6.000000"))
    await bot.finished(count=2)
    assert bot.replies(CHANNEL, "6.000000") == [ANSWER]  # the access facts were remembered


@access(ALLOW_GUESTS="on", ALLOW_EXTERNAL_USERS="on")
async def test_with_everyone_allowed_one_lookup_still_serves_the_access_check_and_the_name(bot):
    await bot.send_event(mention("<@U0BOT> hi", ts="7.000000"))
    await bot.finished()
    assert bot.replies(CHANNEL, "7.000000") == [ANSWER]
    assert [c.params["user"] for c in bot.slack.calls_to("users.info")] == [ALICE]
    assert "Alice:" in str(bot.claude.requests[0].body["messages"])


class HeldFacts(MemoryState):
    """A store whose writes of a person's facts wait until the test lets them land (a slow Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.writing, self.land = asyncio.Event(), asyncio.Event()

    async def put(self, key: str, value: str, ttl: float) -> None:
        if key.startswith("person:"):
            self.writing.set()
            await self.land.wait()
        await super().put(key, value, ttl)


async def test_the_answer_does_not_wait_for_the_askers_facts_to_be_remembered(slack, claude):
    held = HeldFacts()
    async with running_bot(slack, claude, {}, held) as bot:
        await bot.send_event(mention("<@U0BOT> hi", ts="8.000000"))
        await held.writing.wait()
        await claude.wait_for_requests()  # asked while the write is still on its way
        held.land.set()
        await bot.finished()
        assert bot.replies(CHANNEL, "8.000000") == [ANSWER]
        assert await held.get(f"person:{bot.pipeline.keys.of(ALICE)}") == "T0TEAM,,0,0,"

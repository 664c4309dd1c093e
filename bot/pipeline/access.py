"""Who may use the bot, decided before anything of the conversation is read, and which other channels
may be read for them.

First the id lists that need no lookup (channel, user, DMs on or off). Then the workspace and Enterprise
Grid org lists, applied both to the bot's own workspace and org (learnt once from `auth.test`, never
from a payload), to the asker's own (one `users.info`) and, while a list is set, to those of the
channel asked in (one `conversations.info` beside it): a deactivated account, a guest (restricted or
ultra-restricted) or a member of another organization is refused unless allowed. A lookup that
fails refuses too: the check fails closed. Lookups are remembered for five minutes as ids and flags
only (never names or messages), in State under a keyed hash of the person (shared by every replica), and
concurrent asks by one person in one process share one lookup.

`may_read(ask, channel)` decides, for every read of a channel other than the one asked in (the channel
an agent-thread user is viewing), whether this asker may have it read now; nothing of it is remembered.
`check_still_in(ask, channel)` holds a shortcut's own thread to its asker's membership when it is read,
since a question from its modal may come long after the shortcut was used.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.config import AccessSettings
from bot.pipeline.ask import Ask, InConversation
from bot.pipeline.context import ContextUnavailable, display_name
from bot.pipeline.said import VisibleError
from bot.slack_calls import SlackCallFailed, slack_call
from bot.state import State, StateKeys

log = logging.getLogger(__name__)

FACTS_TTL_SECONDS = 300
MEMBERS_PAGE_SIZE = 999  # Slack's most per conversations.members page
MEMBERS_MAX_PAGES = 50  # past ~50,000 members, membership is not confirmed: the channel is not read
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")  # a channel or group DM; never a DM (D…)

VIEWED_CHANNEL_NOT_READ = (
    "I couldn't read the channel you're viewing, so I answered from this thread alone. (I read only "
    "channels an admin enabled and I was invited to, and a private one only if you're a member.)"
)
NO_VIEWED_CHANNEL = (
    "I can't tell which channel you're viewing here, so I answered from this thread alone. To ask about "
    "a conversation, paste a link to one of its messages."
)


class Refused(VisibleError):
    """The asker may not use the bot here; `sentence` is what they are told, privately."""


class WorkspaceNotEnabled(Refused):
    sentence = "Claude isn't enabled for this workspace. An admin chooses where it can be used."


class ChannelNotEnabled(Refused):
    sentence = "Claude isn't enabled in this channel. An admin chooses where it can be used."


class UserNotEnabled(Refused):
    sentence = "Claude isn't enabled for your account. An admin chooses who can use it."


class DirectMessagesOff(Refused):
    sentence = "Claude doesn't answer direct messages here. Mention it in a channel where it's enabled."


class ExternalUser(Refused):
    sentence = (
        "Claude here is only for members of the organization that runs it, so it can't answer people "
        "from other organizations in shared channels. Nothing was read."
    )


class GuestAccount(Refused):
    sentence = "Claude isn't available to guest accounts in this workspace."


class DeactivatedAccount(Refused):
    sentence = "Claude isn't available to deactivated accounts."


class Unverified(Refused):
    sentence = (
        "I couldn't confirm that you may use Claude right now, so I didn't read or answer anything. "
        "Please try again in a moment."
    )


class NotAMember(VisibleError):
    """A shortcut's question came after its asker left the private conversation it was used in."""

    sentence = "You're not a member of that conversation any more, so I didn't read it."


@dataclass(frozen=True, slots=True)
class Home:
    """The workspace and Enterprise Grid org the bot is installed in, as auth.test names them."""

    team_id: str
    enterprise_id: str  # "" outside Enterprise Grid

    @property
    def workspaces(self) -> frozenset[str]:
        return frozenset({self.team_id, self.enterprise_id} - {""})


@dataclass(frozen=True, slots=True)
class PersonFacts:
    """What the access check needs to know about a person: ids and flags, nothing they wrote."""

    team_id: str
    enterprise_id: str
    guest: bool
    deleted: bool = False
    teams: frozenset[str] = frozenset()  # on Enterprise Grid, every workspace of the org they are in

    @property
    def workspaces(self) -> frozenset[str]:
        return frozenset({self.team_id, self.enterprise_id} - {""})

    @property
    def member_of(self) -> frozenset[str]:
        """The workspaces (and org) whose public channels this person can see."""
        return self.workspaces | self.teams

    def dumps(self) -> str:
        teams = " ".join(sorted(self.teams))
        return f"{self.team_id},{self.enterprise_id},{int(self.guest)},{int(self.deleted)},{teams}"

    @classmethod
    def loads(cls, value: str) -> PersonFacts | None:
        parts = value.split(",")
        if len(parts) != 5:
            return None
        teams = frozenset(parts[4].split())
        return cls(parts[0], parts[1], guest=parts[2] == "1", deleted=parts[3] == "1", teams=teams)


class AccessCheck:
    """`check_ids(ask)`, then `await check_person(ask)`, raise Refused when the asker may not use the bot
    for this Ask; `await may_read(ask, channel)` says whether another channel may be read for it."""

    def __init__(
        self, settings: AccessSettings, slack: AsyncWebClient, state: State, keys: StateKeys
    ) -> None:
        self._settings = settings
        self._slack = slack
        self._state, self._keys = state, keys
        self._home: Home | None = None  # the installation's ids, learnt once
        self._home_lookup: asyncio.Future[Home | None] | None = None
        self._lookups: dict[str, asyncio.Future[tuple[PersonFacts | None, str | None]]] = {}
        self._remembering: set[asyncio.Future[None]] = set()

    def check_ids(self, ask: Ask) -> None:
        """The lists that need no lookup, from the request alone: no Slack call."""
        access = self._settings
        if ask.origin.channel_id is not None and ask.origin.channel_id.startswith("D"):
            if not access.direct_messages:
                raise DirectMessagesOff()
        elif self._channel_listed_out(ask.origin.channel_id):
            raise ChannelNotEnabled()
        if ask.origin.user_id in access.denied_users or (
            access.allowed_users is not None and ask.origin.user_id not in access.allowed_users
        ):
            raise UserNotEnabled()

    async def check_person(self, ask: Ask) -> str | None:
        """The workspace lists, deactivated accounts, other organizations' members and guests, by the
        bot's own auth.test (once), one (remembered) users.info of the asker and, while a workspace
        list is set, the channel's conversations.info beside it.

        Returns the asker's display name when it was looked up just now, so that this request need
        not look it up again; names themselves are never remembered."""
        home = await self._learn_home()
        if home is None:
            raise Unverified()
        self._check_workspaces(home.workspaces)
        (facts, name), listed_out = await asyncio.gather(
            self._person(ask.origin.user_id), self._asked_in_listed_out(ask, home)
        )
        if facts is None or listed_out is None:
            raise Unverified()
        if listed_out:
            raise WorkspaceNotEnabled()
        if facts.deleted:
            raise DeactivatedAccount()
        if not self._settings.external_users and _is_external(facts, home):
            raise ExternalUser()
        if not self._settings.guests and facts.guest:
            raise GuestAccount()
        self._check_workspaces(facts.workspaces)  # the asker's own workspace and org, not only ours
        return name

    async def may_read(self, ask: Ask, channel_id: str) -> bool:
        """Whether `channel_id`, a channel other than the one asked in, may be read for this Ask now.

        Asked again for every read, and nothing of the answer is kept: the channel lists apply, and the
        workspace lists to the channel's workspaces; a DM is never read, nor a shared channel another
        organization hosts; a private channel or group DM only while the asker is a member of it (any
        channel, for a guest, a person from another organization, or one from a workspace of the Grid
        org the channel is not in). A lookup that fails says no."""
        verdict = await self._verdict(ask, channel_id)
        if verdict is not None:
            log.info("request=%s channel=%s not read: %s", ask.request_id, channel_id, verdict)
        return verdict is None

    async def check_still_in(self, ask: Ask, channel_id: str) -> None:
        """For a shortcut's thread, read when its question comes (from a modal, for as long as its response
        URL works: 30 minutes), not when the shortcut was used: a private channel or group DM (any
        channel, for a guest or a person from another organization) only while the asker is still a
        member. Raises NotAMember if they are not, ContextUnavailable if Slack did not say (fails
        closed); a DM is left to the read (the bot reads only its own)."""
        if not _CHANNEL_ID.fullmatch(channel_id):
            return
        info = await self._conversation_info(channel_id)
        if info is None:
            raise ContextUnavailable("conversations.info", "lookup failed")
        private = channel_id.startswith("G") or bool(info.get("is_private") or info.get("is_mpim"))
        if not private:
            home = await self._learn_home()
            facts, _ = await self._person(ask.origin.user_id)
            if home is None or facts is None:
                raise ContextUnavailable("users.info", "lookup failed")
            if not (facts.guest or _is_external(facts, home)):
                return  # a public channel: open to every full member of the workspace
        member = await self._is_member(channel_id, ask.origin.user_id)
        if member is None:
            raise ContextUnavailable("conversations.members", "lookup failed")
        if not member:
            log.info("request=%s channel=%s not read: asker no longer a member", ask.request_id, channel_id)
            raise NotAMember()

    async def _verdict(self, ask: Ask, channel_id: str) -> str | None:
        """Why it may not be read; None: it may."""
        if not _CHANNEL_ID.fullmatch(channel_id):
            return "not a channel"
        if self._channel_listed_out(channel_id):
            return "channel lists"
        home = await self._learn_home()
        if home is None:
            return "bot's workspace unknown"
        info = await self._conversation_info(channel_id)
        if info is None:
            return "conversations.info failed"
        if info.get("is_im"):
            return "a direct message"
        if _hosted_elsewhere(info, home):
            return "hosted by another organization"
        if self._listed_out(_workspaces_of(info, home)):
            return "workspace lists"
        facts, _ = await self._person(ask.origin.user_id)
        if facts is None:
            return "asker unknown"
        private = channel_id.startswith("G") or bool(info.get("is_private") or info.get("is_mpim"))
        if private or facts.guest or _is_external(facts, home) or not _in_workspace_of(facts, info, home):
            member = await self._is_member(channel_id, ask.origin.user_id)
            if member is None:
                return "conversations.members failed"
            if not member:
                return "asker not a member"
        return None

    async def _asked_in_listed_out(self, ask: Ask, home: Home) -> bool | None:
        """Whether the workspace lists leave out the channel the Ask reads or answers in: one shared
        with a workspace left out is, as when it is linked. Looked up (beside the asker) only while a
        list is set; None if the lookup failed."""
        access = self._settings
        if not access.denied_workspaces and access.allowed_workspaces is None:
            return False
        used = {ask.history.channel} if ask.history is not None else set()
        if isinstance(ask.reply_to, InConversation):
            used.add(ask.reply_to.channel)
        channels = sorted(channel for channel in used if _CHANNEL_ID.fullmatch(channel))
        infos = await asyncio.gather(*(self._conversation_info(channel) for channel in channels))
        if any(info is None for info in infos):
            return None
        return any(self._listed_out(_workspaces_of(info, home)) for info in infos if info is not None)

    def _channel_listed_out(self, channel_id: str | None) -> bool:
        access = self._settings
        return channel_id in access.denied_channels or (
            access.allowed_channels is not None and channel_id not in access.allowed_channels
        )

    def _check_workspaces(self, workspaces: frozenset[str]) -> None:
        if self._listed_out(workspaces):
            raise WorkspaceNotEnabled()

    def _listed_out(self, workspaces: frozenset[str]) -> bool:
        """Any of them denied, or none of them allowed."""
        access = self._settings
        return bool(workspaces & access.denied_workspaces) or (
            access.allowed_workspaces is not None and not workspaces & access.allowed_workspaces
        )

    async def _learn_home(self) -> Home | None:
        """The bot's own workspace and org, from one auth.test shared by concurrent asks. Kept while the
        process runs (the installation's ids, not a person's); a failure is not kept."""
        if self._home is not None:
            return self._home
        if self._home_lookup is None or self._home_lookup.done():
            self._home_lookup = asyncio.ensure_future(self._auth_test())
        home = await asyncio.shield(self._home_lookup)
        if home is not None:
            self._home = home
        return home

    async def _auth_test(self) -> Home | None:
        response = await _looked_up("access check", "auth.test", self._slack.auth_test())
        if response is None:
            return None
        home = Home(_str(response.get("team_id")), _str(response.get("enterprise_id")))
        return home if home.workspaces else None

    async def _person(self, user_id: str) -> tuple[PersonFacts | None, str | None]:
        known = await self._state.get(self._facts_key(user_id))
        facts = None if known is None else PersonFacts.loads(known)
        if facts is not None:
            return facts, None
        return await self._look_up(user_id)

    def _facts_key(self, user_id: str) -> str:
        return f"person:{self._keys.of(user_id)}"

    async def _look_up(self, user_id: str) -> tuple[PersonFacts | None, str | None]:
        """One users.info at a time per person: concurrent asks by one person share it."""
        lookup = self._lookups.get(user_id)
        if lookup is None:
            lookup = asyncio.ensure_future(self._users_info(user_id))
            self._lookups[user_id] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(user_id, None))
        return await asyncio.shield(lookup)

    async def _users_info(self, user_id: str) -> tuple[PersonFacts | None, str | None]:
        response = await _looked_up("access check", "users.info", self._slack.users_info(user=user_id))
        if response is None:
            return None, None
        user = response.get("user")
        facts = _facts(user)
        if facts is not None:
            self._remember(user_id, facts)
        return facts, display_name(user)

    def _remember(self, user_id: str, facts: PersonFacts) -> None:
        """Written meanwhile: the ask goes on without waiting for a round trip to Redis."""
        written = asyncio.ensure_future(
            self._state.put(self._facts_key(user_id), facts.dumps(), FACTS_TTL_SECONDS)
        )
        self._remembering.add(written)
        written.add_done_callback(self._written)

    def _written(self, written: asyncio.Future[None]) -> None:
        self._remembering.discard(written)
        if not written.cancelled() and (failure := written.exception()) is not None:
            log.warning("access facts not remembered (%s)", failure.__class__.__name__)

    async def _conversation_info(self, channel_id: str) -> Mapping[str, Any] | None:
        """The channel's kind and sharing, now (ids and flags; its name and topic are not used)."""
        info = self._slack.conversations_info(channel=channel_id)
        response = await _looked_up("channel check", "conversations.info", info)
        if response is None:
            return None
        channel = response.get("channel")
        return channel if isinstance(channel, Mapping) else None

    async def _is_member(self, channel_id: str, user_id: str) -> bool | None:
        """Whether the person is in the channel now, page by page until found; None if Slack did not say."""
        cursor = None
        for _ in range(MEMBERS_MAX_PAGES):
            members_page = self._slack.conversations_members(
                channel=channel_id, limit=MEMBERS_PAGE_SIZE, cursor=cursor
            )
            response = await _looked_up("channel check", "conversations.members", members_page)
            if response is None:
                return None
            members = response.get("members")
            if not isinstance(members, list):
                return None
            if user_id in members:
                return True
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return False
        return None


async def _looked_up(
    check: str, method: str, call: Awaitable[AsyncSlackResponse]
) -> AsyncSlackResponse | None:
    """Slack's answer to a lookup, or None (logged) if Slack refused or failed it: the check fails closed."""
    try:
        with slack_call(method):
            return await call
    except SlackCallFailed as exc:
        log.warning("%s failed: %s", check, exc)
        return None


def _facts(user: object) -> PersonFacts | None:
    if not isinstance(user, Mapping) or not isinstance(user.get("team_id"), str):
        return None  # an answer we cannot judge by: fail closed
    enterprise_user = user.get("enterprise_user")
    grid = enterprise_user if isinstance(enterprise_user, Mapping) else {}
    return PersonFacts(
        team_id=user["team_id"],
        enterprise_id=_str(grid.get("enterprise_id")) or _str(user.get("enterprise_id")),
        guest=bool(user.get("is_restricted") or user.get("is_ultra_restricted")),
        deleted=bool(user.get("deleted")),
        teams=_ids(grid.get("teams")),
    )


def _is_external(facts: PersonFacts, home: Home) -> bool:
    """A member of another organization: neither the bot's workspace nor its Enterprise Grid org."""
    if facts.team_id == home.team_id:
        return False
    return not (home.enterprise_id and facts.enterprise_id == home.enterprise_id)


def _teams_of(channel: Mapping[str, Any], home: Home) -> frozenset[str]:
    """The workspaces a channel is in; one that names none is the bot's workspace's."""
    teams = _ids(channel.get("shared_team_ids")) | _ids([channel.get("context_team_id")])
    return teams or frozenset({home.team_id})


def _workspaces_of(channel: Mapping[str, Any], home: Home) -> frozenset[str]:
    """Its workspaces and the bot's org (a channel hosted elsewhere is never read), for the lists."""
    return _teams_of(channel, home) | frozenset({home.enterprise_id} - {""})


def _in_workspace_of(person: PersonFacts, channel: Mapping[str, Any], home: Home) -> bool:
    """Whether the person is in a workspace the channel is in: on Enterprise Grid a public channel is
    public to its workspaces, not to the whole org."""
    return bool(person.member_of & _teams_of(channel, home))


def _hosted_elsewhere(channel: Mapping[str, Any], home: Home) -> bool:
    """A Slack Connect channel not hosted by the bot's workspace (an unknown host counts as elsewhere)."""
    return bool(channel.get("is_ext_shared")) and channel.get("conversation_host_id") != home.team_id


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _ids(values: object) -> frozenset[str]:
    """The ids in a list from a payload, ignoring whatever is not an id."""
    if not isinstance(values, list):
        return frozenset()
    return frozenset(v for v in values if isinstance(v, str) and v and "," not in v and " " not in v)

"""Who may use the bot, decided before anything of the conversation is read.

First the id lists (workspace or Enterprise Grid org, channel, user, DMs on or off), from the request
alone. Then, unless guests and people from other organizations are both allowed, one `users.info`
of the asker: a guest (restricted or ultra-restricted account) or a member of another organization in
a Slack Connect channel is refused. A lookup that fails refuses too: the check fails closed. Lookups
are remembered for a few minutes as ids and flags only (never names or messages), and concurrent asks
by one person share one lookup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import AccessSettings
from bot.expiring import ExpiringMap
from bot.pipeline.ask import Ask
from bot.pipeline.context import display_name

log = logging.getLogger(__name__)

FACTS_TTL_SECONDS = 300
FACTS_MAX_PEOPLE = 10_000


class Refused(Exception):
    """The asker may not use the bot here; `sentence` is what they are told, privately."""

    sentence: ClassVar[str]


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


class Unverified(Refused):
    sentence = (
        "I couldn't confirm that you may use Claude right now, so I didn't read or answer anything. "
        "Please try again in a moment."
    )


@dataclass(frozen=True, slots=True)
class PersonFacts:
    """What the access check needs to know about a person: ids and flags, nothing they wrote."""

    team_id: str
    enterprise_id: str
    guest: bool


class AccessCheck:
    """`await check(ask)` raises Refused when the asker may not use the bot for this Ask."""

    def __init__(self, settings: AccessSettings, slack: AsyncWebClient) -> None:
        self._settings = settings
        self._slack = slack
        self._facts: ExpiringMap[str, PersonFacts] = ExpiringMap(FACTS_TTL_SECONDS, FACTS_MAX_PEOPLE)
        self._lookups: dict[str, asyncio.Future[tuple[PersonFacts | None, str | None]]] = {}

    @property
    def looks_up_people(self) -> bool:
        return not (self._settings.guests and self._settings.external_users)

    def check_ids(self, ask: Ask) -> None:
        """The id lists, from the request alone: no Slack call."""
        access = self._settings
        workspaces = {ask.team_id, ask.enterprise_id} - {""}
        if workspaces & access.denied_workspaces or (
            access.allowed_workspaces is not None and not workspaces & access.allowed_workspaces
        ):
            raise WorkspaceNotEnabled()
        if ask.channel_id.startswith("D"):
            if not access.direct_messages:
                raise DirectMessagesOff()
        elif ask.channel_id in access.denied_channels or (
            access.allowed_channels is not None and ask.channel_id not in access.allowed_channels
        ):
            raise ChannelNotEnabled()
        if ask.user_id in access.denied_users or (
            access.allowed_users is not None and ask.user_id not in access.allowed_users
        ):
            raise UserNotEnabled()

    async def check_person(self, ask: Ask) -> str | None:
        """Guests and other organizations' members, by one (remembered) users.info of the asker.

        Returns the asker's display name when it was looked up just now, so that this request need
        not look it up again; names themselves are never remembered."""
        if not self.looks_up_people:
            return None
        facts, name = self._facts.get(ask.user_id), None
        if facts is None:
            facts, name = await self._look_up(ask.user_id)
        if facts is None:
            raise Unverified()
        if not self._settings.external_users and _is_external(facts, ask):
            raise ExternalUser()
        if not self._settings.guests and facts.guest:
            raise GuestAccount()
        return name

    async def _look_up(self, user_id: str) -> tuple[PersonFacts | None, str | None]:
        """One users.info at a time per person: concurrent asks by one person share it."""
        lookup = self._lookups.get(user_id)
        if lookup is None:
            lookup = asyncio.ensure_future(self._users_info(user_id))
            self._lookups[user_id] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(user_id, None))
        return await asyncio.shield(lookup)

    async def _users_info(self, user_id: str) -> tuple[PersonFacts | None, str | None]:
        try:
            response = await self._slack.users_info(user=user_id)
        except SlackApiError as exc:
            log.warning("access check failed: users.info %s", exc.response.get("error"))
            return None, None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("access check failed: users.info %s", exc.__class__.__name__)
            return None, None
        user = response.get("user")
        facts = _facts(user)
        if facts is not None:
            self._facts.put(user_id, facts)
        return facts, display_name(user)


def _facts(user: object) -> PersonFacts | None:
    if not isinstance(user, Mapping) or not isinstance(user.get("team_id"), str):
        return None  # an answer we cannot judge by: fail closed
    return PersonFacts(
        team_id=user["team_id"],
        enterprise_id=_enterprise_of(user),
        guest=bool(user.get("is_restricted") or user.get("is_ultra_restricted")),
    )


def _enterprise_of(user: Mapping[str, Any]) -> str:
    enterprise_user = user.get("enterprise_user")
    if isinstance(enterprise_user, Mapping) and isinstance(enterprise_user.get("enterprise_id"), str):
        return str(enterprise_user["enterprise_id"])
    return str(user.get("enterprise_id") or "")


def _is_external(facts: PersonFacts, ask: Ask) -> bool:
    """A member of another organization: neither this workspace nor this Enterprise Grid org."""
    if facts.team_id == ask.team_id:
        return False
    return not (ask.enterprise_id and facts.enterprise_id == ask.enterprise_id)

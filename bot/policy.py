"""`/claude policy`: what the bot sends, keeps and to whom, written from the running configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.backends import describe_backend
from bot.config import AccessSettings, OutboundSettings, Settings
from bot.models import retention_notice

PERSONAL_DATA_NAMES = {
    "email": "email addresses",
    "phone": "phone numbers",
    "card": "card numbers",
    "iban": "IBANs",
    "national_id": "national id numbers",
}


def policy_summary(settings: Settings, channel_id: str | None = None) -> str:
    """Slack mrkdwn, for anyone who asks: the same text for every user of a channel (`channel_id`, where
    the command was run, names the operators' instructions there)."""
    kept = _kept(settings)
    return "\n".join(
        [
            "*What this Claude app does with your messages*",
            f"• *What is sent to Claude:* {_what_is_read(settings)}",
            f"• *Removed first:* {_redaction(settings.outbound)}",
            f"• *Files and images:* {_files(settings.outbound)}",
            f"• *Where it goes:* {describe_backend(settings)}",
            f"• *Web search:* {_web_search(settings)}",
            *_instructions_here(settings, channel_id),
            *_retained_models(settings),
            "• *What this app keeps:* nothing of what you write. No database, no transcripts, no message "
            "text in its logs (only ids, counts and timings). Between requests only ids, flags and counts "
            f"with time limits, {kept[0]} Slack keeps the conversation and the answers under your "
            "workspace's retention settings.",
            *kept[1:],
            f"• *Who may use it:* {_who(settings.access)}",
        ]
    )


@dataclass(frozen=True, slots=True)
class RedisKey:
    """One kind of key the bot writes to Redis: `prefix` then a keyed hash (`bot.state.StateKeys`)."""

    prefix: str
    holds: str
    ttl: Callable[[Settings], str]
    workspace_ids: bool = False  # its value may hold team or org ids (an organization's, not a person's)


# Every key the bot writes to Redis, what it holds and for how long: the one list, which /claude policy
# shows, the README and bot.pipeline's docstring repeat, and tests/test_retention_proof.py holds Redis to.
REDIS_KEYS = (
    RedisKey("dedupe:event:", "events answered", lambda _: "1 h"),
    RedisKey("dedupe:interaction:", "commands and shortcuts answered", lambda _: "15 min"),
    RedisKey("rate:", "a person's request count", lambda _: "1 min"),
    RedisKey(
        "person:", "a person's workspace and org ids, guest and deactivated flags", lambda _: "5 min", True
    ),
    RedisKey("tokens:", "a person's token count today (USER_TOKENS_PER_DAY)", lambda _: "until midnight UTC"),
    RedisKey("viewed:", "the channel id viewed beside an assistant thread", lambda _: "1 day"),
    RedisKey("stop:", "a Stop", lambda _: "1 min"),
    RedisKey(
        "answer:",
        "where an answer in progress is posted (workspace, channel and message ids)",
        lambda s: f"at most {_duration(s.request_deadline_seconds + s.answer_lease_seconds)}",
        True,
    ),
    RedisKey("lease:", "which process writes it", lambda s: f"{_duration(s.answer_lease_seconds)}, renewed"),
    RedisKey(
        "takeover:",
        "which process answers it again",
        lambda s: f"{_duration(s.answer_lease_seconds)}, renewed",
    ),
    RedisKey(
        "answers:",
        "answers in progress, to find unfinished ones",
        lambda s: f"at most {_duration(s.request_deadline_seconds + s.answer_lease_seconds)} each",
    ),
)
REDIS_KEY_PREFIXES = tuple(key.prefix for key in REDIS_KEYS)


def _instructions_here(settings: Settings, channel_id: str | None) -> list[str]:
    entry = settings.channel_config.for_channel(channel_id)
    if entry is None:
        return []
    model = f" (model `{entry.model}`)" if entry.model else ""
    return [
        f"• *Instructions here:* `{entry.name}`, set by this app's operators{model}. They are configuration, "
        "sent to Claude with every question here; nothing you write is added to them."
    ]


def _retained_models(settings: Settings) -> list[str]:
    """Models Anthropic keeps conversations for (only with ALLOW_RETAINED_MODELS=on; bot.models)."""
    lines = []
    notice = retention_notice(settings.claude_model)
    if notice is not None:
        lines.append(f"• *Kept by Anthropic:* {notice}")
    config = settings.channel_config
    for entry in [config.default, *config.channels.values()]:
        if entry is not None and entry.model and entry.model != settings.claude_model:
            notice = retention_notice(entry.model)
            if notice is not None:
                lines.append(f"• *Kept by Anthropic, with the {entry.name} instructions:* {notice}")
    return lines


def _kept(settings: Settings) -> list[str]:
    if settings.redis_url is None:
        return [
            "in this process's memory: recent event ids (an hour), commands and shortcuts answered over "
            "HTTP (15 minutes), who may ask (five minutes), requests per person (a minute), tokens used "
            "per person today (until midnight UTC, with USER_TOKENS_PER_DAY), the channel you view beside "
            "an assistant thread (a day), a Stop pressed (a minute), answers being written (until they "
            "end)."
        ]
    keys = " · ".join(f"`{key.prefix}<hash>` {key.holds}, {key.ttl(settings)}" for key in REDIS_KEYS)
    return [
        "in Redis (below).",
        "• *Kept in Redis:* shared by this app's processes; every key expires and none needs saving to "
        "disk. Key names carry people's and conversations' ids only as keyed hashes (`<hash>`); values "
        f"are ids, counts and flags, never a person's id or any text. {keys}.",
    ]


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min" + (f" {rest} s" if rest else "")


def _what_is_read(settings: Settings) -> str:
    return (
        "only the conversation you ask in, when you ask: the thread you mention me in (up to your "
        f"message); in a DM, its last {settings.dm_context_hours:g} hours or its thread; with "
        f"{settings.slash_command}, only your question; in the assistant panel, its thread, and the channel "
        "you view only if you ask about it and may read it yourself; threads your question links "
        "to (at most 3), each only if you may read it; answered to you alone if from another conversation. "
        f"At most about {settings.context_budget_tokens:,} tokens, newest first."
    )


def _redaction(outbound: OutboundSettings) -> str:
    parts = []
    if outbound.redact_secrets:
        parts.append("secrets (API keys and tokens, private keys, passwords in links)")
    parts.extend(PERSONAL_DATA_NAMES[kind] for kind in sorted(outbound.redact_personal))
    if not parts:
        return "nothing; messages are sent as written."
    return "; ".join(parts) + ". Each becomes a placeholder such as [email 1] before Claude sees it."


def _files(outbound: OutboundSettings) -> str:
    if not outbound.send_files:
        return "not sent."
    megabytes = outbound.max_file_bytes / 1_000_000
    return (
        f"sent inside the request (never uploaded to a file store): up to {outbound.max_files} per "
        f"question, {megabytes:g} MB each; images, PDFs and text."
    )


def _web_search(settings: Settings) -> str:
    search = settings.web_search
    if not search.enabled:
        return "off; Claude answers from the conversation and what it already knows."
    provider = (
        "Google Cloud's Vertex AI and its search provider, under the same terms as above"
        if settings.backend.kind == "vertex"
        else "Anthropic's search provider, under the same agreement with Anthropic as above"
    )
    domains = ""
    if search.allowed_domains:
        domains = f" Only these sites are searched: {', '.join(search.allowed_domains)}."
    elif search.blocked_domains:
        domains = f" These sites are never searched: {', '.join(search.blocked_domains)}."
    return (
        f"on. Claude may search the web, up to {search.max_uses} times per answer; its search queries, "
        f"which it writes from the conversation, go to {provider}. Pages are not fetched: Claude reads "
        f"the search results only, and the sources it cites are listed under the answer.{domains}"
    )


def _who(access: AccessSettings) -> str:
    limits = []
    if access.allowed_workspaces is not None or access.denied_workspaces:
        limits.append("chosen workspaces")
    if access.allowed_channels is not None or access.denied_channels:
        limits.append("chosen channels")
    if access.allowed_users is not None or access.denied_users:
        limits.append("chosen people")
    who = "members of this organization" + (f", in {', '.join(limits)}" if limits else "")
    who += "; direct messages " + ("on" if access.direct_messages else "off")
    who += "; guests " + ("allowed" if access.guests else "not allowed")
    who += "; people from other organizations in shared channels " + (
        "allowed" if access.external_users else "not allowed"
    )
    who += "; deactivated accounts never."
    return who

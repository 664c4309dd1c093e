"""`/claude policy`: what the bot sends, keeps and to whom, written from the running configuration."""

from __future__ import annotations

from bot.backends import describe_backend
from bot.config import AccessSettings, OutboundSettings, Settings

PERSONAL_DATA_NAMES = {
    "email": "email addresses",
    "phone": "phone numbers",
    "card": "card numbers",
    "iban": "IBANs",
    "national_id": "national id numbers",
}


def policy_summary(settings: Settings) -> str:
    """Slack mrkdwn, for anyone who asks: the same text for every user."""
    return "\n".join(
        [
            "*What this Claude app does with your messages*",
            f"• *What is sent to Claude:* {_what_is_read(settings)}",
            f"• *Removed first:* {_redaction(settings.outbound)}",
            f"• *Files and images:* {_files(settings.outbound)}",
            f"• *Where it goes:* {describe_backend(settings)}",
            "• *What this app keeps:* nothing of what you write. No database, no transcripts, no message "
            "text in its logs (only ids, counts and timings). Between requests only ids, flags and counts "
            "with time limits: recent event ids (an hour), who may ask (five minutes), requests per person "
            "(a minute). Slack keeps the conversation and the answers under your workspace's retention "
            "settings.",
            f"• *Who may use it:* {_who(settings.access)}",
        ]
    )


def _what_is_read(settings: Settings) -> str:
    return (
        "only the conversation you ask in, when you ask: the thread you mention me in (up to your "
        f"message); in a DM, its last {settings.dm_context_hours:g} hours or its thread; with "
        f"{settings.slash_command}, only your question; in the assistant panel, its thread, and the channel "
        "you are viewing only if you ask about it and may read it yourself. "
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

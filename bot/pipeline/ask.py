"""Ask: the one request type every Slack surface turns its payload into."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file shared with a message: where to fetch it for this request (SEND_FILES=on), not its content."""

    id: str
    name: str
    mimetype: str
    size: int  # bytes, as Slack reports it (0 if it did not)
    url_private: str


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """The only parts of a Slack message the bot uses: who wrote it, when, its text (and files, if sent)."""

    ts: str
    text: str
    user: str | None = None
    bot_id: str | None = None
    bot_name: str | None = None
    files: tuple[FileRef, ...] = ()  # only when SEND_FILES is on


@dataclass(frozen=True, slots=True)
class BotIdentity:
    user_id: str | None
    bot_id: str | None

    def wrote(self, message: SlackMessage) -> bool:
        return (self.bot_id is not None and message.bot_id == self.bot_id) or (
            self.user_id is not None and message.user == self.user_id
        )


@dataclass(frozen=True, slots=True)
class Thread:
    """Read the thread rooted at `thread_ts`, up to the invoking message."""

    channel: str
    thread_ts: str


@dataclass(frozen=True, slots=True)
class RecentDirectMessages:
    """Read the DM's recent top-level messages, within the policy's window."""

    channel: str


History = Thread | RecentDirectMessages | None


@dataclass(frozen=True, slots=True)
class InConversation:
    """Post in the channel or DM; in the thread when `thread_ts` is set."""

    channel: str
    thread_ts: str | None


@dataclass(frozen=True, slots=True)
class Privately:
    """Answer only the invoker, through the interaction's response_url."""

    response_url: str


ReplyTarget = InConversation | Privately


@dataclass(frozen=True, slots=True)
class Reaction:
    """Show progress as a reaction on the invoking message."""

    channel: str
    ts: str


@dataclass(frozen=True, slots=True)
class ThreadStatus:
    """Show progress as the assistant thread's status line ("is thinking…")."""

    channel: str
    thread_ts: str


@dataclass(frozen=True, slots=True)
class WorkingNote:
    """Show progress as a private "working on it" note, for interactions with no message of their own."""

    response_url: str


Progress = Reaction | ThreadStatus | WorkingNote | None


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked, and where, as every surface reads it from its payload; None where the payload is silent."""

    user_id: str
    team_id: str | None  # the workspace the payload came through: the one that installed the bot
    user_team_id: str | None = None  # the asker's own workspace (differs in Slack Connect channels)
    enterprise_id: str | None = None  # the Enterprise Grid org the request came through
    channel_id: str | None = None  # where it was asked (D… for a DM), for the access lists


@dataclass(frozen=True, slots=True)
class Ask:
    request_id: str  # event_id or trigger_id, for logs
    surface: str
    origin: Origin
    message: SlackMessage  # the message that invoked the bot
    history: History  # what else to read, or None for the message alone
    reply_to: ReplyTarget
    bot: BotIdentity
    progress: Progress = None  # how to show at once that the bot is working
    agent_thread: bool = False  # its user may be viewing a channel beside it (`bot.pipeline.viewed`)
    taken_over: bool = False  # asked again by a replica taking over (`bot.surfaces.resumed`): counted once

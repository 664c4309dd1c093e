"""Nothing Claude writes pings anyone or hides where a link goes, in either form an answer takes.

Posted answers are mrkdwn: `to_mrkdwn` escapes `<` (so `<@U…>`, `<!here>`, `<!subteam^…>` and `<#C…>`
are text), then calls `defuse_broadcasts` and `disguises` from here. Streamed answers are Markdown that
Slack renders itself: `defuse_markdown` makes each piece safe, and `split_unfinished` holds back the end of
a piece that the next one may turn into a ping or a link.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["JOINER", "defuse_broadcasts", "defuse_markdown", "disguises", "split_unfinished"]

JOINER = "\u2060"  # a word joiner: invisible, and after "<" or "@" Slack no longer reads a ping

# Slack turns <@U…>, <!here>, <!subteam^…> and <#C…> into pings and links even in Markdown.
_PINGS = (("<@", f"<{JOINER}@"), ("<!", f"<{JOINER}!"), ("<#", f"<{JOINER}#"))
_BROADCAST_NAMES = ("here", "channel", "everyone")
# A plain @here, @channel or @everyone as a word; not inside an address or a URL (ops@channel.example,
# https://social.example/@here), where Slack reads no ping and a joiner would break the address. A "_"
# (italics) is no part of a word here: _@here_ pings.
_NOT_AFTER = r"(?<![^\W_])(?<![/.@])"
_BROADCAST = re.compile(_NOT_AFTER + r"@(?=(?:here|channel|everyone)(?![^\W_]))", re.IGNORECASE)
_MAYBE_BROADCAST = re.compile(_NOT_AFTER + r"@([a-z]{0,7})\Z", re.IGNORECASE)

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?://)?")
_USER_INFO = re.compile(r"[^/?#]*@")  # https://good.example@evil.example goes to evil.example
# Addresses a label shows: URLs, www. hosts, e-mail addresses, or (as the whole label) a host name such
# as good.example.
_EMAIL = r"[\w.+-]+@(?:[^\W_][\w-]*\.)+[^\W\d_]{2,}"
_URL_IN_TEXT = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://[^\s<>\"'`\[\]()]*|(?<![\w.-])www\.[^\s<>\"'`\[\]()]+"
    rf"|(?<![\w.+-])(?:mailto:)?{_EMAIL}",
    re.IGNORECASE,
)
_MAILBOX = re.compile(rf"(?:mailto:)?({_EMAIL})", re.IGNORECASE)
_HOST_NAME = re.compile(r"(?:[^\W_][\w-]*\.)+[^\W\d_]{2,}(?::\d+)?(?:[/?#]\S*)?")
_TRAILER = ".,:;!?'\"*_~"
_MARKUP = "*_~` "

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
HOLD_LIMIT = 2_000  # the most held back for a link that may still be cut: a long URL, not a paragraph


def defuse_broadcasts(text: str) -> str:
    """A word joiner after the "@" of every plain @here, @channel and @everyone."""
    return _BROADCAST.sub("@" + JOINER, text)


def disguises(label: str, *targets: str) -> bool:
    """Whether `label` shows a web address that is not where the link goes (any of `targets`, which
    are spellings of one address: as written, percent-encoded, decoded)."""
    places = {_comparable(target) for target in targets}
    return any(not any(_leads_to(shown, place) for place in places) for shown in _addresses(label))


def defuse_markdown(markdown: str) -> str:
    """Streamed Markdown with no ping and no link whose label shows another address than its target."""
    for ping, defused in _PINGS:
        markdown = markdown.replace(ping, defused)
    return defuse_broadcasts(_show_real_targets(markdown))


def split_unfinished(markdown: str) -> tuple[str, str]:
    """`markdown` cut before a ping or a link that what follows may still complete: (ready, held)."""
    cut = len(markdown)
    if markdown.endswith("<"):
        cut -= 1
    broadcast = _MAYBE_BROADCAST.search(markdown)
    if broadcast:  # "@", "@he", "@chan": a whole name is defused as it stands
        begun = broadcast.group(1).lower()
        if begun not in _BROADCAST_NAMES and any(name.startswith(begun) for name in _BROADCAST_NAMES):
            cut = min(cut, broadcast.start())
    link = _unfinished_link(markdown)
    if link is not None:
        cut = min(cut, link)
    return markdown[:cut], markdown[cut:]


# --------------------------------------------------------------------------- addresses


def _addresses(label: str) -> list[str]:
    found = [match.group().rstrip(_TRAILER) for match in _URL_IN_TEXT.finditer(label)]
    bare = label.strip(_MARKUP + "\n").rstrip(_TRAILER)
    if not found and _HOST_NAME.fullmatch(bare):
        found.append(bare)
    return [_comparable(address) for address in found]


def _comparable(address: str) -> str:
    """An address without what does not change where it leads: scheme, user info, www., case, final "/";
    an e-mail address is its mailbox."""
    address = address.strip().lower()
    mailbox = _MAILBOX.match(address)
    if mailbox:
        return "mailto:" + mailbox.group(1)
    scheme = _SCHEME.match(address)
    if scheme:
        address = address[scheme.end() :]
    user_info = _USER_INFO.match(address)
    if user_info:
        address = address[user_info.end() :]
    return address.removeprefix("www.").rstrip("/")


def _leads_to(shown: str, place: str) -> bool:
    """The target is the address shown, or a page under it (not merely a longer host name)."""
    return place == shown or (bool(shown) and place.startswith((shown + "/", shown + "?", shown + "#")))


# --------------------------------------------------------------------------- links in raw Markdown

_BRACKETED = re.compile(r"(?<!\\)\[([^\[\]\n]*)\]")
# An inline link's target after "](": <url> or url (one level of parentheses), an optional title, ")".
_TARGET = re.compile(
    r"[ \t]*\n?[ \t]*(?:<([^<>\n]*)>|((?:[^\s()\\]|\\.|\((?:[^\s()\\]|\\.)*\))*))"
    r"(?:[ \t]*\n?[ \t]*(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?[ \t]*\n?[ \t]*\)"
)
_TARGET_ENDINGS = (")", "))", '")', "')", ">)")  # what could still complete a target cut short


def _show_real_targets(markdown: str) -> str:
    """A link whose label shows another address gets its target as its label."""
    markdown = _defuse_references(markdown)
    out, pos = [], 0
    for start, paren, end, label, target in _inline_links(markdown):
        if start >= pos and disguises(label, target):
            shown = re.sub(r"([\\\[\]])", r"\\\1", target)
            out += [markdown[pos:start], f"[{shown}]", markdown[paren:end]]
            pos = end
    return "".join(out) + markdown[pos:]


def _defuse_references(markdown: str) -> str:
    """A bracketed label showing an address that is not an inline link may be a reference link with its
    target defined elsewhere ("[label][ref]", "[label]"): a joiner after its "[" and before a "[ref]"
    breaks the reference. Definitions ("[label]: url" opening a line) stay, and no longer match."""

    def defuse(match: re.Match[str]) -> str:
        after = markdown[match.end() : match.end() + 1]
        line_start = markdown.rfind("\n", 0, match.start()) + 1
        definition = after == ":" and not markdown[line_start : match.start()].strip()
        inline = after == "(" and _TARGET.match(markdown, match.end() + 1) is not None
        if inline or definition or not _addresses(match.group(1)):
            return match.group()
        return f"[{JOINER}{match.group(1)}]" + (JOINER if after == "[" else "")

    return _BRACKETED.sub(defuse, markdown)


def _inline_links(markdown: str) -> Iterator[tuple[int, int, int, str, str]]:
    """(where "[" is, where "(" is, end, label, target) of each inline link or image, left to right."""
    openers = _openers(markdown)
    for close in re.finditer(r"\]\(", markdown):
        opener = openers.get(close.start())
        target = _TARGET.match(markdown, close.end())
        if opener is None or target is None:
            continue
        label = markdown[opener + 1 : close.start()]  # an image keeps its "!": only its label changes
        yield opener, close.start() + 1, target.end(), label, target.group(1) or target.group(2) or ""


def _openers(markdown: str) -> dict[int, int]:
    """For each "]", the "[" it closes, within a paragraph; escaped brackets are text."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for match in re.finditer(r"\\.|\[|\]|\n[ \t]*\n", markdown):
        token = match.group()
        if token == "[":
            stack.append(match.start())
        elif token == "]":
            if stack:
                pairs[match.start()] = stack.pop()
        elif token[0] == "\n":
            stack.clear()
    return pairs


def _closer(markdown: str, opener: int) -> int | None:
    """The "]" closing the "[" at `opener`, if it has come yet."""
    depth = 0
    for i in range(opener + 1, len(markdown)):
        char = markdown[i]
        if markdown[i - 1] == "\\" or char not in "[]":
            continue
        if char == "[":
            depth += 1
        elif depth == 0:
            return i
        else:
            depth -= 1
    return None


def _unfinished_link(markdown: str) -> int | None:
    """Where a link that the rest of the answer may still complete begins, in the last paragraph."""
    blank_lines = list(_BLANK_LINE.finditer(markdown))
    i = max(blank_lines[-1].end() if blank_lines else 0, len(markdown) - HOLD_LIMIT)
    while (i := markdown.find("[", i)) != -1:
        if markdown[i - 1 : i] == "\\":
            i += 1
            continue
        close = _closer(markdown, i)
        if close is None:
            return i  # a label still coming
        if not _addresses(markdown[i + 1 : close]):  # nothing it could be disguised as
            i = close + 1
            continue
        if close == len(markdown) - 1:
            return i  # what follows says whether it is a link
        if markdown[close + 1] == "[" and markdown.find("]", close + 1) == -1:
            return i  # a reference label still coming
        if markdown[close + 1] == "(" and _TARGET.match(markdown, close + 2) is None:
            rest = markdown[close + 2 :]
            if any(_TARGET.match(rest + ending) for ending in _TARGET_ENDINGS):
                return i  # a target still coming
        i = close + 1
    return None

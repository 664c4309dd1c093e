"""Claude's Markdown -> Slack mrkdwn, and splitting long answers into messages.

Nothing in the result pings anyone or hides where a link goes (see `defuse`)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.pipeline.defuse import defuse_broadcasts, disguises

__all__ = ["split_message", "to_mrkdwn"]

# Immutable configuration: CommonMark + GFM tables/strikethrough, raw HTML shown as text.
_MD = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])

_FENCE = "```"
_MARKS = {"strong": "*", "em": "_", "s": "~"}  # also the outer-to-inner nesting order
_BULLETS = ("•", "◦", "▪")
_INDENT = "    "
_HAS_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_BARE_URL = re.compile(r"(?<![\w/])https?://[^\s<>|\"]+")
_URL_TRAILER = ".,:;!?'\"*_~"

# --------------------------------------------------------------------------- rendering


def to_mrkdwn(markdown: str) -> str:
    """Render Claude's Markdown as Slack mrkdwn text (never raises)."""
    try:
        mrkdwn = "\n\n".join(_blocks(SyntaxTreeNode(_MD.parse(markdown)).children, 0))
    except RecursionError:  # emphasis nesting is unbounded in markdown-it (e.g. "**a " * 2000)
        mrkdwn = _escape(markdown)
    return defuse_broadcasts(mrkdwn)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _blocks(nodes: Sequence[SyntaxTreeNode], depth: int) -> list[str]:
    """Render block nodes; `depth` is the list nesting level. Empty blocks are dropped."""
    return [text for text in (_block(node, depth) for node in nodes) if text]


def _block(node: SyntaxTreeNode, depth: int) -> str:
    match node.type:
        case "paragraph":
            return _tidy(_inline(node.children[0].children))
        case "heading":  # Slack has no headings: a bold line instead
            return _wrap(_tidy(_inline(node.children[0].children, frozenset({"strong"}))), "*")
        case "fence" | "code_block":  # language tag dropped, content verbatim
            return _code(node.content.rstrip("\n"))
        case "bullet_list" | "ordered_list":
            return _list(node, depth)
        case "blockquote":
            return _quote("\n\n".join(_blocks(node.children, depth)))
        case "table":
            return _table(node)
        case "hr":
            return "———"
        case _:  # html_block cannot occur with html disabled; render any container's content
            return "\n\n".join(_blocks(node.children, depth)) or _escape(node.content).strip()


def _code(text: str) -> str:
    return f"{_FENCE}\n{_escape(text)}\n{_FENCE}"


def _quote(text: str) -> str:
    """Prefix every line with "> ". Lines of a nested quote already start with ">" (text never
    does: it is escaped), so nested quotes flatten to one level."""
    lines = text.split("\n") if text else []
    return "\n".join(line if line.startswith(">") else f"> {line}".rstrip() for line in lines)


def _list(node: SyntaxTreeNode, depth: int) -> str:
    # markdown-it hides the paragraphs of tight lists: those get no blank lines at all.
    tight = all(p.hidden for item in node.children for p in item.children if p.type == "paragraph")
    sep = "\n" if tight else "\n\n"
    start = int(node.attrs.get("start", 1))
    items = []
    for number, item in enumerate(node.children, start):
        marker = f"{number}." if node.type == "ordered_list" else _BULLETS[min(depth, 2)]
        body = sep.join(_blocks(item.children, depth + 1))
        items.append(_indent(body, f"{marker} ", _INDENT))
    return sep.join(items)


def _indent(text: str, first: str, rest: str) -> str:
    """Prefix the first line with `first` and other lines with `rest`, except blank lines
    and code blocks, which stay at column 0 so their content is copied verbatim."""
    out, in_code = [], False
    for i, line in enumerate(text.split("\n")):
        is_fence = line == _FENCE
        if i == 0:
            line = first + line
        elif line and not in_code and not is_fence:
            line = rest + line
        in_code ^= is_fence
        out.append(line.rstrip())
    return "\n".join(out)


def _tidy(text: str) -> str:
    """No trailing whitespace on any line, no runs of blank lines."""
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in text.split("\n"))).strip()


def _wrap(text: str, mark: str) -> str:
    """Wrap each line in `mark` (Slack styles never span lines), keeping whitespace outside."""
    lines = []
    for line in text.split("\n"):
        core = line.strip()
        if core:
            start = line.index(core)
            line = f"{line[:start]}{mark}{core}{mark}{line[start + len(core) :]}"
        lines.append(line)
    return "\n".join(lines)


def _inline(nodes: Sequence[SyntaxTreeNode], marks: frozenset[str] = frozenset()) -> str:
    """Render inline nodes; `marks` are the styles already applied by enclosing nodes."""
    out = []
    for node in nodes:
        match node.type:
            case "text":
                out.append(_linkify(node.content))
            case "softbreak" | "hardbreak":
                out.append("\n")
            case "code_inline":
                out.append(f"`{_escape(node.content)}`")
            case "strong" | "em" | "s":
                out.append(_emphasis(node, marks))
            case "link" | "image":
                out.append(_link(node, marks))
            case _:
                out.append(_escape(node.content) + _inline(node.children, marks))
    return "".join(out)


def _emphasis(node: SyntaxTreeNode, marks: frozenset[str]) -> str:
    # Collapse chains such as ***x*** (em > strong) and emit them in a fixed order: *_~x~_*.
    kinds, children = {node.type}, _nonempty(node.children)
    while len(children) == 1 and children[0].type in _MARKS:
        kinds.add(children[0].type)
        children = _nonempty(children[0].children)
    text = _inline(children, marks | kinds)
    for kind in reversed(_MARKS):
        if kind in kinds - marks:  # a style already active outside is not repeated
            text = _wrap(text, _MARKS[kind])
    return text


def _nonempty(nodes: Sequence[SyntaxTreeNode]) -> list[SyntaxTreeNode]:
    return [node for node in nodes if node.type != "text" or node.content]


def _link(node: SyntaxTreeNode, marks: frozenset[str]) -> str:
    url = str(node.attrs.get("href" if node.type == "link" else "src", ""))
    label = _plain(node.children).strip()
    if node.markup == "autolink" and label.startswith(("!", "#", "@")):
        # markdown-it reads <!subteam^S1|@team> or <#C1|@x> as an e-mail address: Slack syntax, shown as text.
        return _escape(f"<{label}>")
    if not _HAS_SCHEME.match(url):
        # Relative targets like "@U123" or "!channel" would forge <@U123> mentions: label only.
        return _escape(label) if node.type == "image" else _inline(node.children, marks)
    shown_url = _MD.normalizeLinkText(url)
    if not label or label in (url, shown_url) or disguises(label, url, shown_url):
        return f"<{_escape(url)}>"  # a label showing another address than the target is not shown
    return f"<{_escape(url)}|{_escape(' '.join(label.split()).replace('|', '∣'))}>"


def _linkify(text: str) -> str:
    """Escape plain text, turning bare http(s) URLs into <url> links."""
    out, pos = [], 0
    for match in _BARE_URL.finditer(text):
        url = match.group().rstrip(_URL_TRAILER)
        while url.endswith(")") and url.count(")") > url.count("("):
            url = url[:-1].rstrip(_URL_TRAILER)
        out += [_escape(text[pos : match.start()]), f"<{_escape(url)}>"]
        pos = match.start() + len(url)
    return "".join(out) + _escape(text[pos:])


def _plain(nodes: Sequence[SyntaxTreeNode]) -> str:
    """Unescaped text content with all markup stripped (link labels, table cells)."""
    parts = []
    for node in nodes:
        if node.type in ("text", "code_inline"):
            parts.append(node.content)
        elif node.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        else:
            parts.append(_plain(node.children))
    return "".join(parts)


def _table(node: SyntaxTreeNode) -> str:
    """A monospaced block: padded columns, a `-` separator under the header."""
    rows: list[list[tuple[str, str]]] = []  # (plain text, alignment) per cell
    for section in node.children:
        for tr in section.children:
            rows.append(
                [(" ".join(_plain(c.children).split()), str(c.attrs.get("style", ""))) for c in tr.children]
            )
    ncols = max((len(row) for row in rows), default=0)
    widths = [max((_width(row[i][0]) for row in rows if i < len(row)), default=0) for i in range(ncols)]
    lines = []
    for row in rows:
        cells = []
        for (text, style), width in zip(row, widths, strict=False):
            pad = width - _width(text)
            left = pad if style.endswith("right") else pad // 2 if style.endswith("center") else 0
            cells.append(" " * left + text + " " * (pad - left))
        lines.append(" | ".join(cells).rstrip())
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return _code("\n".join(lines))


def _width(text: str) -> int:
    """Display columns: wide (CJK, emoji) characters take 2, combining marks 0."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


# --------------------------------------------------------------------------- splitting

# Atoms a cut must never fall inside: entities, <links>, and the backticks of a fence.
_ATOM = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|\w+);|<[^<>\n]*>|`{3,}")
_FENCE_RUN = re.compile(r"`{3,}")
_REOPEN, _CLOSE = f"{_FENCE}\n", f"\n{_FENCE}"


def split_message(text: str, limit: int = 3900) -> list[str]:
    """Split mrkdwn into pieces of at most `limit` characters, cutting at paragraph, line,
    space, then anywhere; a code block cut in two is closed and reopened (fences counted)."""
    if limit < 16:
        raise ValueError(f"limit too small to fit code fences: {limit}")
    pieces: list[str] = []
    rest, prefix = text.strip(), ""
    while rest:
        if len(prefix) + len(rest) <= limit:
            pieces.append(prefix + rest)
            break
        cut, resume = _cut_point(rest, limit - len(prefix))
        if _inside_code(prefix + rest[:cut]):  # cut again, leaving room to close the block
            cut, resume = _cut_point(rest, limit - len(prefix) - len(_CLOSE))
        chunk = prefix + rest[:cut].rstrip()
        rest = rest[resume:].lstrip("\n")
        if _inside_code(chunk):
            pieces.append(chunk + _CLOSE)
            closing = _FENCE_RUN.match(rest)
            if closing:  # the block was about to close anyway: ours replaces its fence
                rest, prefix = rest[closing.end() :].lstrip("\n"), ""
            else:
                prefix = _REOPEN
        else:
            pieces.append(chunk)
            prefix = ""
    return [piece for piece in pieces if piece.strip()]


def _inside_code(text: str) -> bool:
    return len(_FENCE_RUN.findall(text)) % 2 == 1


def _cut_point(text: str, budget: int) -> tuple[int, int]:
    """Where to end this piece (`cut`) and start the next (`resume`), with cut <= budget."""
    atoms = []
    for match in _ATOM.finditer(text):
        if match.start() >= budget:
            break
        atoms.append(match.span())

    def safe(i: int) -> bool:
        return not any(start < i < end for start, end in atoms)

    for sep, floor in (("\n\n", budget // 2), ("\n", budget // 2), (" ", 1)):
        i = text.rfind(sep, floor, budget + len(sep))  # the separator itself is dropped
        while i >= floor and not safe(i):
            i = text.rfind(sep, floor, i)
        if i >= max(floor, 1) and text[:i].strip():
            return i, i + len(sep)
    i = budget
    while i > 0 and not safe(i):
        i -= 1
    return (i, i) if i > 0 else (budget, budget)

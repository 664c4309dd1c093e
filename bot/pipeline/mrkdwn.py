"""Claude's Markdown for Slack: rendered as mrkdwn for answers that are posted, escaped where needed for
answers that are streamed as Markdown for Slack's own renderer.

Slack's mrkdwn has no escapes and styles text only at word boundaries, so what is rendered here is read
the way Slack reads it (`_settle`): emphasis Slack would show as stray stars is dropped, markup Claude
escaped gets a word joiner so that Slack leaves it as text, and a run of three backticks is never a
fence unless it is ours. Nothing in the result pings anyone or hides where a link goes (see `defuse`).
Streamed Markdown only gets a backslash where Slack's renderer would format what Claude meant as text
(`escape_meant_as_text`). Long answers are cut into messages by `rollover`.
"""

from __future__ import annotations

import re
import types
import unicodedata
from collections.abc import Sequence
from typing import Any

from linkify_it import LinkifyIt  # type: ignore[import-untyped]
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.pipeline.defuse import JOINER, defuse_broadcasts, disguises
from bot.pipeline.rollover import fenced_lines

__all__ = ["escape_meant_as_text", "split_unfinished_word", "to_mrkdwn"]

_FENCE = "```"
_BULLETS = ("•", "◦", "▪")
_TASK_BOXES = {" ": "☐", "x": "☑", "X": "☑"}
_INDENT = "    "
_HAS_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_TASK = re.compile(r"\[([ xX])\](?:[ \t]+|$)")  # GFM: "[ ]" or "[x]" opening a list item's first paragraph
_BACKTICK_RUN = re.compile(r"``(?=`)")  # where a joiner keeps three backticks from closing a code block


def _python_special_names() -> frozenset[str]:
    """Python's special names, as in __init__ (written so in prose, they are not bold "init"): those of
    the built-in types, and the module, protocol and library ones the built-in types lack."""
    builtin = (object, type, int, float, complex, str, bytes, list, dict, set, tuple, slice, BaseException)
    kinds: tuple[type, ...] = (*builtin, types.ModuleType, types.FunctionType, property)
    names = {name[2:-2] for kind in kinds for name in dir(kind) if name[:2] == name[-2:] == "__"}
    names |= {"main", "file", "all", "slots", "path", "package", "spec", "loader", "version", "future"}
    names |= {"pycache", "aenter", "aexit", "await", "aiter", "anext", "next", "missing", "post_init"}
    names |= {"fspath", "length_hint", "copy", "deepcopy", "match_args", "debug", "getattr", "del"}
    return frozenset(names)


_DUNDERS = _python_special_names()


class _ReadersLinkify:
    """linkify-it's URL matching for bare URLs, ending a URL where a reader would: before the first wide
    character (CJK text, or full-width punctuation such as "）", "。" and "、"), which linkify-it would take
    in. A URL whose path is CJK is kept whole when written as a link or an autolink."""

    def __init__(self) -> None:
        self._linkify = LinkifyIt()

    def match_at_start(self, text: str) -> Any:
        match = self._linkify.match_at_start(text)
        if match is None:
            return None
        wide = next((i for i, ch in enumerate(match.raw) if unicodedata.east_asian_width(ch) in "WF"), None)
        return match if wide is None else self._linkify.match_at_start(text[: match.index + wide])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._linkify, name)


def _parser() -> MarkdownIt:
    """CommonMark + GFM tables/strikethrough, raw HTML shown as text, and bare http(s) URLs found while
    parsing (so `https://example.com/foo*bar*baz` is not cut by the emphasis in it). Only the inline
    linkify rule: the core one would also take file names such as setup.py for host names."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": True}).enable(["table", "strikethrough"])
    md.inline.ruler.enable("linkify")
    md.linkify = _ReadersLinkify()
    return md


_MD = _parser()  # immutable configuration

# --------------------------------------------------------------------------- stand-ins

# Slack styles text only where a mark stands at a word boundary, and has no escapes. So marks are first
# written as stand-ins (Unicode noncharacters, removed from the input) and settled once each line is
# whole, when it is known what stands beside them.
_STAND_INS = re.compile("[\ufdd0-\ufdef]")
_MARKS = {"strong": "*", "em": "_", "s": "~"}  # also the outer-to-inner nesting order
_OPEN = {"*": "\ufdd0", "_": "\ufdd1", "~": "\ufdd2", "star": "\ufdd3"}  # "star": italics written *x*
_CLOSE = {"*": "\ufdd4", "_": "\ufdd5", "~": "\ufdd6", "star": "\ufdd7"}
_LITERAL = {"*": "\ufdd8", "_": "\ufdd9", "~": "\ufdda", "`": "\ufddb"}  # markup Claude meant as text
_SHOWN = {
    **{stand_in: "_" if kind == "star" else kind for kind, stand_in in _OPEN.items()},
    **{stand_in: "_" if kind == "star" else kind for kind, stand_in in _CLOSE.items()},
    **{stand_in: char for char, stand_in in _LITERAL.items()},
}
_PAIRS = {_OPEN[kind]: _CLOSE[kind] for kind in _OPEN}
_LITERALS = {stand_in: char for char, stand_in in _LITERAL.items()}
_MARKUP_CHARS = "*_~`"

# --------------------------------------------------------------------------- rendering


def to_mrkdwn(markdown: str) -> str:
    """Render Claude's Markdown as Slack mrkdwn text (never raises)."""
    markdown = _STAND_INS.sub("", markdown)
    try:
        mrkdwn = _settle("\n\n".join(_blocks(SyntaxTreeNode(_MD.parse(markdown)).children, 0)))
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
            text = _tidy(_inline(node.children[0].children, frozenset({"strong"})))
            return _wrap(text, _OPEN["*"], _CLOSE["*"])
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
    """A code block. A fence line inside it (```` ```` ```` blocks show Markdown) gets a joiner between its
    backticks, so that Slack does not end the block there."""
    return f"{_FENCE}\n{_BACKTICK_RUN.sub('``' + JOINER, _escape(text))}\n{_FENCE}"


def _quote(text: str) -> str:
    """Prefix every line with "> ". Lines of a nested quote already start with ">" (text never does: it is
    escaped), so nested quotes flatten to one level."""
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
        task = _TASK.match(body) if item.children and item.children[0].type == "paragraph" else None
        if task:  # a task list item: its box stands for the bullet, or follows the number
            box = _TASK_BOXES[task.group(1)]
            marker = f"{marker} {box}" if node.type == "ordered_list" else box
            body = body[task.end() :]
        items.append(_indent(body, f"{marker} ", _INDENT))
    return sep.join(items)


def _indent(text: str, first: str, rest: str) -> str:
    """Prefix the first line with `first` and other lines with `rest`, except blank lines, code blocks
    (their content is copied verbatim) and quotes (Slack reads ">" only at the start of a line), which
    stay at column 0."""
    out, in_code = [], False
    for i, line in enumerate(text.split("\n")):
        is_fence = line == _FENCE
        if i == 0 and (is_fence or line.startswith(">")):  # the marker gets a line of its own
            out.append(first.rstrip())
        elif i == 0:
            line = first + line
        elif line and not in_code and not is_fence and not line.startswith(">"):
            line = rest + line
        in_code ^= is_fence
        out.append(line.rstrip())
    return "\n".join(out)


def _tidy(text: str) -> str:
    """No trailing whitespace on any line, no runs of blank lines."""
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in text.split("\n"))).strip()


def _wrap(text: str, opening: str, closing: str) -> str:
    """Wrap each line in marks (Slack styles never span lines), keeping whitespace outside."""
    lines = []
    for line in text.split("\n"):
        core = line.strip()
        if core:
            start = line.index(core)
            line = f"{line[:start]}{opening}{core}{closing}{line[start + len(core) :]}"
        lines.append(line)
    return "\n".join(lines)


def _inline(nodes: Sequence[SyntaxTreeNode], marks: frozenset[str] = frozenset()) -> str:
    """Render inline nodes; `marks` are the styles already applied by enclosing nodes."""
    out = []
    for node in nodes:
        match node.type:
            case "text":
                out.append(_text(node.content))
            case "softbreak" | "hardbreak":
                out.append("\n")
            case "code_inline":  # a backtick would end Slack's code span: a look-alike stands in
                out.append(f"`{_escape(node.content.replace('`', 'ˋ'))}`")
            case "strong" if node.markup == "__" and _is_dunder(node):
                out.append(_text(f"__{node.children[0].content}__"))
            case "strong" | "em" | "s":
                out.append(_emphasis(node, marks))
            case "link" | "image":
                out.append(_link(node, marks))
            case _:
                out.append(_text(node.content) + _inline(node.children, marks))
    return "".join(out)


def _text(text: str) -> str:
    """Plain text, escaped, its markup characters marked as meant literally."""
    return "".join(_LITERAL.get(char, char) for char in _escape(text))


def _is_dunder(node: SyntaxTreeNode) -> bool:
    return (
        len(node.children) == 1 and node.children[0].type == "text" and node.children[0].content in _DUNDERS
    )


def _emphasis(node: SyntaxTreeNode, marks: frozenset[str]) -> str:
    # Collapse chains such as ***x*** (em > strong) and emit them in a fixed order: *_~x~_*.
    chain, children = [node], _nonempty(node.children)
    while len(children) == 1 and children[0].type in _MARKS:
        chain.append(children[0])
        children = _nonempty(children[0].children)
    kinds = {link.type for link in chain}
    text = _inline(children, marks | kinds)
    for kind in reversed(_MARKS):
        if kind in kinds - marks:  # a style already active outside is not repeated
            mark = _MARKS[kind]
            if kind == "em" and any(link.type == "em" and link.markup == "*" for link in chain):
                mark = "star"
            text = _wrap(text, _OPEN[mark], _CLOSE[mark])
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
        return _text(label) if node.type == "image" else _inline(node.children, marks)
    shown_url = _MD.normalizeLinkText(url)
    if not label or label in (url, shown_url) or disguises(label, url, shown_url):
        return f"<{_escape(url)}>"  # a label showing another address than the target is not shown
    return f"<{_escape(url)}|{_escape(' '.join(label.split()).replace('|', '∣'))}>"


def _plain(nodes: Sequence[SyntaxTreeNode], notes: list[str] | None = None) -> str:
    """Unescaped text content with all markup stripped (link labels, table cells). With `notes` (a table
    cell), a link whose text does not show its address is numbered, and the link itself noted."""
    parts = []
    for node in nodes:
        if node.type in ("text", "code_inline"):
            parts.append(node.content)
        elif node.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif notes is not None and node.type in ("link", "image") and _shows_elsewhere(node):
            notes.append(_link(node, frozenset()))
            parts.append(f"{_plain(node.children).strip()} [{len(notes)}]")
        else:
            parts.append(_plain(node.children, notes))
    return "".join(parts)


def _shows_elsewhere(node: SyntaxTreeNode) -> bool:
    """Whether a link (with a scheme) is shown by a label other than its address."""
    url = str(node.attrs.get("href" if node.type == "link" else "src", ""))
    return (
        bool(_HAS_SCHEME.match(url))
        and _link(node, frozenset()) != f"<{_escape(_plain(node.children).strip())}>"
    )


def _table(node: SyntaxTreeNode) -> str:
    """A monospaced block: padded columns, a `-` separator under the header. A code block shows no links,
    so a link in a cell is numbered there and listed under the block."""
    rows: list[list[tuple[str, str]]] = []  # (plain text, alignment) per cell
    notes: list[str] = []
    for section in node.children:
        for tr in section.children:
            rows.append(
                [
                    (" ".join(_plain(c.children, notes).split()), str(c.attrs.get("style", "")))
                    for c in tr.children
                ]
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
    return "\n".join([_code("\n".join(lines)), *(f"[{n}] {note}" for n, note in enumerate(notes, 1))])


def _width(text: str) -> int:
    """Display columns: wide (CJK, emoji) characters take 2, combining marks 0."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


# --------------------------------------------------------------------------- settling the marks


def _settle(text: str) -> str:
    """Turn the stand-ins into what Slack should see, line by line (Slack styles never span lines)."""
    return "\n".join(_settle_line(line) if _STAND_INS.search(line) else line for line in text.split("\n"))


def _settle_line(line: str) -> str:
    """Emphasis whose marks would touch a word outside them (**un**predictable, Pythonの**リスト**は) is
    dropped: Slack would show its stars. Italics written between two letters or digits (2*3*4, x*y*z) were
    arithmetic: their stars come back as text. Then literal markup gets a word joiner where Slack could
    still read it as formatting."""
    chars = list(line)
    partner = _pairs(chars)
    dropped: set[int] = set()
    changed = True
    while changed:  # dropping a pair changes what its neighbours touch
        changed = False
        for opening, closing in partner.items():
            if opening in dropped:
                continue
            if _joins_word(_beside(chars, opening, -1, dropped)) or _joins_word(
                _beside(chars, closing, 1, dropped)
            ):
                dropped |= {opening, closing}
                changed = True
    stars = {  # the stars of dropped italics between letters or digits, shown as text
        i
        for opening, closing in partner.items()
        if opening in dropped
        and chars[opening] == _OPEN["star"]
        and all(
            _is_ascii_alnum(_beside(chars, at, step, dropped)) for at, step in ((opening, -1), (closing, 1))
        )
        for i in (opening, closing)
    }
    out: list[tuple[str, bool]] = []  # (character, whether it is markup meant as text)
    for i, char in enumerate(chars):
        if i in stars:
            out.append(("*", True))
        elif i not in dropped:
            out.append((_SHOWN.get(char, char), char in _LITERALS))
    return _guard_literals(out)


def _pairs(chars: list[str]) -> dict[int, int]:
    """Where each of our marks opens -> where it closes (they nest within a line)."""
    pairs, stack = {}, []
    for i, char in enumerate(chars):
        if char in _PAIRS:
            stack.append(i)
        elif char in _PAIRS.values() and stack:
            pairs[stack.pop()] = i
    return pairs


def _beside(chars: list[str], at: int, step: int, dropped: set[int]) -> str | None:
    """The character Slack will see next to `at` (before it for step -1), past marks that are dropped."""
    i = at + step
    while 0 <= i < len(chars) and i in dropped:
        i += step
    return _SHOWN.get(chars[i], chars[i]) if 0 <= i < len(chars) else None


def _is_ascii_alnum(char: str | None) -> bool:
    return char is not None and char.isascii() and char.isalnum()


def _joins_word(char: str | None) -> bool:
    """Whether a mark beside `char` is inside a word for Slack: letters (CJK too), digits, combining marks
    and full-width punctuation, but not emoji."""
    if char is None:
        return False
    category = unicodedata.category(char)
    return category[0] in "LNM" or (unicodedata.east_asian_width(char) in "WF" and category != "So")


def _guard_literals(out: list[tuple[str, bool]]) -> str:
    """A word joiner before literal markup that Slack could read as the start of a style (\\*not bold\\*),
    and inside a literal run of three backticks."""
    text = "".join(char for char, _ in out)
    result = []
    for i, (char, literal) in enumerate(out):
        if literal and (_could_open(text, i) or (char == "`" and text[i - 2 : i] == "``" and out[i - 1][1])):
            result.append(JOINER)
        result.append(char)
    return "".join(result)


def _could_open(text: str, i: int) -> bool:
    """Whether text[i] opens a style Slack would show: at a boundary, touching text, closed later on the
    line by the same character before a boundary."""
    char, before = text[i], text[i - 1] if i else None
    if not _at_boundary(before) or i + 1 >= len(text) or text[i + 1].isspace():
        return False
    close = text.find(char, i + 1)
    after = text[close + 1] if 0 <= close < len(text) - 1 else None
    return close > i + 1 and not text[close - 1].isspace() and _at_boundary(after)


def _at_boundary(char: str | None) -> bool:
    return char is None or char.isspace() or (char not in _MARKUP_CHARS and not _joins_word(char))


# --------------------------------------------------------------------------- streamed Markdown

# Streamed answers go to Slack as Markdown for its own renderer, which reads these as emphasis although
# Claude meant them as text: a Python special name (__init__) and a star between letters or digits (2*3*4).
_MEANT_AS_TEXT = re.compile(
    r"(?<![\w\\])__(?P<name>[A-Za-z][A-Za-z0-9_]*?)__(?!\w)|(?<=[A-Za-z0-9])\*(?=[A-Za-z0-9])"
)
_WORD_AT_END = re.compile(r"[A-Za-z0-9_*]{1,100}\Z")
_BACKTICKS = re.compile(r"`+")
_ADDRESS = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://|(?<![\w.-])www\.)[^\s<>]+")


def escape_meant_as_text(before: str, piece: str) -> str:
    """`piece` of a streamed answer, which follows `before`, with a backslash before what Slack's Markdown
    renderer would turn into emphasis although Claude meant it as text; code and web addresses are left
    as they are (a backslash in an address would change where it leads)."""
    text, start = before + piece, len(before)
    code = _code_spans(text) + [address.span() for address in _ADDRESS.finditer(text)]
    out, pos = [], start
    for match in _MEANT_AS_TEXT.finditer(text, start):
        name = match["name"]
        if (name is not None and name not in _DUNDERS) or any(a <= match.start() < b for a, b in code):
            continue
        out += [text[pos : match.start()], rf"\_\_{name}\_\_" if name else r"\*"]
        pos = match.end()
    return "".join(out) + text[pos:]


def split_unfinished_word(markdown: str) -> tuple[str, str]:
    """`markdown` cut before a word at its end that what follows may still make a special name or a
    product (__ini, 2*): (ready, held)."""
    word = _WORD_AT_END.search(markdown)
    if word is None or not set(word.group()) & set("_*"):
        return markdown, ""
    return markdown[: word.start()], word.group()


def _code_spans(text: str) -> list[tuple[int, int]]:
    """Where `text` is code: fenced blocks, indented lines, and inline code; a code span still open runs
    to the end of its paragraph, as what follows may close it."""
    spans: list[tuple[int, int]] = []
    pos, run, opened = 0, 0, 0  # run: the length of the backticks of an open code span
    for line, in_block in zip(text.split("\n"), fenced_lines(text)[0], strict=True):
        end = pos + len(line)
        if in_block or line.startswith(("    ", "\t")) or not line.strip():
            if line.strip():
                spans.append((pos, end))
            run = 0  # a block or a blank line ends a paragraph, and any span left open in it
        else:
            for backticks in _BACKTICKS.finditer(line):
                if run == 0:
                    run, opened = len(backticks.group()), pos + backticks.start()
                elif len(backticks.group()) == run:
                    spans.append((opened, pos + backticks.end()))
                    run = 0
            if run:
                spans.append((opened, end))
                opened = end + 1
        pos = end + 1
    return spans

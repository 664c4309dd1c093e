"""Tests for bot.pipeline.mrkdwn: Markdown -> Slack mrkdwn rendering and message splitting."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from bot.pipeline.mrkdwn import to_mrkdwn
from bot.pipeline.rollover import open_fence, split_message
from tests.conftest import PLAIN_BROADCAST

CORPUS = Path(__file__).parent / "corpus" / "markdown"
CORPUS_NAMES = sorted(path.stem for path in CORPUS.glob("*.md"))

# Everything we generate that starts with "<" is a link with a URL scheme: <url> or <url|label>.
SLACK_LINK = re.compile(r"<[A-Za-z][A-Za-z0-9+.-]*:[^<>|\s]*(?:\|[^<>\n]*)?>")
JOINER = "\u2060"
FENCE_LINE = re.compile(r"(?m)^(?:> ?)* {0,3}(?:`{3,}[^`\n]*|~{3,}.*)$")  # as the splitter reads them
QUOTE_MARKERS = re.compile(r"(?m)^(?:> ?)+")  # a quoted line cut in two is quoted in both pieces


def expected(name: str) -> str:
    return (CORPUS / f"{name}.mrkdwn").read_text(encoding="utf-8").removesuffix("\n")


def rendered(name: str) -> str:
    return to_mrkdwn((CORPUS / f"{name}.md").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- corpus


def test_corpus_is_complete() -> None:
    assert len(CORPUS_NAMES) >= 12
    assert sorted(path.stem for path in CORPUS.glob("*.mrkdwn")) == CORPUS_NAMES


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_answer_renders_as_expected(name: str) -> None:
    assert rendered(name) == expected(name)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_output_has_no_trailing_whitespace_or_blank_runs(name: str) -> None:
    out = re.sub(r"```.*?```", "```", rendered(name), flags=re.DOTALL)  # code stays verbatim
    assert all(line == line.rstrip() for line in out.split("\n"))
    assert "\n\n\n" not in out
    assert out == out.strip()


# --------------------------------------------------------------------------- block structure


def test_heading_becomes_bold_line_followed_by_blank_line() -> None:
    assert to_mrkdwn("# Title\ntext") == "*Title*\n\ntext"
    assert to_mrkdwn("Setext\n===\n\n### Third level") == "*Setext*\n\n*Third level*"


def test_bold_inside_heading_is_not_doubled() -> None:
    assert to_mrkdwn("## **Step 1:** install _it_") == "*Step 1: install _it_*"


def test_empty_heading_is_dropped() -> None:
    assert to_mrkdwn("before\n\n#\n\nafter") == "before\n\nafter"


def test_paragraphs_separated_by_one_blank_line() -> None:
    assert to_mrkdwn("one\n\n\n\n\ntwo   \n\nthree") == "one\n\ntwo\n\nthree"


def test_hard_and_soft_breaks_become_newlines() -> None:
    assert to_mrkdwn("soft\nbreak  \nhard\\\nbackslash") == "soft\nbreak\nhard\nbackslash"


def test_runs_of_hard_breaks_collapse_to_one_blank_line() -> None:
    assert to_mrkdwn("a\\\n\\\n\\\n\\\nb") == "a\n\nb"


def test_horizontal_rule_becomes_dash_line() -> None:
    assert to_mrkdwn("above\n\n---\n\nbelow") == "above\n\n———\n\nbelow"


def test_fenced_code_drops_language_and_keeps_content_verbatim() -> None:
    md = "```python\ndef f():\n\n\n\n    return 1  # *not* _markup_\n```"
    assert to_mrkdwn(md) == "```\ndef f():\n\n\n\n    return 1  # *not* _markup_\n```"


def test_indented_and_tilde_code_blocks_become_fences() -> None:
    assert to_mrkdwn("text\n\n    x = 1\n      y = 2") == "text\n\n```\nx = 1\n  y = 2\n```"
    assert to_mrkdwn("~~~\nls\n~~~") == "```\nls\n```"


def test_code_block_content_is_escaped() -> None:
    assert to_mrkdwn("```\nif a < b && c > d:\n```") == "```\nif a &lt; b &amp;&amp; c &gt; d:\n```"


def test_bullet_markers_change_with_depth_and_indent_four_spaces() -> None:
    md = "- a\n  - b\n    - c\n      - d\n- e"
    assert to_mrkdwn(md) == "• a\n    ◦ b\n        ▪ c\n            ▪ d\n• e"


def test_ordered_list_keeps_start_number() -> None:
    assert to_mrkdwn("3. three\n4. four\n9. next") == "3. three\n4. four\n5. next"


def test_tight_list_has_no_blank_lines() -> None:
    assert to_mrkdwn("intro\n\n- a\n- b\n\nafter") == "intro\n\n• a\n• b\n\nafter"


def test_loose_list_continuation_paragraph_is_indented() -> None:
    md = "1. first\n\n   more about first\n\n2. second"
    assert to_mrkdwn(md) == "1. first\n\n    more about first\n\n2. second"


def test_code_block_in_list_item_stays_at_column_zero() -> None:
    md = "- run:\n  ```sh\n  make  test\n  ```\n- done"
    assert to_mrkdwn(md) == "• run:\n```\nmake  test\n```\n• done"


def test_empty_list_item_keeps_marker_without_trailing_space() -> None:
    assert to_mrkdwn("- a\n-\n- c") == "• a\n•\n• c"


def test_block_quote_prefixes_every_line() -> None:
    md = "> line one\n> line two\n>\n> second *para*"
    assert to_mrkdwn(md) == "> line one\n> line two\n>\n> second _para_"


def test_nested_block_quote_flattens_to_one_level() -> None:
    assert to_mrkdwn("> outer\n>\n> > inner") == "> outer\n>\n> inner"


def test_block_quote_with_code_keeps_quote_on_every_line() -> None:
    assert to_mrkdwn("> ```\n> a\n> ```") == "> ```\n> a\n> ```"


def test_empty_block_quote_is_dropped() -> None:
    assert to_mrkdwn("a\n\n>\n\nb") == "a\n\nb"


def test_table_becomes_padded_monospace_block() -> None:
    md = "| Name | Qty |\n|---|---|\n| apple | 3 |\n| kiwi | 12 |"
    assert to_mrkdwn(md) == "```\nName  | Qty\n------+----\napple | 3\nkiwi  | 12\n```"


def test_table_honours_column_alignment() -> None:
    md = "| L | R | C |\n|:--|--:|:-:|\n| a | b | c |\n| long | longer | longest |"
    assert to_mrkdwn(md) == (
        "```\nL    |      R |    C\n-----+--------+--------\n"
        "a    |      b |    c\nlong | longer | longest\n```"
    )


def test_table_cell_markup_is_stripped_and_escaped() -> None:
    md = "| a |\n|---|\n| **b** `<c>` [d](https://e.x) & f |"
    assert to_mrkdwn(md) == "```\na\n---------------\nb &lt;c&gt; d [1] &amp; f\n```\n[1] <https://e.x|d>"


def test_table_links_are_numbered_in_their_cells_and_listed_under_the_table() -> None:
    md = "| what | where |\n|---|---|\n| [docs](https://x.dev) | <https://y.dev> |\n"
    md += "| [a](/rel) | [https://good.example](https://evil.example) |"
    assert to_mrkdwn(md) == (
        "```\nwhat     | where\n---------+-------------------------\ndocs [1] | https://y.dev\n"
        "a        | https://good.example [2]\n```\n[1] <https://x.dev|docs>\n[2] <https://evil.example>"
    )


def test_table_pads_wide_characters_by_display_width() -> None:
    assert to_mrkdwn("| 日本 | x |\n|---|---|\n| ab | y |") == "```\n日本 | x\n-----+--\nab   | y\n```"


# --------------------------------------------------------------------------- inline markup


def test_bold_italic_strike_map_to_slack_marks() -> None:
    assert to_mrkdwn("**b** __b__ *i* _i_ ~~s~~") == "*b* *b* _i_ _i_ ~s~"


def test_bold_italic_together_puts_bold_outside() -> None:
    assert to_mrkdwn("***both*** and ___both___") == "*_both_* and *_both_*"


def test_nested_emphasis_is_kept_and_not_repeated() -> None:
    assert to_mrkdwn("**a *b* c** *a **b** c* ****x****") == "*a _b_ c* _a *b* c_ *x*"


def test_emphasis_is_closed_on_each_line() -> None:
    assert to_mrkdwn("**bold across\nlines**") == "*bold across*\n*lines*"


def test_inline_code_escapes_html_and_is_not_formatted() -> None:
    assert to_mrkdwn("use `<b>*x*</b> & y`") == "use `&lt;b&gt;*x*&lt;/b&gt; &amp; y`"


def test_special_characters_are_escaped_in_text() -> None:
    assert to_mrkdwn("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"


def test_source_entities_are_decoded_then_escaped_once() -> None:
    assert to_mrkdwn("&amp; &lt; &copy; &#65;") == "&amp; &lt; © A"


def test_raw_html_is_shown_as_text() -> None:
    assert to_mrkdwn("<div>\n<b>hi</b>\n</div>") == "&lt;div&gt;\n&lt;b&gt;hi&lt;/b&gt;\n&lt;/div&gt;"
    assert to_mrkdwn("x <span>y</span>") == "x &lt;span&gt;y&lt;/span&gt;"


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        pytest.param("**un**predictable, re**fresh**", "unpredictable, refresh", id="emphasis inside a word"),
        pytest.param("中文**粗体**中文 and **x**:", "中文粗体中文 and *x*:", id="emphasis against CJK"),
        pytest.param("2*3*4 and x*y*z", "2*3*4 and x*y*z", id="arithmetic"),
        pytest.param("**bold**ly", "boldly", id="bold against a word"),
        pytest.param(r"\*a\* and \~b\~", f"{JOINER}*a* and {JOINER}~b~", id="escaped markup"),
        pytest.param(r"\*nix, a\*b\*c, \_private", "*nix, a*b*c, _private", id="markup Slack cannot read"),
        pytest.param(r"\`\`\` not a fence", f"``{JOINER}` not a fence", id="escaped backtick run"),
        pytest.param("# Use \\*args", f"*Use {JOINER}*args*", id="escaped star in a heading"),
        pytest.param("__init__, __main__.py; __bold__", "__init__, __main__.py; *bold*", id="dunders"),
        pytest.param("- [ ] a\n- [x] b", "☐ a\n☑ b", id="task list"),
        pytest.param("1. ```\n   x\n   ```", "1.\n```\nx\n```", id="code block first in a list item"),
        pytest.param("- > quote", "•\n> quote", id="quote first in a list item"),
        pytest.param("``a`b``", "`aˋb`", id="backtick in inline code"),
        pytest.param("見てhttps://x.dev/a。次", "見て<https://x.dev/a>。次", id="URL before CJK"),
        pytest.param("https://x.dev/foo*bar*baz", "<https://x.dev/foo*bar*baz>", id="URL with stars"),
    ],
)
def test_slack_shows_what_claude_meant(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


# --------------------------------------------------------------------------- links


def test_link_becomes_slack_link() -> None:
    assert (
        to_mrkdwn("see [the docs](https://x.dev/a?b=1&c=2)") == "see <https://x.dev/a?b=1&amp;c=2|the docs>"
    )


def test_link_label_loses_markup_and_keeps_slack_syntax_intact() -> None:
    md = "[a | *b* > c](https://x.dev)"
    assert to_mrkdwn(md) == "<https://x.dev|a ∣ b &gt; c>"


def test_link_whose_label_is_its_url_collapses() -> None:
    assert to_mrkdwn("[https://x.dev/p](https://x.dev/p)") == "<https://x.dev/p>"


def test_autolinks_become_slack_links() -> None:
    assert to_mrkdwn("<https://x.dev/a> <me@x.dev>") == "<https://x.dev/a> <mailto:me@x.dev|me@x.dev>"


def test_bare_urls_become_links_without_trailing_punctuation() -> None:
    md = "Go to https://x.dev/a_(b)?q=1&r=2. Or (https://y.dev/z), then stop."
    assert to_mrkdwn(md) == "Go to <https://x.dev/a_(b)?q=1&amp;r=2>. Or (<https://y.dev/z>), then stop."


def test_bare_url_inside_inline_code_is_not_linked() -> None:
    assert to_mrkdwn("`curl https://x.dev`") == "`curl https://x.dev`"


def test_image_becomes_link_with_alt_text() -> None:
    assert to_mrkdwn("![a *chart*](https://x.dev/c.png)") == "<https://x.dev/c.png|a chart>"
    assert to_mrkdwn("![](https://x.dev/c.png)") == "<https://x.dev/c.png>"


def test_relative_link_keeps_only_its_label() -> None:
    assert to_mrkdwn("[**setup**](#setup) and [faq](/faq)") == "*setup* and faq"


# --------------------------------------------------------------------------- mentions


def test_repeated_user_mention_does_not_ping() -> None:
    out = to_mrkdwn("Thanks <@U123ABC>, and <@W42|bob>!")
    assert out == "Thanks &lt;@U123ABC&gt;, and &lt;@W42|bob&gt;!"
    assert "<@" not in out


def test_repeated_broadcasts_do_not_ping() -> None:
    out = to_mrkdwn("<!channel> <!here> <!everyone> <!subteam^S1>")
    assert out == "&lt;!channel&gt; &lt;!here&gt; &lt;!everyone&gt; &lt;!subteam^S1&gt;"


def test_repeated_channel_reference_is_shown_as_text() -> None:
    assert to_mrkdwn("join <#C123> or <#C456|general>") == "join &lt;#C123&gt; or &lt;#C456|general&gt;"


def test_mentions_in_code_do_not_ping() -> None:
    assert to_mrkdwn("`<@U1>`\n\n```\n<!channel>\n```") == "`&lt;@U1&gt;`\n\n```\n&lt;!channel&gt;\n```"


def test_entity_encoded_mention_does_not_ping() -> None:
    assert to_mrkdwn("&lt;@U1&gt; &#60;!here&#62;") == "&lt;@U1&gt; &lt;!here&gt;"


def test_link_targets_cannot_forge_mentions() -> None:
    out = to_mrkdwn("[hi](@U123) [all](!channel) [room](#C1) ![x](!here)")
    assert out == "hi all room x"


def test_plain_broadcasts_claude_writes_do_not_notify() -> None:
    md = "ping @channel, @here or @everyone (@Here too): **@here** ~@channel~ `@channel`"
    md += " *@here* __@everyone__"
    md += "\n\n```\n@everyone\n```"
    out = to_mrkdwn(md)
    assert not PLAIN_BROADCAST.search(out), out
    j = JOINER
    assert out == (
        f"ping @{j}channel, @{j}here or @{j}everyone (@{j}Here too): *@{j}here* "
        # The tildes are text in Markdown: a joiner keeps them so in Slack.
        f"{j}~@{j}channel~ `@{j}channel` _@{j}here_ *@{j}everyone*"
        f"\n\n```\n@{j}everyone\n```"
    )


def test_at_signs_in_addresses_and_urls_are_left_alone() -> None:
    md = "mail ops@channel.example, see https://social.example/@here or @hereford and @channels"
    out = to_mrkdwn(md)
    assert JOINER not in out
    assert out == "mail ops@channel.example, see <https://social.example/@here> or @hereford and @channels"


def test_user_group_pings_do_not_notify() -> None:
    assert to_mrkdwn("<!subteam^S0123|@oncall> please") == "&lt;!subteam^S0123|@oncall&gt; please"


# --------------------------------------------------------------------------- links that hide their target


@pytest.mark.parametrize(
    ("markdown", "target"),
    [
        ("[https://good.example](https://evil.example)", "https://evil.example"),
        ("[https://good.example/login](https://evil.example/login)", "https://evil.example/login"),
        ("[good.example](https://evil.example)", "https://evil.example"),
        (
            "[good.example/login](https://evil.example/good.example/login)",
            "https://evil.example/good.example/login",
        ),
        ("[www.good.example](https://evil.example)", "https://evil.example"),
        ("[Log in at https://good.example](https://evil.example)", "https://evil.example"),
        ("[**https://good.example**](https://evil.example)", "https://evil.example"),
        ("[https://good.example](https://good.example.evil.example)", "https://good.example.evil.example"),
        ("[https://good.example](https://good.example@evil.example)", "https://good.example@evil.example"),
        ("[https://good.example](mailto:x@evil.example)", "mailto:x@evil.example"),
        ("[HTTPS://X.dev/a](https://x.dev/b)", "https://x.dev/b"),
        ("[https://github.com/good/repo](https://github.com/evil/repo)", "https://github.com/evil/repo"),
        ("[github.com/good](https://github.com/good-evil)", "https://github.com/good-evil"),
        ("![https://good.example/a.png](https://evil.example/a.png)", "https://evil.example/a.png"),
        ("[https://good.example][1]\n\n[1]: https://evil.example", "https://evil.example"),
        ("[support@good.example](mailto:attacker@evil.example)", "mailto:attacker@evil.example"),
        ("[mailto:support@good.example](mailto:attacker@good.example)", "mailto:attacker@good.example"),
        ("[Write to support@good.example](https://evil.example)", "https://evil.example"),
    ],
)
def test_link_whose_label_looks_like_another_url_is_shown_with_its_real_target(markdown, target) -> None:
    assert to_mrkdwn(markdown) == f"<{target}>"


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("[docs.python.org](https://docs.python.org/3/)", "<https://docs.python.org/3/|docs.python.org>"),
        ("[www.python.org](https://python.org)", "<https://python.org|www.python.org>"),
        (
            "[HTTPS://X.dev/guide](https://x.dev/guide/#install)",
            "<https://x.dev/guide/#install|HTTPS://X.dev/guide>",
        ),
        ("[github.com/good](https://github.com/good/repo)", "<https://github.com/good/repo|github.com/good>"),
        ("[the docs](https://x.dev)", "<https://x.dev|the docs>"),
        ("[version 1.2.3](https://x.dev)", "<https://x.dev|version 1.2.3>"),
        (
            "[Support@Good.example](mailto:support@good.example)",
            "<mailto:support@good.example|Support@Good.example>",
        ),
        ("[write to us](mailto:support@good.example)", "<mailto:support@good.example|write to us>"),
    ],
)
def test_link_whose_label_names_its_own_host_or_no_url_keeps_its_label(markdown, mrkdwn) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


# --------------------------------------------------------------------------- robustness


PINGS_AND_LINKS = ("@here", "@channel", "@Everyone", "<!subteam^S1|@t>", "[https://a.example](", "x.example")


def random_markdown(rng: random.Random, extra: tuple[str, ...] = ()) -> str:
    snippets = [
        "*", "**", "_", "__", "~~", "`", "```", "```py\n", "#", "## ", ">", "> ", "- ", "1. ", "3) ",
        "[", "]", "(", ")", "![", "](", "<", ">", "&", "&amp;", "&#0;", "|", "|---|", "\n", "\n\n",
        "    ", "\t", " ", "\\", "https://", "x.dev", "<@U1>", "<!channel>", "<#C1>", "@", "!",
        "word", "é", "日本", "🎉", "\u200b", "\x00", "\r\n", "---", "===", ":", "/", "\"",
    ]  # fmt: skip
    snippets += extra
    return "".join(rng.choice(snippets) for _ in range(rng.randint(0, 60)))


def assert_safe_mrkdwn(out: str) -> None:
    """Slack syntax only where we generate it: links with a scheme, entities for & < >."""
    assert "<" not in SLACK_LINK.sub("", out), out
    assert not re.search(r"&(?!amp;|lt;|gt;)", out), out
    assert not re.search(r"<[@!#]", out), out
    assert not PLAIN_BROADCAST.search(out), out


def test_never_raises_and_output_is_safe_on_random_input() -> None:
    rng = random.Random(1234)
    for _ in range(3000):
        assert_safe_mrkdwn(to_mrkdwn(random_markdown(rng)))
    for _ in range(3000):
        assert_safe_mrkdwn(to_mrkdwn(random_markdown(rng, PINGS_AND_LINKS)))


@pytest.mark.parametrize(
    "markdown",
    ["**a " * 3000, "*" * 5000 + "x" + "*" * 5000, ">" * 5000 + " x", "- " * 3000 + "x", "[" * 5000, ""],
)
def test_pathological_input_does_not_raise(markdown: str) -> None:
    assert_safe_mrkdwn(to_mrkdwn(markdown))


def test_corpus_output_is_safe() -> None:
    for name in CORPUS_NAMES:
        assert_safe_mrkdwn(rendered(name))


# --------------------------------------------------------------------------- splitting


def normalized(text: str) -> str:
    """The text modulo whitespace and fence lines: what splitting must preserve."""
    return re.sub(r"\s+", "", QUOTE_MARKERS.sub("", FENCE_LINE.sub("", text)))


def assert_valid_split(text: str, pieces: list[str], limit: int) -> None:
    assert all(0 < len(piece) <= limit for piece in pieces), [len(p) for p in pieces]
    assert "".join(normalized(piece) for piece in pieces) == normalized(text)
    if open_fence(text) is None:  # every piece opens and closes its code
        assert all(open_fence(piece) is None for piece in pieces), pieces


def test_split_empty_input_gives_no_pieces() -> None:
    assert split_message("") == []
    assert split_message(" \n\n ") == []


def test_split_short_text_is_one_piece() -> None:
    assert split_message("hello *world*") == ["hello *world*"]
    assert split_message("x" * 3900) == ["x" * 3900]


def test_split_prefers_paragraph_boundaries() -> None:
    text = "aaaa aaaa\naaaa\n\nbbbb bbbb\nbbbb\n\ncccc"
    assert split_message(text, limit=30) == ["aaaa aaaa\naaaa\n\nbbbb bbbb\nbbbb", "cccc"]


def test_split_falls_back_to_lines_then_spaces_then_hard_cut() -> None:
    assert split_message("one two\nthree four five\nsix", limit=20) == ["one two\nthree four", "five\nsix"]
    assert split_message("aaaa bbbb cccc dddd eeee", limit=16) == ["aaaa bbbb cccc", "dddd eeee"]
    assert split_message("x" * 50, limit=20) == ["x" * 20, "x" * 20, "x" * 10]


def test_split_keeps_code_indentation_at_cut_points() -> None:
    text = "```\n" + "\n".join(f"    step_{i}()" for i in range(6)) + "\n```"
    pieces = split_message(text, limit=50)
    assert len(pieces) > 1
    assert all(line.startswith("    step_") for piece in pieces for line in piece.split("\n")[1:-1])


def test_split_reuses_closing_fence_instead_of_emitting_empty_block() -> None:
    text = "```\n" + "a" * 30 + "\n```\n" + "b" * 30  # the cut falls just before the closing fence
    assert split_message(text, limit=50) == ["```\n" + "a" * 30 + "\n```", "b" * 30]


def test_split_never_breaks_an_entity() -> None:
    text = "x" * 14 + "&amp;&lt;" + "y" * 10
    assert split_message(text, limit=16) == ["x" * 14, "&amp;&lt;" + "y" * 7, "y" * 3]


def test_split_never_breaks_a_link() -> None:
    text = "word word word <https://x.dev/p|a b c d e f> end"
    assert split_message(text, limit=36) == ["word word word", "<https://x.dev/p|a b c d e f> end"]


def numbered(word: str, count: int) -> str:
    return "\n".join(f"{word} {i}" for i in range(count))


@pytest.mark.parametrize(
    ("text", "limit", "pieces"),
    [
        pytest.param(
            f"intro\n\n```\n{numbered('line', 12)}\n```\n\noutro",
            40,
            [
                "intro\n\n```\nline 0\nline 1\nline 2\n```",
                "```\nline 3\nline 4\nline 5\nline 6\n```",
                "```\nline 7\nline 8\nline 9\nline 10\n```",
                "```\nline 11\n```\n\noutro",
            ],
            id="a code block",
        ),
        pytest.param(
            f"Docs: <https://x.dev/a```b> and then\n\n```\n{numbered('line', 8)}\n```\n\nafter",
            40,
            [
                "Docs: <https://x.dev/a```b> and then",
                "```\nline 0\nline 1\nline 2\nline 3\n```",
                "```\nline 4\nline 5\nline 6\nline 7\n```",
                "after",
            ],
            id="after backticks inside a link",
        ),
        pytest.param(
            f"````markdown\n{numbered('line', 4)}\n```bash\nls\n```\n{numbered('more', 6)}\n````\nafter",
            50,
            [
                "````markdown\nline 0\nline 1\nline 2\nline 3\n````",
                "````\n```bash\nls\n```\nmore 0\nmore 1\nmore 2\n````",
                "````\nmore 3\nmore 4\nmore 5\n````\nafter",
            ],
            id="a fence line inside a longer-fenced block is content",
        ),
        pytest.param(
            "> Run:\n> ```\n" + "\n".join(f"> step {i}" for i in range(8)) + "\n> ```\n\nafter",
            40,
            [
                "> Run:\n> ```\n> step 0\n> step 1\n> ```",
                "> ```\n> step 2\n> step 3\n> step 4\n> ```",
                "> ```\n> step 5\n> step 6\n> step 7\n> ```",
                "after",
            ],
            id="in a quote",
        ),
    ],
)
def test_split_closes_and_reopens_a_code_block_cut_in_two(text: str, limit: int, pieces: list[str]) -> None:
    assert split_message(text, limit) == pieces


def test_split_keeps_both_halves_of_a_quoted_line_in_the_quote() -> None:
    text = "> a quoted line that is long enough to be cut\n> in two"
    assert split_message(text, limit=30) == ["> a quoted line that is long", "> enough to be cut\n> in two"]


def test_split_never_starts_a_piece_with_backticks_that_were_inside_a_line() -> None:
    text = "Write " + "x" * 20 + " ```js fences like this"  # cut before ```, the rest would be a fence
    assert split_message(text, limit=30) == ["Write", "x" * 20 + " ```js", "fences like this"]


def test_split_rejects_a_limit_too_small_for_fences() -> None:
    with pytest.raises(ValueError):
        split_message("text", limit=8)


def test_split_long_corpus_answer_into_valid_messages() -> None:
    text = rendered("long_answer")
    pieces = split_message(text)
    assert len(pieces) == 2
    assert_valid_split(text, pieces, 3900)
    small = split_message(text, limit=500)
    assert len(small) > 10
    assert_valid_split(text, small, 500)


def random_mrkdwn(rng: random.Random) -> str:
    words = [
        "word", "another", "x" * 70, "&amp;", "&lt;", "&gt;", "<https://x.dev/a|a label>", "<https://y.dev>",
        "*bold*", "_it_", "`code`", "\n", "\n\n", "\n\n\n", " ", "  ", "    indented", "\n```\n", "``\u2060`",
        "\n> quote", "• item", "日本語", "🎉",
    ]  # fmt: skip
    return "".join(rng.choice(words) + rng.choice(["", " "]) for _ in range(rng.randint(0, 120)))


def test_split_never_loses_text() -> None:
    rng = random.Random(99)
    for _ in range(1500):
        text, limit = random_mrkdwn(rng), rng.randint(34, 300)  # room for a 25-character link in a code block
        pieces = split_message(text, limit)
        assert_valid_split(text, pieces, limit)
        if limit >= 60:  # room for every atom in `random_mrkdwn`: none may be cut
            for piece in pieces:
                rest = re.sub(r"&(?:amp|lt|gt);", "", SLACK_LINK.sub("", piece))
                assert not re.search(r"[&;<]", rest), piece
                assert ">" not in re.sub(r"(?m)^>", "", rest), piece


def test_split_of_rendered_random_markdown_is_valid() -> None:
    rng = random.Random(7)
    for _ in range(500):
        text = to_mrkdwn(random_markdown(rng) * 5)
        limit = rng.randint(16, 400)
        assert_valid_split(text, split_message(text, limit), limit)

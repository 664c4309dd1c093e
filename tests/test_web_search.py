"""Web search (WEB_SEARCH, off by default): Anthropic's web search server tool, direct calls only (no
dynamic filtering, which zero data retention does not cover) and no web fetch; the cited sources, each
once, for under the answer; a failed search still answered; queries and results never kept or logged;
searches counted in usage and cost; refused where the backend has no web search."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.config import ConfigError, Settings, WebSearchSettings
from bot.pipeline.claude import (
    MAX_CONTINUATIONS,
    VERTEX_WEB_SEARCH_TOOL,
    WEB_SEARCH_TOOL,
    ClaudeOutcome,
    Source,
    ask_claude,
    web_search_tool,
)
from bot.pipeline.prompt import Prompt
from bot.pipeline.reply import STOP_NOTES
from bot.policy import policy_summary
from bot.pricing import WEB_SEARCH_USD, prices_for
from tests.conftest import ALICE, CHANNEL, mention, said
from tests.fakes.claude_api import (
    WEB_SEARCH_TYPES,
    FakeClaude,
    _estimate_tokens,
    cited_text,
    text_block,
    thinking_block,
    web_search_result,
    web_search_use,
)

BASE = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "ANTHROPIC_API_KEY": "k"}
QUERY = "CANARY-QUERY acme widget 4.2 release notes"
RESULT_TITLE = "CANARY-RESULT Acme Widget 4.2 released"
CITED = "CANARY-CITED Widget 4.2 adds offline mode"
DOCS = ("https://acme.example/blog/widget-4-2", "Widget 4.2 is out")
NEWS = ("https://news.example/acme", "Acme news")
ON = WebSearchSettings(enabled=True, max_uses=2, blocked_domains=("spam.example",))


@pytest.fixture
async def client(claude: FakeClaude) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(api_key="k", base_url=claude.base_url, max_retries=0)
    yield client
    await client.close()


async def ask(
    client: anthropic.AsyncAnthropic, search: WebSearchSettings | None, searches: list[int] | None = None
) -> tuple[ClaudeOutcome, str]:
    text: list[str] = []

    async def on_text(piece: str) -> None:
        text.append(piece)

    async def on_search() -> None:
        if searches is not None:
            searches.append(1)

    settings = Settings.from_env(BASE)
    outcome = await ask_claude(
        client,
        Prompt("You are Claude.", [{"role": "user", "content": "What is new in Widget 4.2?"}], 1, 0),
        backend=settings.backend,
        model=settings.claude_model,
        max_tokens=500,
        user_hash="h",
        on_text=on_text,
        web_search=search,
        on_search=on_search,
    )
    return outcome, "".join(text)


def script_search(claude: FakeClaude, *, error_code: str | None = None) -> None:
    claude.chunk_chars = 7  # queries and text in several deltas
    claude.search(
        QUERY,
        [DOCS, NEWS],
        error_code=error_code,
        then=()
        if error_code
        else (
            text_block("Widget 4.2 "),
            cited_text("adds an offline mode", (*DOCS, CITED), (*NEWS, CITED)),
            text_block(" and "),
            cited_text("faster sync", (*DOCS, CITED)),
        ),
    )
    claude.reply("." if not error_code else "I could not search just now; from what I know, 4.2 is new.")


# --- configuration ---


def test_off_by_default():
    assert Settings.from_env(BASE).web_search == WebSearchSettings(enabled=False)


def test_on_with_its_defaults_and_domains():
    on = Settings.from_env({**BASE, "WEB_SEARCH": "on"}).web_search
    assert on == WebSearchSettings(enabled=True, max_uses=3)
    env = {
        "WEB_SEARCH": "on",
        "WEB_SEARCH_MAX_USES": "5",
        "WEB_SEARCH_ALLOWED_DOMAINS": "a.example, B.example",
    }
    allowed = Settings.from_env({**BASE, **env}).web_search
    assert allowed.max_uses == 5 and allowed.allowed_domains == ("a.example", "b.example")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CLAUDE_BACKEND": "bedrock", "AWS_REGION": "us-east-1"}, "WEB_SEARCH"),
        ({"WEB_SEARCH_ALLOWED_DOMAINS": "a.example", "WEB_SEARCH_BLOCKED_DOMAINS": "b"}, "WEB_SEARCH_"),
        ({"WEB_SEARCH_MAX_USES": "0"}, "WEB_SEARCH_MAX_USES"),
        ({"WEB_SEARCH_BLOCKED_DOMAINS": "https://b.example/"}, "WEB_SEARCH_BLOCKED_DOMAINS"),
    ],
    ids=["bedrock", "allowed-and-blocked", "max-uses", "url-not-domain"],
)
def test_refused_at_start_in_one_line_naming_it(env, variable):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**BASE, "WEB_SEARCH": "on", **env})
    message = str(refused.value)
    assert message.startswith(variable) and "\n" not in message


def test_bedrock_without_web_search_starts():
    settings = Settings.from_env({**BASE, "CLAUDE_BACKEND": "bedrock", "AWS_REGION": "us-east-1"})
    assert not settings.web_search.enabled


def test_vertex_gets_the_version_google_documents():
    tool = web_search_tool("vertex", ON)
    assert tool["type"] == VERTEX_WEB_SEARCH_TOOL and "allowed_callers" not in tool
    assert {WEB_SEARCH_TOOL, VERTEX_WEB_SEARCH_TOOL} <= set(WEB_SEARCH_TYPES)


# --- the request ---


async def test_no_tools_unless_on(claude: FakeClaude, client):
    await ask(client, None)
    await ask(client, WebSearchSettings())
    assert all("tools" not in request.body for request in claude.requests)


async def test_the_tool_sent_when_on_is_direct_only_and_never_fetches(claude: FakeClaude, client):
    await ask(client, ON)
    [request] = claude.requests
    assert request.body["tools"] == [
        {
            "type": WEB_SEARCH_TOOL,
            "name": "web_search",
            "max_uses": 2,
            "allowed_callers": ["direct"],
            "blocked_domains": ["spam.example"],
        }
    ]


# --- the stream ---


async def test_sources_each_once_in_order_and_the_text_ungarbled(claude: FakeClaude, client):
    script_search(claude)
    searches: list[int] = []
    outcome, text = await ask(client, ON, searches)
    assert text == "Widget 4.2 adds an offline mode and faster sync."
    assert outcome.sources == (Source(*DOCS), Source(*NEWS))
    assert searches == [1]
    assert outcome.usage.web_searches == 1
    assert "CANARY" not in text


async def test_a_failed_search_still_answers_and_nothing_raw_is_shown(claude: FakeClaude, client):
    script_search(claude, error_code="unavailable")
    outcome, text = await ask(client, ON)
    assert text == "I could not search just now; from what I know, 4.2 is new."
    assert outcome.sources == () and outcome.stop_reason == "end_turn"
    assert "unavailable" not in text and "CANARY" not in text


async def test_text_before_a_search_is_its_own_paragraph(claude: FakeClaude, client):
    use = web_search_use(QUERY)
    claude.lead_with(
        text_block("Let me look that up."),
        use,
        web_search_result(use["id"], [DOCS]),
        cited_text("It adds an offline mode.", (*DOCS, CITED)),
    )
    claude.reply("")
    _, text = await ask(client, ON)
    assert text == "Let me look that up.\n\nIt adds an offline mode."


def script_pause(claude: FakeClaude, *before: dict[str, Any]) -> list[dict[str, Any]]:
    """The next answer is `before`, then a search, then the API pauses its turn (`pause_turn`, as after
    many searches). Returns the turn's content blocks as the API sent them."""
    use = web_search_use(QUERY)
    blocks = [*before, use, web_search_result(use["id"], [DOCS])]
    claude.lead_with(*blocks)
    claude.reply("", stop_reason="pause_turn")
    return blocks


async def test_a_paused_turn_is_sent_back_as_it_came_and_goes_on(claude: FakeClaude, client):
    claude.chunk_chars = 7  # every block in several deltas
    paused = script_pause(claude, thinking_block("CANARY-THOUGHT search for it"), text_block("Let me look."))
    claude.search(QUERY, [NEWS], then=(cited_text("It adds an offline mode.", (*DOCS, CITED)),))
    claude.reply(" Done.")

    outcome, text = await ask(client, ON)

    first, second = claude.requests
    question = first.body["messages"]
    assert second.body["messages"] == [*question, {"role": "assistant", "content": paused}]
    assert second.body["tools"] == first.body["tools"]
    assert text == "Let me look.\n\nIt adds an offline mode. Done."
    assert outcome.stop_reason == "end_turn" and outcome.sources == (Source(*DOCS),)
    assert outcome.usage.web_searches == 2  # each request counts its own
    assert outcome.usage.input_tokens == _estimate_tokens(first.body) + _estimate_tokens(second.body)


async def test_a_turn_paused_again_is_sent_back_whole(claude: FakeClaude, client):
    paused = script_pause(claude)
    paused += script_pause(claude)
    claude.reply("Found it.")

    _, text = await ask(client, ON)

    assert claude.requests[-1].body["messages"][-1] == {"role": "assistant", "content": paused}
    assert text == "Found it."


async def test_queries_and_results_are_never_logged(claude: FakeClaude, client, caplog):
    caplog.set_level(logging.DEBUG, logger="bot")
    script_search(claude)
    await ask(client, ON)
    assert "CANARY" not in caplog.text


# --- cost and policy ---


def test_searches_are_priced_per_thousand():
    prices = prices_for("claude-sonnet-5-5")
    assert prices is not None
    tokens = prices.cost_usd(input_tokens=1000, output_tokens=100)
    assert WEB_SEARCH_USD == 0.01
    searched = prices.cost_usd(input_tokens=1000, output_tokens=100, web_searches=3)
    assert searched == pytest.approx(tokens + 0.03)


def test_policy_says_whether_search_is_on_where_queries_go_and_that_pages_are_not_fetched():
    off = policy_summary(Settings.from_env(BASE))
    assert "*Web search:* off" in off
    on = policy_summary(Settings.from_env({**BASE, "WEB_SEARCH": "on", "WEB_SEARCH_MAX_USES": "2"}))
    line = next(line for line in on.splitlines() if line.startswith("• *Web search:*"))
    assert "up to 2 times" in line and "Anthropic's search provider" in line
    assert "same agreement" in line and "Pages are not fetched" in line


# --- end to end, through the bot ---

SEARCH_ON = {"WEB_SEARCH": "on"}


def slack_text(slack) -> str:
    """Everything the bot sent to Slack, as sent."""
    return "\n".join(str(call.params) for call in slack.calls)


@pytest.mark.parametrize("bot_overrides", [SEARCH_ON], indirect=True)
async def test_a_searched_answer_lists_its_sources_under_it_and_counts_the_search(bot, caplog):
    caplog.set_level(logging.DEBUG, logger="bot")
    script_search(bot.claude)
    before = generate_latest(metrics.REGISTRY).decode()
    bot.slack.add_thread(CHANNEL, [said(ALICE, "<@U0BOT> what is new in Widget 4.2?", "70.000001")])
    await bot.send_event(mention("<@U0BOT> what is new in Widget 4.2?", ts="70.000001"))
    await bot.finished(count=2)  # the search's reaction, then the working one: the answer is done

    [answer] = bot.replies(CHANNEL, "70.000001")
    assert answer.startswith("Widget 4.2 adds an offline mode and faster sync.")
    # Streamed as Markdown, which Slack renders: the sources as links, each once, in order.
    assert answer.endswith(f"**Sources:** [{DOCS[1]}]({DOCS[0]}) · [{NEWS[1]}]({NEWS[0]})")
    assert "CANARY" not in slack_text(bot.slack) and "CANARY" not in caplog.text
    assert "web_searches=1" in caplog.text
    after = generate_latest(metrics.REGISTRY).decode()
    assert searches_counted(after) - searches_counted(before) == 1


@pytest.mark.parametrize("bot_overrides", [SEARCH_ON], indirect=True)
async def test_a_turn_that_keeps_pausing_ends_and_says_so(bot):
    bot.claude.lead_with(text_block("Searching."))
    for _ in range(MAX_CONTINUATIONS + 2):
        script_pause(bot.claude)
    await bot.send_event(mention("<@U0BOT> search everything", ts="72.000001"))
    await bot.finished(count=2)

    assert len(bot.claude.requests) == MAX_CONTINUATIONS + 1
    [answer] = bot.replies(CHANNEL, "72.000001")
    assert answer.startswith("Searching.") and answer.endswith(STOP_NOTES["pause_turn"])


@pytest.mark.parametrize("bot_overrides", [SEARCH_ON], indirect=True)
async def test_a_private_answer_gets_its_sources_too(bot):
    script_search(bot.claude)
    await bot.send_command("what is new in Widget 4.2?")
    [reply] = await bot.slack.wait_for("response_url")
    assert f"<{DOCS[0]}|{DOCS[1]}>" in reply.params["text"]
    assert "CANARY" not in slack_text(bot.slack)


@pytest.mark.parametrize("bot_overrides", [SEARCH_ON], indirect=True)
async def test_a_failed_search_is_answered_in_slack_without_its_error(bot):
    script_search(bot.claude, error_code="unavailable")
    await bot.send_event(mention("<@U0BOT> what is new in Widget 4.2?", ts="71.000001"))
    await bot.finished()
    [answer] = bot.replies(CHANNEL, "71.000001")
    assert answer == "I could not search just now; from what I know, 4.2 is new."
    assert "unavailable" not in slack_text(bot.slack)


def searches_counted(scrape: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "claude_slack_web_searches_total"
    )


@pytest.mark.parametrize("bot_overrides", [SEARCH_ON], indirect=True)
async def test_the_search_step_shows_while_claude_searches_and_never_its_query(bot):
    script_search(bot.claude)
    await bot.send_event(mention("<@U0BOT> what is new in Widget 4.2?", ts="72.000001"))
    await bot.slack.wait_for("reactions.remove", count=2)  # the search's, then the working one

    added = [c.params["name"] for c in bot.slack.calls_to("reactions.add")]
    removed = [c.params["name"] for c in bot.slack.calls_to("reactions.remove")]
    assert added == ["hourglass_flowing_sand", "mag"] and sorted(removed) == sorted(added)
    assert "CANARY" not in slack_text(bot.slack)

"""The retention policy's pure rules: what survives a read, turns, budget, the opaque user; and the policy's
own text (bot.pipeline's docstring) names everything kept between requests, as it is named in Redis."""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import bot.pipeline
from bot.pipeline.ask import BotIdentity, SlackMessage
from bot.pipeline.claude import opaque_user_id
from bot.pipeline.context import slim
from bot.pipeline.prompt import build_prompt, people_to_name
from bot.policy import REDIS_KEYS
from bot.state import StateKeys

BOT = BotIdentity(user_id="U0BOT", bot_id="B0BOT")
NAMES = {"U1": "Ada", "U2": "Grace"}
PROMPT = {"bot": BOT, "names": NAMES, "system": "SYSTEM"}


def prompt(messages, budget=10_000):
    return build_prompt(messages, bot=BOT, names=NAMES, system="SYSTEM", budget_tokens=budget)


def person(user, text, ts="1.0"):
    return SlackMessage(ts=ts, text=text, user=user)


def ours(text, ts="1.0"):
    return SlackMessage(ts=ts, text=text, user="U0BOT", bot_id="B0BOT")


def test_slim_keeps_only_author_time_and_text():
    raw = {
        "type": "message",
        "user": "U1",
        "text": "hello",
        "ts": "1.5",
        "files": [{"id": "F1", "url_private": "https://files/secret"}],
        "reactions": [{"name": "eyes"}],
        "blocks": [{"type": "rich_text"}],
        "metadata": {"event_type": "x"},
    }
    assert slim(raw) == SlackMessage(ts="1.5", text="hello", user="U1")


def test_slim_drops_joins_edits_and_odd_shapes():
    assert slim({"subtype": "channel_join", "ts": "1", "text": "joined"}) is None
    assert slim({"subtype": "message_changed", "ts": "1", "text": ""}) is None
    assert slim({"ts": 1, "text": "not a string ts"}) is None
    assert slim({"ts": "1"}) is None


def test_other_apps_speak_as_users_labelled_as_apps():
    other = slim(
        {"subtype": "bot_message", "bot_id": "B9", "username": "deploy-bot", "text": "done", "ts": "1"}
    )
    result = prompt([other, person("U1", "did it work?")])
    assert result.messages == [{"role": "user", "content": "deploy-bot (app): done\n\nAda: did it work?"}]


def test_own_messages_are_assistant_turns_and_roles_alternate():
    result = prompt(
        [person("U1", "q1"), ours("a1"), ours("a1 continued"), person("U2", "q2"), person("U1", "q3")]
    )
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user"]
    assert result.messages[1]["content"] == "a1\n\na1 continued"
    assert result.messages[2]["content"] == "Grace: q2\n\nAda: q3"


def test_conversation_opening_with_the_bot_still_starts_with_a_user_turn():
    result = prompt([ours("Here is the weekly digest."), person("U1", "thanks, and the next step?")])
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user"]


def test_budget_keeps_the_newest_messages_and_tells_claude_what_was_left_out():
    messages = [person("U1", f"message {n} " + "x" * 400, ts=f"{n}.0") for n in range(50)]
    result = prompt(messages, budget=1_000)
    assert 0 < result.kept < 50
    assert result.omitted == 50 - result.kept
    assert "message 49" in result.messages[-1]["content"]
    assert "message 0 " not in str(result.messages)
    assert f"The {result.omitted} oldest messages" in result.system
    assert sum(len(m["content"]) for m in result.messages) <= 1_000 * 4 + 100


def test_older_messages_left_unread_and_left_out_make_one_note_worded_the_same_each_time():
    """Read only as far as the budget goes, a thread's left-out part is one note, whatever was read of
    it: the same words however many read messages the budget then dropped (prompt caching wants it)."""
    messages = [person("U1", f"message {n} " + "x" * 400, ts=f"{n}.0") for n in range(50)]
    further = build_prompt(messages, **PROMPT, budget_tokens=1_000, earlier_unread=True)
    nearer = build_prompt(messages[20:], **PROMPT, budget_tokens=1_000, earlier_unread=True)
    assert further.omitted > nearer.omitted > 0
    assert further.system == nearer.system and further.messages == nearer.messages
    assert further.system.count("left out") == 1
    assert "oldest messages of this conversation were left out" in further.system
    all_read = build_prompt(messages, **PROMPT, budget_tokens=1_000)
    assert all_read.system.count("left out") == 1 and f"The {all_read.omitted} oldest" in all_read.system
    unread_only = build_prompt(messages[-2:], **PROMPT, budget_tokens=1_000, earlier_unread=True)
    assert unread_only.omitted == 0 and unread_only.system == further.system


def test_a_huge_question_alone_is_shortened_not_dropped():
    result = prompt([person("U1", "y" * 400_000)], budget=1_000)
    [message] = result.messages
    assert message["content"].startswith("Ada: yyy") and message["content"].endswith("yyy")
    assert "[…its middle was left out to fit the context budget…]" in message["content"]
    assert len(message["content"]) < 4_200


def test_no_omission_note_when_everything_fits():
    assert prompt([person("U1", "short")]).system == "SYSTEM"


def test_mentions_become_names_and_the_bot_mention_disappears():
    result = prompt([person("U1", "<@U0BOT> ask <@U2> and <@U3|carol> please")])
    assert result.messages[0]["content"] == "Ada: ask @Grace and <@U3|carol> please"


def test_people_to_name_are_authors_and_mentions_but_not_the_bot():
    messages = [person("U1", "hi <@U2> and <@U0BOT>"), ours("hello <@U1>")]
    assert people_to_name(messages, BOT) == {"U1", "U2"}


def test_user_hash_is_stable_keyed_and_reveals_no_id():
    keys = StateKeys("xoxb-secret-of-this-app")
    first = opaque_user_id(keys, "T1", "U1")
    assert first == opaque_user_id(StateKeys("xoxb-secret-of-this-app"), "T1", "U1")  # every replica
    assert first != opaque_user_id(keys, "T1", "U2") != opaque_user_id(keys, "T2", "U1")
    assert first != opaque_user_id(StateKeys("another-app"), "T1", "U1")
    assert first != keys.of("T1", "U1")  # not the name the person's counts have in Redis
    assert "U1" not in first and "T1" not in first


def test_a_lone_surrogate_becomes_a_replacement_character_that_can_be_encoded():
    result = prompt([person("U1", "broken emoji \ud83d here"), person("U1", "and \udfff", ts="2.0")])
    content = result.messages[0]["content"]
    assert content == "Ada: broken emoji \ufffd here\n\nAda: and \ufffd"
    content.encode("utf-8")  # what the SDK does before sending
    assert (
        prompt([person("U1", "a pair \U0001f600 stays")]).messages[0]["content"].endswith("\U0001f600 stays")
    )


def test_the_policy_names_every_key_kept_in_redis_and_each_module_it_cites_exists():
    """`bot.pipeline`'s docstring lists everything kept between requests: each Redis key name the policy
    command shows is there, and every `bot.…` it points to is real, so the text cannot drift from the code."""
    policy = bot.pipeline.__doc__ or ""
    for key in REDIS_KEYS:
        assert f"`{key.prefix}<hash>`" in policy
    assert '--save "" --appendonly no' in policy
    for name in sorted(set(re.findall(r"`(bot(?:\.\w+)+)`", policy))):
        pkgutil.resolve_name(name)  # raises if the module or the name in it is gone


def test_the_readme_lists_every_key_kept_between_requests():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z:]+)<hash>` \|", readme, flags=re.MULTILINE)
    assert rows == [key.prefix for key in REDIS_KEYS]

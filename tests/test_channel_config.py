"""CHANNEL_CONFIG: per-channel instructions read from TOML at start; a bad file is one line naming the file
and the key or line, and never quotes the instructions."""

from __future__ import annotations

import logging

import pytest

from bot.channel_config import MAX_INSTRUCTIONS_CHARS, ChannelConfig
from bot.config import ConfigError, Settings
from bot.pipeline.answer import CHANNEL_INSTRUCTIONS
from tests.conftest import ALICE, CHANNEL, mention, running_bot, said
from tests.test_config import BASE, run_bot

CANARY = "CANARY-instructions-7f3a"  # stands for the operator's words: in no error, no repr
RETAINED = "claude-mythos-5-1"  # Anthropic retains its inputs and outputs (issue 12, section 2)

GOOD = f'''
[default]
instructions = "Answer briefly. {CANARY}"

[channels.C0123456789]
name = "support"
instructions = """
You help the support team. Link to the runbook when it helps. {CANARY}
"""
model = "claude-haiku-5-5"

[channels.G0123456789]
name = "eng.oncall_2"
instructions = "Be precise."
'''


def settings_for(tmp_path, text: str | bytes, **env: str) -> Settings:
    path = tmp_path / "channels.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return Settings.from_env({**BASE, "CHANNEL_CONFIG": str(path), **env})


def error_for(tmp_path, text: str | bytes, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_for(tmp_path, text, **env)
    return str(caught.value)


def test_a_good_file_gives_each_channel_its_entry_and_everyone_else_the_default(tmp_path):
    config = settings_for(tmp_path, GOOD).channel_config
    support = config.for_channel("C0123456789")
    assert support is not None
    assert support.name == "support" and support.model == "claude-haiku-5-5"
    # Its own entry replaces the default (nothing of it is added), trimmed of the TOML string's newlines.
    assert support.instructions == f"You help the support team. Link to the runbook when it helps. {CANARY}"
    eng = config.for_channel("G0123456789")
    assert eng is not None and (eng.name, eng.instructions, eng.model) == (
        "eng.oncall_2",
        "Be precise.",
        None,
    )
    for elsewhere in ("C0999999999", "D0123456789", None):
        default = config.for_channel(elsewhere)
        assert default is not None
        assert (default.name, default.instructions, default.model) == (
            "default",
            f"Answer briefly. {CANARY}",
            None,
        )


def test_without_a_default_other_channels_get_nothing(tmp_path):
    config = settings_for(tmp_path, '[channels.C0123456789]\nname = "s"\ninstructions = "x"\n').channel_config
    assert config.default is None and config.for_channel("C0999999999") is None
    assert config.for_channel("C0123456789") is not None


def test_unset_means_no_instructions_anywhere():
    assert Settings.from_env(BASE).channel_config == ChannelConfig()
    assert ChannelConfig().for_channel("C0123456789") is None


def test_the_instructions_are_not_in_the_settings_repr(tmp_path):
    assert CANARY not in repr(settings_for(tmp_path, GOOD))


NAME = "channels.C0123456789.name"
ENTRY = f'name = "support"\ninstructions = "{CANARY}"\n'

BAD = [
    # (file text, where the one line must point, a word of the problem)
    (f'[default]\ninstructions = "{CANARY}"\nname = \n', "line 3, column 8", "not valid TOML"),
    (f"[channels.C0123456789]\n{ENTRY}[channels.C0123456789]\n{ENTRY}", "line 4, column 22", "twice"),
    (f'[default]\ninstructions = "{CANARY}', "end of document", "not valid TOML"),
    (f'[defaults]\ninstructions = "{CANARY}"\n', "defaults", "unknown table"),
    ('default = "Answer briefly."\n', "default", "must be a table"),
    ("channels = 5\n", "channels", "must be tables"),
    ('channels = { C0123456789 = "x" }\n', "channels.C0123456789", "must be a table"),
    (f'[default]\ninstructions = "{CANARY}"\nmodle = "claude-haiku-5-5"\n', "default.modle", "unknown key"),
    (f"[channels.D0123456789]\n{ENTRY}", "channels.D0123456789", "direct message"),
    (f"[channels.U0123456789]\n{ENTRY}", "channels.U0123456789", "not a Slack channel id"),
    (f"[channels.c0123456789]\n{ENTRY}", "channels.c0123456789", "not a Slack channel id"),
    (f'[channels."C0123456789\\nsupport"]\n{ENTRY}', 'channels."C0123456789\\nsupport"', "not a Slack"),
    ("[channels.C0123456789]\nname = 'support'\n", "channels.C0123456789.instructions", "required"),
    ('[default]\ninstructions = "  \\n "\n', "default.instructions", "empty"),
    ("[default]\ninstructions = 42\n", "default.instructions", "must be a string"),
    (f'[default]\ninstructions = "{CANARY}\\u0007"\n', "default.instructions", "control character"),
    (
        f'[default]\ninstructions = "{CANARY * (MAX_INSTRUCTIONS_CHARS // len(CANARY) + 1)}"\n',
        "default.instructions",
        "more than the 4,000 allowed",
    ),
    (f'[channels.C0123456789]\ninstructions = "{CANARY}"\n', "channels.C0123456789.name", "required"),
    (f'[channels.C0123456789]\nname = "sup\\nport"\ninstructions = "{CANARY}"\n', NAME, "label"),
    (f'[channels.C0123456789]\nname = "support team"\ninstructions = "{CANARY}"\n', NAME, "label"),
    (f'[channels.C0123456789]\nname = "{"s" * 41}"\ninstructions = "{CANARY}"\n', NAME, "at most 40"),
    (f'[channels.C0123456789]\nname = 7\ninstructions = "{CANARY}"\n', NAME, "must be a string"),
    (f'[default]\ninstructions = "{CANARY}"\nmodel = 5\n', "default.model", "must be a string"),
    (f'[default]\ninstructions = "{CANARY}"\nmodel = ""\n', "default.model", "not a model id"),
    (
        f'[channels.C0123456789]\n{ENTRY}model = "{RETAINED}"\n',
        "channels.C0123456789.model",
        f"{RETAINED} requires Anthropic to retain inputs and outputs for 30 days",
    ),
    ("", "file", "nothing to apply"),
    ("[channels]\n", "file", "nothing to apply"),
    (b'[default]\ninstructions = "caf\xe9"\n', "line 2", "not UTF-8"),
]


@pytest.mark.parametrize(
    ("text", "where", "problem"), BAD, ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD)]
)
def test_a_bad_file_is_one_line_naming_the_file_and_the_key_or_line(tmp_path, text, where, problem):
    message = error_for(tmp_path, text)
    assert message.startswith(f"CHANNEL_CONFIG: {tmp_path / 'channels.toml'}: {where}: "), message
    assert problem in message
    assert "\n" not in message
    assert CANARY not in message


def test_an_unreadable_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "CHANNEL_CONFIG": str(missing)})
    assert str(caught.value) == f"CHANNEL_CONFIG: {missing}: file: cannot read it: No such file or directory"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "CHANNEL_CONFIG": str(tmp_path)})
    assert str(caught.value) == f"CHANNEL_CONFIG: {tmp_path}: file: cannot read it: Is a directory"


def test_a_retained_model_is_used_only_when_the_operator_allows_retained_models(tmp_path):
    text = f'[default]\ninstructions = "{CANARY}"\nmodel = "{RETAINED}"\n'
    assert "ALLOW_RETAINED_MODELS=on" in error_for(tmp_path, text)
    assert "default.model" in error_for(tmp_path, text, ALLOW_RETAINED_MODELS="off")
    default = settings_for(tmp_path, text, ALLOW_RETAINED_MODELS="on").channel_config.for_channel(None)
    assert default is not None and default.model == RETAINED


def test_the_bot_exits_with_exactly_one_line_for_a_bad_file(tmp_path):
    path = tmp_path / "channels.toml"
    path.write_text(f"[channels.D0123456789]\n{ENTRY}")
    result = run_bot({**BASE, "CHANNEL_CONFIG": str(path)}, tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"configuration error: CHANNEL_CONFIG: {path}: channels.D0123456789: is a direct message's id; "
        "entries are for channels (C… or G…), DMs get [default]\n"
    )
    assert result.stdout == ""


# End to end: the channel's instructions reach Claude, its model answers, and only the name is logged.

SUPPORT_CHANNEL = "C0SUPPORT1"


@pytest.fixture
async def configured_bot(slack, claude, tmp_path):
    path = tmp_path / "channels.toml"
    path.write_text(
        f'[default]\ninstructions = "Answer briefly."\n'
        f'[channels.{SUPPORT_CHANNEL}]\nname = "support"\n'
        f'instructions = "You help the support team. {CANARY}"\nmodel = "claude-haiku-5-5"\n'
    )
    async with running_bot(slack, claude, {"CHANNEL_CONFIG": str(path)}) as running:
        yield running


async def ask(bot, channel: str, ts: str) -> dict:
    bot.slack.add_history(channel, [said(ALICE, "<@U0BOT> how do I reset it?", ts)])
    await bot.send_event(mention("<@U0BOT> how do I reset it?", ts=ts, channel=channel))
    [*_, request] = await bot.claude.wait_for_requests(len(bot.claude.requests) + 1)
    await bot.finished(count=len(bot.claude.requests))
    return request.body


async def test_a_channels_instructions_and_model_are_used_there_and_only_its_name_is_logged(
    configured_bot, caplog
):
    caplog.set_level(logging.DEBUG, logger="bot")  # our own lines (bot.logs holds third-party ones back)
    support = await ask(configured_bot, SUPPORT_CHANNEL, "40.000001")
    again = await ask(configured_bot, SUPPORT_CHANNEL, "41.000001")
    elsewhere = await ask(configured_bot, CHANNEL, "42.000001")

    assert support["system"].endswith(CHANNEL_INSTRUCTIONS + f"You help the support team. {CANARY}")
    assert support["system"] == again["system"]  # byte for byte: a cacheable prefix
    assert support["model"] == "claude-haiku-5-5"
    assert elsewhere["system"].endswith(CHANNEL_INSTRUCTIONS + "Answer briefly.")
    assert elsewhere["model"] == configured_bot.settings.claude_model
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "instructions=support" in logged and "model=claude-haiku-5-5" in logged
    assert "instructions=default" in logged
    assert CANARY not in logged


async def test_claude_policy_names_the_instructions_of_the_channel_it_is_run_in(configured_bot):
    here = await configured_bot.send_command("policy", channel_id=SUPPORT_CHANNEL)
    assert "*Instructions here:* `support`" in here["payload"]["text"]
    assert "claude-haiku-5-5" in here["payload"]["text"] and CANARY not in here["payload"]["text"]
    elsewhere = await configured_bot.send_command("policy", channel_id=CHANNEL)
    assert "*Instructions here:* `default`" in elsewhere["payload"]["text"]

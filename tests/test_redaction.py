"""Redaction: secrets, and personal data when chosen, become typed placeholders; ordinary text does not.

Token-shaped values are built here from obviously fake parts, so that no file holds a real-looking secret.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import PERSONAL_DATA
from bot.pipeline.ask import BotIdentity, SlackMessage
from bot.pipeline.prompt import build_prompt
from bot.pipeline.redaction import Redactor

ALL_PERSONAL = frozenset(PERSONAL_DATA)
CORPUS = Path(__file__).parent / "corpus" / "engineering_messages.txt"
FAKE = "FAKEfake0123456789"  # repeated and cut to length: token-shaped, plainly not a key


def fake(length: int) -> str:
    return (FAKE * (length // len(FAKE) + 1))[:length]


SLACK_BOT_TOKEN = "xoxb-" + "1" * 12 + "-" + "2" * 13 + "-" + fake(24)
SLACK_USER_TOKEN = "xoxp-" + "1" * 12 + "-" + "2" * 13 + "-" + "3" * 13 + "-" + "f" * 32
SLACK_APP_TOKEN = "xapp-1-A0FAKE-" + "4" * 13 + "-" + "a" * 64
ANTHROPIC_KEY = "sk-ant-api03-" + fake(93) + "AA"
AWS_KEY_ID = "AKIA" + "FAKE" * 3 + "0000"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKE" + "0" * 6
GITHUB_TOKEN = "ghp_" + fake(36)
GITHUB_PAT = "github_pat_" + fake(22) + "_" + fake(59)
GOOGLE_API_KEY = "AIza" + fake(35)


def redact(text: str, *, personal: frozenset[str] = frozenset()) -> str:
    return Redactor(personal=personal)(text)


# --- secrets -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"bot token {SLACK_BOT_TOKEN} leaked", "bot token [slack token 1] leaked"),
        (f"user token {SLACK_USER_TOKEN}", "user token [slack token 1]"),
        (f"SLACK_APP_TOKEN={SLACK_APP_TOKEN}", "SLACK_APP_TOKEN=[slack token 1]"),
        (
            f"rotating xoxe.xoxp-1-{fake(40)} and refresh xoxe-1-{fake(40)}",
            "rotating [slack token 1] and refresh [slack token 2]",
        ),
        (
            f"<https://hooks.slack.com/services/T0FAKE/B0FAKE/{fake(24)}>",
            "<https://hooks.slack.com/services/[slack token 1]>",
        ),
        (f"ANTHROPIC_API_KEY={ANTHROPIC_KEY}", "ANTHROPIC_API_KEY=[anthropic key 1]"),
        (f"the key id is {AWS_KEY_ID}.", "the key id is [aws key 1]."),
        (f"{AWS_KEY_ID} / {AWS_SECRET}", "[aws key 1] / [aws secret 1]"),
        (f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_access_key = [aws secret 1]"),
        (
            f"git clone https://{GITHUB_TOKEN}@github.com/acme/app",
            "git clone https://[github token 1]@github.com/acme/app",
        ),
        (f"GH_TOKEN={GITHUB_PAT}", "GH_TOKEN=[github token 1]"),
        (f"maps key {GOOGLE_API_KEY}", "maps key [google api key 1]"),
    ],
    ids=[
        "slack bot",
        "slack user",
        "slack app",
        "slack rotating",
        "slack webhook",
        "anthropic",
        "aws key id",
        "aws secret after key id",
        "aws secret labelled",
        "github classic",
        "github fine-grained",
        "google api key",
    ],
)
def test_secrets_with_a_known_shape_become_typed_placeholders(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("api_key=abc123def456ghi", "api_key=[api token 1]"),
        ('{"client_secret": "s3cr3t-Value-99"}', '{"client_secret": "[api token 1]"}'),
        ("  access_token: 9f8e7d6c5b4a3f2e1d0c", "  access_token: [api token 1]"),
        ("STRIPE_SECRET=rk_fake_9x8y7z6w5v4u", "STRIPE_SECRET=[api token 1]"),
        ("DB_PASSWORD=hunter2hunter2", "DB_PASSWORD=[password 1]"),
        ("password: 'P@ssw0rd!'", "password: '[password 1]'"),
        ('{\\"token\\": \\"abc123def456\\"}', '{\\"token\\": \\"[api token 1]\\"}'),
        (
            f"curl -H 'Authorization: Bearer {fake(40)}' https://api.example.com",
            "curl -H 'Authorization: Bearer [api token 1]' https://api.example.com",
        ),
        (
            "https://api.example.com/v1/items?api_key=abc123def456&page=2",
            "https://api.example.com/v1/items?api_key=[api token 1]&page=2",
        ),
    ],
    ids=[
        "name=value",
        "json",
        "yaml",
        "other vendor",
        "env password",
        "quoted password",
        "escaped json",
        "bearer",
        "query",
    ],
)
def test_values_assigned_to_credential_names_become_placeholders(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        'password = os.environ["DB_PASSWORD"]',
        "token = get_token()",
        "api_key = settings.ANTHROPIC_API_KEY",
        "const token = await getToken(scope);",
        "password: ${DB_PASSWORD}",
        "api_key: <your-key>",
        'api_key = "YOUR_API_KEY"',
        'secret: "xxxxxxxx"',
        "DB_PASSWORD=changeme",
        "token: TOKEN_PLACEHOLDER_123",
        "secret: Uint8Array",
        "if token == expected_token_2:",
        "max_tokens: 4096000",
        "token_type: bearer",
        "auth: required",
        "credentials: ~/.aws/credentials",
        "Authorization: Bearer ${token}",
        "SLACK_BOT_TOKEN=xoxb-your-token",
        "ANTHROPIC_API_KEY=sk-ant-...",
    ],
)
def test_code_and_templates_naming_credentials_without_a_value_pass_unchanged(text):
    assert redact(text, personal=ALL_PERSONAL) == text


def test_a_private_key_block_is_one_placeholder_across_its_lines():
    body = "\n".join(fake(64) for _ in range(5))
    key = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
    text = f"found this in the repo:\n```\n{key}\n```\nrotate?"

    assert redact(text) == "found this in the repo:\n```\n[private key 1]\n```\nrotate?"


def test_a_private_key_escaped_inside_json_and_a_truncated_one_to_the_end_are_replaced_too():
    escaped = '"private_key": "-----BEGIN PRIVATE KEY-----\\n' + fake(64) + '\\n-----END PRIVATE KEY-----\\n"'
    truncated = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n" + fake(70) + "\n" + fake(70) + "\n\nand then Slack cut it"
    )

    assert redact(escaped) == '"private_key": "[private key 1]\\n"'
    assert redact(truncated) == "[private key 1]"  # without an END, the rest of the message may be key


def test_a_password_in_a_url_is_replaced_and_the_rest_of_the_url_kept():
    text = "DATABASE_URL=postgres://app:Sup3r-s3cret@db.example.com:5432/orders?sslmode=require"

    assert (
        redact(text) == "DATABASE_URL=postgres://app:[password 1]@db.example.com:5432/orders?sslmode=require"
    )


def test_a_url_password_in_a_slack_link_is_the_same_placeholder_in_both_halves():
    link = "https://deploy:pa55word@ci.example.com/job"

    assert redact(f"<{link}|{link}>", personal=ALL_PERSONAL) == (
        "<https://deploy:[password 1]@ci.example.com/job|https://deploy:[password 1]@ci.example.com/job>"
    )


def test_a_key_in_a_labelled_slack_link_keeps_the_label_and_its_placeholder():
    redactor = Redactor()

    assert redactor("<https://x.example/?api_key=abc123def456ghi789|the dashboard>") == (
        "<https://x.example/?api_key=[api token 1]|the dashboard>"
    )
    assert redactor("again: <https://x.example/?api_key=abc123def456ghi789>") == (
        "again: <https://x.example/?api_key=[api token 1]>"
    )


def test_the_more_specific_kind_wins_when_a_named_value_has_a_known_shape():
    assert redact(f"api_key={ANTHROPIC_KEY}") == "api_key=[anthropic key 1]"
    assert redact(f"token: {SLACK_BOT_TOKEN}") == "token: [slack token 1]"


def test_the_longer_value_wins_so_no_part_of_a_secret_is_left():
    text = 'smtp_password: "ops.team@acme-mail.io#2024"'

    assert redact(text, personal=ALL_PERSONAL) == 'smtp_password: "[password 1]"'


def test_secrets_are_left_alone_when_secret_redaction_is_off():
    text = f"{SLACK_BOT_TOKEN} and alice@example.com"

    assert Redactor(secrets=False)(text) == text
    assert Redactor(secrets=False, personal=frozenset({"email"}))(text) == f"{SLACK_BOT_TOKEN} and [email 1]"


# --- as people paste them: Slack's escaping, quotes and bullets, wrappers and escapes -------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PGPASSWORD=Tr0ub4dor&amp;3 psql -h db", "PGPASSWORD=[password 1] psql -h db"),
        ('"password": "P@ss&lt;w&gt;99"', '"password": "[password 1]"'),
        (
            "if a &lt; b &amp;&amp; PGPASSWORD=Tr0ub4dor&amp;3 then &gt; log",
            "if a &lt; b &amp;&amp; PGPASSWORD=[password 1] then &gt; log",
        ),
        (
            "<https://api.example.com/v1/items?api_key=abc123def456&amp;page=2>",
            "<https://api.example.com/v1/items?api_key=[api token 1]&amp;page=2>",
        ),
        (f"&lt;{SLACK_BOT_TOKEN}&gt;", "&lt;[slack token 1]&gt;"),
    ],
    ids=["ampersand", "angle brackets", "escapes around it kept", "query parameter", "between escapes"],
)
def test_secrets_in_slacks_escaped_text_are_found_on_the_decoded_text_and_replaced_whole(text, expected):
    assert redact(text) == expected


def test_an_escaped_secret_and_the_same_secret_unescaped_share_a_placeholder():
    redactor = Redactor()

    assert redactor("PGPASSWORD=Tr0ub4dor&amp;3") == "PGPASSWORD=[password 1]"
    assert redactor("export PGPASSWORD=Tr0ub4dor&3") == "export PGPASSWORD=[password 1]"


def key_lines(prefix: str, *, end: bool = True) -> str:
    lines = ["-----BEGIN RSA PRIVATE KEY-----", fake(64), fake(64), fake(20)]
    if end:
        lines.append("-----END RSA PRIVATE KEY-----")
    return "\n".join(prefix + line for line in lines)


@pytest.mark.parametrize(
    "prefix", ["&gt; ", "• ", "◦ ", "- ", "* "], ids=["quote", "bullet", "sub-bullet", "dash", "star"]
)
def test_a_quoted_or_bulleted_private_key_is_removed_whole(prefix):
    text = f"found this:\n{key_lines(prefix)}\nis it still in use?"

    assert redact(text) == f"found this:\n{prefix}[private key 1]\nis it still in use?"


@pytest.mark.parametrize("prefix", ["", "&gt; ", "• "], ids=["plain", "quote", "bullet"])
def test_a_private_key_without_its_end_is_removed_to_the_end_of_the_message(prefix):
    text = f"cut off:\n{key_lines(prefix, end=False)}\n{prefix}and then Slack cut it"

    assert redact(text) == f"cut off:\n{prefix}[private key 1]"


def test_a_private_key_header_named_in_prose_takes_no_more_than_itself():
    text = "grep for -----BEGIN RSA PRIVATE KEY----- in the repo and rotate what you find"

    assert redact(text) == "grep for [private key 1] in the repo and rotate what you find"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"_{SLACK_BOT_TOKEN}_", "_[slack token 1]_"),
        (f"_{GITHUB_TOKEN}_", "_[github token 1]_"),
        (f"_{ANTHROPIC_KEY}_", "_[anthropic key 1]_"),
        (f"_{GOOGLE_API_KEY}_ and _{AWS_KEY_ID}_", "_[google api key 1]_ and _[aws key 1]_"),
        (
            f"https://example.com/search?q=key%20{SLACK_BOT_TOKEN}&page=1",
            "https://example.com/search?q=key%20[slack token 1]&page=1",
        ),
        (
            f"https://example.com/cb?next=%2Fhome%3Ftoken%3D{SLACK_BOT_TOKEN}%26x%3D1",
            "https://example.com/cb?next=%2Fhome%3Ftoken%3D[slack token 1]%26x%3D1",
        ),
        (f"q=%20{AWS_KEY_ID}", "q=%20[aws key 1]"),
        ('{"text": "use this\\n' + SLACK_BOT_TOKEN + '"}', '{"text": "use this\\n[slack token 1]"}'),
        ('{"env": "A=1\\n' + ANTHROPIC_KEY + '\\tB=2"}', '{"env": "A=1\\n[anthropic key 1]\\tB=2"}'),
    ],
    ids=[
        "italic slack",
        "italic github",
        "italic anthropic",
        "italic google and aws",
        "after %20",
        "after %3D",
        "aws after %20",
        "after \\n in json",
        "after \\n and before \\t",
    ],
)
def test_tokens_are_found_inside_italics_url_escapes_and_json_escapes(text, expected):
    assert redact(text) == expected


# --- more shapes, by family ----------------------------------------------------------------------------

HEX = "0123456789abcdef"


def fake_hex(length: int) -> str:
    return (HEX * (length // 16 + 1))[:length]


LETTERS = "FAKEfakeQWERTYqwerty"


def fake_letters(length: int) -> str:
    return (LETTERS * (length // len(LETTERS) + 1))[:length]


NEW_SHAPES = [
    ("xoxc-" + "1" * 10 + "-" + "2" * 13 + "-" + "3" * 13 + "-" + fake_hex(64), "slack token"),
    ("xoxd-" + fake(30) + "%2B" + fake(40) + "%2F" + fake(30) + "%3D%3D", "slack token"),
    ("glpat-" + fake(20), "gitlab token"),
    ("glpat-" + fake(27) + ".01.0" + fake_hex(8), "gitlab token"),
    ("glptt-" + fake_hex(40), "gitlab token"),
    ("gldt-" + fake(20), "gitlab token"),
    ("glrt-t1_" + fake(27) + ".01.1" + fake_hex(8), "gitlab token"),
    ("gloas-" + fake(64), "gitlab token"),
    ("glsoat-" + fake(20), "gitlab token"),
    ("glcbt-64_" + fake(20), "gitlab token"),
    ("glimt-" + fake(25), "gitlab token"),
    ("glagent-" + fake(50), "gitlab token"),
    ("glffct-" + fake(20), "gitlab token"),
    ("glft-" + fake(20), "gitlab token"),
    ("hf_" + fake_letters(34), "hugging face token"),
    ("whsec_" + fake(32), "webhook secret"),
    ("shpat_" + fake_hex(32), "shopify token"),
    ("shpss_" + fake_hex(32), "shopify token"),
    ("shpca_" + fake_hex(32), "shopify token"),
    ("shppa_" + fake_hex(32), "shopify token"),
    ("dop_v1_" + fake_hex(64), "digitalocean token"),
    ("doo_v1_" + fake_hex(64), "digitalocean token"),
    ("dor_v1_" + fake_hex(64), "digitalocean token"),
]


@pytest.mark.parametrize(("token", "label"), NEW_SHAPES, ids=[token[:6] for token, _ in NEW_SHAPES])
def test_tokens_of_each_known_family_become_typed_placeholders(token, label):
    assert redact(f"new one: {token} (rotate the old)") == f"new one: [{label} 1] (rotate the old)"
    assert redact(f"`{token}`") == f"`[{label} 1]`"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "DefaultEndpointsProtocol=https;AccountName=acmeprod;AccountKey="
            + fake(86)
            + "==;EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=acmeprod;AccountKey=[azure key 1];"
            "EndpointSuffix=core.windows.net",
        ),
        (
            "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
            "SharedAccessKey=" + fake(43) + "=",
            "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
            "SharedAccessKey=[azure key 1]",
        ),
        (
            "curl -u deploy:Sup3rS3cret-FAKE https://ci.example.com/api",
            "curl -u deploy:[password 1] https://ci.example.com/api",
        ),
        (
            "curl -s --user 'api:d2LkV78zFAKE!t' https://api.example.com/v2/messages",
            "curl -s --user 'api:[password 1]' https://api.example.com/v2/messages",
        ),
        (
            "curl -X POST https://ci.example.com/job \\\n  -H 'Accept: */*' \\\n  -u admin:fakepassword1",
            "curl -X POST https://ci.example.com/job \\\n  -H 'Accept: */*' \\\n  -u admin:[password 1]",
        ),
        (
            "mysql -h db.internal -u root -pS3cr3tFAKE orders",
            "mysql -h db.internal -u root -p[password 1] orders",
        ),
        (
            "mysqldump -uroot -p'hunter2FAKE' shop > dump.sql",
            "mysqldump -uroot -p'[password 1]' shop > dump.sql",
        ),
    ],
    ids=[
        "azure storage",
        "azure service bus",
        "curl -u",
        "curl --user quoted",
        "curl over lines",
        "mysql",
        "mysqldump",
    ],
)
def test_keys_in_connection_strings_and_passwords_on_command_lines_become_placeholders(text, expected):
    assert redact(text) == expected


def test_the_shapes_found_before_are_all_still_found():
    shapes = [
        (SLACK_BOT_TOKEN, "slack token"),
        (SLACK_USER_TOKEN, "slack token"),
        (SLACK_APP_TOKEN, "slack token"),
        ("xoxe.xoxp-1-" + fake(40), "slack token"),
        (ANTHROPIC_KEY, "anthropic key"),
        ("sk-proj-" + fake(48), "api token"),
        (GITHUB_TOKEN, "github token"),
        ("gho_" + fake(36), "github token"),
        (GITHUB_PAT, "github token"),
        ("sk_live_" + fake(24), "api token"),
        ("rk_test_" + fake(24), "api token"),
        (GOOGLE_API_KEY, "google api key"),
        ("npm_" + fake(36), "api token"),
        ("pypi-AgE" + fake(60), "api token"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJGQUtFIn0." + fake(30), "api token"),
        (AWS_KEY_ID, "aws key"),
    ]
    for token, label in shapes:
        assert redact(f"see {token} here") == f"see [{label} 1] here", token


# --- values after password-like names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=S3cr3tPass", "password=[password 1]"),
        ("JWT_SECRET=mysupersecretjwtkey", "JWT_SECRET=[api token 1]"),
        ("DB_PASS=hunter22", "DB_PASS=[password 1]"),
        ('"passwd": "qwerty"', '"passwd": "[password 1]"'),
        ("pwd: letmein99", "pwd: [password 1]"),
        ("pass: bluesky7", "pass: [password 1]"),
        ("SMTP_PASSWORD: bluesky", "SMTP_PASSWORD: [password 1]"),
        ("REDIS_PASSWORD=123456", "REDIS_PASSWORD=[password 1]"),
        ("password: correct-horse-battery-staple", "password: [password 1]"),
        ("GITHUB_TOKEN=sometokenvalue", "GITHUB_TOKEN=[api token 1]"),
        ("api_key: abcdefgh", "api_key: [api token 1]"),
        ("secret = 'tastyfish'", "secret = '[api token 1]'"),
        ('{"token": "abcdefg"}', '{"token": "[api token 1]"}'),
        ("https://example.com/hook?token=abcdefgh&id=7", "https://example.com/hook?token=[api token 1]&id=7"),
    ],
)
def test_any_real_looking_value_after_a_password_like_name_becomes_a_placeholder(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*Password:* Tr0ub4dor3xx", "*Password:* [password 1]"),
        ("*Password*: Tr0ub4dor3xx", "*Password*: [password 1]"),
        ("_db password:_ Tr0ub4dor3xx", "_db password:_ [password 1]"),
        ("~password~: Tr0ub4dor3xx", "~password~: [password 1]"),
        ("*API token:* 9f8e7d6c5b4a39281706f5e4", "*API token:* [api token 1]"),
        ("*password: Tr0ub4dor3xx*", "*password: [password 1]*"),
        ("~token=abcdefgh123~ and more", "~token=[api token 1]~ and more"),
    ],
    ids=["bold label", "bold name", "italic label", "struck name", "bold api token", "all bold", "struck"],
)
def test_a_value_after_a_label_in_bold_or_italics_becomes_a_placeholder(text, expected):
    """How people post a credential in Slack: the label in *bold*, the value after it."""
    assert redact(text) == expected


NEAR_MISSES = Path(__file__).parent / "corpus" / "near_misses.txt"


def near_misses() -> list[str]:
    return NEAR_MISSES.read_text(encoding="utf-8").split("\n%%\n")


def test_near_misses_pass_unchanged_with_every_kind_on():
    redactor = Redactor(secrets=True, personal=ALL_PERSONAL)

    changed = [(message, redactor(message)) for message in near_misses() if redactor(message) != message]

    assert changed == []


# --- placeholders across a conversation ----------------------------------------------------------------

BOT = BotIdentity(user_id="U0BOT", bot_id="B0BOT")
NAMES = {"U1": "Ada", "U2": "Grace"}
TOKEN_A = "xoxb-" + "1" * 12 + "-" + "2" * 13 + "-" + fake(24)
TOKEN_B = "xoxp-" + "1" * 12 + "-" + "2" * 13 + "-" + "3" * 13 + "-" + fake(32)
TOKEN_C = "xapp-1-A0FAKE-" + "4" * 13 + "-" + fake(64)


def build(messages, **kwargs):
    kwargs.setdefault("budget_tokens", 10_000)
    return build_prompt(messages, bot=BOT, names=NAMES, system="SYSTEM", redact=Redactor(), **kwargs)


def first_question():
    return [
        SlackMessage(ts="1.1", text=f"old token {TOKEN_A}", user="U1"),
        SlackMessage(ts="1.2", text=f"new token {TOKEN_B}, and {TOKEN_A} again", user="U2"),
        SlackMessage(ts="1.3", text="<@U0BOT> which of these still works?", user="U1"),
    ]


def test_placeholders_are_numbered_oldest_first_across_the_conversation():
    prompt = build(first_question())

    assert prompt.messages == [
        {
            "role": "user",
            "content": "Ada: old token [slack token 1]\n\n"
            "Grace: new token [slack token 2], and [slack token 1] again\n\n"
            "Ada: which of these still works?",
        }
    ]


def test_the_next_question_in_a_thread_renders_the_earlier_turns_byte_for_byte_the_same():
    first = build(first_question())
    second = build(
        [
            *first_question(),
            SlackMessage(ts="1.4", text="The second one.", user="U0BOT", bot_id="B0BOT"),
            SlackMessage(ts="1.5", text=f"<@U0BOT> and this one? {TOKEN_C} or {TOKEN_B}", user="U1"),
        ]
    )

    assert second.messages[0] == first.messages[0]
    assert second.messages[2]["content"] == "Ada: and this one? [slack token 3] or [slack token 2]"


def test_the_viewed_channel_does_not_change_how_the_thread_renders():
    viewed = [SlackMessage(ts="0.9", text=f"channel talk {TOKEN_C} and {TOKEN_B}", user="U2")]

    alone = build(first_question())
    with_channel = build(first_question(), viewed=viewed)

    assert with_channel.messages == alone.messages
    assert "channel talk [slack token 3] and [slack token 2]" in with_channel.system


# --- personal data -------------------------------------------------------------------------------------

PERSONAL_SAMPLES = [
    ("email", "write to alice.archer@example.com today", "write to [email 1] today"),
    ("email", "<mailto:Alice@Example.com|alice@example.com>", "<mailto:[email 1]|[email 1]>"),
    ("phone", "call +44 20 7946 0958 after 5", "call [phone 1] after 5"),
    ("phone", "US office (415) 555-2671 or 415-555-2671", "US office [phone 1] or [phone 1]"),
    ("phone", "Paris: 01 23 45 67 89", "Paris: [phone 1]"),
    ("card", "card 4111 1111 1111 1111 exp 12/29", "card [card 1] exp 12/29"),
    ("card", "amex 3782-822463-10005, visa 4012888888881881", "amex [card 1], visa [card 2]"),
    ("iban", "IBAN DE89 3704 0044 0532 0130 00 please", "IBAN [iban 1] please"),
    ("iban", "GB82WEST12345698765432", "[iban 1]"),
    ("national_id", "SSN 123-45-6789", "SSN [national id 1]"),
    (
        "national_id",
        "NI number QQ 12 34 56 C? no: AB 12 34 56 C",
        "NI number QQ 12 34 56 C? no: [national id 1]",
    ),
    (
        "national_id",
        "DNI 12345678Z, codice fiscale RSSMRA85T10A562S",
        "DNI [national id 1], codice fiscale [national id 2]",
    ),
    ("national_id", "Aadhaar 2345 6789 0124", "Aadhaar [national id 1]"),
]


@pytest.mark.parametrize(("kind", "text", "expected"), PERSONAL_SAMPLES)
def test_each_personal_kind_is_replaced_when_chosen(kind, text, expected):
    assert redact(text, personal=frozenset({kind})) == expected


@pytest.mark.parametrize(("kind", "text", "expected"), PERSONAL_SAMPLES)
def test_personal_data_is_left_alone_unless_its_kind_is_chosen(kind, text, expected):
    others = ALL_PERSONAL - {kind}

    assert expected != text
    assert redact(text) == text
    assert redact(text, personal=others) == text


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # Luhn fails
        "4111111111111112",
        "id 1234 5678 9012 3456",  # Luhn fails, and no issuer starts with 1
        "epoch ms 1712345678901, snowflake 1783342961234567890",  # no issuer starts with 1
        "IBAN DE89 3704 0044 0532 0130 01",  # mod 97 fails
        "GB82WEST12345698765431",
        "SSN 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567",  # areas and groups never issued
        "phone 123-456-7890",  # no US area code starts with 1
        "sizes 256 512 1024 2048",
        "dates 2024-03-12, 12/03/2024, 12.03.2024 and time 14:02:33",
        "due 05-11-2024 or 09 12 2023",  # also valid Italian phone numbers
        "artifact 415-555-2671-rc1, id 4111-1111-1111-1111-22",  # the tail of a longer token
        "version 10.20.30.40, build 1.0.0+20240312.1542",
        "git@github.com:acme/app.git and ssh deploy@bastion.prod.internal",
        "ssh ubuntu@ec2-3-120-0-1.eu-central-1.compute.amazonaws.com",
        "postgresql://app@db.internal:5432/checkout",
        "npm i lodash@4.17.21 @types/node@20.11.5",
    ],
)
def test_numbers_and_addresses_that_fail_their_checks_pass_unchanged(text):
    assert redact(text, personal=ALL_PERSONAL) == text


# --- placeholders --------------------------------------------------------------------------------------


def test_the_same_value_gets_the_same_placeholder_and_different_values_the_next_number():
    redactor = Redactor(personal=ALL_PERSONAL)

    first = redactor(f"{SLACK_BOT_TOKEN} from alice@example.com, cc bob@example.com")
    second = redactor(f"again: ALICE@example.com sent {SLACK_BOT_TOKEN}; new {SLACK_USER_TOKEN}")

    assert first == "[slack token 1] from [email 1], cc [email 2]"
    assert second == "again: [email 1] sent [slack token 1]; new [slack token 2]"


def test_a_number_written_two_ways_is_one_placeholder():
    redactor = Redactor(personal=ALL_PERSONAL)

    assert redactor("+1 415 555 2671 / (415) 555-2671") == "[phone 1] / [phone 1]"
    assert redactor("4111-1111-1111-1111 / 4111111111111111") == "[card 1] / [card 1]"


def test_a_new_redactor_starts_counting_again():
    assert Redactor()(SLACK_BOT_TOKEN) == Redactor()(SLACK_USER_TOKEN) == "[slack token 1]"


def test_counts_give_distinct_values_per_kind_and_never_the_values():
    redactor = Redactor(personal=ALL_PERSONAL)
    redactor(f"{SLACK_BOT_TOKEN} {SLACK_BOT_TOKEN} {SLACK_APP_TOKEN} alice@example.com")
    redactor(f"{AWS_KEY_ID} and IBAN GB82WEST12345698765432 and alice@example.com")

    assert redactor.counts == {"slack token": 2, "email": 1, "aws key": 1, "iban": 1}
    assert Redactor().counts == {}


def test_placeholders_are_never_nested_and_redacting_again_changes_nothing():
    text = (
        f"token={SLACK_BOT_TOKEN} url=https://u:{GITHUB_TOKEN}@example.com/x "
        "mail alice@example.com phone +44 20 7946 0958 card 4111 1111 1111 1111 "
        "iban DE89 3704 0044 0532 0130 00 ssn 123-45-6789 password: 'hunter2hunter2'"
    )
    redactor = Redactor(personal=ALL_PERSONAL)

    once = redactor(text)

    assert not re.search(r"\[[^\]]*\[", once), once
    assert redactor(once) == once
    assert Redactor(personal=ALL_PERSONAL)(once) == once
    assert sorted(redactor.counts) == [
        "card",
        "email",
        "iban",
        "national id",
        "password",
        "phone",
        "slack token",
    ]


# --- ordinary engineering messages ---------------------------------------------------------------------


def corpus() -> list[str]:
    return CORPUS.read_text(encoding="utf-8").split("\n%%\n")


def test_the_corpus_is_large_enough_to_mean_something():
    assert len(corpus()) >= 150


def test_ordinary_engineering_messages_pass_unchanged_with_every_kind_on():
    redactor = Redactor(secrets=True, personal=ALL_PERSONAL)

    changed = [(message, redactor(message)) for message in corpus() if redactor(message) != message]

    assert changed == []
    assert redactor.counts == {}

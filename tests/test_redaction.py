"""Redaction: secrets, and personal data when chosen, become typed placeholders; ordinary text does not.

Token-shaped values are built here from obviously fake parts, so that no file holds a real-looking secret.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import PERSONAL_DATA
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


def test_a_private_key_escaped_inside_json_and_a_truncated_one_are_replaced_too():
    escaped = '"private_key": "-----BEGIN PRIVATE KEY-----\\n' + fake(64) + '\\n-----END PRIVATE KEY-----\\n"'
    truncated = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n" + fake(70) + "\n" + fake(70) + "\n\nand then Slack cut it"
    )

    assert redact(escaped) == '"private_key": "[private key 1]\\n"'
    assert redact(truncated) == "[private key 1]\n\nand then Slack cut it"


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

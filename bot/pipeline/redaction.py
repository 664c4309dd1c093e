"""Redaction: secrets (and, if chosen, personal data) become typed placeholders before Claude sees them.

A Redactor lives for one request: the same value gets the same placeholder (`[email 1]`) within it,
numbered in the order it is called (the prompt calls it oldest message first), and its table of values
goes when the request ends. It runs on every message of the prompt, on the event loop, so a message
costs at most four precompiled regex scans, and checks run only on candidates. Slack stores & < > as
&amp; &lt; &gt;: a text holding "&" is searched decoded, and the spans found are mapped back, so that
`PGPASSWORD=Tr0ub4dor&amp;3` goes whole. Tokens are found inside Slack's bold, italics and strike,
after `%20` or `%3D` in a URL and after `\\n` in pasted JSON.

    secrets        one regex for every token family with a known shape (_SHAPES: Slack tokens and
                   cookies, Anthropic, OpenAI, AWS, GitHub, GitLab, Google, Stripe, npm, PyPI, Hugging
                   Face, webhook secrets, Shopify, DigitalOcean, SendGrid, JWT, Azure connection-string
                   keys, PEM private keys (quoted or bulleted too; a truncated one to the end of the
                   message), passwords in URLs and on curl and mysql command lines); one for `name =
                   value` where the name ends in a credential word: after a password-like one (password,
                   pass, pwd, secret, token, api_key…) any value of 6+ characters that is neither a
                   placeholder nor code (_assigned_secret), after the others only a value that looks
                   like a credential (_credential), so `token = get_token()` stays as it is
    email          anchored on "@"; logins to machines (git@github.com:, ssh ubuntu@) are not people
    phone, card,   one regex for all their shapes, then the check on each candidate: `phonenumbers`
    iban,          (libphonenumber's metadata) for phones; issuer prefix and Luhn for cards; country
    national_id    format and mod 97 for IBANs (`stdnum`); for national ids the US SSN rules, ES DNI/NIE,
                   IT codice fiscale and IN Aadhaar check characters (`stdnum`), and the UK NI number's
                   prefix rules (it has no check character)

Measured with `python -m benchmarks.redaction` on 200 KB of tests/corpus/engineering_messages.txt (2,363
messages, one call each; Python 3.11 on a busy 2-core machine): secrets only 6.2 ms, secrets and every
personal kind 11 ms (3.8 and 7.4 ms as one string); with a token, an address and a phone number in every
tenth message, 6.9 and 24 ms; with an escaped password in every tenth message, 8.4 and 14 ms (decoding a
message costs ~1.6 us, finding the password ~4 us). phonenumbers' own PhoneNumberMatcher needed 94-150
ms for that text and took CI run numbers for US phones, so here it only checks candidates (~20 us
each); stdnum's checks cost 3-15 us a candidate.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Final

import phonenumbers
from stdnum import iban, luhn
from stdnum.es import dni, nie
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.us import ssn

# A candidate: where it is, its rank (on the same span the lower rank wins), its label, and the key under
# which equal values share a placeholder. Each finder appends its candidates to a list.
Span = tuple[int, int, int, str, str]

# Python's regex engine skips fast to a pattern's first character only when the pattern starts with one
# character class, or with alternatives that each start with a literal; anything else (a lookbehind,
# a group) it tries at every position. So each regex here starts with a character rare in prose and
# checks what precedes it with a lookbehind.

# --- secrets with a known shape ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Shape:
    """A token family. Its branch starts at `first`, a character rare in prose; the family's `prefixes`
    (literal text right before `first`, such as "sk" before "-ant-") are checked by lookbehind and
    belong to the token. `part`: only that group is replaced, the rest is context (`AccountKey=`).
    `bounded`: the token starts at a boundary (`_starts_token`). `placeholders`: a template value
    (`$PASS`, `<password>`, `xoxd-your-cookie`) is left alone."""

    kind: str
    label: str
    first: str
    rest: str
    prefixes: tuple[str, ...] = ("",)
    part: str | None = None
    bounded: bool = True
    placeholders: bool = False


_TOKEN_CHARS = r"(?:[A-Za-z0-9]|-(?=[A-Za-z0-9]))"
_END = r"(?![A-Za-z0-9-]|_\w)"  # a closing "_" (Slack's italics) ends a token; "_x" goes on
_KEY_LINE = r"[\w\s+/=\\:,.>•◦▪*]"  # base64, PEM headers, escapes (\n) and quote (>) or bullet marks
_SHAPES: Final = (
    # BEGIN to END, possessively, so that a paste of many BEGIN lines stays linear; lines may start with a
    # quote (`&gt; `, decoded) or a bullet. Without an END (a truncated paste) the key runs to the end of
    # the message when key material follows the header; a header named in prose takes only itself.
    _Shape("private_key", "private key", "-", r"----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        rf"(?:(?:{_KEY_LINE}|-(?!----))*+-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"|(?=(?:\s|\\[nr])*+(?:[>•◦▪*-]\s*+)?(?:[A-Za-z0-9+/=]{16}|(?:Proc-Type|DEK-Info|Comment):))[\s\S]*+"
        r"|)", bounded=False),
    _Shape("anthropic_key", "anthropic key", "-", r"ant-[\w-]{20,}", ("sk",)),
    _Shape("openai_key", "api token", "-", r"(?:proj-|svcacct-|admin-)?[\w-]{40,}", ("sk",)),
    _Shape("pypi_token", "api token", "-", r"AgE[\w-]{50,}", ("pypi",)),
    # GitLab's family: personal, pipeline trigger, deploy, runner, OAuth app, SCIM, CI job, incoming mail,
    # agent, feature flag and feed tokens; newer ones carry a routing suffix after dots.
    _Shape("gitlab_token", "gitlab token", "-", r"[\w-]{20,}(?:\.[\w-]+)*", ("glpat", "glptt", "gldt", "glrt",
        "gloas", "glsoat", "glcbt", "glimt", "glagent", "glffct", "glft")),
    _Shape("gitlab_runner_registration", "gitlab token", "G", r"R1348941[\w-]{20,}"),
    # Passwords on command lines: `curl -u user:pass` and `mysql -pPASS`, when the line names the command.
    _Shape("command_password", "password", "-",
        r"(?<=\s-)(?:(?:u|-user)(?:=|[ \t]{1,5})['\"]?[^\s:'\"]{0,128}:|p['\"]?(?=[^\s'\"-]))"
        r"(?P<option_password>[^\s'\"]{1,256})", part="option_password", bounded=False, placeholders=True),
    # Slack: xoxb, xoxp, xoxe (and rotating xoxe.xoxp), xoxa, xoxr, xoxs, xoxc session tokens, xapp;
    # xoxd session cookies are URL-encoded.
    _Shape("slack_cookie", "slack token", "x", r"oxd-[\w%+/=-]{30,}", placeholders=True),
    _Shape("slack_token", "slack token", "x", rf"(?:ox[a-z]|app)-\d{_TOKEN_CHARS}{{8,}}"
        rf"|oxe\.xox[bp]-\d{_TOKEN_CHARS}{{8,}}"),
    _Shape("slack_webhook", "slack token", "/", r"(?<=hooks\.slack\.com/)(?:services|workflows|triggers)/"
        r"(?P<webhook_secret>[\w-]+(?:/[\w-]+){1,3})", part="webhook_secret", bounded=False),
    # scheme://user:password@host: only the password goes.
    _Shape("url_password", "password", "/", r"(?<=[A-Za-z0-9]:/)/[^\s:/?#@<>|\"'`]{0,128}:"
        r"(?P<password_in_url>[^\s/?#@<>|\"'`]{1,256})@(?=[\w\[])", part="password_in_url", bounded=False,
        placeholders=True),
    # Azure connection strings (storage, Service Bus, Event Hubs, IoT Hub): only the key goes.
    _Shape("azure_key", "azure key", "K",
        r"ey=(?P<azure_key_value>[A-Za-z0-9+/]{20,}={0,2})(?![A-Za-z0-9+/=])", ("Account", "SharedAccess"),
        part="azure_key_value", placeholders=True),
    _Shape("aws_key", "aws key", "A", rf"(?:KIA|SIA|BIA|CCA)[A-Z0-9]{{16}}{_END}"),
    _Shape("google_api_key", "google api key", "A", rf"Iza[\w-]{{35}}{_END}"),
    _Shape("github_token", "github token", "_", rf"[A-Za-z0-9]{{30,}}{_END}",
        ("ghp", "gho", "ghu", "ghs", "ghr")),
    _Shape("github_pat", "github token", "_", r"pat_[A-Za-z0-9_]{30,}", ("github",)),
    _Shape("stripe_key", "api token", "_", r"(?:live|test)_[0-9A-Za-z]{16,}", ("sk", "rk")),
    _Shape("npm_token", "api token", "_", rf"[A-Za-z0-9]{{36}}{_END}", ("npm",)),
    _Shape("huggingface_token", "hugging face token", "_", rf"[A-Za-z0-9]{{30,}}{_END}", ("hf", "api_org")),
    _Shape("webhook_signing_secret", "webhook secret", "_", r"[A-Za-z0-9+/=]{24,}", ("whsec",)),  # Stripe…
    _Shape("shopify_token", "shopify token", "_", rf"[a-fA-F0-9]{{32}}{_END}", ("shpat", "shpss", "shpca",
        "shppa")),
    _Shape("digitalocean_token", "digitalocean token", "_", rf"[a-f0-9]{{64}}{_END}", ("dop_v1", "doo_v1",
        "dor_v1")),
    _Shape("google_token", "google token", "y", r"a29\.[\w-]{20,}"),
    _Shape("google_client_secret", "google token", "G", r"OCSPX-[\w-]{20,}"),
    _Shape("sendgrid_key", "api token", "S", rf"G\.[\w-]{{22}}\.[\w-]{{43}}{_END}"),
    _Shape("jwt", "api token", "J", r"[\w-]{5,}\.eyJ[\w-]{8,}\.[\w-]{8,}", ("ey",)),
)  # fmt: skip


def _by_first_character(shapes: Iterable[_Shape]) -> re.Pattern[str]:
    """`-(?:(?P<private_key>…)|(?P<anthropic_key>(?<=sk-)…)…)|x(?P<slack_token>…)|…`, in the order given."""
    groups: dict[str, list[str]] = {}
    for shape in shapes:
        by_length: dict[int, list[str]] = {}  # one lookbehind per length: fewer to try at each candidate
        for prefix in shape.prefixes:
            if prefix:
                by_length.setdefault(len(prefix), []).append(re.escape(prefix + shape.first))
        lookbehinds = "|".join(f"(?<={'|'.join(same)})" for same in by_length.values())
        groups.setdefault(shape.first, []).append(
            f"(?P<{shape.kind}>{f'(?:{lookbehinds})' if lookbehinds else ''}(?:{shape.rest}))"
        )
    return re.compile("|".join(f"{re.escape(first)}(?:{'|'.join(rests)})" for first, rests in groups.items()))


_SHAPED: Final = _by_first_character(_SHAPES)
_SHAPE_OF: Final = {shape.kind: shape for shape in _SHAPES}
_AWS_SECRET_NEAR: Final = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
# The command that `-u` (`--user`) and `-p` give a password to, by the character after the first "-".
_CURL: Final = re.compile(r"\bcurl\b")
_COMMAND_OF_OPTION: Final = {"u": _CURL, "-": _CURL, "p": re.compile(r"\b(?:mysql|mariadb)")}


def _shaped(text: str, found: list[Span]) -> None:
    for match in _SHAPED.finditer(text):
        kind = match.lastgroup  # the branch's group: it closes after any group inside it
        if kind is None:
            continue
        shape = _SHAPE_OF[kind]
        begins, end = match.start(kind) - 1, match.end(kind)  # - 1: the first character
        if shape.prefixes != ("",):  # the lookbehind matched one of them; the token starts where it does
            begins -= next(len(p) for p in shape.prefixes if text.startswith(p, begins - len(p)))
        if shape.bounded and not _starts_token(text, begins):
            continue
        start, end = match.span(shape.part) if shape.part else (begins, end)
        if text[end - 1] == "_" and text[start - 1 : start] == "_":  # _token_: Slack's italics
            end = start + len(text[start:end].rstrip("_"))
        value = text[start:end]
        if shape.placeholders and _placeholder(value):
            continue
        if kind == "command_password" and not _COMMAND_OF_OPTION[text[begins + 1]].search(
            _command_before(text, begins)
        ):
            continue  # not on a curl or mysql line: `docker run -u 1000:1000` gives no password
        found.append((start, end, 0, shape.label, value))
        if kind == "aws_key":  # its secret key is often pasted right after it; mixed case, unlike a SHA-1
            near = _AWS_SECRET_NEAR.search(text, end, end + 200)
            if near and any(c.islower() for c in near[0]) and any(c.isupper() for c in near[0]):
                found.append((near.start(), near.end(), 0, "aws secret", near[0]))


def _starts_token(text: str, start: int) -> bool:
    """Not the tail of a longer word; but after `%20` or `%3D` in a URL, or `\\n` in pasted JSON, it is."""
    if start == 0:
        return True
    before = text[start - 1]
    if not (before.isascii() and (before.isalnum() or before == "-")):
        return True
    if start >= 3 and text[start - 3] == "%":
        return all(c in _HEX_DIGITS for c in text[start - 2 : start])
    return start >= 2 and text[start - 2] == "\\" and before in "nrt"


def _command_before(text: str, at: int) -> str:
    """The command line up to `at`: its line, and the lines before it that end in a continuation `\\`."""
    line_start = text.rfind("\n", 0, at) + 1
    while line_start > 1 and text[line_start - 2] == "\\":
        line_start = text.rfind("\n", 0, line_start - 1) + 1
    return text[line_start:at]


# --- secrets by name: `name = value` -------------------------------------------------------------------

# The name has to end in one of these, in any case: `DB_PASSWORD=` and `"apiKey":` count, `max_tokens:`
# and `token_type:` do not. After a password-like name any real-looking value goes (_assigned_secret);
# after the others only a value that looks like a credential (_credential).
_PASSWORD_NAMES: Final = ("password", "passwd", "pwd", "passphrase", "pass")  # -> [password n]
_PASSWORD_LIKE_NAMES: Final = (
    *_PASSWORD_NAMES, "secret", "token", "api_key", "api-key", "apikey",
    "secret_key", "secret-key", "secretkey",
)  # fmt: skip
_NAME_ENDINGS: Final = (
    *_PASSWORD_LIKE_NAMES,
    "secret_access_key", "secretaccesskey",  # -> [aws secret n] if the value has a secret key's shape
    "access_key", "accesskey", "private_key", "privatekey", "signing_key", "auth", "authorization",
    "credential", "credentials",
)  # fmt: skip


_Trie = dict[str, "_Trie"]


def _trie(words: Iterable[str]) -> str:
    """A regex for any of the words in any case, as a trie of character classes, longest first."""
    root: _Trie = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def branch(node: _Trie) -> str:
        options = [
            (f"[{char}{char.upper()}]" if char.isalpha() else re.escape(char)) + branch(child)
            for char, child in node.items()
            if char
        ]
        if not options:
            return ""
        body = options[0] if len(options) == 1 else f"(?:{'|'.join(options)})"
        return f"(?:{body})?" if "" in node else body

    return branch(root)


# Searched on the reversed text, so that the scan starts at a rare `=` or `:` and reads the name
# backwards; a forward search would try the name at every letter. A name may end its bold or italics
# before the operator (`*Password*: …`), and the operator its own (`*Password:* …`).
_NAMED: Final = re.compile(
    r"[:=]\s{0,3}[*_~]{0,2}[\"']?\\?(?P<name>" + _trie(n[::-1] for n in _NAME_ENDINGS) + ")"
)
# A quoted value runs to its closing quote and may hold any symbol (`"P@ss<w>99"`); an unquoted one
# stops at what ends a value in code, a shell, a URL or a Slack link (`&` only before another `name=`).
_VALUE: Final = re.compile(
    r"[=>]?(?:[*_~]{1,2}(?=\s))?\s{0,3}\\?(?:(?P<quote>[\"'`])(?:(?i:bearer|token|basic|bot|apikey)\s+)?"
    r"(?P<quoted>[^\s\"'`\\]{6,256})"
    r"|(?:(?i:bearer|token|basic|bot|apikey)\s+)?"
    r"(?P<bare>(?:[^\s\"'`\\,;&<>|()\[\]{}=]|&(?![\w.-]+=)){6,256}={0,2}))"  # "=" only as base64 padding
)
_AWS_SECRET: Final = re.compile(r"[A-Za-z0-9/+=]{40}")
_IDENTIFIER_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _named(text: str, found: list[Span]) -> None:
    backwards = text[::-1]
    size = len(text)
    verdicts: dict[tuple[str, bool], bool] = {}  # for this text only: a log repeats its values
    for match in _NAMED.finditer(backwards):
        after_operator = size - match.start()
        operator = after_operator - 1
        if text.startswith("=", after_operator) and text[operator] == "=":
            continue  # token == other: a comparison
        value = _VALUE.match(text, after_operator)
        if value is None:
            continue
        quoted = value["quoted"] is not None
        start, end = value.span("quoted" if quoted else "bare")
        closing = text[end : end + 2].lstrip("\\")[:1]  # the closing quote, maybe escaped (JSON in JSON)
        if quoted and closing != value["quote"]:
            continue  # a quoted value with spaces in it is prose or a template, not one token
        if not quoted and closing in ("(", "[", "{", "."):
            continue  # get_token(), os.environ["X"]: code, not a value
        secret = text[start:end]
        if not quoted and secret.endswith(".") and not secret.endswith("..."):
            end = start + len(secret.rstrip("."))  # the end of a sentence
            secret = text[start:end]
        if not quoted and secret.endswith(("*", "~")):
            end = start + len(secret.rstrip("*~"))  # the end of bold or strike around it
            secret = text[start:end]
        name_end = size - match.start("name")
        name_start = name_end - len(match["name"])
        name = text[name_start:name_end].lower()
        if text[name_start - 1 : name_start] == ":":
            continue  # arn:aws:secretsmanager:…:secret:prod/db: a part of a name, not a key
        if (
            name == "pass"
            and name_start > 0
            and text[name_start - 1].isalpha()
            and not (text[name_start - 1].islower() and text[name_start] == "P")
        ):
            continue  # bypass, compass; but dbPass, DB_PASS
        loose = name == "authorization"
        verdict = verdicts.get((secret, loose))
        if verdict is None:
            verdict = verdicts[secret, loose] = _credential(secret, loose=loose)
        if not verdict and name in _PASSWORD_LIKE_NAMES:
            whole = _whole_name(text, name_start, name_end)
            literal = quoted or (whole.isupper() and "-" not in whole)  # "…", or an environment variable
            spaced = text[operator] == "=" and text[operator - 1 : operator].isspace()
            verdict = _assigned_secret(
                secret, text, end, password=name in _PASSWORD_NAMES, literal=literal, spaced=spaced
            )
        if not verdict:
            continue
        if name in _PASSWORD_NAMES:
            found.append((start, end, 1, "password", secret))
        elif name.startswith("secret") and "access" in name and _AWS_SECRET.fullmatch(secret):
            found.append((start, end, 1, "aws secret", secret))
        else:
            found.append((start, end, 1, "api token", secret))


def _whole_name(text: str, start: int, end: int) -> str:
    """`JWT_SECRET` around its ending `SECRET`: what decides whether it is an environment variable."""
    while start > 0 and end - start < 64 and text[start - 1] in _IDENTIFIER_CHARS:
        start -= 1
    return text[start:end]


_PLACEHOLDER_WORDS: Final = frozenset(
    {
        "changeme", "change_me", "changeit", "password", "passwd", "secret", "token", "apikey", "api_key",
        "example", "redacted", "placeholder", "dummy", "sample", "null", "none", "undefined", "notset",
        "required", "optional", "string", "test", "pass",
        # types in annotations (`password: string`, `secret: Buffer`) and states (`token: expired`)
        "number", "boolean", "object", "buffer", "bytes", "integer", "unknown", "secretstr",
        "expired", "invalid", "missing", "revoked", "rotated", "disabled", "enabled", "default", "hidden",
        "masked", "encrypted", "generated", "provided", "omitted", "removed", "empty", "blank",
    }
)  # fmt: skip
_PLACEHOLDER_PARTS: Final = ("...", "your", "example", "redacted", "placeholder", "changeme", "xxxx", "***")
_DOTTED_NAME: Final = re.compile(r"[A-Za-z_$][\w$]{0,30}(?:\.[A-Za-z_$][\w$]{0,30})+")  # os.environ, cfg.KEY
_YAML_TAG: Final = re.compile(r"!!?[A-Za-z_]+")
_SLUG: Final = re.compile(r"[a-z]+\d*(?:-[a-z]+\d*)+")  # oauth2-v3-flow: the name of a thing
# Names in code: snake_case and camelCase of word parts (`access_token`, `Uint8Array`), unlike `S3cr3tPass`.
_CODE_NAME: Final = re.compile(r"_?[A-Za-z][a-z]*\d*(?:(?:_+[A-Za-z]|[A-Z])[a-z]*\d*)+")
_HUMP: Final = re.compile(r"[a-z0-9][A-Z]")
_WORD: Final = re.compile(r"[A-Za-z][a-z]+")
_PROSE_AFTER: Final = re.compile(r" +[a-z]+\b")


_LETTER: Final = re.compile(r"[^\W\d_]")
_DIGIT: Final = re.compile(r"\d")
_SYMBOL: Final = re.compile(r"[^\w.-]")


def _placeholder(value: str) -> bool:
    """A template, not a value: `<your-key>`, `${VAR}`, `{{ var }}`, `%(name)s`, `$VAR`, `[PASSWORD]`,
    one character repeated (`********`), or a word such as `changeme`. (Plain string tests: a regex
    search here cost 4 us a candidate.)"""
    lowered = value.lower()
    return (
        lowered in _PLACEHOLDER_WORDS
        or value[0] in "<{$%["
        or value[-1] in ">}]"
        or value.count(value[0]) == len(value)
        or any(part in lowered for part in _PLACEHOLDER_PARTS)
    )


def _names_a_thing(value: str) -> bool:
    """A path, a URL, an ARN, a YAML tag (`!vault`) or a dotted name (`os.environ`, `settings.KEY`): it
    refers to a value."""
    return (
        value[0] in "/~."
        or "://" in value
        or value[:4].lower() in ("arn:", "urn:")
        or bool(_YAML_TAG.fullmatch(value) or _DOTTED_NAME.fullmatch(value))
    )


def _credential(value: str, *, loose: bool = False) -> bool:
    """Does an assigned value look like a credential, rather than code, prose, a path or a template?

    It needs 8 characters or more, a letter, and a digit or a symbol: `hunter2hunter2`, `s3cr3t!`,
    `abc123def456`. Plain words (`required`, `YOUR_API_KEY`), code-shaped names with a digit or two
    (`Uint8Array`), slugs (`oauth2-v3-flow`), names of other values (`os.environ`, `settings.KEY`, an
    ARN), paths, URLs, numbers and placeholders (`<your-key>`, `${VAR}`, `xxxxxxxx`, `changeme`) are left
    alone. `loose`, after `Authorization:`, drops the digit-or-symbol rule: any token-shaped value there
    is a credential.
    """
    if len(value) < 8 or _placeholder(value) or _names_a_thing(value) or _SLUG.fullmatch(value):
        return False
    if not _LETTER.search(value):
        return False
    if loose or _SYMBOL.search(value):
        return True
    digits = len(_DIGIT.findall(value))
    if value.isidentifier():
        return digits >= 3 or (digits >= 2 and len(value) >= 14)
    return digits >= 1


def _assigned_secret(value: str, text: str, end: int, *, password: bool, literal: bool, spaced: bool) -> bool:
    """After a password-like name: any value of 6 or more characters that is not a placeholder or code.

    `literal`: quoted, or given to an environment variable (`JWT_SECRET=mysupersecretjwtkey`). Otherwise
    code's own names stay: `token = access_token`, `secret: Uint8Array`, `let token = response` (a single
    word only after a spaced `=`), and so does prose (`Password: forgotten again`). Only a password may
    be all digits (`max_token: 4096000` is a number).
    """
    if len(value) < 6 or _placeholder(value) or _names_a_thing(value):
        return False
    if not password and not _LETTER.search(value):
        return False
    if literal:
        return True
    if _CODE_NAME.fullmatch(value) and ("_" in value or _HUMP.search(value)):
        return False
    word = _WORD.fullmatch(value) is not None
    return not (word and (spaced or _PROSE_AFTER.match(text, end)))


# --- personal data -------------------------------------------------------------------------------------

_EMAIL: Final = re.compile(
    r"@(?<=[A-Za-z0-9._%+-]@)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}(?P<tld>[A-Za-z]{2,24})"
    r"(?![A-Za-z0-9-]|\.[A-Za-z0-9])"
)
_EMAIL_LOCAL: Final = re.compile(r"[A-Za-z0-9._%+-]{1,64}\Z")
_URL_AUTHORITY_END: Final = re.compile(r"[\s/<>|]")
# Not a person's address: logins to machines, and hosts only a private network knows.
_MACHINE_ACCOUNTS: Final = frozenset(
    {"git", "root", "ubuntu", "ec2-user", "centos", "debian", "admin", "deploy", "jenkins", "postgres"}
)
_PRIVATE_TLDS: Final = frozenset(
    {"internal", "local", "localdomain", "localhost", "lan", "corp", "home", "intranet", "private"}
)


def _emails(text: str, found: list[Span]) -> None:
    for match in _EMAIL.finditer(text):
        at, end = match.span()
        local = _EMAIL_LOCAL.search(text, max(0, at - 64), at)
        if local is None:
            continue
        start = local.start()
        while start < at and text[start] in "._%+-":  # "(-alice@…": the run began with punctuation
            start += 1
        if start == at or text[start:at].lower() in _MACHINE_ACCOUNTS:
            continue
        if match["tld"].lower() in _PRIVATE_TLDS:
            continue
        scheme = text.rfind("://", max(0, start - 256), start)
        if scheme != -1 and not _URL_AUTHORITY_END.search(text, scheme + 3, start):
            continue  # postgres://app@db…: a URL's user
        if text.startswith(":", end) and end + 1 < len(text) and not text[end + 1].isspace():
            continue  # git@github.com:org/repo.git, user@host:/path
        found.append((start, end, 2, "email", text[start:end].lower()))


# Number-like personal data, by the class of its first character; each class has a cheap lookahead
# that turns away most tokens starting with it (short numbers, ordinary capitalised words).
#   (kind, name, first character, the rest)
_NUMBERS: Final = (
    ("card", "card", "[2-6]", r"\d{12,18}"  # unseparated
        r"|\d{3}(?P<c1>[ -])\d{4}(?P=c1)\d{4}(?P=c1)\d{4}(?:(?P=c1)\d{3})?"  # 4-4-4-4(-3)
        r"|(?<=3)\d{3}(?P<c2>[ -])\d{6}(?P=c2)\d{4,5}"),  # Amex 4-6-5, Diners 4-6-4
    ("national_id", "ssn", "[0-9]", r"\d{2}-\d{2}-\d{4}"),  # US; stdnum refuses 000, 666, 9xx, known fakes
    ("national_id", "dni", "[0-9]", r"\d{7}-?[A-Z]"),  # Spain, check letter
    ("national_id", "aadhaar", "[2-9]", r"\d{3}(?P<a1>[ -])\d{4}(?P=a1)\d{4}"),  # India, Verhoeff
    # Phones, never inside a list of numbers ("sizes 256 512 1024"):
    ("phone", "phone_nanp", "[0-9]", r"(?<!\d .)(?:(?<=1)[.-]\d{3}|\d{2})(?P<p1>[.-])\d{3}(?P=p1)\d{4}"),
    ("phone", "phone_national", "[0]", r"(?<!\d .)\d{1,4}(?:[ -]\d{2,8}){1,4}"),  # trunk 0: 020 7946 0958
    ("phone", "phone_international", "[+]",  # +44 20 7946 0958, +1 (415) 555-2671
        r"(?<!\d .)\d{1,3}(?>(?:[ .-]?\(\d{1,4}\)|[ .-]?\d{1,5}){1,5})"),
    ("phone", "phone_parenthesised", "[(]", r"(?<!\d .)\d{3}\) ?\d{3}[ .-]\d{4}"),  # (415) 555-2671
    ("iban", "iban", "[A-Z]", r"[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"),
    ("national_id", "nie", "[XYZ]", r"-?\d{7}-?[A-Z]"),  # Spain, foreigners, check letter
    ("national_id", "nino", "[A-CEGHJ-PR-TW-Z]",  # UK NI number: no check character, but prefix rules
        r"[A-CEGHJ-NPR-TW-Z](?<!BG|GB|KN|NK|NT|TN|ZZ)(?: ?\d{2}){3} ?[A-D]"),
    ("national_id", "codice_fiscale", "[A-Z]", r"[A-Z]{5}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]"),  # Italy
)  # fmt: skip
_FAMILIES: Final = {  # class of first characters -> what must follow it
    "0-9": r"(?=(?:[ .()-]?\d){7})",  # 7 more digits: every digit shape has 8 or more
    "A-Z": r"(?=[A-Z] ?\d|-?\d|[A-Z]{5}\d)",
    "+": "",
    "(": "",
}
_FAMILY_OF: Final = {"[2-6]": "0-9", "[0-9]": "0-9", "[2-9]": "0-9", "[0]": "0-9", "[+]": "+", "[(]": "("}
_NOT_AFTER = r"(?<![\w\-.,/:#=@+$€£].)"  # not the tail of a version, path, time, amount, hash or id
_NUMBER_END = r"(?![\w\-+@]|[.:/,]\d| \d)"


@cache
def _numbers_regex(kinds: frozenset[str]) -> re.Pattern[str] | None:
    families: dict[str, list[str]] = {}
    for kind, name, first, rest in _NUMBERS:
        if kind in kinds:
            family = _FAMILY_OF.get(first, "A-Z")
            families.setdefault(family, []).append(f"(?<={first})(?P<{name}>{rest})")
    if not families:
        return None
    classes = {family: re.escape(family) if len(family) == 1 else family for family in families}
    body = "|".join(
        f"(?<=[{classes[family]}]){_FAMILIES[family]}(?:{'|'.join(branches)})"
        for family, branches in families.items()
    )
    return re.compile(f"[{''.join(classes.values())}]{_NOT_AFTER}(?:{body}){_NUMBER_END}")


def _numbers(text: str, pattern: re.Pattern[str], found: list[Span]) -> None:
    for match in pattern.finditer(text):
        kind, raw = match.lastgroup, match[0]
        if kind is None:
            continue
        if kind.startswith("phone"):
            key = _phone(raw)
            if key:
                found.append((match.start(), match.end(), 3, "phone", key))
        elif kind == "card":
            digits = raw.replace(" ", "").replace("-", "")
            if _card_issuer(digits) and luhn.is_valid(digits):
                found.append((match.start(), match.end(), 3, "card", digits))
        elif kind == "iban":
            for _ in range(3):  # the greedy match may have taken a word or two after it: "… 0130 00 OK"
                compact = raw.replace(" ", "")
                if _mod_97(compact) and iban.is_valid(compact):
                    found.append((match.start(), match.start() + len(raw), 3, "iban", compact))
                    break
                if " " not in raw:
                    break
                raw = raw.rsplit(" ", 1)[0]
        elif _NATIONAL_ID_CHECKS[kind](raw):
            found.append(
                (match.start(), match.end(), 3, "national id", raw.replace(" ", "").replace("-", ""))
            )


def _mod_97(compact: str) -> bool:
    """ISO 7064 mod 97-10, the IBAN's check digits: a quick filter before stdnum checks the country format."""
    if len(compact) < 15:
        return False
    return int((compact[4:] + compact[:4]).translate(_BASE_36)) % 97 == 1


_BASE_36: Final = {ord(letter): str(value) for value, letter in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10)}


_DATE: Final = re.compile(r"\d{1,2}[ ./-]\d{1,2}[ ./-]\d{4}|\d{4}[ ./-]\d{1,2}[ ./-]\d{1,2}")
_TRUNK_0_REGIONS: Final = ("GB", "DE", "FR", "NL", "IT", "ES", "AU", "IE", "IN")


def _phone(raw: str) -> str | None:
    """The number in E.164 if libphonenumber finds it valid, so that one number is one placeholder."""
    if not 8 <= sum(c.isdigit() for c in raw) <= 15 or _DATE.fullmatch(raw):
        return None
    regions: tuple[str | None, ...] = ("US",)
    if raw[0] == "+":
        regions = (None,)
    elif raw[0] == "0":
        regions = _TRUNK_0_REGIONS
    for region in regions:
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def _card_issuer(digits: str) -> bool:
    """An issuer prefix with its lengths: Visa, Mastercard, Amex, Discover, Diners, JCB, UnionPay, Maestro."""
    first, two, four, n = digits[0], int(digits[:2]), int(digits[:4]), len(digits)
    if first == "4":
        return n in (13, 16, 19)
    if first == "5":
        return n == 16 if 51 <= two <= 55 else 12 <= n <= 19
    if first == "6":
        return 16 <= n <= 19
    if first == "3":
        return (
            (two in (34, 37) and n == 15)
            or (two in (30, 36, 38, 39) and 14 <= n <= 19)
            or (3528 <= four <= 3589 and 16 <= n <= 19)
        )
    return (2221 <= four <= 2720 or 2200 <= four <= 2204) and n == 16


def _shape_only(value: str) -> bool:
    return bool(value)


_NATIONAL_ID_CHECKS: Final[dict[str, Callable[[str], bool]]] = {
    "ssn": ssn.is_valid,
    "dni": dni.is_valid,
    "nie": nie.is_valid,
    "aadhaar": aadhaar.is_valid,
    "nino": _shape_only,  # no check character exists
    "codice_fiscale": codicefiscale.is_valid,
}


# --- the Redactor --------------------------------------------------------------------------------------


class Redactor:
    """Call it on each text of one request; `counts` says afterwards how many values of each kind went."""

    def __init__(self, *, secrets: bool = True, personal: frozenset[str] = frozenset()) -> None:
        self._secrets = secrets
        self._personal = personal
        self._emails = "email" in personal
        self._numbers = _numbers_regex(frozenset(personal))
        self._placeholders: dict[str, str] = {}  # label and value -> placeholder, for this request only
        self._last_number: dict[str, int] = {}

    def __call__(self, text: str) -> str:
        # Slack stores & < > as &amp; &lt; &gt;: find on the decoded text, replace in the stored one.
        decoded, entities = text, None
        if "&" in text:
            decoded, entities = _decode_entities(text)
        found: list[Span] = []
        if self._secrets:
            _shaped(decoded, found)
            if "=" in decoded or ":" in decoded:  # what every `name = value` needs: skip the reversal
                _named(decoded, found)
        if self._emails and "@" in decoded:
            _emails(decoded, found)
        if self._numbers is not None:
            _numbers(decoded, self._numbers, found)
        if not found:
            return text
        parts: list[str] = []
        done = 0
        for start, end, _, label, key in _without_overlaps(found):
            if entities is not None:
                start, end = entities.stored(start), entities.stored(end)
            parts += (text[done:start], self._placeholder(label, key))
            done = end
        parts.append(text[done:])
        return "".join(parts)

    def _placeholder(self, label: str, key: str) -> str:
        slot = f"{label}\0{key}"
        placeholder = self._placeholders.get(slot)
        if placeholder is None:
            number = self._last_number[label] = self._last_number.get(label, 0) + 1
            placeholder = self._placeholders[slot] = f"[{label} {number}]"
        return placeholder

    @property
    def counts(self) -> dict[str, int]:
        """How many distinct values of each kind were replaced: for logs, never the values."""
        counts: dict[str, int] = {}
        for placeholder in self._placeholders.values():
            kind = placeholder[1:].rsplit(" ", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts


_ENTITY: Final = re.compile(r"&(?:amp|lt|gt);")
_DECODED: Final = {"&amp;": "&", "&lt;": "<", "&gt;": ">"}


@dataclass(frozen=True, slots=True)
class _Entities:
    """Where the decoded entities are: their offsets in the decoded text, and how far the stored text
    has run ahead of the decoded one after each."""

    at: list[int]
    ahead: list[int]

    def stored(self, offset: int) -> int:
        """A decoded offset in the stored text (an entity before it counts whole)."""
        before = bisect_left(self.at, offset)
        return offset + (self.ahead[before - 1] if before else 0)


def _decode_entities(text: str) -> tuple[str, _Entities | None]:
    parts: list[str] = []
    at: list[int] = []
    ahead: list[int] = []
    done = shift = 0
    for match in _ENTITY.finditer(text):
        parts += (text[done : match.start()], _DECODED[match[0]])
        at.append(match.start() - shift)
        shift += len(match[0]) - 1
        ahead.append(shift)
        done = match.end()
    if not at:
        return text, None
    parts.append(text[done:])
    return "".join(parts), _Entities(at, ahead)


def _without_overlaps(spans: list[Span]) -> list[Span]:
    """The longest span wins, then the lower rank; whatever overlaps a winner goes. In text order, so
    that placeholders are numbered in order of appearance."""
    spans.sort(key=lambda span: (span[0] - span[1], span[2], span[0]))
    chosen: list[Span] = []  # disjoint, in text order
    starts: list[int] = []
    for span in spans:
        start, end = span[0], span[1]
        at = bisect_right(starts, start)
        if (at and chosen[at - 1][1] > start) or (at < len(chosen) and chosen[at][0] < end):
            continue
        chosen.insert(at, span)
        starts.insert(at, start)
    return chosen

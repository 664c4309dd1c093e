"""Redaction: secrets (and, if chosen, personal data) become typed placeholders before Claude sees them.

A Redactor lives for one request: the same value gets the same placeholder (`[email 1]`) within it,
and its table of values goes when the request ends. It runs on every message of the prompt, on the event
loop, so a message costs at most four precompiled regex scans, and checks run only on candidates:

    secrets        one regex for every token with a known shape (Slack, Anthropic, AWS, GitHub, Google,
                   Stripe, OpenAI, npm, PyPI, GitLab, SendGrid, JWT, PEM private keys, passwords in URLs),
                   one for `name = value` where the name ends in a credential word and the value looks
                   like a credential (_credential), so `token = get_token()` stays as it is
    email          anchored on "@"; logins to machines (git@github.com:, ssh ubuntu@) are not people
    phone, card,   one regex for all their shapes, then the check on each candidate: `phonenumbers`
    iban,          (libphonenumber's metadata) for phones; issuer prefix and Luhn for cards; country
    national_id    format and mod 97 for IBANs (`stdnum`); for national ids the US SSN rules, ES DNI/NIE,
                   IT codice fiscale and IN Aadhaar check characters (`stdnum`), and the UK NI number's
                   prefix rules (it has no check character)

Measured on 200 KB of tests/corpus/engineering_messages.txt (2,363 messages, one call each; Python 3.11
on a 2-core machine): secrets only 4.6 ms, secrets and every personal kind 8.6 ms (2.6 and 5.6 ms as one
string); with a token, an address and a phone number in every tenth message, 5.8 and 19 ms. phonenumbers'
own PhoneNumberMatcher needed 94-150 ms for that text and took CI run numbers for US phones, so here it
only checks candidates (~20 us each); stdnum's checks cost 3-15 us a candidate.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
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

# (name, first character, the rest, back): where a token's prefix is common in prose ("sk-", "gh"), its
# branch starts at a rarer character inside it, looks back for the prefix, and `back` counts it.
_TOKEN_CHARS = r"(?:[A-Za-z0-9]|-(?=[A-Za-z0-9]))"
_SHAPES: Final = (
    # Up to the next "-----", possessively: a paste of many BEGIN lines stays linear. Without an END (a
    # truncated paste) the key goes on while lines look like base64 or PEM headers.
    ("private_key", "-", r"----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:(?:[\w\s+/=\\:,.]|-(?!----))*+-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"|(?:\s*+(?:[A-Za-z0-9+/=]{16,}|(?:Proc-Type|DEK-Info|Comment):[^\n]*))*+)", 0),
    ("anthropic_key", "-", r"(?<=sk-)(?<![\w-]sk-)ant-[\w-]{20,}", 2),
    ("openai_key", "-", r"(?<=sk-)(?<![\w-]sk-)(?:proj-|svcacct-|admin-)?[\w-]{40,}", 2),
    ("pypi_token", "-", r"(?<=pypi-)(?<![\w-]pypi-)AgE[\w-]{50,}", 4),
    ("gitlab_token", "-", r"(?<=glpat-)(?<![\w-]glpat-)[\w-]{20,}", 5),
    ("slack_token", "x", rf"(?<![\w.-]x)(?:ox[abeoprs]|app)-\d{_TOKEN_CHARS}{{8,}}"
        rf"|(?<![\w-]x)oxe\.xox[bp]-\d{_TOKEN_CHARS}{{8,}}", 0),
    ("slack_webhook", "/", r"(?<=hooks\.slack\.com/)(?:services|workflows|triggers)/"
        r"(?P<webhook_secret>[\w-]+(?:/[\w-]+){1,3})", 0),
    # scheme://user:password@host: only the password goes.
    ("url_password", "/", r"(?<=[A-Za-z0-9]:/)/[^\s:/?#@<>|\"'`]{0,128}:"
        r"(?P<password_in_url>[^\s/?#@<>|\"'`]{1,256})@(?=[\w\[])", 0),
    ("aws_key", "A", r"(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])", 0),
    ("google_api_key", "A", r"(?<![\w-]A)Iza[\w-]{35}(?![\w-])", 0),
    ("github_token", "_", r"(?<=gh[pousr]_)(?<![A-Za-z0-9_]..._)[A-Za-z0-9]{30,}(?![A-Za-z0-9_])", 3),
    ("github_pat", "_", r"(?<=github_)(?<![A-Za-z0-9_]github_)pat_[A-Za-z0-9_]{30,}", 6),
    ("stripe_key", "_", r"(?<=[sr]k_)(?<![\w-].k_)(?:live|test)_[0-9A-Za-z]{16,}", 2),
    ("npm_token", "_", r"(?<=npm_)(?<![\w-]npm_)[A-Za-z0-9]{36}(?![\w-])", 3),
    ("google_token", "y", r"(?<![\w-]y)a29\.[\w-]{20,}", 0),
    ("google_client_secret", "G", r"(?<![\w-]G)OCSPX-[\w-]{20,}", 0),
    ("sendgrid_key", "S", r"(?<![\w-]S)G\.[\w-]{22}\.[\w-]{43}(?![\w-])", 0),
    ("jwt", "J", r"(?<=eyJ)(?<![\w-]eyJ)[\w-]{5,}\.eyJ[\w-]{8,}\.[\w-]{8,}", 2),
)  # fmt: skip


def _by_first_character(shapes: Iterable[tuple[str, str, str, int]]) -> re.Pattern[str]:
    """`-(?:(?P<private_key>…)|(?P<anthropic_key>…)…)|x(?P<slack_token>…)|…`, in the order given."""
    groups: dict[str, list[str]] = {}
    for name, first, rest, _ in shapes:
        groups.setdefault(first, []).append(f"(?P<{name}>{rest})")
    return re.compile("|".join(f"{re.escape(first)}(?:{'|'.join(rests)})" for first, rests in groups.items()))


_SHAPED: Final = _by_first_character(_SHAPES)
_BACK: Final = {name: back + 1 for name, _, _, back in _SHAPES}  # + 1: the first character
_PART: Final = {"slack_webhook": "webhook_secret", "url_password": "password_in_url"}  # only this goes
_LABEL: Final = {
    "private_key": "private key", "slack_token": "slack token", "slack_webhook": "slack token",
    "anthropic_key": "anthropic key", "aws_key": "aws key", "github_token": "github token",
    "github_pat": "github token", "google_api_key": "google api key", "google_token": "google token",
    "google_client_secret": "google token", "url_password": "password",
}  # fmt: skip  # any other shape is an "api token"
_AWS_SECRET_NEAR: Final = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def _shaped(text: str, found: list[Span]) -> None:
    for match in _SHAPED.finditer(text):
        kind = match.lastgroup  # the branch's group: it closes after any group inside it
        if kind is None:
            continue
        if kind in _PART:
            start, end = match.span(_PART[kind])
        else:
            start, end = match.start(kind) - _BACK[kind], match.end(kind)
        value = text[start:end]
        if kind == "url_password" and _placeholder(value):
            continue
        found.append((start, end, 0, _LABEL.get(kind, "api token"), value))
        if kind == "aws_key":  # its secret key is often pasted right after it; mixed case, unlike a SHA-1
            near = _AWS_SECRET_NEAR.search(text, end, end + 200)
            if near and any(c.islower() for c in near[0]) and any(c.isupper() for c in near[0]):
                found.append((near.start(), near.end(), 0, "aws secret", near[0]))


# --- secrets by name: `name = value` -------------------------------------------------------------------

# The name has to end in one of these, in any case: `DB_PASSWORD=` and `"apiKey":` count, `max_tokens:`
# and `token_type:` do not.
_NAME_ENDINGS: Final = (
    "password", "passwd", "pwd", "passphrase",  # -> [password n]
    "secret_access_key", "secretaccesskey",  # -> [aws secret n] if the value has a secret key's shape
    "api_key", "api-key", "apikey", "secret_key", "secret-key", "secretkey", "access_key", "accesskey",
    "private_key", "privatekey", "signing_key", "secret", "token", "auth", "authorization", "credential",
    "credentials",
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
# backwards; a forward search would try the name at every letter.
_NAMED: Final = re.compile(r"[:=]\s{0,3}[\"']?\\?(?P<name>" + _trie(n[::-1] for n in _NAME_ENDINGS) + ")")
_VALUE: Final = re.compile(
    r"[=>]?\s{0,3}\\?(?P<quote>[\"'`]?)(?:(?i:bearer|token|basic|bot|apikey)\s+)?"
    r"(?P<value>[^\s\"'`\\,;&<>()\[\]{}=]{8,256}={0,2})"  # "=" only as base64 padding: a=b=c is no value
)
_AWS_SECRET: Final = re.compile(r"[A-Za-z0-9/+=]{40}")


def _named(text: str, found: list[Span]) -> None:
    backwards = text[::-1]
    size = len(text)
    verdicts: dict[tuple[str, bool], bool] = {}  # for this text only: a log repeats its values
    for match in _NAMED.finditer(backwards):
        after_operator = size - match.start()
        if text.startswith("=", after_operator) and text[after_operator - 1] == "=":
            continue  # token == other: a comparison
        value = _VALUE.match(text, after_operator)
        if value is None:
            continue
        start, end = value.span("value")
        closing = text[end : end + 2].lstrip("\\")[:1]  # the closing quote, maybe escaped (JSON in JSON)
        if value["quote"] and closing != value["quote"]:
            continue  # a quoted value with spaces in it is prose or a template, not one token
        if not value["quote"] and closing in ("(", "[", "{", "."):
            continue  # get_token(), os.environ["X"]: code, not a value
        name, secret = match["name"][::-1].lower(), value["value"]
        loose = name == "authorization"
        verdict = verdicts.get((secret, loose))
        if verdict is None:
            verdict = verdicts[secret, loose] = _credential(secret, loose=loose)
        if not verdict:
            continue
        if name.startswith("pass") or name == "pwd":
            found.append((start, end, 1, "password", secret))
        elif name.startswith("secret") and "access" in name and _AWS_SECRET.fullmatch(secret):
            found.append((start, end, 1, "aws secret", secret))
        else:
            found.append((start, end, 1, "api token", secret))


_PLACEHOLDER_WORDS: Final = frozenset(
    {
        "changeme", "change_me", "changeit", "password", "passwd", "secret", "token", "apikey", "api_key",
        "example", "redacted", "placeholder", "dummy", "sample", "null", "none", "undefined", "notset",
        "required", "optional", "string", "test", "pass",
    }
)  # fmt: skip
_PLACEHOLDER: Final = re.compile(
    r"^(.)\1*$"  # one character repeated: xxxxxxxx, ********
    r"|^[<{$%]|[>}]$"  # <your-key>, ${VAR}, {{ var }}, %(name)s, $VAR
    r"|\.\.\.|your|example|redacted|placeholder|changeme|xxxx|\*\*\*",
    re.IGNORECASE,
)
_DOTTED_NAME: Final = re.compile(r"[A-Za-z_$][\w$]{0,30}(?:\.[A-Za-z_$][\w$]{0,30})+")  # os.environ, cfg.KEY


_LETTER: Final = re.compile(r"[^\W\d_]")
_DIGIT: Final = re.compile(r"\d")
_SYMBOL: Final = re.compile(r"[^\w.-]")


def _placeholder(value: str) -> bool:
    return value.lower() in _PLACEHOLDER_WORDS or bool(_PLACEHOLDER.search(value))


def _credential(value: str, *, loose: bool = False) -> bool:
    """Does an assigned value look like a credential, rather than code, prose, a path or a template?

    It needs 8 characters or more, a letter, and a digit or a symbol: `hunter2hunter2`, `s3cr3t!`,
    `abc123def456`. Plain words (`required`, `YOUR_API_KEY`), code-shaped names with a digit or two
    (`Uint8Array`), names of other values (`os.environ`, `settings.KEY`), paths, URLs, numbers and
    placeholders (`<your-key>`, `${VAR}`, `xxxxxxxx`, `changeme`) are left alone. `loose`, after
    `Authorization:`, drops the digit-or-symbol rule: any token-shaped value there is a credential.
    """
    if len(value) < 8 or _placeholder(value):
        return False
    if value[0] in "/~." or "://" in value or _DOTTED_NAME.fullmatch(value):
        return False
    if not _LETTER.search(value):
        return False
    if loose or _SYMBOL.search(value):
        return True
    digits = len(_DIGIT.findall(value))
    if value.isidentifier():
        return digits >= 3 or (digits >= 2 and len(value) >= 14)
    return digits >= 1


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
        found: list[Span] = []
        if self._secrets:
            _shaped(text, found)
            _named(text, found)
        if self._emails and "@" in text:
            _emails(text, found)
        if self._numbers is not None:
            _numbers(text, self._numbers, found)
        if not found:
            return text
        parts: list[str] = []
        done = 0
        for start, end, _, label, key in _without_overlaps(found):
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

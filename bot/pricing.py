"""What an answer costs: the one price table per model, in USD per million tokens, for the cost estimate
each answer's log line carries (`bot.pipeline.answer`).

Input and output prices are platform.claude.com's pricing page as the reference copied it (2026-12);
cache reads cost a tenth of input, 5-minute cache writes 1.25 times and 1-hour writes twice. A model
missing here costs "unknown", never 0, until CLAUDE_PRICES gives the configured model's prices:

    CLAUDE_PRICES="input=3,output=15"                      cache prices follow input as above
    CLAUDE_PRICES="input=3,output=15,cache_read=0.3,cache_write=3.75,cache_write_1h=6"

(`cache_write` is the 5-minute write price.) The estimate uses the standard rates only: Haiku 5.5's
price is for prompts up to 100k tokens, and batch or priority tiers are not used by this bot.

Web searches (WEB_SEARCH) cost $10 per 1,000 on every model (platform.claude.com pricing, web search
tool), besides the tokens their results add to the input; CLAUDE_PRICES does not change that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CACHE_READ, CACHE_WRITE_5M, CACHE_WRITE_1H = 0.1, 1.25, 2.0  # times the input price
WEB_SEARCH_USD = 10 / 1000  # per search


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write_5m: float
    cache_write_1h: float

    @classmethod
    def of(cls, input: float, output: float) -> Prices:
        """The cache prices follow the input price by Anthropic's multipliers."""
        return cls(input, output, input * CACHE_READ, input * CACHE_WRITE_5M, input * CACHE_WRITE_1H)

    def cost_usd(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int | None = None,
        cache_ttl: str = "5m",
        web_searches: int = 0,
    ) -> float:
        """USD for one request's usage, its web searches included. Cache writes Claude did not break down
        by TTL (None) are priced at `cache_ttl`'s rate (CLAUDE_CACHE_TTL, the one the bot asks for)."""
        if cache_write_1h_tokens is None:
            cache_write_1h_tokens = cache_write_tokens if cache_ttl == "1h" else 0
        one_hour = min(cache_write_1h_tokens, cache_write_tokens)
        return (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read_tokens * self.cache_read
            + (cache_write_tokens - one_hour) * self.cache_write_5m
            + one_hour * self.cache_write_1h
        ) / 1_000_000 + web_searches * WEB_SEARCH_USD


# First-party model ids (undated); every backend's form of them is matched by `base_model`.
PRICES: dict[str, Prices] = {
    "claude-fable-5-2": Prices.of(8, 40),
    "claude-fable-5-1": Prices.of(10, 50),
    "claude-opus-5-5": Prices.of(4, 20),
    "claude-sonnet-5-5": Prices.of(2, 10),
    "claude-haiku-5-5": Prices.of(0.10, 0.50),
}

# Bedrock: "anthropic.<id>-v1:0", inference profiles "us.anthropic.<id>…", ARNs ".../<one of those>";
# Vertex AI: "<id>@<date>"; first-party dated ids: "<id>-<yyyymmdd>".
_PLATFORM_PREFIX = re.compile(r"^(?:[a-z]+\.)?anthropic\.")
_SUFFIXES = (
    re.compile(r"-v\d+(?::\d+)?$"),
    re.compile(r"@.*$"),
    re.compile(r"-\d{8}$"),
    re.compile(r"-latest$"),
)


def base_model(model: str) -> str:
    """The first-party, undated id behind any backend's model id (an opaque ARN stays as it is)."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    name = _PLATFORM_PREFIX.sub("", name)
    for suffix in _SUFFIXES:
        name = suffix.sub("", name)
    return name


def prices_for(model: str, override: Prices | None = None) -> Prices | None:
    """`override` (CLAUDE_PRICES, for the configured model) first, then the table; None: unknown."""
    return override or PRICES.get(base_model(model))


_FIELDS = {
    "input": "input",
    "output": "output",
    "cache_read": "cache_read",
    "cache_write": "cache_write_5m",
    "cache_write_5m": "cache_write_5m",
    "cache_write_1h": "cache_write_1h",
}


def parse_prices(raw: str) -> Prices:
    """CLAUDE_PRICES: `input=3,output=15[,cache_read=…][,cache_write=…][,cache_write_1h=…]`, USD per
    million tokens. Raises ValueError saying what is wrong (config.py names the variable)."""
    given: dict[str, float] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, value = (s.strip() for s in part.partition("="))
        field = _FIELDS.get(name.lower())
        if not sep or field is None:
            raise ValueError(f"expected name=price pairs from {', '.join(_FIELDS)}, got {part!r}")
        if field in given:
            raise ValueError(f"{name} given twice")
        try:
            price = float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number of USD per million tokens, got {value!r}") from None
        if not 0 <= price <= 10_000:  # also refuses nan and inf
            raise ValueError(f"{name} must be between 0 and 10000 USD per million tokens, got {value}")
        given[field] = price
    missing = [name for name in ("input", "output") if name not in given]
    if missing:
        raise ValueError(
            f"{' and '.join(missing)} required (USD per million tokens), as in input=3,output=15"
        )
    default = Prices.of(given["input"], given["output"])
    return Prices(
        given["input"],
        given["output"],
        given.get("cache_read", default.cache_read),
        given.get("cache_write_5m", default.cache_write_5m),
        given.get("cache_write_1h", default.cache_write_1h),
    )

"""Which Claude models keep the promise: the one list of models Anthropic retains inputs and outputs for.

Some models require Anthropic to retain inputs and outputs for 30 days and are refused to zero data
retention organizations; whole families are treated as retained (fail closed), so that a new model of
theirs is refused too until this list says otherwise."""

from __future__ import annotations

RETAINED_FAMILIES = ("fable", "mythos")  # placeholder; issue 12 section 2 fills this module in


def retained(model: str) -> bool:
    """Whether Anthropic retains this model's inputs and outputs (CLAUDE_MODEL, or a cloud platform's id)."""
    name = model.lower()
    return any(f"claude-{family}" in name for family in RETAINED_FAMILIES)

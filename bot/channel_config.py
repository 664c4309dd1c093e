"""Per-channel instructions (CHANNEL_CONFIG): extra system instructions and optionally a model per channel.

Placeholder interface; issue 12 section 6 fills it in."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ChannelInstructions:
    name: str
    instructions: str
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    default: ChannelInstructions | None = None
    channels: dict[str, ChannelInstructions] = field(default_factory=dict)

    def for_channel(self, channel_id: str | None) -> ChannelInstructions | None:
        """A channel's own entry replaces `default` for that channel."""
        if channel_id is not None and channel_id in self.channels:
            return self.channels[channel_id]
        return self.default


def load_channel_config(path: str, *, allow_retained_models: bool) -> ChannelConfig:
    """Read and validate the TOML file; a ValueError says "<file>: <key or line>: <problem>" (Settings
    prefixes CHANNEL_CONFIG)."""
    raise NotImplementedError

"""Topic names, all derived from one configurable prefix."""

from __future__ import annotations

import re

import msgspec

_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")


def valid_topic(name: str) -> bool:
    """Kafka's rule: 1-249 characters of letters, digits, '.', '_' and '-'."""
    return 0 < len(name) < 250 and bool(_TOPIC_CHARS.match(name)) and name not in {".", ".."}


class Topics(msgspec.Struct, frozen=True, kw_only=True):
    """``Topics(prefix="routeyard.")`` -> routeyard.conversations, routeyard.agent.WeatherAgent, ..."""

    prefix: str = "routeyard."

    @property
    def conversations(self) -> str:
        return f"{self.prefix}conversations"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}decisions"

    @property
    def replies(self) -> str:
        return f"{self.prefix}replies"

    @property
    def responses(self) -> str:
        return f"{self.prefix}responses"

    def responses_for(self, tenant: str) -> str:
        """Tenant ``tenant``'s own responses topic (``<prefix>responses.<tenant>``), used when the
        router's ``tenant_response_topics`` is on, so a tenant can be granted READ on it alone."""
        return f"{self.prefix}responses.{tenant}"

    @property
    def streams(self) -> str:
        """AgentChunk records (v4): agents' replies as they are written, keyed by conversation."""
        return f"{self.prefix}streams"

    @property
    def shadows(self) -> str:
        """(v5) Shadow variants' AgentReply records: recorded for comparison, never sent to a caller."""
        return f"{self.prefix}shadows"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}deadletter"

    def agent(self, name: str) -> str:
        return f"{self.prefix}agent.{name}"

    def filter(self, name: str) -> str:
        """(v5) A filter's task topic."""
        return f"{self.prefix}filter.{name}"

    def core(self) -> list[str]:
        return [
            self.conversations,
            self.decisions,
            self.replies,
            self.responses,
            self.streams,
            self.shadows,
            self.dead_letters,
        ]

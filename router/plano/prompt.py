"""The Plano-Orchestrator prompt contract: agents and a conversation in, the one user message out.

Plano-Orchestrator was trained on prompts built this way, so the text is a contract (see
``notes/plano-contract.md``). Two dialects, each tested byte for byte against a reference text:

- ``"model_card"`` (default): the model card's Python example. Routes are
  ``{"name": ..., "description": ...}``, the template is filled with ``str.format`` (the answer
  example reads ``{"route": [...]}``), no leading or trailing newline.
- ``"plano"``: Plano's gateway (``orchestrator_model_v1.rs``). Each route also carries an empty
  ``"parameters"`` schema, the template is filled by plain replacement (the answer example keeps
  ``{{"route": [...]}}``), and the prompt starts and ends with a newline.

Both dialects select the conversation as Plano does: system, developer and tool messages and
messages with empty text are left out; only the last ``max_messages`` are kept; then, newest
first, messages are kept while ``template bytes // 4 + sum(message bytes // 4)`` stays within
``max_tokens``. The user message that overflows is trimmed in the middle (about 60% head, ``…``,
40% tail) to the tokens left; an overflowing assistant message, and everything older, is dropped.
If nothing fits, the newest message is kept whole. The routes block is not counted, as in Plano.

The routes block precedes the conversation, so a fixed catalog gives every prompt the same
prefix (``PromptBuilder.prefix``): this is what the server's prefix cache serves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, get_args

from routeyard.router.catalog import AgentSpec
from routeyard.schemas import Message

__all__ = [
    "MAX_MESSAGES",
    "MAX_TOKENS",
    "ORCHESTRATION_PROMPT",
    "PLANO_TEMPLATE",
    "TRIM_MARKER",
    "Dialect",
    "PromptBuilder",
    "select_messages",
    "trim_middle",
]

Dialect = Literal["model_card", "plano"]

MAX_TOKENS = 8192
MAX_MESSAGES = 16
TOKEN_BYTES = 4
"""Plano's token estimate: UTF-8 bytes // 4, per message and for the template."""
TRIM_MARKER = "…"
_SKIPPED_ROLES = frozenset({"system", "developer", "tool"})

ORCHESTRATION_PROMPT = (
    "You are a helpful assistant that selects the most suitable routes based on user intent.\n"
    "You are provided with a list of available routes enclosed within <routes></routes> XML tags:\n"
    "<routes>\n{routes}\n</routes>\n\n"
    "You are also given the conversation context enclosed within <conversation></conversation> XML tags:\n"
    "<conversation>\n{conversation}\n</conversation>\n\n"
    "## Instructions\n"
    "1. Analyze the latest user intent from the conversation.\n"
    "2. Compare it against the available routes to find which routes can help fulfill the request.\n"
    "3. Respond only with the exact route names from <routes>.\n"
    "4. If no routes can help or the intent is already fulfilled, return an empty list.\n\n"
    "## Response Format\n"
    "Return your answer strictly in JSON as follows:\n"
    '{{"route": ["route_name_1", "route_name_2", "..."]}}\n'
    "If no routes are needed, return an empty list for `route`."
)
"""The model card's template, a ``str.format`` string (``{{`` renders as ``{``)."""

PLANO_TEMPLATE = """
You are a helpful assistant that selects the most suitable routes based on user intent.
You are provided with a list of available routes enclosed within <routes></routes> XML tags:
<routes>
{routes}
</routes>

You are also given the conversation context enclosed within <conversation></conversation> XML tags:
<conversation>
{conversation}
</conversation>

## Instructions
1. Analyze the latest user intent from the conversation.
2. Compare it against the available routes to find which routes can help fulfill the request.
3. Respond only with the exact route names from <routes>.
4. If no routes can help or the intent is already fulfilled, return an empty list.

## Response Format
Return your answer strictly in JSON as follows:
{{"route": ["route_name_1", "route_name_2", "..."]}}
If no routes are needed, return an empty list for `route`.
"""
"""Plano's ``ARCH_ORCHESTRATOR_V1_SYSTEM_PROMPT``, filled by plain replacement (``{{`` stays)."""


@dataclass(frozen=True)
class _Template:
    """A template cut at its two placeholders; ``size`` is the raw template's UTF-8 length."""

    head: str
    middle: str
    tail: str
    size: int


def _cut(raw: str, *, format_string: bool) -> _Template:
    head, rest = raw.split("{routes}")
    middle, tail = rest.split("{conversation}")
    if format_string:  # what str.format does to the literal text around the fields
        head, middle, tail = (p.replace("{{", "{").replace("}}", "}") for p in (head, middle, tail))
    return _Template(head=head, middle=middle, tail=tail, size=_nbytes(raw))


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


_TEMPLATES: dict[str, _Template] = {
    "model_card": _cut(ORCHESTRATION_PROMPT, format_string=True),
    "plano": _cut(PLANO_TEMPLATE, format_string=False),
}


def _route(agent: AgentSpec, dialect: Dialect) -> dict[str, Any]:
    route: dict[str, Any] = {"name": agent.name, "description": agent.description}
    if dialect == "plano":
        route["parameters"] = {"type": "object", "properties": {}, "required": []}
    return route


@lru_cache(maxsize=128)
def _prefix(agents: tuple[AgentSpec, ...], dialect: Dialect) -> str:
    """Everything before the conversation; rendered once per (catalog, dialect)."""
    routes = "\n".join(json.dumps(_route(a, dialect), ensure_ascii=False) for a in agents)
    template = _TEMPLATES[dialect]
    return template.head + routes + template.middle


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def trim_middle(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes: ~60% head, ``…``, ~40% tail.

    Splits fall on character boundaries. When even the marker does not fit, keeps the head only.
    """
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    marker = _nbytes(TRIM_MARKER)
    if max_bytes <= marker:
        end = max(max_bytes, 0)
        while end > 0 and _is_continuation(data[end]):
            end -= 1
        return _decode(data[:end])
    available = max_bytes - marker
    head = available * 3 // 5
    while head > 0 and _is_continuation(data[head]):
        head -= 1
    tail_start = max(len(data) - (available - head), 0)
    while tail_start < len(data) and _is_continuation(data[tail_start]):
        tail_start += 1
    return _decode(data[:head]) + TRIM_MARKER + _decode(data[tail_start:])


def select_messages(
    conversation: Sequence[Message],
    *,
    max_messages: int = MAX_MESSAGES,
    max_tokens: int = MAX_TOKENS,
    template_bytes: int = 0,
) -> list[tuple[str, str]]:
    """The ``(role, content)`` pairs that go into the prompt, oldest first (see module doc)."""
    kept = [(m.role, m.content) for m in conversation if m.role not in _SKIPPED_ROLES and m.content]
    recent = kept[-max_messages:]
    used = template_bytes // TOKEN_BYTES
    chosen: list[tuple[str, str]] = []
    for role, content in reversed(recent):
        cost = _nbytes(content) // TOKEN_BYTES
        if used + cost > max_tokens:
            left = max(max_tokens - used, 0)
            if role == "user" and left > 0:
                chosen.append((role, trim_middle(content, left * TOKEN_BYTES)))
            break
        used += cost
        chosen.append((role, content))
    if not chosen and recent:
        chosen.append(recent[-1])  # Plano: nothing fits, keep the newest message whole
    chosen.reverse()
    return chosen


def _conversation_json(pairs: Sequence[tuple[str, str]]) -> str:
    turns = [{"role": role, "content": content} for role, content in pairs]
    return json.dumps(turns, indent=4, ensure_ascii=False)


class PromptBuilder:
    """Builds Plano-Orchestrator prompts in one dialect. Stateless apart from a render cache."""

    def __init__(
        self,
        dialect: Dialect = "model_card",
        *,
        max_tokens: int = MAX_TOKENS,
        max_messages: int = MAX_MESSAGES,
    ) -> None:
        if dialect not in get_args(Dialect):
            raise ValueError(f"unknown prompt dialect {dialect!r}; use one of {get_args(Dialect)}")
        if max_tokens < 1 or max_messages < 1:
            raise ValueError(f"max_tokens and max_messages must be >= 1, got {max_tokens}, {max_messages}")
        self.dialect: Dialect = dialect
        self.max_tokens = max_tokens
        self.max_messages = max_messages
        self._template = _TEMPLATES[dialect]

    def __repr__(self) -> str:
        return f"PromptBuilder({self.dialect!r}, max_tokens={self.max_tokens}, max_messages={self.max_messages})"

    def prefix(self, agents: Sequence[AgentSpec]) -> str:
        """The prompt up to the conversation: identical for every turn with these agents."""
        return _prefix(tuple(agents), self.dialect)

    def build(self, agents: Sequence[AgentSpec], conversation: Sequence[Message]) -> str:
        """The filled prompt: the content of the single user message sent to the model."""
        pairs = select_messages(
            conversation,
            max_messages=self.max_messages,
            max_tokens=self.max_tokens,
            template_bytes=self._template.size,
        )
        return self.prefix(agents) + _conversation_json(pairs) + self._template.tail

    def chat_messages(self, agents: Sequence[AgentSpec], conversation: Sequence[Message]) -> list[dict[str, str]]:
        """The chat request's messages: one user message, no system message (as Plano sends)."""
        return [{"role": "user", "content": self.build(agents, conversation)}]

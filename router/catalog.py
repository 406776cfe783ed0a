"""The agent catalog: which agents exist, what they do, and how long they may take.

Loaded once at start-up from YAML shaped like Plano's ``agents:`` list and validated then, so an
impossible catalog fails at boot with a clear message, never mid-stream::

    agents:
      - name: WeatherAgent
        description: Provides weather forecasts and current conditions for any location
        timeout: 30s            # seconds, or "500ms", "30s", "5m", "1h"
        topic: weather.tasks    # optional; default <prefix>agent.<name>
        default: true           # at most one: takes the turns no agent was chosen for
        retries: 2              # optional; further attempts after an error reply or a timeout
                                # (default: ROUTEYARD_RETRY__AGENT_RETRIES, 0 unless set)
        fallback: OtherAgent    # optional; takes this agent's turns while its circuit is open
        url: https://agents.example/weather/v1/chat/completions   # optional: an HTTP agent
        api_key_env: WEATHER_KEY  # optional; the bearer token is read from this variable
        stream: true            # optional; ask the HTTP agent to stream (default true)
        rules:                  # optional, for the rules engine
          keywords: [weather, forecast]
          patterns: ['\\brain(ing)?\\b']
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from routeyard.router.catalog_problems import problems, yaml_problem
from routeyard.router.endpoint import EnvName, HttpUrl
from routeyard.router.errors import CatalogError as CatalogError
from routeyard.router.filters import FilterSpec, check_filters
from routeyard.router.variants import VariantSpec, check_variants
from routeyard.schemas import valid_topic

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_TIMEOUT_S = 24 * 3600.0
_LATER_FIELDS: dict[str, Any] = {
    "retries": None,
    "fallback": None,
    "url": None,
    "api_key_env": None,
    "stream": True,
    "variants": [],
    "variant_salt": None,
    "filters": [],
}
"""Fields added after the first catalogs, with their defaults: they count in the version only when set."""
_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
        {"type": "string", "pattern": _DURATION.pattern},
    ]
}


def parse_duration(value: Any) -> float:
    """``30`` / ``"30s"`` / ``"500ms"`` / ``"5m"`` / ``"1h"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30, '30s', '500ms', '5m', '1h')")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:  # shown as written: a repr would double every backslash
        raise ValueError(f"invalid regular expression '{pattern}': {exc}") from exc
    return pattern


Regex = Annotated[str, AfterValidator(_regex)]


class AgentRules(BaseModel):
    """Keyword and regex rules for the ``rules`` engine (case-insensitive)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keywords: tuple[str, ...] = Field(
        default=(), description="Words or phrases that route a turn here when they occur as whole words."
    )
    patterns: tuple[Regex, ...] = Field(
        default=(), description="Regular expressions (Python syntax, case-insensitive) searched in the turn."
    )


class AgentSpec(BaseModel):
    """One agent of the catalog."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="The agent's name: a letter, then letters, digits, '_', '.', '-'.")
    description: str = Field(
        description="What the agent does, in plain words: the routing engines choose by it (Plano's prompt, "
        "the semantic engine's prototypes)."
    )
    topic: str | None = Field(default=None, description="The agent's task topic (default: <prefix>agent.<name>).")
    timeout_s: Annotated[float, WithJsonSchema(_DURATION_SCHEMA)] = Field(
        default=30.0,
        alias="timeout",
        description="How long the agent may take per task: seconds, or '500ms', '30s', '5m', '1h' (at most 24h).",
    )
    default: bool = Field(
        default=False, description="Takes the turns no agent was chosen for (at most one agent is the default)."
    )
    examples: tuple[str, ...] = Field(
        default=(),
        description="Requests this agent should get, as users write them: the semantic engine matches turns "
        "against them (its best lever).",
    )
    rules: AgentRules = Field(default=AgentRules(), description="Keywords and patterns for the rules engine.")
    retries: int | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Further attempts after an error reply or a timeout (default: ROUTEYARD_RETRY__AGENT_RETRIES).",
    )
    fallback: str | None = Field(
        default=None, description="The agent that takes this agent's turns while its circuit breaker is open."
    )
    url: HttpUrl | None = Field(
        default=None,
        description="An HTTP agent's endpoint (http or https, no credentials in it): 'routeyard worker "
        "http-agents' consumes the agent's topic and POSTs each task there as an OpenAI chat-completions request.",
    )
    api_key_env: EnvName | None = Field(
        default=None,
        description="With url: the environment variable that holds the bearer token sent to the agent "
        "(the token itself never goes in the catalog).",
    )
    stream: bool = Field(default=True, description="With url: ask the agent to stream its answer (server-sent events).")
    variants: tuple[VariantSpec, ...] = Field(
        default=(),
        max_length=20,
        description="Versions of this agent sharing its name (canaries, A/B, shadows): see 'Variants and canaries'.",
    )
    variant_salt: str | None = Field(
        default=None, max_length=100, description="Salt of the variant assignment hash (default: the agent name)."
    )
    filters: tuple[str, ...] = Field(
        default=(), description="(issue 17) Names of the catalog's non-global filters this agent's turns run."
    )

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: tuple[VariantSpec, ...]) -> tuple[VariantSpec, ...]:
        check_variants(variants)
        return variants

    @property
    def salt(self) -> str:
        return self.variant_salt or self.name

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                f"agent name {name!r} must start with a letter and use letters, digits, '_', '.', '-' "
                "(at most 100 characters)"
            )
        return name

    @field_validator("description")
    @classmethod
    def _description(cls, description: str) -> str:
        if not description.strip():
            raise ValueError("description must not be empty: the routing model chooses by it")
        return description.strip()

    @field_validator("topic")
    @classmethod
    def _topic(cls, topic: str | None) -> str | None:
        if topic is not None and not valid_topic(topic):
            raise ValueError(f"topic {topic!r} is not a valid Kafka topic name")
        return topic

    @model_validator(mode="after")
    def _key_needs_url(self) -> AgentSpec:
        if self.api_key_env is not None and self.url is None:
            raise ValueError("api_key_env is for HTTP agents: set url too (or remove api_key_env)")
        return self

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if not 0 < seconds <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout must be between 0 and 24h, got {value!r}")
        return seconds


class Catalog(BaseModel):
    """The validated, frozen agent catalog."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agents: tuple[AgentSpec, ...] = Field(description="The agents turns can be routed to (at least one).")
    default: str | None = Field(
        default=None, description="The default agent's name: an alternative to 'default: true' on the agent."
    )
    filters: tuple[FilterSpec, ...] = Field(
        default=(), description="(issue 17) The filter chains: input filters before the agents, output filters after."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        if not self.agents:
            raise ValueError("the catalog has no agents")
        names = [a.name for a in self.agents]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate agent names: {', '.join(duplicates)}")
        defaults = [a.name for a in self.agents if a.default]
        if len(defaults) > 1:
            raise ValueError(f"more than one agent is marked default: {', '.join(defaults)}")
        if self.default is not None:
            if self.default not in names:
                raise ValueError(f"default agent {self.default!r} is not in the catalog")
            if defaults and defaults != [self.default]:
                raise ValueError(f"default: {self.default!r} conflicts with {defaults[0]!r} marked default")
        _check_fallbacks({a.name: a.fallback for a in self.agents})
        check_filters(self.filters, self.agent_filters, names)
        return self

    @property
    def agent_filters(self) -> dict[str, tuple[str, ...]]:
        """Each agent's own filters (the agents that list some)."""
        return {a.name: a.filters for a in self.agents if a.filters}

    def get(self, name: str) -> AgentSpec | None:
        return self._by_name().get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.agents)

    @property
    def default_agent(self) -> AgentSpec | None:
        name = self.default or next((a.name for a in self.agents if a.default), None)
        return self.get(name) if name else None

    @functools.cached_property
    def version(self) -> str:
        """A short content hash: decisions record which catalog they were made with (computed
        once: the catalog is frozen, and every decision asks)."""
        data = self.model_dump(mode="json", by_alias=True)
        for agent in data["agents"]:  # fields added later count only when set: old versions stay
            for name, default in _LATER_FIELDS.items():
                if agent.get(name, default) == default:
                    agent.pop(name, None)
        if not data.get("filters"):
            data.pop("filters", None)
        payload = json.dumps(data, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def fallbacks(self, name: str) -> list[str]:
        """The agent's fallback chain, nearest first (validated acyclic at load)."""
        chain: list[str] = []
        spec = self.get(name)
        while spec is not None and spec.fallback is not None:
            chain.append(spec.fallback)
            spec = self.get(spec.fallback)
        return chain

    def restrict(self, names: Sequence[str] | None) -> tuple[AgentSpec, ...]:
        """The agents a turn may be routed to: all, or those of ``names`` that exist."""
        if names is None:
            return self.agents
        wanted = set(names)
        return tuple(a for a in self.agents if a.name in wanted)

    def _by_name(self) -> dict[str, AgentSpec]:
        cached: dict[str, AgentSpec] | None = self.__dict__.get("_index")
        if cached is None:
            cached = {a.name: a for a in self.agents}
            object.__setattr__(self, "_index", cached)  # frozen model: cache outside validation
        return cached


def _check_fallbacks(fallbacks: dict[str, str | None]) -> None:
    for name, fallback in fallbacks.items():
        if fallback is None:
            continue
        if fallback not in fallbacks:
            raise ValueError(f"agent {name!r}: fallback {fallback!r} is not in the catalog")
        if fallback == name:
            raise ValueError(f"agent {name!r} cannot be its own fallback")
        seen = [name]
        current: str | None = fallback
        while current is not None:
            if current in seen:
                raise ValueError(f"agent {name!r}: fallback cycle {' -> '.join([*seen, current])}")
            seen.append(current)
            current = fallbacks.get(current)


def catalog_from_dict(data: Any, *, source: str = "<catalog>", root: yaml.Node | None = None) -> Catalog:
    """Validate a parsed catalog; ``root``: the YAML node tree it came from (for line numbers)."""
    if not isinstance(data, dict) or "agents" not in data:
        raise CatalogError(f"{source}: expected a mapping with an 'agents:' list")
    if not data["agents"]:
        raise CatalogError(f"{source}: invalid agent catalog:\n{source}: catalog: the catalog has no agents")
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        lines = problems(exc, data, Catalog, source=source, root=root)
        count = f"{len(lines)} problem" + ("s" if len(lines) > 1 else "")
        raise CatalogError(f"{source}: invalid agent catalog ({count}):\n" + "\n".join(lines)) from None


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog file; raises ``CatalogError`` with every problem listed, one a line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read agent catalog {path}: {exc.strerror}") from None
    return catalog_from_text(text, source=str(path))


MAX_CATALOG_BYTES = 1 << 20
"""A catalog's text may not be larger (a published one travels as one record)."""


def catalog_from_text(text: str, *, source: str = "<catalog>") -> Catalog:
    """Parse and validate a catalog's YAML (or JSON) text: the file, and a published record, both
    pass here, so a catalog the workers read is checked exactly as ``catalog check`` checks it."""
    if len(text) > MAX_CATALOG_BYTES:
        raise CatalogError(f"{source}: the catalog is larger than {MAX_CATALOG_BYTES} bytes")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            raise CatalogError(f"{source}: the catalog is nested too deeply") from None
        raise CatalogError(yaml_problem(exc, source)) from None
    return catalog_from_dict(data, source=source, root=root)


def catalog_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a catalog file, for editors (``routeyard schema export``)."""
    schema = Catalog.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "routeyard agent catalog"
    return schema

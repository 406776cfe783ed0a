"""Configuration: read once at start-up from ROUTEYARD_* variables (nested with ``__``), frozen.

ROUTEYARD_KAFKA__BOOTSTRAP=kafka:9092
ROUTEYARD_REDIS__URL=redis://redis:6379/0
ROUTEYARD_TOPIC_PREFIX=routeyard.
ROUTEYARD_ROUTER__CATALOG=/etc/routeyard/agents.yaml
ROUTEYARD_ROUTER__MODE=sequential
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from routeyard.router.settings import OpenAISettings, SemanticSettings, SimSettings, VllmSettings
from routeyard.router.validation import EventRules
from routeyard.schemas import Topics


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bootstrap: str = "127.0.0.1:9092"
    client_id: str = "routeyard"
    fetch_max_wait_ms: int = Field(default=25, ge=0, le=10_000)
    """Keep low: tansu does not wake a waiting fetch on new data (notes/infra.md)."""
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    max_poll_interval_ms: int = 300_000
    linger_ms: int = 2
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    partitions: int = Field(default=8, ge=1)
    """Partition count used when routeyard creates its topics."""
    replication_factor: int | None = Field(default=None, ge=1)
    """Replication factor of the topics routeyard creates. Default: 3, or the broker count if the
    cluster has fewer (1 on a one-broker dev cluster), so a production cluster gets replicated topics
    without a setting. More than the cluster's brokers is refused at start-up; below 3 on a cluster
    of 3 or more brokers logs a warning. Topics that exist already are left as they are."""
    min_insync_replicas: int | None = Field(default=None, ge=1)
    """``min.insync.replicas`` of the topics routeyard creates: with the producers' ``acks=all``, a
    write fails while fewer replicas are in sync. Default: 2 when the replication factor is 3 or
    more (one broker may be down), else the broker's own default. At most the replication factor."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    """CA bundle that signed the brokers' certificates (default: the system's)."""
    ssl_certfile: Path | None = None
    """Client certificate (PEM) for mutual TLS; with ``ssl_keyfile``."""
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(f"{self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password")
        if self.sasl_mechanism and not sasl:
            raise ValueError("sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self


class RedisSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """``redis://`` or ``rediss://`` (TLS); credentials may sit in it or in username/password."""
    namespace: str | None = None
    """Key prefix; default: the topic prefix without its trailing dot."""
    username: str | None = None
    """ACL user and password (or in the URL, but not in both)."""
    password: SecretStr | None = None
    ssl_ca_certs: Path | None = None
    """CA bundle for a ``rediss://`` server (default: the system's)."""
    ssl_certfile: Path | None = None
    """Client certificate for mutual TLS; with ``ssl_keyfile``."""
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    cluster: bool = False
    """A Redis Cluster (as ``redis+cluster://`` / ``rediss+cluster://`` urls say too): the url names
    one of its nodes; keys are hash-tagged by conversation partition (consumers/stores/slots.py)."""

    @property
    def is_cluster(self) -> bool:
        return self.cluster or urlsplit(self.url.get_secret_value()).scheme.endswith("+cluster")

    @model_validator(mode="after")
    def _tls_complete(self) -> RedisSettings:
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("redis ssl_certfile and ssl_keyfile go together")
        url = urlsplit(self.url.get_secret_value())
        if (self.ssl_ca_certs or self.ssl_certfile) and not url.scheme.startswith("rediss"):
            raise ValueError("redis TLS options need a rediss:// url")
        if (self.username or self.password) and (url.username or url.password):
            raise ValueError("redis credentials are given both in the url and as username/password: keep one")
        return self

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Redis.from_url(url, ...)``: ACL credentials and TLS files."""
        options: dict[str, Any] = {}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password.get_secret_value()
        if urlsplit(self.url.get_secret_value()).scheme.startswith("rediss"):
            options["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                value = getattr(self, name)
                if value is not None:
                    options[name] = str(value)
        return options


SECRETS_DIR_VARIABLE = "ROUTEYARD_SECRETS_DIR"


class SecretFiles(EnvSettingsSource):
    """Settings from the files of ``ROUTEYARD_SECRETS_DIR`` (e.g. a mounted Kubernetes secret): each
    file is named like the variable it stands for (``ROUTEYARD_KAFKA__SASL_PASSWORD``) and holds its
    value; a trailing newline is ignored. No variable set: nothing is read."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        folder = os.environ.get(SECRETS_DIR_VARIABLE)
        if not folder:
            return {}
        path = Path(folder)
        if not path.is_dir():
            raise ValueError(f"{SECRETS_DIR_VARIABLE}={folder}: not a directory")
        files = (f for f in path.iterdir() if f.is_file() and f.name.upper().startswith("ROUTEYARD_"))
        return {f.name.lower(): f.read_text().rstrip("\r\n") for f in files}


EngineName = Literal["rules", "vllm", "openai", "semantic", "sim"]


def names(value: object) -> object:
    """A list-of-names setting as written: JSON (``["rules"]``), one name (``rules``) or a comma
    list (``rules,semantic``); anything else is left to validation."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith(("[", "null")):
        import json

        try:
            return json.loads(text)
        except ValueError:
            return value
    return [name.strip() for name in text.split(",") if name.strip()]


class RouterSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    catalog: Path = Path("agents.yaml")
    """The catalog file (reloaded between batches when it changes), or ``topic:``: the versions
    ``routeyard catalog publish`` put on ``<prefix>catalog``."""
    engine: EngineName = "rules"
    fallback: Annotated[list[EngineName], NoDecode] = []
    """Engines to try, in order, for turns the first one could not decide (e.g. ["rules"])."""
    engine_timeout_s: float | None = Field(default=30.0, gt=0)
    """An engine that has not answered a batch by then counts as failed for it (-> fallback)."""
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    """Decisions less confident than this go to the default agent (abstention)."""
    mode: Literal["parallel", "sequential"] = "parallel"
    continuation: bool = True
    """A turn that answers the question an agent just asked goes back to it (on|off; router/continuation.py)."""
    continuation_override: float = Field(default=0.9, ge=0, le=1)
    """...unless the engine chose other agents with at least this confidence."""
    dialect: Literal["model_card", "plano"] = "model_card"
    max_batch: int = Field(default=128, ge=1, le=10_000)
    batch_wait_ms: int = Field(default=10, ge=0, le=10_000)
    pipeline: Literal["auto", "off", "on"] = "auto"
    """``on``: turns flow into the engine continuously, one ``decide`` call each (consumers/workers/
    pipeline.py); ``off``: one batch at a time (fetch, context, decide, store, publish, commit);
    ``auto`` (default): on for engines that batch concurrent calls themselves (vllm, openai, sim: a
    GPU's continuous batching), off for those that batch within one call on this process's CPU
    (rules, semantic: one call per turn would give up their batching)."""

    def pipelined(self) -> bool:
        """Whether the router worker runs the pipeline (``pipeline``, with ``auto`` resolved)."""
        if self.pipeline == "auto":
            return self.engine in ("vllm", "openai", "sim")
        return self.pipeline == "on"

    max_in_flight: int = Field(default=1024, ge=1, le=100_000)
    """With the pipeline on: records fetched and not yet committed, at most (then fetching stops)."""
    prompt_max_tokens: int = Field(default=8192, ge=256)
    prompt_max_messages: int = Field(default=16, ge=1)
    context_max_messages: int = Field(default=32, ge=2)
    """Messages kept per conversation in Redis (the prompt uses the last 16 of them)."""
    context_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    dedup_ttl_s: int = Field(default=24 * 3600, ge=60)
    """How long finished events are remembered, so redeliveries are recognised."""
    max_event_bytes: int = Field(default=256 * 1024, ge=1024)
    context_max_bytes: int = Field(default=512 * 1024, ge=1024)
    """Bytes of messages kept per conversation in Redis; the oldest go first (the newest always stays)."""
    tenants: Annotated[frozenset[str] | None, NoDecode] = None
    """Allow-list of tenants (None: any well-formed tenant). With a list, events without a tenant
    are accepted only if it contains "" ."""
    max_clock_skew_s: float = Field(default=300.0, gt=0)
    """An event whose ``created_at`` is further in the future than this is rejected."""
    max_event_age_s: float | None = Field(default=None, gt=0)
    """An event created longer ago than this is rejected (None: no limit, e.g. to replay a backlog)."""
    tenant_response_topics: bool = False
    """Responses of tenant T go to ``<prefix>responses.T`` (unless the event names a reply_topic),
    so each tenant can be granted READ on its own topic only. Needs the ``tenants`` allow-list:
    routeyard creates one topic per listed tenant."""

    _names = field_validator("fallback", "tenants", mode="before")(names)


class RegistrySettings(BaseModel):
    """Agent registration (off by default): agents started with ``--register`` announce themselves
    on ``<prefix>registry``; router workers route to the allowed ones while they heartbeat."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = False
    allow: Annotated[frozenset[str], NoDecode] = frozenset()
    """Names that may register (comma-separated); any other is refused with a WARNING."""
    heartbeat_s: float = Field(default=2.0, gt=0, le=300)
    timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """An agent whose instances all went quiet this long is unavailable (fallback or default agent)."""

    _names = field_validator("allow", mode="before")(names)


class CorrelatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_batch: int = Field(default=256, ge=1)
    sweep_interval_ms: int = Field(default=200, ge=10)
    outbox_lease_s: float = Field(default=10.0, gt=0)
    """A stored effect not confirmed within this lease is carried out again by a sweeper."""
    max_reply_bytes: int = Field(default=256 * 1024, ge=1024, le=512 * 1024)
    """A reply record larger than this is recorded as an error reply saying so (its content is dropped)."""
    max_response_bytes: int = Field(default=512 * 1024, ge=4096, le=768 * 1024)
    """Room for the replies in one response (under the broker's 1 MiB record limit): a reply that
    would overflow it is recorded as an error reply saying so."""


class AgentSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    concurrency: int = Field(default=64, ge=1)
    """Tasks handled at once per agent process (most agent work waits on I/O: LLMs, APIs)."""
    dedup_ttl_s: int = Field(default=24 * 3600, ge=60)
    max_reply_bytes: int = Field(default=256 * 1024, ge=1024, le=768 * 1024)
    """A handler's reply larger than this (encoded) is sent as an error reply saying so."""


class LifecycleSettings(BaseModel):
    """How a worker process stops and how long it keeps retrying an unavailable dependency."""

    model_config = ConfigDict(frozen=True)

    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    """On SIGTERM/SIGINT: stop fetching, finish in-flight work within this time, then exit."""
    retry_budget_s: float = Field(default=300.0, gt=0)
    """How long a batch is retried while Redis or the broker is unavailable before the process
    exits (non-zero, uncommitted) for a supervisor to restart it."""
    retry_max_delay_s: float = Field(default=5.0, gt=0)


class RetrySettings(BaseModel):
    """Retries of agent tasks after an error reply or a timeout (``retries:`` in the catalog wins).

    Off by default: a timed-out attempt may still be running, so an agent with side effects
    (booking, paying, messaging) would repeat them. Turn it on per agent where that is safe.
    Each attempt gets the agent's full timeout; the n-th retry waits
    ``min(backoff_max_s, backoff_s * 2**(n-1))`` first.
    """

    model_config = ConfigDict(frozen=True)

    agent_retries: int = Field(default=0, ge=0, le=10)
    backoff_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)


class CircuitSettings(BaseModel):
    """Per-agent circuit breakers, shared in Redis by router workers and the correlator."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    threshold: int = Field(default=5, ge=1)
    """Consecutive failed attempts (error replies or timeouts) that open an agent's breaker."""
    cooldown_s: float = Field(default=30.0, gt=0)
    """How long an open breaker sends the agent's turns elsewhere before one probe turn."""


class VariantSettings(BaseModel):
    """Agent variants: how long a conversation's pin lasts, and when a variant is rolled back."""

    model_config = ConfigDict(frozen=True)

    pin_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    """How long a conversation keeps its variant after its last turn."""
    window_s: int = Field(default=60, ge=1, le=3600)
    """The health window: outcomes older than this do not count."""
    threshold: float = Field(default=0.2, ge=0, le=1)
    """A variant whose (errors + timeouts) / outcomes in the window exceeds this is rolled back."""
    min_count: int = Field(default=10, ge=1)
    """Outcomes in the window needed before the rate counts."""


class ObservabilitySettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    port: int | None = Field(default=None, ge=0, le=65535)
    """Serve /metrics, /healthz and /readyz here (the images set 9464; None: off; 0: any free port)."""
    host: str = "0.0.0.0"
    stall_after_s: float = Field(default=120.0, gt=0)
    """/healthz fails when a started worker loop has not come back for this long."""
    lag_interval_s: float = Field(default=5.0, gt=0)
    """How often routeyard_consumer_lag is refreshed."""


def key_tenants(text: str) -> dict[str, str]:
    """``gateway.api_keys`` as written: a JSON object (``{"KEY": "tenant"}``) or a comma (or line)
    list of ``KEY:tenant`` pairs. Errors never repeat a key."""
    import json
    import re

    text = text.strip()
    if text.startswith("{"):
        try:
            found = json.loads(text)
        except ValueError:
            raise ValueError('not valid JSON (expected {"KEY": "tenant", ...})') from None
        if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
            raise ValueError('expected a JSON object {"KEY": "tenant", ...}')
        keys: dict[str, str] = found
    else:
        pairs = [item.strip() for item in text.replace("\n", ",").split(",") if item.strip()]
        bad = [i for i, item in enumerate(pairs, 1) if ":" not in item]
        if bad:
            raise ValueError(f"entry {bad[0]} is not KEY:tenant")
        keys = dict(item.rsplit(":", 1) for item in pairs)
    for number, (key, tenant) in enumerate(keys.items(), 1):
        if len(key.strip()) < 8:
            raise ValueError(f"key {number} is shorter than 8 characters")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", tenant):
            raise ValueError(f"tenant {tenant!r} is not 1-64 letters, digits, '_', '.' or '-'")
    return {key.strip(): tenant for key, tenant in keys.items()}


class GatewaySettings(BaseModel):
    """``routeyard gateway``: the OpenAI-compatible HTTP front door (consumers/gateway/)."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    api_keys: SecretStr | None = None
    """API keys and their tenants: ``{"KEY": "tenant"}`` or ``KEY:tenant,KEY2:tenant2`` (a file in
    ROUTEYARD_SECRETS_DIR like the other secrets). None: no key needed and no tenant (dev only;
    logged loudly at start)."""
    max_in_flight: int = Field(default=1024, ge=1)
    """Turns waiting at once in this gateway; beyond it, 429 with Retry-After."""
    max_in_flight_per_tenant: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    turn_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """How long a synchronous request waits for its response before 504 (async turns: no limit)."""
    async_ttl_s: int = Field(default=24 * 3600, ge=60)
    """How long an async turn's record (pending, then its response) is kept in Redis."""
    instance: str = "0"
    """This gateway's id: its responses come on ``<prefix>gateway.<instance>``. Unique per running
    gateway and stable across its restarts (async turns resume from that topic)."""
    no_route_text: str = "Sorry, no agent can help with that."
    rejected_text: str = "The request was refused: {reason}"
    failed_text: str = "Sorry, the agents could not answer. Please try again."
    retry_after_s: int = Field(default=1, ge=1)

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, keys: SecretStr | None) -> SecretStr | None:
        if keys is not None:
            key_tenants(keys.get_secret_value())
        return keys

    def tenants_by_key(self) -> dict[str, str]:
        """API key -> tenant (empty: the gateway is open)."""
        return key_tenants(self.api_keys.get_secret_value()) if self.api_keys else {}

    @field_validator("instance")
    @classmethod
    def _instance(cls, instance: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", instance):
            raise ValueError("gateway.instance must be 1-64 letters, digits, '_' or '-'")
        return instance


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROUTEYARD_", env_nested_delimiter="__", frozen=True, extra="ignore")
    """extra="ignore": unknown ROUTEYARD_* names in an env file are warned about by the command
    (``routeyard.consumers.cli.configuration``), with a "did you mean", instead of failing."""

    topic_prefix: str = "routeyard."
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    router: RouterSettings = RouterSettings()
    correlator: CorrelatorSettings = CorrelatorSettings()
    registry: RegistrySettings = RegistrySettings()
    agent: AgentSettings = AgentSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    retry: RetrySettings = RetrySettings()
    circuit: CircuitSettings = CircuitSettings()
    variants: VariantSettings = VariantSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    vllm: VllmSettings = VllmSettings()
    openai: OpenAISettings = OpenAISettings()
    semantic: SemanticSettings = SemanticSettings()
    sim: SimSettings = SimSettings()
    gateway: GatewaySettings = GatewaySettings()
    log_level: str = "INFO"
    log_turns: bool = False
    """One line per turn answered and per agent timeout (logger ``routeyard.turns``) at INFO; off:
    at DEBUG. ``routeyard dev`` turns it on (ROUTEYARD_LOG_TURNS=true in a worker)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Variables win over the env file, which wins over files in ROUTEYARD_SECRETS_DIR."""
        return init_settings, env_settings, dotenv_settings, SecretFiles(settings_cls)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        from routeyard.schemas import valid_topic

        if prefix and not valid_topic(prefix + "x"):
            raise ValueError(f"topic prefix {prefix!r} must use letters, digits, '.', '_' and '-'")
        return prefix

    @model_validator(mode="after")
    def _tenant_topics(self) -> Settings:
        if self.router.tenant_response_topics:
            if self.router.tenants is None:
                raise ValueError("router.tenant_response_topics needs the router.tenants allow-list")
            from routeyard.schemas import valid_topic

            bad = sorted(t for t in self.tenant_response_topics() if not valid_topic(t))
            if bad:
                raise ValueError(f"tenants whose response topic is not a valid topic name: {bad}")
        return self

    @property
    def topics(self) -> Topics:
        return Topics(prefix=self.topic_prefix)

    def event_rules(self) -> EventRules:
        """What the router checks of each event beyond its shape (``router.validation``)."""
        cfg = self.router
        return EventRules(
            topics=self.topics,
            tenants=cfg.tenants,
            max_clock_skew_s=cfg.max_clock_skew_s,
            max_event_age_s=cfg.max_event_age_s,
        )

    def response_topic(self, tenant: str | None) -> str:
        """Where the response of a turn of ``tenant`` goes when its event names no reply_topic."""
        if self.router.tenant_response_topics and tenant:
            return self.topics.responses_for(tenant)
        return self.topics.responses

    def tenant_response_topics(self) -> list[str]:
        """The per-tenant responses topics to create (none unless ``router.tenant_response_topics``)."""
        if not self.router.tenant_response_topics:
            return []
        return [self.topics.responses_for(t) for t in sorted(self.router.tenants or ()) if t]

    @property
    def namespace(self) -> str:
        return self.redis.namespace or self.topic_prefix.rstrip(".") or "routeyard"

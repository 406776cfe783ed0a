"""Configuration: read once at start-up from ROUTEYARD_* variables (nested with ``__``), frozen.

ROUTEYARD_KAFKA__BOOTSTRAP=kafka:9092
ROUTEYARD_REDIS__URL=redis://redis:6379/0
ROUTEYARD_TOPIC_PREFIX=routeyard.
ROUTEYARD_ROUTER__CATALOG=/etc/routeyard/agents.yaml
ROUTEYARD_ROUTER__MODE=sequential
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from router.openai_engine import OpenAISettings
from router.semantic import SemanticSettings
from router.vllm_engine import VllmSettings
from schemas import Topics


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
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None


class RedisSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    namespace: str | None = None
    """Key prefix; default: the topic prefix without its trailing dot."""


EngineName = Literal["rules", "vllm", "openai", "semantic"]


class RouterSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    catalog: Path = Path("agents.yaml")
    engine: EngineName = "rules"
    fallback: list[EngineName] = []
    """Engines to try, in order, for turns the first one could not decide (e.g. ["rules"])."""
    engine_timeout_s: float | None = Field(default=30.0, gt=0)
    """An engine that has not answered a batch by then counts as failed for it (-> fallback)."""
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    """Decisions less confident than this go to the default agent (abstention)."""
    mode: Literal["parallel", "sequential"] = "parallel"
    dialect: Literal["model_card", "plano"] = "model_card"
    max_batch: int = Field(default=128, ge=1, le=10_000)
    batch_wait_ms: int = Field(default=10, ge=0, le=10_000)
    prompt_max_tokens: int = Field(default=8192, ge=256)
    prompt_max_messages: int = Field(default=16, ge=1)
    context_max_messages: int = Field(default=32, ge=2)
    """Messages kept per conversation in Redis (the prompt uses the last 16 of them)."""
    context_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    dedup_ttl_s: int = Field(default=24 * 3600, ge=60)
    """How long finished events are remembered, so redeliveries are recognised."""
    max_event_bytes: int = Field(default=256 * 1024, ge=1024)


class CorrelatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_batch: int = Field(default=256, ge=1)
    sweep_interval_ms: int = Field(default=200, ge=10)
    outbox_lease_s: float = Field(default=10.0, gt=0)
    """A stored effect not confirmed within this lease is carried out again by a sweeper."""


class AgentSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    concurrency: int = Field(default=16, ge=1)
    dedup_ttl_s: int = Field(default=24 * 3600, ge=60)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROUTEYARD_", env_nested_delimiter="__", frozen=True)

    topic_prefix: str = "routeyard."
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    router: RouterSettings = RouterSettings()
    correlator: CorrelatorSettings = CorrelatorSettings()
    agent: AgentSettings = AgentSettings()
    vllm: VllmSettings = VllmSettings()
    openai: OpenAISettings = OpenAISettings()
    semantic: SemanticSettings = SemanticSettings()
    log_level: str = "INFO"

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        from schemas import valid_topic

        if prefix and not valid_topic(prefix + "x"):
            raise ValueError(f"topic prefix {prefix!r} must use letters, digits, '.', '_' and '-'")
        return prefix

    @property
    def topics(self) -> Topics:
        return Topics(prefix=self.topic_prefix)

    @property
    def namespace(self) -> str:
        return self.redis.namespace or self.topic_prefix.rstrip(".") or "routeyard"

"""Agent variants in Redis: conversations' pins, variants' health windows, and rollbacks.

Keys (``ns`` = namespace):
    {ns:pN}:variant:pin:{agent}:{h}       the variant a conversation is pinned to; ``h`` is a hash of
                                          tenant and conversation id (ids never shape keys), kept
                                          ``pin_ttl_s`` after its last turn; ``{ns:pN}``: the
                                          conversation's hash tag (routeyard.consumers.stores.slots)
    {ns}:variant:health:{agent}@{variant}:{bucket}
                                          hash ok / error / timeout: outcomes of one time bucket
                                          (a tenth of the window), expiring after the window
    {ns}:variant:rollback:{agent}:{cfg}   hash variant -> why it was rolled back; ``cfg`` hashes the
                                          agent's variants as configured, so a new configuration
                                          (a fixed canary published again) starts clean

Pins are set-if-absent and read for a whole batch in one script call; a pin to a variant no
longer allowed (removed or rolled back) is replaced, and the caller learns which it replaced.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from routeyard.consumers.metrics import METRICS, child
from routeyard.consumers.settings import VariantSettings
from routeyard.consumers.stores import slots
from routeyard.consumers.stores.circuits import CircuitStore
from routeyard.router.catalog import AgentSpec
from routeyard.router.variants import Health, breaker_name, served, stable, verdict

log = logging.getLogger(__name__)

_PIN = """
local ttl = ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
  local want = ARGV[2 * i]
  local allowed = ARGV[2 * i + 1]
  local cur = redis.call('GET', key)
  if cur and string.find(allowed, ',' .. cur .. ',', 1, true) then
    redis.call('EXPIRE', key, ttl)
    out[i] = cur
  else
    redis.call('SET', key, want, 'EX', ttl)
    out[i] = want .. '|' .. (cur or '')
  end
end
return out
"""


@dataclass(frozen=True)
class Pin:
    """A conversation's wish for an agent: ``want`` if it has no pin (or its pin is not in ``allowed``)."""

    agent: str
    tenant: str | None
    conversation_id: str
    want: str
    allowed: tuple[str, ...]


def config_hash(spec: AgentSpec) -> str:
    text = "|".join(f"{v.name}:{v.topic}:{v.weight}:{v.shadow}" for v in spec.variants) + f"|{spec.salt}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class VariantStore:
    def __init__(
        self,
        redis: Redis,
        namespace: str,
        settings: VariantSettings,
        circuits: CircuitStore | None = None,
        *,
        partitions: int = slots.DEFAULT_PARTITIONS,
    ) -> None:
        self._redis = redis
        self._partitions = partitions
        self._ns = namespace
        self._settings = settings
        self._circuits = circuits
        self._pin = redis.register_script(_PIN)
        self._bucket_s = max(1, settings.window_s // 10)

    def pin_key(self, agent: str, tenant: str | None, conversation_id: str) -> str:
        h = hashlib.sha256(f"{tenant or ''}\x00{conversation_id}".encode()).hexdigest()[:32]
        return f"{slots.tag(self._ns, conversation_id, self._partitions)}:variant:pin:{agent}:{h}"

    def rollback_key(self, spec: AgentSpec) -> str:
        return f"{self._ns}:variant:rollback:{spec.name}:{config_hash(spec)}"

    async def pin(self, pins: Sequence[Pin]) -> list[tuple[str, str | None, bool]]:
        """Each pin's variant, the variant its old pin named where that was replaced, and whether
        the pin is new (the conversation had none)."""
        if not pins:
            return []
        keys = [self.pin_key(p.agent, p.tenant, p.conversation_id) for p in pins]

        async def one(group: list[int]) -> list[bytes | str]:  # one call per hash slot on a cluster
            args: list[str | int] = [self._settings.pin_ttl_s]
            for i in group:
                args += [pins[i].want, "," + ",".join(pins[i].allowed) + ","]
            return list(await self._pin(keys=[keys[i] for i in group], args=args))

        out = await slots.per_slot(self._redis, keys, one)
        results: list[tuple[str, str | None, bool]] = []
        for raw in out:
            got, changed, was = _text(raw).partition("|")
            results.append((got, was or None, bool(changed) and not was))
        return results

    async def rolled_back(self, specs: Sequence[AgentSpec], now: float) -> dict[str, dict[str, str]]:
        """Agent -> {variant: why} for the variants that get no conversations; rolls back any
        variant (never the stable one) whose breaker is open or whose window is unhealthy."""
        specs = [s for s in specs if s.variants]
        if not specs:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for spec in specs:
                pipe.hgetall(self.rollback_key(spec))
            stored = await pipe.execute()
        done = {s.name: {_text(k): _text(v) for k, v in raw.items()} for s, raw in zip(specs, stored, strict=True)}
        watch = [
            (s, v.name)
            for s in specs
            for v in served(s.variants)
            if v.name != stable(s.variants) and v.name not in done[s.name]
        ]
        health = await self._health([(s.name, v) for s, v in watch], now)
        for (spec, variant), h in zip(watch, health, strict=True):
            why = verdict(variant, h, threshold=self._settings.threshold, min_count=self._settings.min_count)
            if why is not None and await self._roll_back(spec, variant, why):
                done[spec.name][variant] = why
        return {name: reasons for name, reasons in done.items() if reasons}

    async def _roll_back(self, spec: AgentSpec, variant: str, why: str) -> bool:
        key = self.rollback_key(spec)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(key, variant, why)
            pipe.expire(key, self._settings.pin_ttl_s)
            first, _ = await pipe.execute()
        if first:
            child(METRICS.variant_rolled_back, agent=spec.name, variant=variant).set(1)
            log.warning(
                "variant %s of agent %s %s; its conversations move to %s",
                variant,
                spec.name,
                why,
                stable(spec.variants),
            )
        return True

    async def _health(self, variants: Sequence[tuple[str, str]], now: float) -> list[Health]:
        if not variants:
            return []
        buckets = self._buckets(now)
        async with self._redis.pipeline(transaction=False) as pipe:
            for agent, variant in variants:
                for b in buckets:
                    pipe.hgetall(self._health_key(agent, variant, b))
            raws = await pipe.execute()
        breakers = {}
        if self._circuits is not None and self._circuits.enabled:
            names = [breaker_name(a, v) for a, v in variants]
            breakers = {n: b.state != "closed" for n, b in (await self._circuits.load(names)).items()}
        out = []
        for i, (agent, variant) in enumerate(variants):
            counts = {"ok": 0, "error": 0, "timeout": 0}
            for raw in raws[i * len(buckets) : (i + 1) * len(buckets)]:
                for k, v in raw.items():
                    if _text(k) in counts:
                        counts[_text(k)] += int(v)
            out.append(Health(**counts, breaker_open=breakers.get(breaker_name(agent, variant), False)))
        return out

    async def record(self, outcomes: Sequence[tuple[str, str, str]], now: float | None = None) -> None:
        """(agent, variant, ok | error | timeout) of attempts just stored: into the health window."""
        if not outcomes:
            return
        bucket = self._buckets(now or time.time())[-1]
        counts: dict[str, dict[str, int]] = {}
        for agent, variant, kind in outcomes:
            per = counts.setdefault(self._health_key(agent, variant, bucket), {})
            per[kind] = per.get(kind, 0) + 1
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, per in counts.items():
                for kind, n in per.items():
                    pipe.hincrby(key, kind, n)
                pipe.expire(key, self._settings.window_s + 2 * self._bucket_s)
            await pipe.execute()

    def _buckets(self, now: float) -> list[int]:
        last = int(now // self._bucket_s)
        first = int((now - self._settings.window_s) // self._bucket_s) + 1
        return list(range(first, last + 1))

    def _health_key(self, agent: str, variant: str, bucket: int) -> str:
        return f"{self._ns}:variant:health:{agent}@{variant}:{bucket}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

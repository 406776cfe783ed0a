"""Circuit breaker state in Redis: one key per agent, shared by every router worker and the correlator.

Keys (``ns`` = namespace; agents are catalog-wide, so no tenant part):
    {ns}:circuit:{agent}   the agent's ``Breaker`` (JSON), kept ``ttl_s`` after its last change

The transitions are the pure functions of ``routeyard.router.circuit``. Every change is written with
compare-and-set (a Lua script: set only if the value is still the one read) and retried on
conflict, so concurrent writers never lose an outcome and never admit two half-open probes.
An agent whose key is missing is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence

import msgspec
from redis.asyncio import Redis
from routeyard.consumers.metrics import METRICS
from routeyard.consumers.settings import CircuitSettings
from routeyard.consumers.stores import slots
from routeyard.router.circuit import Breaker, Gate, Policy, admit, record_all, release

log = logging.getLogger(__name__)

_CAS = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

CAS_ATTEMPTS = 10
_decoder = msgspec.json.Decoder(Breaker)
_encoder = msgspec.json.Encoder()

Change = Callable[[str, Breaker], Breaker]


class CircuitStore:
    def __init__(self, redis: Redis, namespace: str, settings: CircuitSettings, *, ttl_s: int = 7 * 24 * 3600) -> None:
        self._redis = redis
        self._ns = namespace
        self._ttl = ttl_s
        self.enabled = settings.enabled
        self.policy = Policy(threshold=settings.threshold, cooldown_s=settings.cooldown_s)
        self._cas = redis.register_script(_CAS)

    def key(self, agent: str) -> str:
        return f"{self._ns}:circuit:{agent}"

    async def load(self, agents: Sequence[str]) -> dict[str, Breaker]:
        raws = await self._get(agents)
        return {agent: _decode(raw) for agent, raw in zip(agents, raws, strict=True)}

    async def blocked(self, agents: Collection[str]) -> frozenset[str]:
        """Those of ``agents`` whose breaker is open or half-open: no retries go to them."""
        if not self.enabled or not agents:
            return frozenset()
        return frozenset(agent for agent, b in (await self.load(sorted(agents))).items() if b.state != "closed")

    async def gate(self, leases: Mapping[str, float], now: float) -> Gate:
        """Which of these agents a batch may use now. ``leases``: agent -> its probe lease (s).

        An open agent past its cool-down is claimed half-open here; the gate then admits one
        turn for it (the probe). Pass the probes a batch did not use to ``release``.
        """
        if not self.enabled or not leases:
            return Gate()
        agents = list(leases)
        raws = await self._get(agents)
        quota: dict[str, int | None] = {}
        claims: list[tuple[str, bytes | None, Breaker, Breaker]] = []
        for agent, raw in zip(agents, raws, strict=True):
            current = _decode(raw)
            _, claimed = admit(current, now, self.policy, probe_lease_s=leases[agent])
            if claimed == current:
                quota[agent] = None if current.state == "closed" else 0
            else:
                claims.append((agent, raw, current, claimed))
        won = await self._write([(agent, raw, new) for agent, raw, _, new in claims])
        probes: dict[str, float] = {}
        for (agent, _, old, new), ok in zip(claims, won, strict=True):
            quota[agent] = 1 if ok else 0  # lost the race: another worker holds the probe
            if ok:
                probes[agent] = new.probe_at
                _observe(agent, old, new)
        return Gate(quota, probes)

    async def release(self, probes: Mapping[str, float]) -> None:
        """Probes claimed but not used: open again, so the next turn may probe at once."""
        await self._update(list(probes), lambda agent, b: release(b, probes[agent]))

    async def record(self, outcomes: Sequence[tuple[str, bool]], now: float) -> None:
        """Each attempt's outcome (agent, ok), in order; opens, closes or re-opens breakers."""
        if not self.enabled or not outcomes:
            return
        per_agent: dict[str, list[bool]] = {}
        for agent, ok in outcomes:
            per_agent.setdefault(agent, []).append(ok)
        await self._update(list(per_agent), lambda agent, b: record_all(b, per_agent[agent], now, self.policy))

    async def _update(self, agents: list[str], change: Change) -> None:
        pending = agents
        for _ in range(CAS_ATTEMPTS):
            if not pending:
                return
            raws = await self._get(pending)
            writes = []
            for agent, raw in zip(pending, raws, strict=True):
                old = _decode(raw)
                new = change(agent, old)
                if new != old:
                    writes.append((agent, raw, old, new))
            stored = await self._write([(agent, raw, new) for agent, raw, _, new in writes])
            pending = []
            for (agent, _, old, new), ok in zip(writes, stored, strict=True):
                if ok:
                    _observe(agent, old, new)
                else:
                    pending.append(agent)
        if pending:
            raise RuntimeError(f"circuit state of {len(pending)} agents kept changing under compare-and-set")

    async def _get(self, agents: Sequence[str]) -> list[bytes | None]:
        if not agents:
            return []
        raws = await slots.mget(self._redis, [self.key(a) for a in agents])
        return [r.encode() if isinstance(r, str) else r for r in raws]

    async def _write(self, writes: Sequence[tuple[str, bytes | None, Breaker]]) -> list[bool]:
        if not writes:
            return []
        if slots.is_cluster(self._redis):  # a cluster pipeline does not carry scripts: one call each, at once
            calls = [
                self._cas(keys=[self.key(a)], args=[raw or b"", _encoder.encode(new), self._ttl])
                for a, raw, new in writes
            ]
            return [bool(r) for r in await asyncio.gather(*calls)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for agent, raw, new in writes:
                args: list[bytes | int] = [raw or b"", _encoder.encode(new), self._ttl]
                await self._cas(keys=[self.key(agent)], args=args, client=pipe)
            return [bool(r) for r in await pipe.execute()]


def _decode(raw: bytes | None) -> Breaker:
    return Breaker() if raw is None else _decoder.decode(raw)


def _observe(agent: str, old: Breaker, new: Breaker) -> None:
    if old.state == new.state:
        return
    METRICS.circuit_changes.labels(agent=agent, state=new.state).inc()
    METRICS.circuit_open.labels(agent=agent).set(0 if new.state == "closed" else 1)
    if new.state == "open" and old.state == "closed":
        log.warning("circuit for agent %s opened after %d consecutive failures", agent, new.failures)
    else:
        log.info("circuit for agent %s: %s -> %s", agent, old.state, new.state)

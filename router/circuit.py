"""Circuit breakers: stop sending turns to an agent that keeps failing, then probe it.

    closed    --``threshold`` consecutive failures-->       open
    open      --cool-down passed, one turn admitted-->      half_open (that turn is the probe)
    half_open --an ok reply-->                              closed
    half_open --an error reply or a timeout-->              open (the cool-down starts again)

A failure is an error reply or a timeout of one attempt; a success is an ok reply. Outcomes that
arrive while the breaker is open (tasks sent before it opened) change nothing. A probe whose
outcome never arrives (its turn was lost) is replaced by another after ``probe_lease_s``.

The state is a small frozen struct; the consumers layer keeps one per agent in Redis, shared by
every router worker and the correlator. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

CircuitState = Literal["closed", "open", "half_open"]

PROBE_GRACE_S = 5.0
"""Added to a probe's lease: the correlator notices a timeout up to a sweep interval late."""


class Breaker(msgspec.Struct, frozen=True, kw_only=True):
    state: CircuitState = "closed"
    failures: int = 0
    """Consecutive failures (reset by a success)."""
    opened_at: float = 0.0
    probe_at: float = 0.0
    """When the half-open probe was admitted."""


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    threshold: int
    """Consecutive failures that open the breaker."""
    cooldown_s: float
    """How long it stays open before one probe is admitted."""


def admit(breaker: Breaker, now: float, policy: Policy, *, probe_lease_s: float) -> tuple[bool, Breaker]:
    """May a turn go to this agent now? Returns the answer and the state to store.

    Closed: yes, unchanged. Open past its cool-down: yes, once (the probe; the state turns
    half-open). Half-open: no, unless the probe's lease ran out (then this turn is the new probe).
    """
    if breaker.state == "closed":
        return True, breaker
    if breaker.state == "open":
        if now - breaker.opened_at < policy.cooldown_s:
            return False, breaker
        return True, msgspec.structs.replace(breaker, state="half_open", probe_at=now)
    if now - breaker.probe_at < probe_lease_s:
        return False, breaker
    return True, msgspec.structs.replace(breaker, probe_at=now)


def release(breaker: Breaker, probe_at: float) -> Breaker:
    """A probe admitted at ``probe_at`` was not used: open again, so the next turn may probe."""
    if breaker.state == "half_open" and breaker.probe_at == probe_at:
        return msgspec.structs.replace(breaker, state="open", probe_at=0.0)
    return breaker


def record(breaker: Breaker, ok: bool, now: float, policy: Policy) -> Breaker:
    """The state after one attempt's outcome."""
    if breaker.state == "open":
        return breaker
    if ok:
        return Breaker() if breaker.state == "half_open" or breaker.failures else breaker
    failures = breaker.failures + 1
    if breaker.state == "half_open" or failures >= policy.threshold:
        return Breaker(state="open", failures=failures, opened_at=now)
    return msgspec.structs.replace(breaker, failures=failures)


def record_all(breaker: Breaker, outcomes: Iterable[bool], now: float, policy: Policy) -> Breaker:
    for ok in outcomes:
        breaker = record(breaker, ok, now, policy)
    return breaker


def probe_lease(timeout_s: float, retries: int, backoff_max_s: float) -> float:
    """How long a probe's turn may take before its outcome must have been recorded."""
    return timeout_s * (retries + 1) + backoff_max_s * retries + PROBE_GRACE_S


class Gate:
    """Which agents one batch of turns may use; a half-open agent takes only its one probe.

    ``quota``: agent -> turns allowed (None: any number). Agents not named are allowed.
    """

    def __init__(self, quota: dict[str, int | None] | None = None, probes: dict[str, float] | None = None) -> None:
        self._quota = dict(quota or {})
        self.probes = dict(probes or {})
        """agent -> when its probe was admitted (for ``release`` when unused)."""
        self.used: set[str] = set()

    def take(self, agent: str) -> bool:
        left = self._quota.get(agent)
        if agent not in self._quota or left is None:
            return True
        if left <= 0:
            return False
        self._quota[agent] = left - 1
        self.used.add(agent)
        return True

    def unused_probes(self) -> dict[str, float]:
        return {agent: at for agent, at in self.probes.items() if agent not in self.used}

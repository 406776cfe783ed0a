"""Circuit breakers (routeyard.router.circuit), routing around open ones (routeyard.router.plan) and the catalog's
``fallback``/``retries`` fields."""

from __future__ import annotations

import pytest
from routeyard.router.catalog import CatalogError, catalog_from_dict
from routeyard.router.circuit import Breaker, Gate, Policy, admit, probe_lease, record, record_all, release
from routeyard.router.plan import Routing, avoid_open_circuits

POLICY = Policy(threshold=3, cooldown_s=10.0)
T = 1_000.0


def _opened() -> Breaker:
    return record_all(Breaker(), [False, False, False], T, POLICY)


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    b = record_all(Breaker(), [False, False], T, POLICY)
    assert (b.state, b.failures) == ("closed", 2)
    assert record(b, True, T, POLICY) == Breaker()
    assert record_all(Breaker(), [False, False, True, False, False], T, POLICY).state == "closed"
    opened = _opened()
    assert (opened.state, opened.failures, opened.opened_at) == ("open", 3, T)


def test_closed_admits_everything_open_admits_nothing_until_the_cooldown() -> None:
    assert admit(Breaker(), T, POLICY, probe_lease_s=5) == (True, Breaker())
    opened = _opened()
    assert admit(opened, T + 9.9, POLICY, probe_lease_s=5) == (False, opened)
    allowed, probing = admit(opened, T + 10, POLICY, probe_lease_s=5)
    assert allowed and probing.state == "half_open" and probing.probe_at == T + 10


def test_half_open_admits_one_probe_then_a_new_one_only_after_its_lease() -> None:
    _, probing = admit(_opened(), T + 10, POLICY, probe_lease_s=5)
    assert admit(probing, T + 14, POLICY, probe_lease_s=5) == (False, probing)
    allowed, again = admit(probing, T + 15, POLICY, probe_lease_s=5)
    assert allowed and again.state == "half_open" and again.probe_at == T + 15


def test_the_probe_closes_it_on_success_and_reopens_it_on_failure() -> None:
    _, probing = admit(_opened(), T + 10, POLICY, probe_lease_s=5)
    assert record(probing, True, T + 11, POLICY) == Breaker()
    reopened = record(probing, False, T + 11, POLICY)
    assert (reopened.state, reopened.opened_at) == ("open", T + 11)
    assert admit(reopened, T + 20, POLICY, probe_lease_s=5)[0] is False  # a full cool-down again
    assert admit(reopened, T + 21, POLICY, probe_lease_s=5)[0] is True


def test_outcomes_while_open_change_nothing() -> None:
    opened = _opened()
    assert record(opened, True, T + 1, POLICY) == opened
    assert record(opened, False, T + 1, POLICY) == opened


def test_release_gives_an_unused_probe_back() -> None:
    _, probing = admit(_opened(), T + 10, POLICY, probe_lease_s=5)
    released = release(probing, probing.probe_at)
    assert released.state == "open"
    assert admit(released, T + 10.5, POLICY, probe_lease_s=5)[0] is True
    assert release(probing, probing.probe_at - 1) == probing  # someone else's probe: kept


def test_probe_lease_covers_every_attempt() -> None:
    assert probe_lease(60.0, 2, 30.0) == 60 * 3 + 30 * 2 + 5


def test_gate_gives_a_probe_once_and_closed_agents_always() -> None:
    gate = Gate({"A": None, "B": 1, "C": 0}, probes={"B": 5.0, "D": 6.0})
    assert [gate.take("A"), gate.take("A"), gate.take("B"), gate.take("B"), gate.take("C"), gate.take("X")] == [
        True,
        True,
        True,
        False,
        False,
        True,
    ]
    assert gate.unused_probes() == {"D": 6.0}


CATALOG = catalog_from_dict(
    {
        "agents": [
            {"name": "Weather", "description": "w", "fallback": "WeatherLite"},
            {"name": "WeatherLite", "description": "w lite", "fallback": "Backup"},
            {"name": "Backup", "description": "b"},
            {"name": "Chat", "description": "c", "default": True},
        ]
    }
)
ALL = list(CATALOG.names)


def _routing(*routes: str, reason: str | None = None) -> Routing:
    return Routing(routes=list(routes), selected=list(routes), dropped=[], default_used=False, fallback_reason=reason)


def test_open_agent_goes_to_its_fallback_and_the_decision_says_why() -> None:
    routing = avoid_open_circuits(_routing("Weather"), lambda n: n != "Weather", CATALOG, ALL)
    assert routing.routes == ["WeatherLite"]
    assert routing.circuit_open == ["Weather"]
    assert routing.fallback_reason == "circuit open: Weather -> WeatherLite"


def test_the_fallback_chain_is_followed_then_the_default_then_dropped() -> None:
    down = {"Weather", "WeatherLite"}
    assert avoid_open_circuits(_routing("Weather"), lambda n: n not in down, CATALOG, ALL).routes == ["Backup"]
    down |= {"Backup"}
    assert avoid_open_circuits(_routing("Weather"), lambda n: n not in down, CATALOG, ALL).routes == ["Chat"]
    down |= {"Chat"}
    dropped = avoid_open_circuits(_routing("Weather", reason="x"), lambda n: n not in down, CATALOG, ALL)
    assert dropped.routes == [] and dropped.fallback_reason == "x; circuit open: Weather dropped"


def test_substitutes_respect_the_turns_restriction_and_are_not_duplicated() -> None:
    restricted = avoid_open_circuits(_routing("Weather"), lambda n: n != "Weather", CATALOG, ["Weather", "Chat"])
    assert restricted.routes == ["Chat"]
    both = avoid_open_circuits(_routing("Weather", "WeatherLite"), lambda n: n != "Weather", CATALOG, ALL)
    assert both.routes == ["WeatherLite"]


def test_admit_is_asked_once_per_agent_so_one_probe_serves_one_route() -> None:
    asked: list[str] = []

    def admit_once(name: str) -> bool:
        asked.append(name)
        return name != "Weather"

    avoid_open_circuits(_routing("Weather", "WeatherLite", "Chat"), admit_once, CATALOG, ALL)
    assert sorted(asked) == ["Chat", "Weather", "WeatherLite"]


def test_nothing_open_leaves_the_routing_as_it_was() -> None:
    routing = _routing("Weather", "Chat")
    assert avoid_open_circuits(routing, lambda n: True, CATALOG, ALL) is routing


def _agents(*agents: dict[str, object]) -> dict[str, object]:
    return {"agents": [{"description": "d", **a} for a in agents]}


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        (_agents({"name": "A", "fallback": "Z"}), "fallback 'Z' is not in the catalog"),
        (_agents({"name": "A", "fallback": "A"}), "cannot be its own fallback"),
        (_agents({"name": "A", "fallback": "B"}, {"name": "B", "fallback": "A"}), "fallback cycle A -> B -> A"),
        (_agents({"name": "A", "retries": -1}), "retries"),
        (_agents({"name": "A", "retries": 11}), "retries"),
    ],
)
def test_impossible_fallbacks_and_retries_fail_at_load(agents: dict[str, object], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        catalog_from_dict(agents)


def test_long_timeouts_retries_and_fallback_load() -> None:
    catalog = catalog_from_dict(
        _agents({"name": "A", "timeout": "5m", "retries": 2, "fallback": "B"}, {"name": "B", "timeout": "1.5h"})
    )
    a, b = catalog.agents
    assert (a.timeout_s, a.retries, a.fallback) == (300.0, 2, "B")
    assert (b.timeout_s, b.retries, b.fallback) == (5400.0, None, None)
    assert catalog.fallbacks("A") == ["B"] and catalog.fallbacks("B") == []


def test_catalog_version_is_unchanged_for_catalogs_without_the_new_fields() -> None:
    plain = catalog_from_dict({"agents": [{"name": "A", "description": "x", "timeout": "5m"}]})
    assert plain.version == "03e812b667c8"  # computed before retries/fallback existed
    with_retries = {"agents": [{"name": "A", "description": "x", "timeout": "5m", "retries": 1}]}
    assert plain.version != catalog_from_dict(with_retries).version

"""Agent variants, the pure parts: validation, weighted sticky assignment, rollback verdicts."""

from __future__ import annotations

import math

import pytest
from routeyard.router.catalog import CatalogError, catalog_from_dict
from routeyard.router.variants import Health, VariantSpec, choose, note, plan_pin, stable, verdict


def canary(stable_weight: int = 90, canary_weight: int = 10) -> tuple[VariantSpec, ...]:
    return (VariantSpec(name="stable", weight=stable_weight), VariantSpec(name="v2", weight=canary_weight))


def test_a_90_10_canary_over_1000_conversations_splits_within_three_sigma() -> None:
    picks = [choose(canary(), "acme", f"conv-{i}", "WeatherAgent") for i in range(1000)]
    n = picks.count("v2")
    sigma = math.sqrt(1000 * 0.1 * 0.9)
    assert abs(n - 100) <= 3 * sigma, n
    print(f"canary split over 1000 conversations: stable {1000 - n}, v2 {n} (expected 100 +- {3 * sigma:.0f})")


def test_assignment_is_stable_and_depends_on_tenant_conversation_and_salt() -> None:
    first = [choose(canary(50, 50), "t", f"c{i}", "s") for i in range(200)]
    assert first == [choose(canary(50, 50), "t", f"c{i}", "s") for i in range(200)]
    assert first != [choose(canary(50, 50), "t", f"c{i}", "other salt") for i in range(200)]
    assert first != [choose(canary(50, 50), "u", f"c{i}", "s") for i in range(200)]


def test_rolled_back_variants_get_no_new_conversations_but_pins_to_weight_0_stay() -> None:
    assert {choose(canary(50, 50), None, f"c{i}", "s", out={"v2"}) for i in range(100)} == {"stable"}
    want, allowed = plan_pin(canary(100, 0), None, "c", "s", out=())
    assert want == "stable" and allowed == ("stable", "v2")
    assert plan_pin(canary(), None, "c", "s", out={"v2"})[1] == ("stable",)


def test_the_stable_variant_is_the_heaviest_served_one() -> None:
    assert stable((*canary(), VariantSpec(name="shadow", weight=100, shadow=True))) == "stable"
    assert stable(canary(40, 60)) == "v2"


def test_verdict_needs_the_minimum_count_then_compares_the_rate() -> None:
    assert verdict("v2", Health(ok=1, error=4), threshold=0.2, min_count=10) is None
    assert verdict("v2", Health(ok=6, error=2, timeout=2), threshold=0.2, min_count=10) == (
        "rolled back: v2 error rate 0.40 > 0.20"
    )
    assert verdict("v2", Health(ok=8, error=2), threshold=0.2, min_count=10) is None
    assert verdict("v2", Health(breaker_open=True), threshold=0.2, min_count=10) == "rolled back: v2 circuit open"


def test_notes_say_why_a_conversation_is_not_on_its_variant() -> None:
    why = {"v2": "rolled back: v2 circuit open"}
    assert note(canary(), None, "c", "s", "stable", "v2", why) == "rolled back: v2 circuit open; moved to stable"
    assert (
        note(canary(), None, "c", "s", "stable", "gone", {})
        == "pinned variant gone is no longer served; moved to stable"
    )
    natural = next(f"c{i}" for i in range(1000) if choose(canary(), None, f"c{i}", "s") == "v2")
    assert note(canary(), None, natural, "s", "stable", None, why) == "rolled back: v2 circuit open; sent to stable"
    assert note(canary(), None, natural, "s", "v2", None, {}) is None


def agents_with(variants: list[dict[str, object]]) -> dict[str, object]:
    return {"agents": [{"name": "WeatherAgent", "description": "weather", "variants": variants}]}


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([{"name": "a", "weight": 90}, {"name": "b", "weight": 20}], "must sum to 100, got 110"),
        ([{"name": "a", "weight": 50}, {"name": "a", "weight": 50}], "duplicate variant names: a"),
        ([{"name": "a", "weight": 100, "shadow": True}], "must sum to 100, got 0"),
        ([{"name": "a b", "weight": 100}], "variant name 'a b'"),
    ],
)
def test_an_impossible_variant_list_is_refused_at_load_in_one_line(
    variants: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        catalog_from_dict(agents_with(variants))
    assert message in str(caught.value)
    assert all("Traceback" not in line for line in str(caught.value).splitlines())


def test_an_agent_without_variants_keeps_its_catalog_version() -> None:
    plain = catalog_from_dict({"agents": [{"name": "WeatherAgent", "description": "weather"}]})
    varied = catalog_from_dict(agents_with([{"name": "stable", "weight": 100}]))
    assert plain.version != varied.version
    assert varied.agents[0].salt == "WeatherAgent"


def test_a_reply_topic_may_not_be_a_variants_task_topic() -> None:
    from routeyard.router.validation import answerable
    from routeyard.schemas import Topics

    varied = catalog_from_dict(agents_with([{"name": "stable", "weight": 100}, {"name": "v2", "topic": "wx.v2"}]))
    plain = catalog_from_dict({"agents": [{"name": "WeatherAgent", "description": "weather"}]})
    assert answerable("wx.v2", plain, Topics(prefix="ry."))
    assert not answerable("wx.v2", varied, Topics(prefix="ry."))
    assert not answerable("wx_v2", varied, Topics(prefix="ry."))  # Kafka folds '.' and '_'

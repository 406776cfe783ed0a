"""The variant store on the real Valkey: sticky pins set-if-absent, replaced only when their
variant is no longer allowed; health windows and rollbacks, kept per variant configuration."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as redis
from routeyard.consumers.settings import VariantSettings
from routeyard.consumers.stores.variants import Pin, VariantStore
from routeyard.router.catalog import AgentSpec, catalog_from_dict

pytestmark = pytest.mark.integration


def weather(v2_weight: int = 50) -> AgentSpec:
    variants = [{"name": "stable", "weight": 100 - v2_weight}, {"name": "v2", "weight": v2_weight}]
    return catalog_from_dict({"agents": [{"name": "WeatherAgent", "description": "w", "variants": variants}]}).agents[0]


def store(client: redis.Redis, prefix: str) -> VariantStore:
    return VariantStore(client, prefix, VariantSettings(min_count=3, threshold=0.2, window_s=60))


async def test_a_pin_is_set_once_and_kept_while_its_variant_is_allowed(redis_client: redis.Redis, prefix: str) -> None:
    pins = store(redis_client, prefix)
    both = ("stable", "v2")
    assert await pins.pin([Pin("WeatherAgent", "acme", "c:1", "stable", both)]) == [("stable", None, True)]
    # another worker, with other weights, wants v2 for the same conversation: it gets the pin
    assert await pins.pin([Pin("WeatherAgent", "acme", "c:1", "v2", both)]) == [("stable", None, False)]
    assert await pins.pin([Pin("WeatherAgent", "acme", "c:1", "v2", ("v2",))]) == [("v2", "stable", False)]
    # tenant and conversation are hashed into the key: no id can reach into another's pin
    assert await pins.pin([Pin("WeatherAgent", "acme:c", "1", "stable", both)]) == [("stable", None, True)]
    assert "c:1" not in pins.pin_key("WeatherAgent", "acme", "c:1")


async def test_an_unhealthy_canary_is_rolled_back_but_never_the_stable_variant(
    redis_client: redis.Redis, prefix: str
) -> None:
    pins = store(redis_client, prefix)
    spec = weather()
    now = time.time()
    await pins.record([("WeatherAgent", "v2", "error")] * 2 + [("WeatherAgent", "stable", "error")] * 5, now)
    assert await pins.rolled_back([spec], now) == {}  # two outcomes: under min_count
    await pins.record([("WeatherAgent", "v2", "timeout")], now)
    assert await pins.rolled_back([spec], now) == {"WeatherAgent": {"v2": "rolled back: v2 error rate 1.00 > 0.20"}}
    await pins.record([("WeatherAgent", "v2", "ok")] * 50, now)
    assert "v2" in (await pins.rolled_back([spec], now))["WeatherAgent"]  # a rollback stays
    assert await pins.rolled_back([weather(10)], now) == {}  # a new configuration starts clean
    assert await pins.rolled_back([spec], now + 120) != {}  # the window passed; the rollback did not

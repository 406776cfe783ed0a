"""Shared fixtures: one embedded broker and one Valkey per test session, unique names per test.

Nothing is marked automatically; tests that use `broker` carry `@pytest.mark.integration`
themselves. A flow test that takes `bus` runs twice: on a memory bus of its own (marked `memory`:
the fast tier, with the real Valkey) and on the real broker (marked `integration`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import redis.asyncio as redis
from routeyard.consumers.app import connect_redis
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.aio import KafkaBus
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.kafka.memory import MemoryBus


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as server:
        yield server


@pytest.fixture(scope="session")
def valkey() -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey() as server:
        yield server


BUSES = [
    pytest.param("memory", marks=pytest.mark.memory),
    pytest.param("tansu", marks=pytest.mark.integration),
]


@pytest.fixture(params=BUSES)
def bus(request: pytest.FixtureRequest) -> Bus:
    """The bus of a flow test: in memory, or the session's real broker (started only for it)."""
    if request.param == "memory":
        return MemoryBus()
    broker: EmbeddedBroker = request.getfixturevalue("broker")
    return KafkaBus(broker.bootstrap)


@pytest.fixture
def prefix() -> str:
    """A unique prefix for this test's topics, consumer groups and keys."""
    return f"t{uuid4().hex[:8]}."


@pytest.fixture
async def redis_client(valkey: EmbeddedValkey) -> AsyncIterator[redis.Redis]:
    client = connect_redis(valkey.url)  # as the workers connect: commands packed by hiredis
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the semantic engine's ONNX export (made once per session, by the first test
    that needs it): tests never write to the user's ~/.cache."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture
def semantic_env(onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ROUTEYARD_SEMANTIC__CACHE_DIR pointing there, for tests that run the CLI."""
    monkeypatch.setenv("ROUTEYARD_SEMANTIC__CACHE_DIR", str(onnx_cache))
    return onnx_cache


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[object]:
    """Three Valkey primaries in cluster mode (tests/integration/cluster.py); ``.url`` speaks cluster."""
    from tests.integration.cluster import EmbeddedValkeyCluster

    with EmbeddedValkeyCluster() as cluster:
        yield cluster

"""Shared fixtures: one embedded broker and one Valkey per test session, unique names per test.

Nothing is marked automatically; tests that use `broker`, `valkey` or `redis_client` carry
`@pytest.mark.integration` themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import redis.asyncio as redis
from routeyard.consumers.app import connect_redis
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as server:
        yield server


@pytest.fixture(scope="session")
def valkey() -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey() as server:
        yield server


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

"""Shared fixtures: one embedded broker and one Valkey per test session, unique names per test.

Nothing is marked automatically; tests that use `broker`, `valkey` or `redis_client` carry
`@pytest.mark.integration` themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import pytest
import redis.asyncio as redis

from consumers.embedded import EmbeddedBroker, EmbeddedValkey


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
    client = redis.Redis.from_url(valkey.url)
    try:
        yield client
    finally:
        await client.aclose()

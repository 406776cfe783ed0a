"""A turn nobody answers: ``TurnTimeout`` names it, so ``routeyard send`` can say which turn to
``routeyard explain`` (the timeout had cancelled the waiting futures, and the list came out empty)."""

from __future__ import annotations

import pytest
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.errors import TurnTimeout
from routeyard.consumers.kafka.memory import MemoryBus

from tests.integration.stack import catalog, make_settings, running, spec

pytestmark = pytest.mark.memory


async def test_the_timeout_names_the_unanswered_turn(valkey: EmbeddedValkey, prefix: str) -> None:
    settings = make_settings(MemoryBus(), valkey, prefix)
    async with running(settings, catalog(spec("WeatherAgent", "weather")), [], correlator=False) as client:
        event = client.event("c1", "weather?")
        with pytest.raises(TurnTimeout) as caught:
            await client.ask_many([event], timeout=0.5)
    assert caught.value.event_ids == [event.event_id]
    assert str(caught.value) == f"no response in 0.5 s; see: routeyard explain {event.event_id}"

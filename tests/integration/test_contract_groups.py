"""The AsyncAPI document's consumer groups are the ones the workers and agents really join: a
pipeline runs on a memory bus and the groups it created are compared with the document's."""

from __future__ import annotations

import pytest
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.memory import MemoryBus
from routeyard.schemas.asyncapi import asyncapi_document

from tests.integration.stack import Recorder, catalog, make_settings, running, spec

CATALOG = catalog(spec("WeatherAgent", "weather"), spec("MessagingAgent", "text"))


@pytest.mark.memory
async def test_asyncapi_groups_are_the_groups_the_pipeline_joins(valkey: EmbeddedValkey, prefix: str) -> None:
    bus = MemoryBus()
    settings = make_settings(bus, valkey, prefix)
    recorder = Recorder()
    async with running(settings, CATALOG, [recorder.agent("WeatherAgent"), recorder.agent("MessagingAgent")]) as c:
        (response,) = await c.ask_many([c.event("c-groups", "weather, then text Bob")], timeout=30)
        assert response.status == "complete"
    joined = set(bus._groups)  # the memory bus's consumer groups, by name
    agents = [(a.name, a.topic or settings.topics.agent(a.name)) for a in CATALOG.agents]
    channels = asyncapi_document(settings.topics, agents)["channels"]
    documented = {
        group
        for channel in channels.values()
        for op in (channel.get("publish"), channel.get("subscribe"))
        if op and "bindings" in op
        for group in op["bindings"]["kafka"]["groupId"]["enum"]
    }
    assert (
        joined
        == documented
        == {f"{prefix}router", f"{prefix}correlator", *(f"{prefix}agent.{n}" for n in CATALOG.names)}
    )

"""SyncRouteyardClient from plain (non-async) code, as a Flask view would use it, against a pipeline
on the real broker and Valkey (run by another thread's event loop, as another process would)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from routeyard.consumers.agents.agent import agent
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.errors import TurnRejected, TurnTimeout
from routeyard.consumers.kafka.errors import KafkaConnectionError
from routeyard.consumers.settings import Settings
from routeyard.schemas import AgentChunk, AgentTask, ConversationResponse, RoutingDecision

from routeyard import SyncRouteyardClient
from tests.integration.stack import Recorder, catalog, make_settings, running, spec

pytestmark = pytest.mark.integration

PIECES = ["It ", "was ", "a dark ", "and stormy night."]


@agent("StoryAgent", "tells a story, piece by piece")
async def story(task: AgentTask) -> AsyncIterator[str]:
    for piece in PIECES:
        await asyncio.sleep(0.01)
        yield piece


@pytest.fixture
def pipeline(broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str) -> Iterator[Settings]:
    """Router, correlator and agents running in a thread of their own until the test ends."""
    settings = make_settings(broker, valkey, prefix)
    ready, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        agents = [story, Recorder().agent("WeatherAgent")]
        cat = catalog(spec("StoryAgent", "story"), spec("WeatherAgent", "weather"))
        async with running(settings, cat, agents):
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    def thread() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    worker = threading.Thread(target=thread, daemon=True)
    worker.start()
    assert ready.wait(60) and not failure, failure
    yield settings
    stop.set()
    worker.join(60)
    assert not failure, failure


def test_ask_stream_and_errors_without_an_event_loop(pipeline: Settings) -> None:
    with SyncRouteyardClient(pipeline.kafka, prefix=pipeline.topic_prefix, watch_decisions=True) as client:
        answer = client.ask("c-sync", "weather in Oslo?", timeout=30)
        assert (answer.status, answer.content) == ("complete", "WeatherAgent: weather in Oslo?")
        assert client.decisions[answer.event_id].routes == ["WeatherAgent"]

        items = list(client.stream("c-sync", "tell me a story", timeout=30))
        assert isinstance(items[0], RoutingDecision) and items[0].routes == ["StoryAgent"]
        assert [i.text for i in items if isinstance(i, AgentChunk)] == PIECES
        assert isinstance(items[-1], ConversationResponse) and items[-1].content == "".join(PIECES)

        with pytest.raises(TurnRejected, match="unknown agents"):
            client.ask("c-sync", "weather?", agents=["NoSuchAgent"], timeout=30)
        with pytest.raises(TurnTimeout, match=r"no response in 0\.01 s"):
            client.ask("c-sync", "weather?", timeout=0.01)
    with pytest.raises(RuntimeError, match="closed"):
        client.ask("c-sync", "weather?")
    client.close()  # idempotent


def test_threads_share_one_client(pipeline: Settings) -> None:
    with SyncRouteyardClient(pipeline.kafka, prefix=pipeline.topic_prefix) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: client.ask(f"c-{i}", f"weather {i}?", timeout=30), range(16)))
    assert [a.content for a in answers] == [f"WeatherAgent: weather {i}?" for i in range(16)]


def test_leaving_a_stream_early_stops_it_and_the_client_goes_on(pipeline: Settings) -> None:
    with SyncRouteyardClient(pipeline.kafka, prefix=pipeline.topic_prefix) as client:
        for item in client.stream("c-early", "tell me a story", timeout=30):
            assert isinstance(item, AgentChunk)
            break
        assert client.ask("c-early", "weather now?", timeout=30).status == "complete"


def test_a_broker_that_is_not_there_is_one_clear_error_and_leaves_no_thread() -> None:
    with pytest.raises(KafkaConnectionError, match=r"Unable to bootstrap from \[\('127\.0\.0\.1', 9") as caught:
        SyncRouteyardClient("127.0.0.1:9")
    assert "\n" not in str(caught.value)
    assert [t.name for t in threading.enumerate() if t.name == "routeyard-client"] == []

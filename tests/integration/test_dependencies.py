"""Dependencies going away mid-stream: the workers back off and resume, and every conversation
is still answered exactly once. Redis: killed and restarted with its AOF. The broker: every
connection to it dropped and refused for seconds (a TCP proxy the broker advertises), the broker
itself intact.

Each test starts its own Valkey (it restarts it), on a random loopback port. No broker-restart
test: the embedded tansu stores in memory (notes/infra.md), so a restart loses topics, messages
and committed offsets and there is nothing to resume; that needs tansu on s3:// (moto) or Kafka.
"""

from __future__ import annotations

import asyncio
import collections

import pytest
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.settings import Settings
from routeyard.schemas import response_decoder

from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec

pytestmark = pytest.mark.integration

CONVERSATIONS = 120


def _settings(broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str) -> Settings:
    base = make_settings(broker, valkey, prefix, max_batch=8)
    # Short backoff caps so the workers notice the server is back within a second.
    return base.model_copy(update={"lifecycle": base.lifecycle.model_copy(update={"retry_max_delay_s": 0.5})})


async def _stream(client, events, chunk: int = 4, pause: float = 0.05):
    asks = []
    for i in range(0, len(events), chunk):
        asks.append(asyncio.create_task(client.ask_many(events[i : i + chunk], timeout=180)))
        await asyncio.sleep(pause)
    return [r for batch in await asyncio.gather(*asks) for r in batch]


async def _progress(agents: Recorder, name: str, at_least: int) -> None:
    async with asyncio.timeout(60):
        while len(agents.tasks.get(name, [])) < at_least:
            await asyncio.sleep(0.01)


async def _responses_by_event(settings: Settings) -> collections.Counter[str]:
    """How many *different* responses each event got. A record repeated byte for byte is
    at-least-once delivery (a producer retrying a batch whose acknowledgement the cut connection
    lost, or an outbox re-run), not a second answer: clients key responses by event id."""
    values = set(await read_all(settings, settings.topics.responses))
    return collections.Counter(response_decoder.decode(v).event_id for v in values)


async def test_redis_down_for_seconds_mid_stream_loses_nothing_and_answers_once(
    broker: EmbeddedBroker, prefix: str
) -> None:
    with EmbeddedValkey(appendonly=True) as valkey:
        settings = _settings(broker, valkey, prefix)
        agents = Recorder()
        cat = catalog(spec("WeatherAgent", "weather"), spec("RestaurantAgent", "table"))
        async with running(settings, cat, [agents.agent("WeatherAgent"), agents.agent("RestaurantAgent")]) as client:
            events = [
                client.event(f"redis-{i}", "weather and a table?" if i % 2 else "weather?")
                for i in range(CONVERSATIONS)
            ]
            streaming = asyncio.create_task(_stream(client, events))
            await _progress(agents, "WeatherAgent", CONVERSATIONS // 4)
            port = valkey.port
            valkey.kill()  # SIGKILL: appendfsync always keeps every acknowledged write
            down_at = len(agents.tasks["WeatherAgent"])
            await asyncio.sleep(3)
            valkey.start()
            assert valkey.port == port
            responses = await streaming
        assert down_at < CONVERSATIONS, "Redis went down too late to test anything"
        assert {r.status for r in responses} == {"complete"}
        on_topic = await _responses_by_event(settings)
        assert sorted(on_topic) == sorted(e.event_id for e in events)
        assert max(on_topic.values()) == 1, [k for k, n in on_topic.items() if n > 1]


class _Proxy:
    """A TCP forwarder in front of the broker that can drop every connection and refuse new
    ones for a while: the network between routeyard and Kafka failing, the broker itself fine."""

    def __init__(self, target_port: int) -> None:
        from routeyard.consumers.dev.embedded import free_port

        self.port = free_port()
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.dropped = 0
        """Connections aborted by ``cut``."""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Close the listener and every open connection (clients see resets and refusals)."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._links):
            writer.transport.abort()
        self.dropped += len(self._links)
        self._links.clear()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._links.discard(writer)
            writer.transport.abort()


class _AdvertisedBroker(EmbeddedBroker):
    """tansu listening on its own port but telling clients to connect through the proxy."""

    def __init__(self, proxy_port: int) -> None:
        self.proxy_port = proxy_port
        super().__init__()

    def _command(self) -> list[str]:
        command = super()._command()
        at = command.index("--advertised-listener-url") + 1
        command[at] = f"tcp://127.0.0.1:{self.proxy_port}"
        return command


async def test_broker_connection_dropped_for_seconds_mid_stream_loses_nothing_and_answers_once(
    valkey: EmbeddedValkey, prefix: str
) -> None:
    from routeyard.consumers.dev.embedded import free_port

    proxy_port = free_port()
    with _AdvertisedBroker(proxy_port) as broker:
        proxy = _Proxy(broker.port)
        proxy.port = proxy_port
        await proxy.start()
        settings = _settings(broker, valkey, prefix)
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"bootstrap": f"127.0.0.1:{proxy_port}"})}
        )
        agents = Recorder()
        async with running(settings, catalog(spec("WeatherAgent", "weather")), [agents.agent("WeatherAgent")]) as c:
            events = [c.event(f"net-{i}", "weather?") for i in range(CONVERSATIONS)]
            streaming = asyncio.create_task(_stream(c, events))
            await _progress(agents, "WeatherAgent", CONVERSATIONS // 4)
            await proxy.cut()
            down_at = len(agents.tasks["WeatherAgent"])
            await asyncio.sleep(3)
            await proxy.start()
            responses = await streaming
        assert down_at < CONVERSATIONS, "the network went down too late to test anything"
        assert proxy.dropped >= 6, "the workers' connections did not go through the proxy"
        assert {r.status for r in responses} == {"complete"}
        on_topic = await _responses_by_event(settings)
        assert sorted(on_topic) == sorted(e.event_id for e in events)
        assert max(on_topic.values()) == 1, [k for k, n in on_topic.items() if n > 1]

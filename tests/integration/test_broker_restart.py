"""The broker goes down in the middle of the traffic and comes back: nothing is lost.

tansu keeps its topics, messages and committed offsets in S3 here (moto's S3 server, a real HTTP
service on a loopback port), so a SIGKILLed broker restarted on the same port has them all, as a
real Kafka would. While it is down, every worker retries the batch in hand; afterwards every
conversation is answered, and no agent runs a task twice.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import urllib.request
from collections.abc import Iterator
from uuid import uuid4

import pytest
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey, _EmbeddedServer
from routeyard.schemas import response_decoder

from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec

pytestmark = pytest.mark.integration


class MotoS3(_EmbeddedServer):
    """moto's S3 server, with the embedded servers' life cycle (free port, log, stop at exit)."""

    name = "moto"
    start_timeout = 30.0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def _ready(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.endpoint}/", timeout=0.5).close()
        except OSError:
            return False
        return True


@pytest.fixture
def s3() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with the bucket tansu writes to."""
    with MotoS3() as server:
        urllib.request.urlopen(urllib.request.Request(f"{server.endpoint}/tansu", method="PUT"), timeout=10).close()
        yield server.endpoint


@pytest.fixture
def durable_broker(s3: str) -> Iterator[EmbeddedBroker]:
    env = {
        "AWS_ENDPOINT": s3,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    with EmbeddedBroker(storage="s3://tansu/", env=env) as broker:
        yield broker


async def test_a_broker_restart_loses_no_conversation(durable_broker: EmbeddedBroker, valkey: EmbeddedValkey) -> None:
    settings = make_settings(durable_broker, valkey, f"t{uuid4().hex[:8]}.")
    agents = Recorder()
    slow = agents.agent("WeatherAgent", delay=1.0)  # its replies come while the broker is down
    async with running(settings, catalog(spec("WeatherAgent", "weather")), [slow]) as c:
        warm = await c.ask_many([c.event(f"warm-{i}", "weather?") for i in range(3)], timeout=60)
        assert {r.status for r in warm} == {"complete"}

        before = [c.event(f"a-{i}", f"weather in city {i}?") for i in range(20)]
        after = [c.event(f"b-{i}", f"weather in town {i}?") for i in range(20)]
        first = asyncio.create_task(c.ask_many(before, timeout=60))
        while len(agents.tasks["WeatherAgent"]) < 3 + len(before):  # every turn routed, no reply yet
            await asyncio.sleep(0.02)
        durable_broker.kill()
        second = asyncio.create_task(c.ask_many(after, timeout=60))  # sent while the broker is down
        await asyncio.sleep(2.0)  # every worker fails its fetches and publishes meanwhile, and retries
        assert not first.done()
        durable_broker.restart()
        responses = [*await first, *await second]

    events = before + after
    assert sorted(r.event_id for r in responses) == sorted(e.event_id for e in events)
    assert {r.status for r in responses} == {"complete"}
    handled = collections.Counter(t.task_id for t in agents.tasks["WeatherAgent"])
    assert len(handled) == 3 + len(events)
    assert [task for task, n in handled.items() if n > 1] == []  # no task ran twice
    published = collections.Counter(
        r.event_id for r in map(response_decoder.decode, await read_all(settings, settings.topics.responses))
    )
    assert all(published[e.event_id] >= 1 for e in events)

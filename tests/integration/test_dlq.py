"""``routeyard dlq`` with the real Valkey: poison events dead-lettered by a running router and read
back as letters (on each bus: memory, the real broker); listed and shown, one fixed (the catalog
gains the agent it named) and re-driven exactly once (the real broker only: the CLI builds its own
aiokafka clients from ``--bootstrap``, and ``redrive`` publishes with an aiokafka producer)."""

from __future__ import annotations

import asyncio
import json

import pytest
from routeyard.consumers.cli.main import main
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings
from routeyard.consumers.tools.dlq import Letter, read_letters
from routeyard.schemas import ConversationEvent, Message, encode, response_decoder

from tests.integration.stack import Recorder, bus_for, catalog, make_settings, read_all, running, send, spec

BEFORE = catalog(spec("WeatherAgent", "weather"))
AFTER = catalog(spec("WeatherAgent", "weather"), spec("PaymentsAgent", "pay", "bill"))

FIXABLE = encode(
    ConversationEvent(
        event_id="pay-1",
        conversation_id="c-pay",
        agents=["PaymentsAgent"],
        messages=[Message(role="user", content="please pay my electricity bill")],
    )
)
HOPELESS = encode(ConversationEvent(event_id="empty-1", conversation_id="c-empty", messages=[]))
GARBAGE = b"\x00\xffnot json {"


@pytest.fixture
def settings(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> Settings:
    return make_settings(bus, valkey, prefix)


@pytest.fixture
def on_broker(broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str) -> Settings:
    """For the CLI tests: ``routeyard dlq`` reaches the bus only through ``--bootstrap``."""
    return make_settings(broker, valkey, prefix)


async def _poison(settings: Settings) -> list[tuple[int, int]]:
    """FIXABLE, HOPELESS and GARBAGE on the conversations topic; their (partition, offset)."""
    values, keys = [FIXABLE, HOPELESS, GARBAGE], ["c-pay", "c-empty", None]
    return await send(settings, settings.topics.conversations, values, keys)


async def _letters(settings: Settings, count: int, timeout: float = 20) -> list[Letter]:
    async with asyncio.timeout(timeout):
        while True:
            letters = await read_letters(bus_for(settings), settings.topics, settle_s=0.2)  # type: ignore[arg-type]
            if len(letters) >= count:
                return letters
            await asyncio.sleep(0.2)


async def _cli(settings: Settings, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    argv = ["--bootstrap", settings.kafka.bootstrap, "--redis", settings.redis.url.get_secret_value()]
    argv += ["--prefix", settings.topic_prefix, "dlq", *args]
    capsys.readouterr()
    code = await asyncio.to_thread(main, argv)
    return code, capsys.readouterr().out


async def test_poison_events_become_letters_with_their_source_and_reason(settings: Settings) -> None:
    async with running(settings, BEFORE, [Recorder().agent("WeatherAgent")]) as client:
        sent = await _poison(settings)
        assert (await client.ask("c-ok", "weather in Oslo?", timeout=30)).status == "complete"
        letters = await _letters(settings, 3)
    assert sorted(x.letter.original for x in letters) == sorted([FIXABLE, HOPELESS, GARBAGE])
    by_original = {x.letter.original: x.letter for x in letters}
    for value, (partition, offset) in zip([FIXABLE, HOPELESS, GARBAGE], sent, strict=True):
        letter = by_original[value]
        assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
            settings.topics.conversations, partition, offset
        )  # fmt: skip
        assert letter.stage == "decode"
    assert "unknown agents in the turn's restriction: PaymentsAgent" in by_original[FIXABLE].error
    assert "no user message" in by_original[HOPELESS].error
    assert [x.event_id for x in letters if x.letter.original == FIXABLE] == ["pay-1"]


@pytest.mark.integration  # the CLI: the real broker only (see the module docstring)
async def test_list_show_and_replay_once(on_broker: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    settings = on_broker
    agents = Recorder()
    async with running(settings, BEFORE, [agents.agent("WeatherAgent")]) as client:
        await _poison(settings)
        assert (await client.ask("c-ok", "weather in Oslo?", timeout=30)).status == "complete"
        letters = await _letters(settings, 3)
    by_original = {x.letter.original: x for x in letters}
    fixable = by_original[FIXABLE]

    code, listing = await _cli(settings, capsys, "list")
    assert code == 0
    header, *rows = listing.strip().splitlines()
    assert header.split()[:3] == ["ID", "FAILED", "AT"] and len(rows) == 3
    row = next(r for r in rows if r.startswith(fixable.id + " "))
    assert "pay-1" in row and "PaymentsAgent" in row and "decode" in row
    assert f"{settings.topics.conversations}[{fixable.letter.source_partition}]" in row
    code, limited = await _cli(settings, capsys, "list", "--stage", "route")
    assert (code, limited.strip()) == (0, header)  # the header only

    code, shown = await _cli(settings, capsys, "show", "pay-1")
    assert code == 0
    assert "unknown agents in the turn's restriction: PaymentsAgent" in shown
    assert f"source:     {fixable.source}" in shown
    assert json.dumps(json.loads(FIXABLE), indent=2, ensure_ascii=False) in shown  # pretty-printed
    code, raw = await _cli(settings, capsys, "show", by_original[GARBAGE].id)
    assert code == 0 and "not JSON" in raw and "not json {" in raw

    code, _ = await _cli(settings, capsys, "replay")  # nothing chosen: refused, nothing sent
    assert code == 2
    code, dry = await _cli(settings, capsys, "replay", "--id", fixable.id, "--dry-run")
    assert code == 0 and "1 would re-drive" in dry

    async with running(settings, AFTER, [agents.agent("PaymentsAgent")]):
        code, first = await _cli(settings, capsys, "replay", "--id", fixable.id)
        code2, second = await _cli(settings, capsys, "replay", "--id", fixable.id)
        response = await _response(settings, "pay-1")
    assert (code, code2) == (0, 0)
    assert "1 re-driven, 0 already" in first
    assert "0 re-driven, 1 already" in second and f"already re-driven: {fixable.id}" in second
    assert response.status == "complete" and response.routes == ["PaymentsAgent"]
    assert [t.event_id for t in agents.tasks["PaymentsAgent"]] == ["pay-1"]
    conversations = await read_all(settings, settings.topics.conversations)
    assert conversations.count(FIXABLE) == 2  # the original and exactly one re-drive


@pytest.mark.integration  # the CLI re-drives through aiokafka: the real broker only
async def test_a_redriven_letter_that_is_still_bad_is_dead_lettered_again(
    on_broker: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = on_broker
    async with running(settings, BEFORE, []):
        await send(settings, settings.topics.conversations, [HOPELESS], ["c-empty"])
        (first,) = await _letters(settings, 1)
        code, out = await _cli(settings, capsys, "replay", "--stage", "decode")
        assert code == 0 and "1 re-driven" in out
        letters = await _letters(settings, 2)
    assert [x.letter.original for x in letters] == [HOPELESS, HOPELESS]
    again = next(x for x in letters if x.id != first.id)
    assert "no user message" in again.letter.error
    assert again.letter.source_offset != first.letter.source_offset  # the re-driven copy, not the original


async def _response(settings: Settings, event_id: str, timeout: float = 30):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while True:
            for value in await read_all(settings, settings.topics.responses, settle=0.3):
                response = response_decoder.decode(value)
                # the refusal answered its sender at once; a re-driven event's own answer comes after
                if response.event_id == event_id and response.status != "rejected":
                    return response
            await asyncio.sleep(0.2)

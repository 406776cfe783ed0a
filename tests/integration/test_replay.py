"""``routeyard replay`` on real recorded traffic: 8 turns over 3 conversations routed live by the
rules engine, then replayed with the rules engine and a changed catalog (a new keyword for the
restaurant agent, a new calendar agent).

Recorded -> candidate, by hand: e4 "Also text Anna about the meeting" Messaging -> Messaging,
Calendar (added); e6 "Put the meeting in my calendar" none -> Calendar; e7 "What about dinner
after?" none -> Restaurant (both no route -> route); the 5 others agree, among them the follow-up
e3 "And tomorrow?", which names no agent and is routed to the weather agent only through the
rebuilt context.

The live traffic is recorded once per module on each bus (memory, the real broker) and the
library tests run on both; the CLI tests run on the real broker only (``routeyard replay`` builds
its own aiokafka clients from ``--bootstrap``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from routeyard.consumers.app import build_engine
from routeyard.consumers.cli.main import main
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.memory import MemoryBus
from routeyard.consumers.settings import Settings
from routeyard.consumers.tools.replay import ReplayError, Selection, replay
from routeyard.consumers.tools.replay_report import ReplayReport, change_kind, replay_markdown
from routeyard.router.catalog import catalog_from_dict
from routeyard.router.engines.base import RoutingRequest
from routeyard.router.engines.rules import RulesEngine
from routeyard.schemas import Message, Topics, event_decoder

from tests.conftest import BUSES
from tests.integration.stack import Recorder, bus_for, catalog, make_settings, memory, read_all, running, settled, spec

LIVE = catalog(
    spec("WeatherAgent", "weather", "forecast"),
    spec("RestaurantAgent", "restaurant", "table"),
    spec("MessagingAgent", "text", "message"),
)
CANDIDATE: dict[str, Any] = {
    "agents": [
        spec("WeatherAgent", "weather", "forecast"),
        spec("RestaurantAgent", "restaurant", "table", "dinner"),
        spec("MessagingAgent", "text", "message"),
        spec("CalendarAgent", "meeting", "calendar"),
    ]
}
TURNS = [  # (event id, conversation, text, recorded routes)
    ("e1", "c-weather", "What's the weather in Paris?", ["WeatherAgent"]),
    ("e2", "c-food", "Book a table for two", ["RestaurantAgent"]),
    ("e3", "c-weather", "And tomorrow?", ["WeatherAgent"]),
    ("e4", "c-food", "Also text Anna about the meeting", ["MessagingAgent"]),
    ("e5", "c-weather", "Thanks!", []),
    ("e6", "c-plan", "Put the meeting in my calendar", []),
    ("e7", "c-plan", "What about dinner after?", []),
    ("e8", "c-food", "thanks, bye", []),
]
CHANGED = {
    "e4": ("added", ["MessagingAgent"], ["MessagingAgent", "CalendarAgent"]),
    "e6": ("no_route_to_route", [], ["CalendarAgent"]),
    "e7": ("no_route_to_route", [], ["RestaurantAgent"]),
}
LABELS = {  # recorded right on 6 (not e6, e7), candidate on 7 (not e4)
    "e1": ["WeatherAgent"],
    "e2": ["RestaurantAgent"],
    "e3": ["WeatherAgent"],
    "e4": ["MessagingAgent"],
    "e5": [],
    "e6": ["CalendarAgent"],
    "e7": ["RestaurantAgent"],
    "e8": [],
    "not-replayed": ["WeatherAgent"],
}


_RECORDED: dict[str, Settings] = {}
"""The live pipeline's settings on each bus, recorded once per module."""


async def _recorded(where: EmbeddedBroker | MemoryBus, valkey: EmbeddedValkey) -> Settings:
    """The live pipeline's settings, after it routed and answered TURNS (one at a time)."""
    kind = "memory" if isinstance(where, MemoryBus) else "tansu"
    if kind not in _RECORDED:
        settings = make_settings(where, valkey, f"t{uuid4().hex[:8]}.")
        agents = Recorder()
        workers = [agents.agent(name) for name in ("WeatherAgent", "RestaurantAgent", "MessagingAgent")]
        async with running(settings, LIVE, workers) as client:
            for event_id, conversation, text, _ in TURNS:
                await client.ask_many([client.event(conversation, text, event_id=event_id)], timeout=30)
            await settled(settings, 0.3)  # decisions are published with the tasks; let the last ones land
        _RECORDED[kind] = settings
    return _RECORDED[kind]


@pytest.fixture(scope="module", params=BUSES)
async def live(request: pytest.FixtureRequest, valkey: EmbeddedValkey) -> Settings:
    """The live pipeline on each bus."""
    where = MemoryBus() if request.param == "memory" else request.getfixturevalue("broker")
    return await _recorded(where, valkey)


@pytest.fixture(scope="module")
async def live_broker(broker: EmbeddedBroker, valkey: EmbeddedValkey) -> Settings:
    """The live pipeline on the real broker, for the CLI (it reaches the bus only through ``--bootstrap``)."""
    return await _recorded(broker, valkey)


def cli(settings: Settings, engine: str) -> list[str]:
    """``routeyard replay`` on ``settings``' broker and prefix with ``engine``."""
    return ["--bootstrap", settings.kafka.bootstrap, "--prefix", settings.topic_prefix, "replay", "--engine", engine]


def candidate_settings(settings: Settings) -> Settings:
    router = settings.router.model_copy(update={"engine": "rules", "fallback": []})
    return settings.model_copy(update={"router": router})


async def run_replay(settings: Settings, selection: Selection | None = None, **options: Any) -> ReplayReport:
    candidate = candidate_settings(settings)
    async with build_engine(candidate) as engine:
        return await replay(
            candidate, engine, catalog_from_dict(CANDIDATE), selection, bus=bus_for(settings), **options
        )


async def record_counts(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    """Records on each topic (0 for a topic that does not exist), read with a plain consumer."""
    bus = memory(settings)
    if bus is not None:
        await bus.quiet()
        return {t: len(bus.records(t)) for t in topics}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, fetch_max_wait_ms=25)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        counts = dict.fromkeys(topics, 0)
        if partitions:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while batch := await consumer.getmany(timeout_ms=500):
                for tp, records in batch.items():
                    counts[tp.topic] += len(records)
        return counts
    finally:
        await consumer.stop()


def watched(settings: Settings) -> list[str]:
    topics = settings.topics
    agents = [topics.agent(a["name"]) for a in CANDIDATE["agents"]]
    return [topics.conversations, topics.decisions, topics.responses, topics.replies, *agents]


@pytest.fixture
async def untouched(live: Settings) -> AsyncIterator[None]:
    """Fails the test if anything was published on the live prefix's topics meanwhile."""
    before = await record_counts(live, watched(live))
    assert before[live.topics.conversations] == before[live.topics.decisions] == len(TURNS)
    yield
    assert await record_counts(live, watched(live)) == before


async def test_replay_compares_a_changed_catalog_with_the_recorded_decisions(live: Settings, untouched: None) -> None:
    report = await run_replay(live)
    summary = report.summary
    assert [t.event_id for t in report.turns] == [t[0] for t in TURNS]
    assert [t.recorded.routes if t.recorded else None for t in report.turns] == [t[3] for t in TURNS]
    assert (summary.selected, summary.compared, summary.agreed, summary.unrecorded) == (8, 8, 5, 0)
    assert summary.agreement == 5 / 8
    assert summary.changes == {"no_route_to_route": 2, "added": 1}
    changed = {
        t.event_id: (t.kind, t.recorded.routes, t.candidate.routes)
        for t in report.turns
        if t.kind != "same" and t.recorded and t.candidate
    }
    assert changed == CHANGED
    assert {t.candidate.catalog_version for t in report.turns if t.candidate} == {catalog_from_dict(CANDIDATE).version}
    assert summary.recorded == {f"rules, catalog {LIVE.version}": 8}
    markdown = replay_markdown(report, examples=2)
    assert "| agreement | 5/8 (62.5%) |" in markdown
    assert "| added agent | 1 |" in markdown and "| no route -> route | 2 |" in markdown
    assert "## Examples (2 of 3 changed turns)" in markdown
    assert "| e4 | Also text Anna about the meeting | MessagingAgent | MessagingAgent, CalendarAgent |" in markdown


async def test_the_follow_up_is_routed_with_the_rebuilt_context(live: Settings) -> None:
    report = await run_replay(live, Selection(skip=2, limit=1))
    (turn,) = report.turns
    assert turn.event_id == "e3" and turn.kind == "same"
    assert turn.candidate is not None and turn.candidate.routes == ["WeatherAgent"]
    assert [(m.role, m.name, m.content) for m in turn.context] == [
        ("user", None, "What's the weather in Paris?"),
        ("assistant", "WeatherAgent", "WeatherAgent: What's the weather in Paris?"),
        ("user", None, "And tomorrow?"),
    ]
    alone = RoutingRequest(
        event_id="e3",
        conversation=[Message(role="user", content="And tomorrow?")],
        agents=catalog_from_dict(CANDIDATE).agents,
    )
    assert RulesEngine().route(alone).routes == []  # without the context it would not be routed


async def test_selection_by_time_and_by_position(live: Settings) -> None:
    future = await run_replay(live, Selection(since=datetime.now(UTC) + timedelta(days=1)))
    assert (future.summary.source.read, future.summary.selected, future.turns) == (8, 0, [])
    past = await run_replay(live, Selection(until=datetime.now(UTC) - timedelta(days=1)))
    assert past.summary.selected == 0
    window = await run_replay(live, Selection(since=datetime.now(UTC) - timedelta(hours=1), skip=5, limit=10))
    assert [t.event_id for t in window.turns] == ["e6", "e7", "e8"]
    with pytest.raises(ReplayError, match="not before"):
        await run_replay(live, Selection(since=datetime.now(UTC), until=datetime.now(UTC) - timedelta(seconds=1)))


@pytest.mark.integration  # the CLI: the real broker only (see the module docstring)
def test_cli_scores_recorded_and_candidate_against_labels(
    live_broker: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog_file, labels_file, out = tmp_path / "candidate.yaml", tmp_path / "labels.jsonl", tmp_path / "out"
    catalog_file.write_text(yaml.safe_dump(CANDIDATE), encoding="utf-8")
    labels_file.write_text("".join(json.dumps({"event_id": e, "expected_routes": r}) + "\n" for e, r in LABELS.items()))
    argv = cli(live_broker, "rules")
    code = main([*argv, "--catalog", str(catalog_file), "--labels", str(labels_file), "--out", str(out)])
    markdown = capsys.readouterr().out
    assert code == 0
    assert "| exact set-match accuracy | 75.0% | 87.5% | +12.5 pp |" in markdown
    assert "| no route: precision | 50.0% | 100.0% | +50.0 pp |" in markdown
    assert "| added | 1 | 100.0% | 0.0% | -100.0 pp |" in markdown  # accuracy per change kind
    assert "| no_route_to_route | 2 | 0.0% | 100.0% | +100.0 pp |" in markdown
    document = json.loads((out / "replay.json").read_text())
    recorded, candidate = document["scores"]["recorded"], document["scores"]["candidate"]
    assert (recorded["n"], recorded["correct"], candidate["correct"]) == (8, 6, 7)
    assert candidate["per_agent"]["CalendarAgent"] == {
        "tp": 1, "fp": 1, "fn": 0, "precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3)
    }  # fmt: skip
    assert document["summary"]["agreed"] == 5 and document["summary"]["labelled"] == 8
    turns = [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]
    assert [(t["event_id"], t["kind"]) for t in turns if t["kind"] != "same"] == [
        ("e4", "added"), ("e6", "no_route_to_route"), ("e7", "no_route_to_route")
    ]  # fmt: skip
    assert (out / "replay.md").read_text() == markdown


async def test_dispatch_republishes_the_selected_events_to_a_shadow_prefix_only(
    live: Settings, untouched: None
) -> None:
    shadow = f"{live.topic_prefix}shadow."
    report = await run_replay(live, Selection(skip=1, limit=4), dispatch_prefix=shadow)
    assert (report.summary.dispatch_topic, report.summary.dispatched) == (Topics(prefix=shadow).conversations, 4)
    originals = {event_decoder.decode(v).event_id: v for v in await read_all(live, live.topics.conversations)}
    republished = await read_all(live, Topics(prefix=shadow).conversations)
    assert sorted(republished) == sorted(originals[e] for e in ("e2", "e3", "e4", "e5"))
    with pytest.raises(ReplayError, match="live prefix"):
        await run_replay(live, dispatch_prefix=live.topic_prefix)


@pytest.mark.integration  # the CLI: the real broker only (see the module docstring)
def test_cli_refuses_to_dispatch_to_the_live_prefix(live_broker: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    argv = cli(live_broker, "rules")
    assert main([*argv, "--dispatch-prefix", live_broker.topic_prefix]) == 2
    assert "refusing to dispatch to the live prefix" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("recorded", "candidate", "kind"),
    [
        (["A"], ["A"], "same"),
        (["A"], ["A", "B"], "added"),
        (["A", "B"], ["B"], "removed"),
        ([], ["A"], "no_route_to_route"),
        (["A"], [], "route_to_no_route"),
        (["A", "B"], ["B", "A"], "reordered"),
        (["A"], ["B"], "different"),
        (["A", "B"], ["A", "C"], "different"),
        (["A"], None, "rejected"),
        (None, ["A"], "unrecorded"),
    ],
)
def test_change_kinds(recorded: list[str] | None, candidate: list[str] | None, kind: str) -> None:
    assert change_kind(recorded, candidate) == kind


SEMANTIC_CANDIDATE: dict[str, Any] = {
    "agents": [
        {"name": "WeatherAgent", "description": "Weather forecasts: temperature, rain and wind for a city and day."},
        {"name": "RestaurantAgent", "description": "Finds restaurants and books tables for lunch or dinner."},
        {"name": "MessagingAgent", "description": "Sends text messages and SMS to the user's contacts."},
        {"name": "CalendarAgent", "description": "Adds meetings and events to the user's calendar."},
    ]
}


@pytest.mark.integration  # the CLI: the real broker only (see the module docstring)
def test_replay_with_the_semantic_engine_as_candidate(
    live_broker: Settings, semantic_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shadow-test the CPU engine on traffic the rules engine routed: the meeting turn it missed
    goes to the new calendar agent, the follow-up and the goodbyes stay as they were."""
    catalog_file, labels_file, out = tmp_path / "candidate.yaml", tmp_path / "labels.jsonl", tmp_path / "out"
    catalog_file.write_text(yaml.safe_dump(SEMANTIC_CANDIDATE), encoding="utf-8")
    labels_file.write_text("".join(json.dumps({"event_id": e, "expected_routes": r}) + "\n" for e, r in LABELS.items()))
    argv = cli(live_broker, "semantic")
    code = main([*argv, "--catalog", str(catalog_file), "--labels", str(labels_file), "--out", str(out)])
    markdown = capsys.readouterr().out
    assert code == 0, markdown
    turns = {t["event_id"]: t for t in map(json.loads, (out / "turns.jsonl").read_text().splitlines())}
    assert list(turns) == [t[0] for t in TURNS]
    candidate = {e: t["candidate"]["routes"] for e, t in turns.items()}
    assert {t["candidate"]["engine"] for t in turns.values()} == {"semantic"}
    assert all(t["candidate"]["scores"] for e, t in turns.items() if e not in ("e5", "e8"))  # why, per agent
    assert candidate["e3"] == ["WeatherAgent"]  # "And tomorrow?": from the rebuilt context
    assert candidate["e5"] == candidate["e8"] == []  # "Thanks!", "thanks, bye"
    assert candidate["e6"] == ["CalendarAgent"] and turns["e6"]["kind"] == "no_route_to_route"
    document = json.loads((out / "replay.json").read_text())
    scores = document["scores"]
    assert scores["candidate"]["correct"] > scores["recorded"]["correct"] == 6

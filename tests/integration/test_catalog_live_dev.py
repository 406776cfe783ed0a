"""``routeyard dev`` watches its catalog file: it warns about a catalog agent nobody consumes and a
running agent the catalog does not name, and an edit of the file is in effect without a restart."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import httpx
import pytest
from routeyard.consumers.dev.embedded import free_port

from tests.integration.test_dev_cli import AGENTS, Dev, _wait_for, routeyard

pytestmark = pytest.mark.integration

BEFORE = """
agents:
  - {name: TranslateAgent, description: Translates text, timeout: 10s, rules: {keywords: [translate]}}
  - {name: GhostAgent, description: Nobody runs it, timeout: 10s, rules: {keywords: [ghost]}}
"""
AFTER = """
agents:
  - {name: TranslateAgent, description: Translates text, timeout: 10s, rules: {keywords: [translate]}}
  - {name: SummaryAgent, description: Summarises text, timeout: 10s, rules: {keywords: [summarise]}}
"""


def test_dev_reloads_its_catalog_and_warns_about_agents_that_do_not_add_up(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "proj" / "translator.py").write_text(textwrap.dedent(AGENTS))
    catalog = tmp_path / "proj" / "agents.yaml"
    catalog.write_text(BEFORE)
    dev = Dev(tmp_path / "work", free_port(), free_port(), free_port())
    dev.start()
    try:
        log = _wait_for(dev.log, "agent SummaryAgent is running but not in the catalog")
        assert "catalog agent GhostAgent has no running consumer" in log
        assert "catalog agent TranslateAgent has no running consumer" not in log
        before = routeyard(dev, "--env-file", "dev.env", "send", "--wait", "c1", "please summarise this")
        assert "SummaryAgent" not in before.stdout
        time.sleep(0.01)
        catalog.write_text(AFTER)
        _wait_for(dev.log, "reloaded (version")
        after = routeyard(dev, "--env-file", "dev.env", "send", "--wait", "c2", "please summarise this")
        assert after.returncode == 0, after.stderr
        assert "    SummaryAgent    < summary" in after.stdout.splitlines()
        models = httpx.get(f"http://127.0.0.1:{dev.gateway_port}/v1/models", timeout=10).json()
        assert {m["id"] for m in models["data"]} == {"routeyard", "TranslateAgent", "SummaryAgent"}
        assert dev.log.read_text().count("agent SummaryAgent is running but not in the catalog") == 1
    finally:
        dev.stop()

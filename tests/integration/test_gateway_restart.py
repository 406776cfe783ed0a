"""A gateway killed (SIGKILL) during a long async turn: a new gateway process with the same
instance id finds the response on its reply topic and answers GET /v1/turns/{id}; the agent ran once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.gateway_stack import KEYS
from tests.integration.stack import Recorder, catalog, make_settings, running, spec

pytestmark = pytest.mark.integration

SPECS = [spec("SlowAgent", "slow", timeout="30s")]
KEY = next(iter(KEYS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_gateway(settings, catalog_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    env = dict(
        os.environ,
        ROUTEYARD_TOPIC_PREFIX=settings.topic_prefix,
        ROUTEYARD_KAFKA__BOOTSTRAP=settings.kafka.bootstrap,
        ROUTEYARD_KAFKA__SESSION_TIMEOUT_MS="6000",
        ROUTEYARD_KAFKA__HEARTBEAT_INTERVAL_MS="1000",
        ROUTEYARD_REDIS__URL=settings.redis.url.get_secret_value(),
        ROUTEYARD_ROUTER__CATALOG=str(catalog_path),
        ROUTEYARD_GATEWAY__API_KEYS=",".join(f"{k}:{t}" for k, t in KEYS.items()),
        ROUTEYARD_GATEWAY__PORT=str(port),
        ROUTEYARD_GATEWAY__INSTANCE="restarted",
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "routeyard.consumers.cli", "gateway"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def listening(url: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the gateway did not start: {log.read_text()[-2000:]}")


async def test_async_turn_survives_a_killed_gateway(broker, valkey, prefix: str, tmp_path: Path) -> None:
    settings = make_settings(broker, valkey, prefix)
    catalog_path = tmp_path / "agents.yaml"
    catalog_path.write_text(yaml.safe_dump({"agents": SPECS}))
    recorder = Recorder()
    port, log = free_port(), tmp_path / "gateway.log"
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {KEY}"}
    async with running(settings, catalog(*SPECS), [recorder.agent("SlowAgent", delay=5.0)]):
        first = start_gateway(settings, catalog_path, port, log)
        try:
            await listening(url, log)
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                turn = {"model": "routeyard", "messages": [{"role": "user", "content": "slow answer please"}]}
                accepted = await http.post(
                    "/v1/chat/completions", json=turn, headers=headers | {"Prefer": "respond-async"}
                )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert accepted.status_code == 202, accepted.text
        await asyncio.sleep(6.0)  # the agent answers while no gateway runs
        second = start_gateway(settings, catalog_path, port, log)
        try:
            await listening(url, log)
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                for _ in range(300):
                    done = await http.get(accepted.headers["location"], headers=headers)
                    if done.status_code != 202:
                        break
                    await asyncio.sleep(0.1)
                again = await http.get(accepted.headers["location"], headers=headers)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    assert done.status_code == 200, done.text
    assert done.json()["choices"][0]["message"]["content"] == "SlowAgent: slow answer please"
    assert again.json()["choices"] == done.json()["choices"]
    assert len(recorder.tasks["SlowAgent"]) == 1  # nothing ran (or was answered) twice
    assert second.returncode == 0, log.read_text()[-2000:]

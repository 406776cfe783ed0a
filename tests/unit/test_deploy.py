"""compose/ cannot be run here (no Docker): check it is coherent with the code instead."""

from __future__ import annotations

from pathlib import Path

import yaml

from consumers.cli import _parser, load_agent
from router.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())


def routeyard_services() -> dict[str, dict]:
    return {n: s for n, s in COMPOSE["services"].items() if s.get("image") == "routeyard:cpu"}


def test_every_routeyard_service_runs_a_real_command() -> None:
    services = routeyard_services()
    assert {"router", "correlator", "agents", "topics"} <= set(services)
    for name, service in services.items():
        args = _parser().parse_args(service["command"])
        assert callable(args.func), name
        for target in getattr(args, "targets", []):
            assert load_agent(target).name  # importable and declared with @agent


def test_services_point_at_the_compose_kafka_and_redis() -> None:
    for name, service in routeyard_services().items():
        env = service["environment"]
        assert env["ROUTEYARD_KAFKA__BOOTSTRAP"].split(":")[0] in COMPOSE["services"], name
        assert env["ROUTEYARD_REDIS__URL"].split("//")[1].split(":")[0] in COMPOSE["services"], name


def test_image_catalog_names_the_agents_compose_runs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    source = next(line.split()[1] for line in dockerfile.splitlines() if line.endswith("/etc/routeyard/agents.yaml"))
    catalog = load_catalog(ROOT / source)
    agents = [load_agent(t).name for t in routeyard_services()["agents"]["command"][1:]]
    assert sorted(agents) == sorted(catalog.names)

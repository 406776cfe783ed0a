"""compose/ and the Grafana dashboard, checked without Docker: the structure a user's `docker
compose up` relies on, that every routeyard service runs a command the CLI has, that every
ROUTEYARD_* variable names a real setting, and that every dashboard query names a metric the
code exports."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import routeyard.consumers.metrics  # noqa: F401  (registers every routeyard metric)
import yaml
from prometheus_client import REGISTRY
from routeyard.consumers.cli.main import _parser, load_agent
from routeyard.consumers.settings import Settings

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "compose"
ROUTEYARD_IMAGES = {"routeyard:cpu", "routeyard:gpu"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return data


def routeyard_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image") in ROUTEYARD_IMAGES}


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "redis", "topics", "router", "router-gpu", "correlator", "agents", "prometheus", "grafana"} <= set(
        services
    )
    assert services["router"]["profiles"] == ["cpu"] and "semantic" in services["router"]["command"]
    gpu = services["router-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["ROUTEYARD_ROUTER__ENGINE"] == "vllm"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    assert "--appendonly" in services["redis"]["command"]
    for name, service in routeyard_services(compose).items():
        for dependency in ("kafka", "redis"):
            assert service["depends_on"][dependency]["condition"] == "service_healthy", name
        assert service["build"]["target"] in ("cpu", "gpu"), name


def test_every_routeyard_command_exists_in_the_cli(compose: dict[str, Any]) -> None:
    parser = _parser()
    for name, service in routeyard_services(compose).items():
        command = service["command"]
        args = parser.parse_args(command if isinstance(command, list) else shlex.split(command))
        assert callable(args.func), name
        for target in getattr(args, "targets", None) or ():
            assert load_agent(target).name, target  # agents the image can import


def _setting_exists(path: list[str]) -> bool:
    model: Any = Settings
    for part in path:
        fields = model.model_fields
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_every_environment_variable_is_a_setting(compose: dict[str, Any]) -> None:
    for name, service in routeyard_services(compose).items():
        for variable in service["environment"]:
            if variable.startswith("ROUTEYARD_"):
                path = variable.removeprefix("ROUTEYARD_").lower().split("__")
                assert _setting_exists(path), f"{name}: {variable} is not a routeyard setting"
    assert not _setting_exists(["router", "no_such_setting"])  # the check can fail


def test_every_worker_is_scraped(compose: dict[str, Any]) -> None:
    scrape = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    for name, service in routeyard_services(compose).items():
        if name != "topics":
            port = service["environment"]["ROUTEYARD_OBSERVABILITY__PORT"]
            assert f"{name}:{port}" in targets, name


def test_grafana_is_provisioned_with_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provider = yaml.safe_load((COMPOSE / "grafana/provisioning/dashboards/routeyard.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert (COMPOSE / next(src for src, dst in mounts.items() if dst == path) / "routeyard.json").is_file()
    sources = yaml.safe_load((COMPOSE / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"


SERIES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exported_metrics() -> set[str]:
    """The series names Prometheus will see, labelled or not, sampled yet or not."""
    return {
        metric.name + suffix
        for metric in REGISTRY.collect()
        if metric.name.startswith("routeyard_")
        for suffix in SERIES.get(metric.type, ("",))
    }


def dashboard_queries() -> list[str]:
    dashboard = json.loads((COMPOSE / "grafana/dashboards/routeyard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_every_dashboard_query_names_an_exported_metric() -> None:
    exported = exported_metrics()
    queries = dashboard_queries()
    assert queries
    for query in queries:
        names = re.findall(r"routeyard_[a-z0-9_]+", query)
        assert names, query
        for metric in names:
            assert metric in exported, f"{metric} (in {query!r}) is not exported by consumers/metrics.py"


@pytest.mark.parametrize(
    "metric",
    [
        "routeyard_decisions_total",  # by route, engine and outcome
        "routeyard_routes_total",
        "routeyard_batch_size",
        "routeyard_decision_seconds",
        "routeyard_end_to_end_seconds",
        "routeyard_pending_correlations",
        "routeyard_agent_timeouts_total",
        "routeyard_agent_tasks_total",
        "routeyard_circuit_open",
        "routeyard_dead_letters_total",
        "routeyard_consumer_lag",
        "routeyard_prefix_cache_hit_rate",
    ],
)
def test_the_dashboard_shows(metric: str) -> None:
    assert any(metric in q for q in dashboard_queries())


def test_dockerfile_targets() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    targets = re.findall(r"^FROM \S+ AS (\w+)", dockerfile, re.MULTILINE)
    assert {"build", "cpu", "gpu"} <= set(targets)
    assert dockerfile.count('ENTRYPOINT ["routeyard"]') == 2
    assert dockerfile.count("ROUTEYARD_OBSERVABILITY__PORT=9464") == 2


def test_services_point_at_the_compose_kafka_and_redis(compose: dict[str, Any]) -> None:
    for name, service in routeyard_services(compose).items():
        env = service["environment"]
        assert env["ROUTEYARD_KAFKA__BOOTSTRAP"].split(":")[0] in compose["services"], name
        assert env["ROUTEYARD_REDIS__URL"].split("//")[1].split(":")[0] in compose["services"], name


def test_image_catalog_names_the_agents_compose_runs(compose: dict[str, Any]) -> None:
    from routeyard.router.catalog import load_catalog

    dockerfile = (ROOT / "Dockerfile").read_text()
    source = next(line.split()[1] for line in dockerfile.splitlines() if line.endswith("/etc/routeyard/agents.yaml"))
    catalog = load_catalog(ROOT / source)
    agents = [load_agent(t).name for t in compose["services"]["agents"]["command"][1:]]
    assert sorted(agents) == sorted(catalog.names)


def dockerfile_stages() -> dict[str, str]:
    """Each build stage's text (its FROM line and instructions), by stage name."""
    stages: dict[str, str] = {}
    name = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        found = re.match(r"^FROM \S+ AS (\w+)", line)
        if found:
            name = found.group(1)
        if name:
            stages[name] = stages.get(name, "") + line + "\n"
    return stages


def stage_env(stage: str) -> dict[str, str]:
    """The ``ENV`` defaults a stage sets (``KEY=value`` pairs, continued lines included)."""
    text = re.sub(r"\\\n\s*", " ", stage)
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                key, _, value = word.partition("=")
                pairs[key] = value
    return pairs


def engines_named(service: dict[str, Any], image_env: dict[str, str]) -> set[str]:
    """Every engine a service runs: its engine (``--engine`` or the variable, else the image's
    default) and its fallbacks (the service's variable, else the image's default)."""
    env = {**image_env, **service.get("environment", {})}
    command = service["command"]
    args = command if isinstance(command, list) else shlex.split(command)
    engine = args[args.index("--engine") + 1] if "--engine" in args else env.get("ROUTEYARD_ROUTER__ENGINE", "rules")
    fallback = json.loads(env.get("ROUTEYARD_ROUTER__FALLBACK", "[]"))
    return {engine, *fallback}


def test_every_engine_a_service_names_is_installed_in_its_image(compose: dict[str, Any]) -> None:
    from routeyard.consumers.app import ENGINE_PACKAGES

    stages = dockerfile_stages()
    checked = 0
    for name, service in routeyard_services(compose).items():
        if service["command"][:2] != ["worker", "router"]:
            continue
        stage = stages[service["build"]["target"]]
        for engine in engines_named(service, stage_env(stage)):
            for package in ENGINE_PACKAGES[engine]:
                assert package in stage, f"{name} runs the {engine} engine; its image does not install {package}"
            checked += 1
    assert checked >= 3  # cpu: semantic; gpu: vllm and its fallback

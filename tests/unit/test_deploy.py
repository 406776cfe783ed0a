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
    """The services that run the ``routeyard`` command (the example agent runs its own)."""
    return {
        n: s for n, s in compose["services"].items() if s.get("image") in ROUTEYARD_IMAGES and "entrypoint" not in s
    }


def active(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    """The services ``docker compose --profile <profile> up`` starts."""
    return {n: s for n, s in compose["services"].items() if profile in s.get("profiles", [profile])}


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {"kafka", "redis", "topics", "router", "router-gpu", "correlator", "agents", "example-agent"}
    assert expected | {"prometheus", "prometheus-gpu", "grafana"} <= set(services)
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


def scrape_targets(service: dict[str, Any]) -> set[str]:
    """The targets of the Prometheus config a Prometheus service mounts."""
    source = next(v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == "/etc/prometheus/prometheus.yml")
    scrape = yaml.safe_load((COMPOSE / source).read_text())
    return {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}


def names_on_network(name: str, service: dict[str, Any]) -> set[str]:
    networks = service.get("networks") or {}
    aliases = networks.get("default", {}).get("aliases", []) if isinstance(networks, dict) else []
    return {name, *aliases}


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_each_profile_scrapes_exactly_its_workers(compose: dict[str, Any], profile: str) -> None:
    services = active(compose, profile)
    [(name, prometheus)] = [(n, s) for n, s in services.items() if s["image"].startswith("prom/prometheus")]
    expected = {
        f"{n}:{s['environment']['ROUTEYARD_OBSERVABILITY__PORT']}"
        for n, s in routeyard_services(compose).items()
        if n in services and n != "topics"
    }
    assert scrape_targets(prometheus) == expected, f"{name} scrapes services {profile!r} does not run, or misses some"
    assert "prometheus" in names_on_network(name, prometheus)  # Grafana's data source: http://prometheus:9090
    assert not {t for t in scrape_targets(prometheus) if t.split(":")[0] not in services}


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
        "routeyard_agent_reply_seconds",
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


def catalog_mount(service: dict[str, Any]) -> Path | None:
    """The host file a service mounts at its ``ROUTEYARD_ROUTER__CATALOG`` path."""
    path = service["environment"]["ROUTEYARD_ROUTER__CATALOG"]
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if target == path:
            return COMPOSE / source
    return None


def uncommented(text: str, block: str) -> str:
    """``text`` with the commented lines between ``# --- <block>`` and ``# --- end <block>`` uncommented."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith(f"# --- end {block}"):
            inside = False
        elif line.startswith(f"# --- {block}"):
            inside = True
        elif inside:
            line = line.removeprefix("#")
        out.append(line)
    return "\n".join(out)


def test_the_catalog_is_mounted_not_baked(compose: dict[str, Any]) -> None:
    for name in ("topics", "router", "router-gpu"):
        mounted = catalog_mount(compose["services"][name])
        assert mounted is not None and mounted.is_file(), f"{name} does not mount the catalog"
        assert mounted == COMPOSE / "agents.yaml", name
    assert "/etc/routeyard/agents.yaml" not in re.sub(r"(?m)^(#|ENV).*$", "", (ROOT / "Dockerfile").read_text())


def test_the_catalog_names_the_agents_compose_runs(compose: dict[str, Any]) -> None:
    from routeyard.router.catalog import catalog_from_dict

    text = (COMPOSE / "agents.yaml").read_text()
    served = [load_agent(t).name for t in compose["services"]["agents"]["command"][1:]]
    assert sorted(catalog_from_dict(yaml.safe_load(text)).names) == sorted(served)
    example = compose["services"]["example-agent"]["command"][0]
    name = shlex.split(example)[shlex.split(example).index("--name") + 1]
    with_example = catalog_from_dict(yaml.safe_load(uncommented(text, "example-agent")))
    assert sorted(with_example.names) == sorted([*served, name])


def test_the_example_agent_runs_the_plain_kafka_example(compose: dict[str, Any]) -> None:
    service = compose["services"]["example-agent"]
    assert service["profiles"] == ["example-agent"]
    mounts = dict(v.split(":")[:2] for v in service["volumes"])
    script = re.search(r"python (\S+\.py)", service["command"][0])
    assert script is not None
    source = next(src for src, dst in mounts.items() if script.group(1).startswith(dst))
    assert (COMPOSE / source / Path(script.group(1)).name).is_file()
    assert "kafka:9092" in service["command"][0]
    assert "jsonschema" in dockerfile_stages()[service["build"]["target"]]  # the example validates with it


def listeners(value: str) -> dict[str, str]:
    """``NAME://host:port,...`` as {name: host:port}."""
    return dict(item.split("://") for item in value.split(","))


def test_kafka_and_redis_are_reachable_from_the_host(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    host, port = advertised["EXTERNAL"].split(":")
    assert host == "localhost"
    assert f":{port}" in listeners(env["KAFKA_LISTENERS"])["EXTERNAL"]
    assert "EXTERNAL:PLAINTEXT" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    assert f"127.0.0.1:{port}:{port}" in kafka["ports"]
    internal = compose["x-routeyard"]["environment"]["ROUTEYARD_KAFKA__BOOTSTRAP"]
    assert internal in advertised.values()  # the services' bootstrap is advertised too
    assert "127.0.0.1:6379:6379" in compose["services"]["redis"]["ports"]


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", duration))


def test_the_gpu_router_has_time_to_load_its_model(compose: dict[str, Any]) -> None:
    healthcheck = compose["services"]["router-gpu"]["healthcheck"]
    assert seconds(healthcheck["start_period"]) >= 600
    assert "/healthz" in " ".join(healthcheck["test"])


def test_replication_settings_fit_the_compose_cluster(compose: dict[str, Any]) -> None:
    from routeyard.consumers.kafka.admin import replication_plan

    brokers = sum(1 for s in compose["services"].values() if str(s.get("image", "")).startswith("apache/kafka"))
    env = compose["x-routeyard"]["environment"]
    factor, isr = int(env["ROUTEYARD_KAFKA__REPLICATION_FACTOR"]), int(env["ROUTEYARD_KAFKA__MIN_INSYNC_REPLICAS"])
    plan = replication_plan(factor, isr, brokers)  # raises if the cluster cannot meet them
    assert plan.factor == brokers == 1 and plan.warning is None


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


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((COMPOSE / "grafana/dashboards/routeyard.json").read_text())
    return data


def test_every_series_has_a_legend_distinct_within_its_panel() -> None:
    for panel in dashboard()["panels"]:
        legends = [t.get("legendFormat", "").strip() for t in panel["targets"]]
        assert all(legends), f"{panel['title']!r}: a query without legendFormat"
        assert len(set(legends)) == len(legends), f"{panel['title']!r}: two queries share the legend {legends}"
        for target, legend in zip(panel["targets"], legends, strict=True):
            grouped = re.findall(r"by \(([^)]*)\)", target["expr"])
            labels = {label.strip() for group in grouped[-1:] for label in group.split(",")} - {"le"}
            for label in labels:  # each series the query returns gets its own legend
                assert "{{" + label + "}}" in legend, f"{panel['title']!r}: {legend!r} does not show {label}"


TEMPLATE_VARIABLES = {"engine", "agent", "instance"}


def test_template_variables_are_defined_and_used() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == TEMPLATE_VARIABLES
    exported = exported_metrics()
    for name, variable in variables.items():
        assert variable["includeAll"] and variable["multi"], name
        query = variable["query"]["query"]
        assert name in query
        assert all(m in exported for m in re.findall(r"routeyard_[a-z0-9_]+", query)), query
        assert any(f'{name}=~"${name}"' in q for q in dashboard_queries()), f"${name} is used by no query"
    for query in dashboard_queries():
        assert 'instance=~"$instance"' in query, query  # every panel follows the instance picker


def test_the_dashboard_answers_which_agent_is_slow_or_times_out() -> None:
    queries = dashboard_queries()
    timeouts = [q for q in queries if "routeyard_agent_timeouts_total" in q]
    assert timeouts and all("by (agent)" in q for q in timeouts)
    latency = [q for q in queries if "routeyard_agent_reply_seconds_bucket" in q]
    assert {q.split(",")[0] for q in latency} == {"histogram_quantile(0.5", "histogram_quantile(0.99"}
    assert all("by (le, agent)" in q for q in latency)

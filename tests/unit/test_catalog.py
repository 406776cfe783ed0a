"""The agent catalog: YAML loading, durations, boot-time errors that name the agent and the problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from routeyard.router.catalog import MAX_TIMEOUT_S, Catalog, CatalogError, load_catalog, parse_duration

VALID = """\
agents:
  - name: WeatherAgent
    description: Provides weather forecasts and current conditions for any location
    timeout: 30s
    topic: weather.tasks
    rules:
      keywords: [weather, forecast]
      patterns: ['\\brain(ing)?\\b']
  - name: RestaurantAgent
    description: "  Books tables at restaurants  "
    timeout: 500ms
    examples: ["book a table for two"]
  - name: ChitChatAgent
    description: Small talk and everything else
    default: true
"""


def _write(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str) -> Catalog:
    return load_catalog(_write(tmp_path, text))


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(CatalogError) as info:
        _load(tmp_path, text)
    return str(info.value)


def test_valid_catalog_loads(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, VALID))
    assert catalog.names == ("WeatherAgent", "RestaurantAgent", "ChitChatAgent")
    weather = catalog.get("WeatherAgent")
    assert weather is not None
    assert weather.description == "Provides weather forecasts and current conditions for any location"
    assert weather.timeout_s == 30.0
    assert weather.topic == "weather.tasks"
    assert weather.rules.keywords == ("weather", "forecast")
    assert weather.rules.patterns == (r"\brain(ing)?\b",)
    restaurant = catalog.get("RestaurantAgent")
    assert restaurant is not None
    assert restaurant.description == "Books tables at restaurants"
    assert restaurant.timeout_s == 0.5
    assert restaurant.topic is None
    assert restaurant.examples == ("book a table for two",)
    chitchat = catalog.get("ChitChatAgent")
    assert chitchat is not None
    assert chitchat.timeout_s == 30.0  # the default timeout
    assert "WeatherAgent" in catalog
    assert "HotelAgent" not in catalog
    assert catalog.get("HotelAgent") is None


def test_load_accepts_a_str_path(tmp_path: Path) -> None:
    assert load_catalog(str(_write(tmp_path, VALID))).names[0] == "WeatherAgent"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (2.5, 2.5),
        ("30", 30.0),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 2 m ", 120.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["30x", "soon", "", "-5s", True, "1d"])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [("30", 30.0), ("'30s'", 30.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0), ("24h", MAX_TIMEOUT_S)],
)
def test_yaml_durations(tmp_path: Path, timeout: str, seconds: float) -> None:
    catalog = _load(
        tmp_path,
        f"""\
        agents:
          - name: A
            description: does a
            timeout: {timeout}
        """,
    )
    assert catalog.agents[0].timeout_s == pytest.approx(seconds)


def test_duplicate_names(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        """\
        agents:
          - {name: WeatherAgent, description: one}
          - {name: RestaurantAgent, description: two}
          - {name: WeatherAgent, description: three}
        """,
    )
    assert "duplicate agent names: WeatherAgent" in message
    assert "RestaurantAgent" not in message


@pytest.mark.parametrize("description", ['""', "'   '"])
def test_empty_description(tmp_path: Path, description: str) -> None:
    message = _error(
        tmp_path,
        f"""\
        agents:
          - {{name: WeatherAgent, description: weather}}
          - {{name: RestaurantAgent, description: {description}}}
        """,
    )
    assert "agents[1] (RestaurantAgent): description" in message
    assert "must not be empty" in message
    assert "WeatherAgent" not in message


def test_unknown_field(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        """\
        agents:
          - name: WeatherAgent
            description: weather
            timout: 30s
        """,
    )
    assert 'catalog.yaml:4: agents[0] (WeatherAgent): unknown field "timout"; did you mean "timeout"?' in message


def test_unknown_top_level_field(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        """\
        agents:
          - {name: WeatherAgent, description: weather}
        mode: parallel
        """,
    )
    assert 'catalog.yaml:3: catalog: unknown field "mode"' in message


def test_two_defaults(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        """\
        agents:
          - {name: WeatherAgent, description: weather, default: true}
          - {name: RestaurantAgent, description: food}
          - {name: ChitChatAgent, description: talk, default: true}
        """,
    )
    assert "more than one agent is marked default: WeatherAgent, ChitChatAgent" in message


def test_top_level_default_naming_an_unknown_agent(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        """\
        agents:
          - {name: WeatherAgent, description: weather}
        default: ChitChatAgent
        """,
    )
    assert "default agent 'ChitChatAgent' is not in the catalog" in message


def test_top_level_default_conflicting_with_a_marked_default(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        """\
        agents:
          - {name: WeatherAgent, description: weather, default: true}
          - {name: ChitChatAgent, description: talk}
        default: ChitChatAgent
        """,
    )
    assert "ChitChatAgent" in message
    assert "WeatherAgent" in message
    assert "conflicts" in message


def test_bad_regex_in_rules(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        """\
        agents:
          - name: WeatherAgent
            description: weather
            rules:
              patterns: ['(rain']
        """,
    )
    assert "catalog.yaml:5: agents[0] (WeatherAgent): rules.patterns[0]: invalid regular expression '(rain'" in message


@pytest.mark.parametrize("topic", ["'weather tasks'", "'weather/tasks'", "'..'", "'" + "t" * 250 + "'"])
def test_bad_topic_name(tmp_path: Path, topic: str) -> None:
    message = _error(
        tmp_path,
        f"""\
        agents:
          - name: WeatherAgent
            description: weather
            topic: {topic}
        """,
    )
    assert "agents[0] (WeatherAgent): topic" in message
    assert "not a valid Kafka topic name" in message


@pytest.mark.parametrize("timeout", ["0", "0s", "0ms", "86400.5", "25h", "86401", "1441m"])
def test_timeout_out_of_range(tmp_path: Path, timeout: str) -> None:
    message = _error(
        tmp_path,
        f"""\
        agents:
          - name: WeatherAgent
            description: weather
            timeout: {timeout}
        """,
    )
    assert "agents[0] (WeatherAgent): timeout" in message
    assert "between 0 and 24h" in message


def test_timeout_not_a_duration(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        """\
        agents:
          - {name: WeatherAgent, description: weather, timeout: soon}
        """,
    )
    assert "agents[0] (WeatherAgent): timeout" in message
    assert "not a duration: 'soon'" in message


def test_bad_agent_name(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        """\
        agents:
          - {name: 1stAgent, description: first}
        """,
    )
    assert "agents[0] (1stAgent): name" in message
    assert "must start with a letter" in message


def test_every_problem_is_listed(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        """\
        agents:
          - {name: WeatherAgent, description: "", topic: "a b"}
          - {name: FlightAgent, description: flights, timeout: 0}
        """,
    )
    assert "agents[0] (WeatherAgent): description" in message
    assert "agents[0] (WeatherAgent): topic" in message
    assert "agents[1] (FlightAgent): timeout" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(path) in str(info.value)
    assert "cannot read agent catalog" in str(info.value)
    assert "No such file" in str(info.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, "agents: [\n  - name: WeatherAgent\n")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)


def test_no_agents(tmp_path: Path) -> None:
    message = _error(tmp_path, "agents: []\n")
    assert "the catalog has no agents" in message


@pytest.mark.parametrize("text", ["", "- name: WeatherAgent\n", "agent:\n  - {name: A, description: a}\n"])
def test_not_a_catalog_mapping(tmp_path: Path, text: str) -> None:
    message = _error(tmp_path, text)
    assert "expected a mapping with an 'agents:' list" in message


def test_error_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "agents: []\n", name="prod-agents.yaml")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value).startswith(f"{path}: ")


def test_catalog_error_is_a_value_error() -> None:
    assert issubclass(CatalogError, ValueError)


# -- restrict, default_agent, version -----------------------------------------------------------


def test_restrict(tmp_path: Path) -> None:
    catalog = _load(tmp_path, VALID)
    assert catalog.restrict(None) == catalog.agents
    restricted = catalog.restrict(["ChitChatAgent", "HotelAgent", "WeatherAgent"])
    assert [a.name for a in restricted] == ["WeatherAgent", "ChitChatAgent"]
    assert catalog.restrict([]) == ()
    assert catalog.restrict(["HotelAgent"]) == ()


def test_default_agent_marked_on_the_agent(tmp_path: Path) -> None:
    default = _load(tmp_path, VALID).default_agent
    assert default is not None
    assert default.name == "ChitChatAgent"


def test_default_agent_named_at_top_level(tmp_path: Path) -> None:
    catalog = _load(
        tmp_path,
        """\
        agents:
          - {name: WeatherAgent, description: weather}
          - {name: ChitChatAgent, description: talk}
        default: ChitChatAgent
        """,
    )
    assert catalog.default_agent is not None
    assert catalog.default_agent.name == "ChitChatAgent"


def test_no_default_agent(tmp_path: Path) -> None:
    catalog = _load(tmp_path, "agents:\n  - {name: WeatherAgent, description: weather}\n")
    assert catalog.default_agent is None


def test_version_is_stable_across_loads(tmp_path: Path) -> None:
    first = load_catalog(_write(tmp_path, VALID, "a.yaml"))
    second = load_catalog(_write(tmp_path, VALID, "b.yaml"))
    assert first.version == second.version
    assert len(first.version) == 12
    # Lookups (which cache an index on the frozen model) do not change the version.
    first.get("WeatherAgent")
    assert "WeatherAgent" in first
    assert first.version == second.version


def test_version_changes_when_a_description_changes(tmp_path: Path) -> None:
    before = load_catalog(_write(tmp_path, VALID, "a.yaml"))
    after = load_catalog(_write(tmp_path, VALID.replace("Small talk", "Chit-chat"), "b.yaml"))
    assert before.version != after.version


def test_version_changes_when_a_timeout_changes(tmp_path: Path) -> None:
    before = load_catalog(_write(tmp_path, VALID, "a.yaml"))
    after = load_catalog(_write(tmp_path, VALID.replace("timeout: 30s", "timeout: 31s"), "b.yaml"))
    assert before.version != after.version

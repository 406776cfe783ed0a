"""``routeyard schema export DIR [--catalog FILE]``: the message schemas, the catalog's JSON Schema
for editors and the AsyncAPI document, checked as a user in another language would use them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from faststream.specification.asyncapi.v2_6_0.schema import ApplicationSchema
from jsonschema import Draft202012Validator
from routeyard.consumers.cli.main import main
from routeyard.schemas import WIRE_MESSAGES, ConversationEvent, Message, Topics, encode
from routeyard.schemas.asyncapi import asyncapi_document

CATALOG = """\
# yaml-language-server: $schema=./catalog.schema.json
agents:
  - name: WeatherAgent
    description: Weather forecasts for any city
    timeout: 30s
    examples: ["will it rain in Oslo tomorrow?"]
    retries: 1
    fallback: ChitChatAgent
    rules: {keywords: [weather], patterns: ['\\brain\\b']}
  - name: ChitChatAgent
    description: Small talk
    topic: chitchat.tasks
    timeout: 2.5
    default: true
"""


@pytest.fixture
def exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    catalog = tmp_path / "agents.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    out = tmp_path / "contract"
    assert main(["--prefix", "acme.", "schema", "export", str(out), "--catalog", str(catalog)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / f"{n}.schema.json") for n in WIRE_MESSAGES] + [
        str(out / "catalog.schema.json"),
        str(out / "asyncapi.json"),
    ]
    return out


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# -- the catalog's JSON Schema ---------------------------------------------------------------------


def test_catalog_schema_accepts_a_catalog_using_every_field(exported: Path) -> None:
    validator = Draft202012Validator(_load(exported / "catalog.schema.json"))
    assert list(validator.iter_errors(yaml.safe_load(CATALOG))) == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"descripton": "typo"}, "'descripton' was unexpected"),
        ({"timeout": "30 parsecs"}, "is not valid under any of the given schemas"),
        ({"retries": 11}, "11 is not valid"),
    ],
)
def test_catalog_schema_flags_what_an_editor_should(exported: Path, change: dict[str, Any], complaint: str) -> None:
    data = yaml.safe_load(CATALOG)
    data["agents"][0].update(change)
    errors = [e.message for e in Draft202012Validator(_load(exported / "catalog.schema.json")).iter_errors(data)]
    assert any(complaint in e for e in errors), errors


def test_every_catalog_field_has_a_description(exported: Path) -> None:
    schema = _load(exported / "catalog.schema.json")
    objects = [schema, *schema["$defs"].values()]
    properties = {f"{o['title']}.{n}": p for o in objects for n, p in o["properties"].items()}
    assert {"AgentSpec.examples", "AgentSpec.retries", "AgentSpec.fallback", "AgentSpec.timeout"} <= set(properties)
    assert [n for n, p in properties.items() if len(p.get("description", "")) < 10] == []


# -- AsyncAPI --------------------------------------------------------------------------------------


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    return [r for v in node for r in _refs(v)] if isinstance(node, list) else []


def test_asyncapi_has_the_required_fields_and_every_reference_resolves(exported: Path) -> None:
    document = _load(exported / "asyncapi.json")
    assert document["asyncapi"] == "2.6.0"
    assert document["info"]["title"] and document["info"]["version"] and document["channels"]
    assert all(_resolve(document, ref) for ref in _refs(document))
    ApplicationSchema.model_validate(document)  # FastStream's own AsyncAPI 2.6 model accepts it


def test_every_channel_carries_a_message_with_a_component_schema(exported: Path) -> None:
    document = _load(exported / "asyncapi.json")
    carried = set()
    for name, channel in document["channels"].items():
        operations = [channel[op] for op in ("publish", "subscribe") if op in channel]
        assert operations, name
        for operation in operations:
            message = _resolve(document, operation["message"]["$ref"])
            schema = _resolve(document, message["payload"]["$ref"])
            assert schema["type"] == "object" and message["bindings"]["kafka"]["key"]["description"]
            carried.add(message["name"])
    assert carried == set(WIRE_MESSAGES)


def test_asyncapi_names_topics_groups_and_the_catalogs_agent_topics(exported: Path) -> None:
    channels = _load(exported / "asyncapi.json")["channels"]
    groups = {
        topic: op["bindings"]["kafka"]["groupId"]["enum"]
        for topic, channel in channels.items()
        for op in (channel.get("publish"), channel.get("subscribe"))
        if op and "bindings" in op
    }
    assert groups == {
        "acme.conversations": ["acme.router"],
        "acme.replies": ["acme.correlator"],
        "acme.agent.WeatherAgent": ["acme.agent.WeatherAgent"],
        "chitchat.tasks": ["acme.agent.ChitChatAgent"],
    }
    assert {"acme.decisions", "acme.responses", "acme.responses.{tenant}", "acme.deadletter"} <= set(channels)
    assert "acme.agent.{agent}" not in channels  # with a catalog, its agents' own topics


def test_a_real_event_validates_against_the_asyncapi_payload_schema() -> None:
    document = asyncapi_document(Topics())
    assert "routeyard.agent.{agent}" in document["channels"]
    root = {"$ref": "#/components/schemas/ConversationEvent", "components": document["components"]}
    event = ConversationEvent(event_id="e1", conversation_id="c1", messages=[Message(role="user", content="hi")])
    assert list(Draft202012Validator(root).iter_errors(json.loads(encode(event)))) == []
    bad = {**json.loads(encode(event)), "messages": [{"role": "robot", "content": "x"}]}
    assert list(Draft202012Validator(root).iter_errors(bad))


def test_readme_shows_the_yaml_language_server_line_and_where_the_contract_is() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert "# yaml-language-server: $schema=" in readme
    assert "asyncapi.json" in readme and "catalog.schema.json" in readme
    block = readme[readme.index("# yaml-language-server") : readme.index("```", readme.index("# yaml-language-server"))]
    for field in ("examples:", "retries:", "fallback:", "timeout:", "default:", "topic:", "rules:", "patterns:"):
        assert field in block, field
    textwrap.dedent(block)  # the block is YAML a user can paste
    assert yaml.safe_load(block)["agents"]

"""Reading the model's answer: Plano's tolerance, Qwen3's think blocks, and what is malformed."""

from __future__ import annotations

import pytest
from routeyard.router.plano.parse import MalformedOutput, answer_json, known_routes, parse_routes


@pytest.mark.parametrize(
    ("text", "routes"),
    [
        ('{"route": ["WeatherAgent"]}', ["WeatherAgent"]),
        ('{"route": ["WeatherAgent", "CodeAgent"]}', ["WeatherAgent", "CodeAgent"]),
        ("{'route': ['Image generation']}\\n", ["Image generation"]),  # Plano's own test case 7
        ("{'route': ['A', 'B']}", ["A", "B"]),
        ('\n\n  {"route":\n  ["A",\n "B"]\n}\n', ["A", "B"]),
        ('{"route": ["A"]}\\n\\n', ["A"]),
        ('```json\n{"route": ["A"]}\n```', ["A"]),
        ('```\n{"route": ["A"]}\n```\n', ["A"]),
        ("```json {'route': ['A']} ```", ["A"]),
        (
            '<think>\nthe user wants weather {"route": ["No"]}\n</think>\n\n{"route": ["WeatherAgent"]}',
            ["WeatherAgent"],
        ),
        ('<think>\n\n</think>\n\n```json\n{"route": ["A"]}\n```', ["A"]),
        ('{"route": ["Bob\'s agent"]}', ["Bob's agent"]),  # strict JSON first: apostrophes survive
        ('{"route": ["A"], "skills": ["pdf"]}', ["A"]),
        ('{"route": ["A", "", "  ", " B "]}', ["A", "B"]),
        ('{"route": ["Météo", "天气"]}', ["Météo", "天气"]),
    ],
)
def test_tolerated_answers(text: str, routes: list[str]) -> None:
    assert parse_routes(text) == routes


@pytest.mark.parametrize(
    "text",
    [
        '{"route": []}',
        '{"route": null}',
        "{}",
        "",
        "   \n",
        "<think>nothing to do</think>",
        "```json\n{}\n```",
    ],
)
def test_no_route_answers(text: str) -> None:
    assert parse_routes(text) == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"route": ["route1"', "not JSON"),  # Plano's own test case 6
        ("WeatherAgent", "not JSON"),
        ("Sure! The best route is WeatherAgent.", "not JSON"),
        ("<think>unterminated reasoning", "not JSON"),
        ('{"route": "WeatherAgent"}', "list of strings"),
        ('{"route": ["A", 1]}', "list of strings"),
        ('{"route": [["A"]]}', "list of strings"),
        ('{"route": {"A": 1}}', "list of strings"),
        ('["A", "B"]', "JSON object"),
        ("null", "JSON object"),
        ("42", "JSON object"),
    ],
)
def test_malformed_answers(text: str, reason: str) -> None:
    with pytest.raises(MalformedOutput, match=reason) as info:
        parse_routes(text)
    assert repr(text) in str(info.value)  # says what the model wrote


def test_malformed_output_is_a_value_error_with_a_short_excerpt() -> None:
    text = "x" * 5000
    with pytest.raises(ValueError) as info:
        parse_routes(text)
    assert isinstance(info.value, MalformedOutput)
    assert "x" * 200 in str(info.value) and "x" * 201 not in str(info.value)
    assert len(str(info.value)) < 300


def test_known_routes_keeps_catalog_names_in_order_without_duplicates() -> None:
    kept, dropped = known_routes(["B", "Ghost", "A", "B", "Ghost", "a"], {"A", "B", "C"})
    assert kept == ["B", "A"]
    assert dropped == ["Ghost", "a"]


def test_known_routes_accepts_any_collection_of_names() -> None:
    assert known_routes(["A", "C"], ["A", "B"]) == (["A"], ["C"])
    assert known_routes(["A", "C"], ("A", "B")) == (["A"], ["C"])
    assert known_routes([], ["A"]) == ([], [])


@pytest.mark.parametrize("routes", [[], ["WeatherAgent"], ["WeatherAgent", "CodeAgent"], ["Météo"]])
def test_answer_json_is_what_the_model_answers_and_parses_back(routes: list[str]) -> None:
    text = answer_json(routes)
    assert parse_routes(text) == routes
    assert text.startswith('{"route": [')


def test_answer_json_matches_the_model_card_output() -> None:
    assert answer_json(["WeatherAgent"]) == '{"route": ["WeatherAgent"]}'
    assert answer_json(("Météo",)) == '{"route": ["Météo"]}'

"""The prompt contract: both dialects against their reference texts, byte for byte.

References (tests/unit/reference/):
- model_card_example.txt: the model card's own Python example, run as published (the code is
  repeated below, so the stored text is checked against it too).
- plano_*.txt: the expected prompts of the tests in Plano's
  crates/brightstaff/src/router/orchestrator_model_v1.rs, with the same agents, conversations and
  token budgets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from routeyard.router.catalog import AgentSpec
from routeyard.router.plano.prompt import (
    ORCHESTRATION_PROMPT,
    PLANO_TEMPLATE,
    TRIM_MARKER,
    Dialect,
    PromptBuilder,
    select_messages,
    trim_middle,
)
from routeyard.schemas import Message

REFERENCE = Path(__file__).parent / "reference"


def reference(name: str) -> str:
    return (REFERENCE / name).read_text(encoding="utf-8")


# --- the model card's example code, as published ----------------------------------------------

MODEL_CARD_PROMPT = (
    "You are a helpful assistant that selects the most suitable routes based on user intent.\n"
    "You are provided with a list of available routes enclosed within <routes></routes> XML tags:\n"
    "<routes>\n{routes}\n</routes>\n\n"
    "You are also given the conversation context enclosed within <conversation></conversation> XML tags:\n"
    "<conversation>\n{conversation}\n</conversation>\n\n"
    "## Instructions\n"
    "1. Analyze the latest user intent from the conversation.\n"
    "2. Compare it against the available routes to find which routes can help fulfill the request.\n"
    "3. Respond only with the exact route names from <routes>.\n"
    "4. If no routes can help or the intent is already fulfilled, return an empty list.\n\n"
    "## Response Format\n"
    "Return your answer strictly in JSON as follows:\n"
    '{{"route": ["route_name_1", "route_name_2", "..."]}}\n'
    "If no routes are needed, return an empty list for `route`."
)


def convert_agents_to_routes(agents: list[dict[str, str]]) -> str:
    tools = [{"name": agent["name"], "description": agent["description"]} for agent in agents]
    return "\n".join([json.dumps(tool, ensure_ascii=False) for tool in tools])


def build_messages(available_agents: list[dict[str, str]], conversation: list[Any]) -> list[dict[str, str]]:
    routes = convert_agents_to_routes(available_agents)
    conversation_str = json.dumps(conversation, indent=4, ensure_ascii=False)
    prompt = MODEL_CARD_PROMPT.format(routes=routes, conversation=conversation_str)
    return [{"role": "user", "content": prompt}]


CARD_AGENTS = [
    {
        "name": "WeatherAgent",
        "description": "Provides weather forecasts and current conditions for any location",
    },
    {
        "name": "CodeAgent",
        "description": "Generates, debugs, explains, and reviews code in multiple programming languages",
    },
]
CARD_CONVERSATION = [
    {"role": "user", "content": "What's the weather like today?"},
    {"role": "assistant", "content": "I can help you with that. Could you tell me your location?"},
    {"role": "user", "content": "San Francisco"},
]

# --- helpers ------------------------------------------------------------------------------------


def agents(*pairs: tuple[str, str]) -> tuple[AgentSpec, ...]:
    return tuple(AgentSpec(name=name, description=description) for name, description in pairs)


def conv(*turns: tuple[Any, str]) -> list[Message]:
    return [Message(role=role, content=content) for role, content in turns]


def conversation_of(prompt: str) -> list[dict[str, str]]:
    block = prompt.split("<conversation>\n", 1)[1].split("\n</conversation>", 1)[0]
    result: list[dict[str, str]] = json.loads(block)
    return result


PLANO_AGENTS = (AgentSpec.model_construct(name="Image generation", description="generating image"),)
"""Plano's test route name has a space, which our catalog rejects; model_construct skips that check."""

HI = ("user", "hi")
HELLO = ("assistant", "Hello! How can I assist you today?")
WARHOL = ("user", "given the image In style of Andy Warhol, portrait of Bart and Lisa Simpson")
LONG = (
    "user",
    "given the image In style of Andy Warhol, portrait of Bart and Lisa Simpson and this is a very long "
    "message that exceeds the max token length of the routing model, so it should be truncated and only "
    "the last user message should be included in the conversation for routing.",
)

# --- dialects against their references ----------------------------------------------------------


def test_model_card_reference_is_what_the_model_card_code_renders() -> None:
    assert build_messages(CARD_AGENTS, CARD_CONVERSATION)[0]["content"] == reference("model_card_example.txt")


def test_model_card_dialect_matches_reference() -> None:
    builder = PromptBuilder()
    card_agents = agents(*[(a["name"], a["description"]) for a in CARD_AGENTS])
    card_conv = conv(*[(t["role"], t["content"]) for t in CARD_CONVERSATION])
    assert builder.build(card_agents, card_conv) == reference("model_card_example.txt")
    assert builder.chat_messages(card_agents, card_conv) == build_messages(CARD_AGENTS, CARD_CONVERSATION)


def test_model_card_code_and_builder_agree_on_non_ascii_and_braces() -> None:
    raw_agents = [{"name": "Meteo", "description": "Prévisions {ville} « météo » 天气 🌦"}]
    raw_conv = [{"role": "user", "content": 'Quel temps à Zürich ? {"x": 1} \\ "q" \t 天气'}]
    built = PromptBuilder().build(
        agents(("Meteo", raw_agents[0]["description"])), conv(("user", raw_conv[0]["content"]))
    )
    assert built == build_messages(raw_agents, raw_conv)[0]["content"]
    assert "Zürich" in built and "天气" in built and "🌦" in built


def test_plano_template_is_the_model_card_template_unformatted() -> None:
    assert PLANO_TEMPLATE == "\n" + ORCHESTRATION_PROMPT + "\n"
    assert ORCHESTRATION_PROMPT == MODEL_CARD_PROMPT


@pytest.mark.parametrize(
    ("ref", "turns", "max_tokens"),
    [
        ("plano_system_prompt_format.txt", [HI, HELLO, WARHOL], 10**9),
        ("plano_exceed_token_count.txt", [HI, HELLO, WARHOL], 235),
        ("plano_large_single_message.txt", [HI, HELLO, LONG], 200),
        (
            "plano_trim_upto_user_message.txt",
            [
                HI,
                HELLO,
                ("user", "given the image In style of Andy Warhol"),
                ("assistant", "ok here is the image"),
                ("user", "pls give me another image about Bart and Lisa"),
            ],
            230,
        ),
        (
            "plano_skip_tool_call.txt",
            [
                ("user", "What's the weather like in Tokyo?"),
                ("assistant", ""),  # the tool call: no text
                ("tool", '{ "temperature": "22°C", "condition": "Sunny" }'),
                ("assistant", "The current weather in Tokyo is 22°C and sunny."),
                ("user", "What about in New York?"),
            ],
            10**9,
        ),
    ],
)
def test_plano_dialect_matches_plano_test_expectations(ref: str, turns: list[tuple[str, str]], max_tokens: int) -> None:
    builder = PromptBuilder("plano", max_tokens=max_tokens)
    assert builder.build(PLANO_AGENTS, conv(*turns)) == reference(ref)


def test_plano_routes_carry_an_empty_parameters_schema_in_order() -> None:
    prefix = PromptBuilder("plano").prefix(agents(("A", "first"), ("B", "второй")))
    assert (
        '<routes>\n{"name": "A", "description": "first", "parameters": {"type": "object", "properties": {}, '
        '"required": []}}\n{"name": "B", "description": "второй", "parameters": {"type": "object", '
        '"properties": {}, "required": []}}\n</routes>'
    ) in prefix
    assert prefix.startswith("\nYou are a helpful assistant")


def test_only_name_and_description_reach_the_prompt() -> None:
    spec = AgentSpec(
        name="A",
        description="does a",
        topic="a.tasks",
        timeout=300.0,
        default=True,
        examples=("secret example",),
    )
    prompt = PromptBuilder().build((spec,), conv(("user", "hi")))
    assert '{"name": "A", "description": "does a"}\n</routes>' in prompt
    assert "secret example" not in prompt and "a.tasks" not in prompt


# --- conversation selection ---------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["model_card", "plano"])
def test_system_developer_tool_and_empty_messages_are_dropped(dialect: Dialect) -> None:
    turns = conv(
        ("system", "be nice"),
        ("developer", "dev"),
        ("user", "hi"),
        ("assistant", ""),
        ("tool", "{}"),
        ("assistant", "hello"),
        ("user", "weather?"),
    )
    prompt = PromptBuilder(dialect).build(agents(("A", "a")), turns)
    assert conversation_of(prompt) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "weather?"},
    ]


def test_agent_names_on_messages_are_left_out() -> None:
    turns = [Message(role="user", content="hi"), Message(role="assistant", content="yo", name="A")]
    assert conversation_of(PromptBuilder().build(agents(("A", "a")), turns))[1] == {
        "role": "assistant",
        "content": "yo",
    }


def test_only_the_last_16_messages_are_kept() -> None:
    turns = conv(*[("user" if i % 2 == 0 else "assistant", f"turn-{i:03}") for i in range(40)])
    kept = conversation_of(PromptBuilder().build(agents(("A", "a")), turns))
    assert [t["content"] for t in kept] == [f"turn-{i:03}" for i in range(24, 40)]


def test_max_messages_is_configurable() -> None:
    turns = conv(*[("user", f"m{i}") for i in range(10)])
    kept = conversation_of(PromptBuilder(max_messages=3).build(agents(("A", "a")), turns))
    assert [t["content"] for t in kept] == ["m7", "m8", "m9"]


def test_an_over_budget_newest_user_message_is_trimmed_in_the_middle() -> None:
    text = "HEAD_MARKER_START " + "A" * 500_000 + " TAIL_MARKER_END"
    builder = PromptBuilder("plano", max_tokens=2048)
    prompt = builder.build(PLANO_AGENTS, conv(("user", "earlier"), ("user", text)))
    [only] = conversation_of(prompt)
    content = only["content"]
    budget = (2048 - len(PLANO_TEMPLATE.encode()) // 4) * 4
    assert len(content.encode()) <= budget and len(content.encode()) >= budget - 4
    assert content.startswith("HEAD_MARKER_START ") and content.endswith(" TAIL_MARKER_END")
    assert content.count(TRIM_MARKER) == 1
    head, tail = content.split(TRIM_MARKER)
    assert abs(len(head) - 0.6 * (budget - 3)) <= 1 and abs(len(tail) - 0.4 * (budget - 3)) <= 1


def test_older_messages_are_dropped_when_the_budget_is_exceeded() -> None:
    template_tokens = len(ORCHESTRATION_PROMPT.encode()) // 4
    turns = conv(("user", "x" * 400), ("assistant", "y" * 400), ("user", "z" * 40))
    kept = conversation_of(PromptBuilder(max_tokens=template_tokens + 110).build(agents(("A", "a")), turns))
    assert kept == [{"role": "assistant", "content": "y" * 400}, {"role": "user", "content": "z" * 40}]


def test_an_over_budget_assistant_message_is_dropped_not_trimmed() -> None:
    template_tokens = len(ORCHESTRATION_PROMPT.encode()) // 4
    turns = conv(("user", "u" * 40), ("assistant", "y" * 4000), ("user", "z" * 40))
    kept = conversation_of(PromptBuilder(max_tokens=template_tokens + 50).build(agents(("A", "a")), turns))
    assert kept == [{"role": "user", "content": "z" * 40}]


def test_select_messages_is_a_pure_function() -> None:
    turns = conv(("system", "s"), ("user", "hello"), ("assistant", "hi"))
    assert select_messages(turns) == [("user", "hello"), ("assistant", "hi")]
    assert select_messages([]) == []


# --- trimming -----------------------------------------------------------------------------------


def test_trim_middle_keeps_short_text_and_splits_60_40() -> None:
    assert trim_middle("hello", 5) == "hello"
    out = trim_middle("0123456789" * 2, 13)  # 10 bytes left after the 3-byte marker: 6 head, 4 tail
    assert out == "012345…6789"
    assert trim_middle("abcdefgh", 2) == "ab"  # no room for the marker: head only


def test_trim_middle_respects_utf8_boundaries() -> None:
    out = trim_middle("é" * 50, 25)
    assert len(out.encode()) <= 25
    assert set(out) <= {"é", "…"} and out.count("…") == 1
    assert trim_middle("日本語テキスト", 3) == "日"  # head-only fallback stops on a boundary
    assert trim_middle("日本語テキスト", 4) == "…"  # 1 byte left: no whole character fits


def test_non_ascii_is_kept_verbatim() -> None:
    catalog = agents(("Wetter", "Wettervorhersage für Köln"))
    prompt = PromptBuilder().build(catalog, conv(("user", "Погода в Москве? 🌧")))
    assert "Wettervorhersage für Köln" in prompt and "Погода в Москве? 🌧" in prompt
    assert "\\u" not in prompt


# --- prefix -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["model_card", "plano"])
def test_prefix_is_a_prefix_of_every_prompt_and_ends_before_the_conversation(dialect: Dialect) -> None:
    builder = PromptBuilder(dialect)
    catalog = agents(("A", "does a"), ("B", "does b"))
    prefix = builder.prefix(catalog)
    assert prefix.endswith("<conversation>\n") and '{"name": "B"' in prefix
    for turns in (conv(("user", "one")), conv(("user", "two"), ("assistant", "x"), ("user", "three"))):
        assert builder.build(catalog, turns).startswith(prefix)
    assert builder.prefix(list(catalog)) is prefix  # rendered once per catalog


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="dialect"):
        PromptBuilder("openai")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tokens"):
        PromptBuilder(max_tokens=0)

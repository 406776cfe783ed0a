"""Batched in-process vLLM versus one request at a time through an OpenAI-compatible server.

    python bench/engine_batching.py [--model DIR] [--requests N] [--data FILE]

Both sides run the same model on the same machine, one after the other: first routeyard's
in-process engine (the whole batch submitted at once), then `vllm serve` of the same folder
asked one request at a time - Plano's pattern (one HTTP request per user message, no batching
of its own). The catalog has 20 agents with real service descriptions and the conversations
2-10 turns, both read from the SGD development file (../shared/data) when it is there.
Without --model, a tiny random-weight Qwen3 is built offline: its answers are noise, but the
work per request (prompt length, constrained decoding, max_tokens) is what a real model does.

Prints one row per batch size: decisions/s and p50/p99 decision latency for each side, the
ratio, and the prefix-cache hit rate each side reported.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# vLLM on CPU: a 1 GiB KV cache, both cores, no model hub (notes/models.md). Override by exporting.
for _name, _value in {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "OMP_NUM_THREADS": "2",
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_name, _value)

from router.catalog import AgentSpec  # noqa: E402
from router.engine import RoutingRequest  # noqa: E402
from router.openai_engine import OpenAIGenerator, OpenAISettings  # noqa: E402
from router.plano import PlanoEngine  # noqa: E402
from router.vllm_engine import VllmGenerator, VllmSettings  # noqa: E402
from schemas import Message  # noqa: E402

BATCHES = (1, 8, 32, 128)
DATA = ROOT.parent / "shared" / "data" / "sgd_dev_routing_distract4.jsonl.gz"


def workload(data: Path, agents: int, count: int) -> list[RoutingRequest]:
    """``count`` turns of 2-10 messages, over one catalog of ``agents`` agents."""
    if not data.exists():
        sys.exit(f"no data at {data}: pass --data (a routing JSONL file, see ../shared/data/README.md)")
    catalog: dict[str, str] = {}
    conversations: list[list[Message]] = []
    with gzip.open(data, "rt") as lines:
        for line in lines:
            case = json.loads(line)
            for agent in case["agents"]:
                if len(catalog) < agents:
                    catalog.setdefault(agent["name"], agent["description"])
            if 2 <= len(case["conversation"]) <= 10 and len(conversations) < count:
                conversations.append([Message(role=m["role"], content=m["content"]) for m in case["conversation"]])
            if len(catalog) >= agents and len(conversations) >= count:
                break
    specs = tuple(AgentSpec(name=name, description=text) for name, text in catalog.items())
    return [RoutingRequest(event_id=str(i), conversation=c, agents=specs) for i, c in enumerate(conversations)]


async def batched(engine: PlanoEngine, requests: Sequence[RoutingRequest], size: int) -> tuple[float, list[float]]:
    """All requests in batches of ``size``; each decision's latency is its batch's."""
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(0, len(requests), size):
        chunk = requests[i : i + size]
        t0 = time.perf_counter()
        await engine.decide(chunk)
        latencies += [time.perf_counter() - t0] * len(chunk)
    return len(requests) / (time.perf_counter() - started), latencies


async def one_at_a_time(engine: PlanoEngine, requests: Sequence[RoutingRequest]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started = time.perf_counter()
    for request in requests:
        t0 = time.perf_counter()
        await engine.decide([request])
        latencies.append(time.perf_counter() - t0)
    return len(requests) / (time.perf_counter() - started), latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_in_process(model: Path, requests: list[RoutingRequest], sizes: Sequence[int], per: int) -> dict:
    settings = VllmSettings(
        model=str(model), dtype="bfloat16", max_model_len=4096, enforce_eager=True, max_num_seqs=max(sizes)
    )
    results = {}
    async with VllmGenerator(settings) as generator:
        engine = PlanoEngine(generator)
        await engine.decide(requests[:8])  # warm-up: first batches pay one-off costs
        for size in sizes:
            n = max(size, per)
            rate, latencies = await batched(engine, requests[:n], size)
            results[size] = (rate, latencies)
            print(f"  in-process batch {size:>3}: {rate:7.1f} decisions/s over {n}", flush=True)
        results["hit"] = generator.prefix_cache_hit_rate()
    return results


async def run_server(model: Path, requests: list[RoutingRequest], per: int, log: Path) -> dict:
    from tests.models.vllm_server import prefix_cache_hit_rate, serve

    with serve(model, log) as server:
        settings = OpenAISettings(base_url=server.base_url, model=server.model, max_concurrency=1)
        async with OpenAIGenerator(settings) as generator:
            engine = PlanoEngine(generator)
            await one_at_a_time(engine, requests[:4])  # warm-up
            rate, latencies = await one_at_a_time(engine, requests[:per])
            print(f"  one at a time via HTTP: {rate:7.1f} decisions/s over {per}", flush=True)
        return {"rate": rate, "latencies": latencies, "hit": prefix_cache_hit_rate(server)}


def table(inproc: dict, server: dict, sizes: Sequence[int]) -> str:
    rows = [
        "| batch | batched dec/s | p50 ms | p99 ms | one-at-a-time dec/s | p50 ms | p99 ms | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    single = server["latencies"]
    for size in sizes:
        rate, lat = inproc[size]
        rows.append(
            f"| {size} | {rate:.1f} | {pct(lat, 0.5):.0f} | {pct(lat, 0.99):.0f} | {server['rate']:.1f} | "
            f"{pct(single, 0.5):.0f} | {pct(single, 0.99):.0f} | {rate / server['rate']:.1f}x |"
        )
    hit = lambda v: "n/a" if v is None else f"{v:.0%}"  # noqa: E731
    rows.append(f"\nprefix-cache hit rate: in-process {hit(inproc['hit'])}, server {hit(server['hit'])}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a local model folder (default: build the tiny Qwen3)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--requests", type=int, default=32, help="decisions per measurement (at least the batch)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="routeyard-bench-"))
    model = args.model
    if model is None:
        from tests.models.tiny_qwen3 import build_tiny_qwen3

        model = build_tiny_qwen3(work / "tiny-qwen3")
    requests = workload(args.data, args.agents, max(max(args.batches), args.requests))
    turns = [len(r.conversation) for r in requests]
    print(
        f"model {model}; {len(requests[0].agents)} agents; {len(requests)} conversations of "
        f"{min(turns)}-{max(turns)} messages (mean {statistics.mean(turns):.1f})",
        flush=True,
    )
    inproc = asyncio.run(run_in_process(model, requests, args.batches, args.requests))
    server = asyncio.run(run_server(model, requests, args.requests, work / "server.log"))
    print()
    print(table(inproc, server, args.batches))


if __name__ == "__main__":
    main()

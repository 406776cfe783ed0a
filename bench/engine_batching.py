"""Batched in-process vLLM versus one request at a time through an OpenAI-compatible server.

    python bench/engine_batching.py [--model DIR] [--requests N] [--data FILE]

Both sides run the same model on the same machine: routeyard's in-process engine (the whole
batch submitted at once), and `vllm serve` of the same folder asked one request at a time -
Plano's pattern (one HTTP request per user message, no batching of its own). The catalog has
real service descriptions and the conversations 2-10 turns, both read from the SGD development
file (../shared/data; its 16 services give a 16-agent catalog).
Without --model, a tiny random-weight Qwen3 is built offline: its answers are noise, but the
work per request (prompt length, constrained decoding, max_tokens) is what a real model does.

Both engines stay up and the measurements interleave round by round (medians reported), so the
ratio holds on a shared machine. Prints one row per batch size: decisions/s and p50/p99 decision
latency for each side, the ratio, and the prefix-cache hit rate each side reported.
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

from routeyard.router.catalog import AgentSpec  # noqa: E402
from routeyard.router.engines.base import RoutingRequest  # noqa: E402
from routeyard.router.plano.engine import PlanoEngine  # noqa: E402
from routeyard.router.plano.openai import OpenAIGenerator, OpenAISettings  # noqa: E402
from routeyard.router.plano.vllm import VllmGenerator, VllmSettings  # noqa: E402
from routeyard.schemas import Message  # noqa: E402

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


def vllm_settings(model: Path, sizes: Sequence[int], block_size: int | None) -> VllmSettings:
    return VllmSettings(
        model=str(model),
        dtype="bfloat16",
        max_model_len=4096,
        enforce_eager=True,
        max_num_seqs=max(sizes),
        block_size=block_size,
        engine_kwargs={"async_scheduling": True},
    )


async def measure(model: Path, requests: list[RoutingRequest], args: argparse.Namespace, log: Path) -> dict:
    """Both engines up at once; each round measures every batch size and the baseline back to back,
    so background load on a shared machine hits both sides alike. Medians over rounds."""
    from tests.models.vllm_server import prefix_cache_hit_rate, serve

    extra = ["--async-scheduling", *(["--block-size", str(args.block_size)] if args.block_size else [])]
    rounds: list[dict] = []
    with serve(model, log, extra=extra) as server:
        http = OpenAIGenerator(OpenAISettings(base_url=server.base_url, model=server.model, max_concurrency=1))
        inproc = VllmGenerator(vllm_settings(model, args.batches, args.block_size))
        async with http, inproc:
            batched_engine, single_engine = PlanoEngine(inproc), PlanoEngine(http)
            await batched_engine.decide(requests[:8])  # warm-up: first batches pay one-off costs
            await one_at_a_time(single_engine, requests[:4])
            for r in range(args.rounds):
                rounds.append(await one_round(batched_engine, single_engine, requests, args))
                print(f"  round {r + 1}: " + ", ".join(f"b{k}={v[0]:.1f}/s" for k, v in rounds[-1].items()), flush=True)
            hits = {"in-process": inproc.prefix_cache_hit_rate(), "server": prefix_cache_hit_rate(server)}
    return {"rounds": rounds, "hits": hits}


async def one_round(
    batched_engine: PlanoEngine, single_engine: PlanoEngine, requests: list[RoutingRequest], args: argparse.Namespace
) -> dict:
    row = {}
    for size in args.batches:
        row[size] = await batched(batched_engine, requests[: max(size, args.requests)], size)
    row["single"] = await one_at_a_time(single_engine, requests[: args.requests])
    return row


def table(result: dict, sizes: Sequence[int]) -> str:
    rounds = result["rounds"]
    rows = [
        "| batch | batched dec/s | p50 ms | p99 ms | one-at-a-time dec/s | p50 ms | p99 ms | ratio (median) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    single_lat = [x for r in rounds for x in r["single"][1]]
    single_rate = statistics.median(r["single"][0] for r in rounds)
    for size in sizes:
        rate = statistics.median(r[size][0] for r in rounds)
        lat = [x for r in rounds for x in r[size][1]]
        ratio = statistics.median(r[size][0] / r["single"][0] for r in rounds)
        rows.append(
            f"| {size} | {rate:.1f} | {pct(lat, 0.5):.0f} | {pct(lat, 0.99):.0f} | {single_rate:.1f} | "
            f"{pct(single_lat, 0.5):.0f} | {pct(single_lat, 0.99):.0f} | {ratio:.1f}x |"
        )
    hit = lambda v: "n/a" if v is None else f"{v:.0%}"  # noqa: E731
    hits = result["hits"]
    rows.append(f"\nprefix-cache hit rate: in-process {hit(hits['in-process'])}, server {hit(hits['server'])}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a local model folder (default: build the tiny Qwen3)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--requests", type=int, default=32, help="decisions per measurement (at least the batch)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds (medians)")
    parser.add_argument(
        "--block-size",
        type=int,
        default=32,
        help="KV block size for both sides (CPU default 128 caches less of the shared prefix)",
    )
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
    print(
        f"both sides: vLLM with prefix caching, async scheduling, block size {args.block_size}; "
        f"{args.rounds} interleaved rounds",
        flush=True,
    )
    result = asyncio.run(measure(model, requests, args, work / "server.log"))
    print()
    print(table(result, args.batches))


if __name__ == "__main__":
    main()

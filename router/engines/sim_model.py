"""The discrete-event model behind the ``sim`` engine: vLLM's continuous batching on one GPU.

No event loop and no clock here: a ``Batcher`` is told what arrives and asked for the next step;
the engine (``sim.py``) sleeps for the step's cost, ``replay`` and the tests advance virtual time.

One engine step, as vLLM V1 schedules it:

1. every running request gets its tokens first, in admission order: one decode token each, or
   the next chunk of a prompt still being prefilled (chunked prefill shares the step with decode);
2. waiting requests are admitted, first come first served, while the step's token budget
   (``max_num_batched_tokens``), the sequence budget (``max_num_seqs``) and free KV cache last.
   An admitted request skips the blocks of its catalog prefix that the prefix cache holds: the
   first request of a catalog pays for the prefix, the prefix is cached once it has been computed;
3. the step costs ``max(compute, memory) + overheads``: compute is the FLOPs of its tokens
   (weights, plus attention over each token's position), memory the weight bytes it reads (for a
   MoE, the experts its tokens touch) plus every running sequence's KV cache. So a decode step
   grows slowly with the running batch, a step with prefill chunks with the tokens it processes.

The step that finishes a prompt yields the answer's first token; each later step one more.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from routeyard.router.engines.sim_profiles import Profile, Shape

__all__ = ["Batcher", "Job", "Step", "ceiling", "replay"]

Step = list[tuple["Job", int]]
"""(request, tokens it gets) for every request in one engine step."""


@dataclass(slots=True, eq=False)
class Job:
    """One request inside the model. ``prefix`` tokens (the catalog) are cacheable under ``prefix_key``."""

    prompt: int
    answer: int
    prefix: int = 0
    prefix_key: Hashable = None
    arrival: float = 0.0
    computed: int = 0
    generated: int = 0
    cached: int = 0
    reserved: int = 0
    first_token_at: float | None = None
    done_at: float | None = None
    admitted: bool = field(default=False)

    @property
    def prefilling(self) -> bool:
        return self.computed < self.prompt


def _blocks(tokens: int, block: int) -> int:
    return -(-tokens // block) * block


class Batcher:
    """The scheduler state of one simulated vLLM engine."""

    def __init__(self, profile: Profile, *, prefix_slots: int = 256) -> None:
        self.profile = profile
        self.waiting: deque[Job] = deque()
        self.running: list[Job] = []
        self.kv_free = profile.kv_capacity_tokens
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self._cache: OrderedDict[Hashable, None] = OrderedDict()
        self._prefix_slots = prefix_slots

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def submit(self, job: Job) -> None:
        if job.prompt < 1 or job.answer < 1:
            raise ValueError(f"a request needs a prompt and an answer, got {job.prompt} and {job.answer} tokens")
        job.prefix = min(job.prefix // self.profile.block_size * self.profile.block_size, job.prompt - 1)
        self.waiting.append(job)

    def abort(self, job: Job) -> None:
        """Forget a request (its caller gave up), freeing its KV cache."""
        if job.admitted:
            if job in self.running:
                self.running.remove(job)
                self.kv_free += job.reserved
        elif job in self.waiting:
            self.waiting.remove(job)

    def plan(self) -> Step:
        """The next step: running requests' tokens, then newly admitted ones (admission happens here)."""
        budget = self.profile.max_num_batched_tokens
        step: Step = []
        for job in self.running:
            if budget == 0:
                break
            tokens = min(job.prompt - job.computed, budget) if job.prefilling else 1
            step.append((job, tokens))
            budget -= tokens
        while budget > 0 and self.waiting and len(self.running) < self.profile.max_num_seqs:
            job = self.waiting[0]
            if not self._admit(job):
                break
            tokens = min(job.prompt - job.computed, budget)
            step.append((job, tokens))
            budget -= tokens
        return step

    def _admit(self, job: Job) -> bool:
        hit = job.prefix > 0 and job.prefix_key in self._cache
        cached = job.prefix if hit else 0
        reserve = _blocks(job.prompt - cached + job.answer, self.profile.block_size)
        if reserve > self.kv_free and self.running:
            return False  # waits for KV cache (alone, it runs anyway: nothing would ever free more)
        if hit:
            self._cache.move_to_end(job.prefix_key)
        self.waiting.popleft()
        job.admitted, job.cached, job.computed, job.reserved = True, cached, cached, reserve
        self.kv_free -= reserve
        self.running.append(job)
        self.prompt_tokens += job.prompt
        self.cached_tokens += cached
        return True

    def cost(self, step: Step) -> float:
        """Seconds the step takes on the GPU."""
        p = self.profile
        tokens = flops = kv = 0.0
        for job, n in step:
            start = job.computed if job.prefilling else job.prompt + job.generated - 1
            tokens += n
            flops += n * start + n * (n - 1) / 2
            kv += start + n
        compute = (p.linear_flops * tokens + p.attention_flops * flops) / p.flops_per_s
        memory = (p.weight_bytes(int(tokens)) + p.kv_bytes * kv) / p.bytes_per_s
        return max(compute, memory) + p.step_overhead_s + p.seq_overhead_s * len(step)

    def commit(self, step: Step, end: float) -> list[Job]:
        """Apply a step that ended at ``end``; the requests it finished (removed, KV freed)."""
        finished: list[Job] = []
        for job, n in step:
            if job.prefilling:
                job.computed += n
                if job.prefix and job.computed >= job.prefix:
                    self._remember(job.prefix_key)
                if not job.prefilling:
                    job.generated, job.first_token_at = 1, end
            else:
                job.generated += 1
            if job.generated >= job.answer:
                job.done_at = end
                finished.append(job)
        if finished:
            gone = set(map(id, finished))
            self.running = [job for job in self.running if id(job) not in gone]
            self.kv_free += sum(job.reserved for job in finished)
        return finished

    def _remember(self, key: Hashable) -> None:
        self._cache[key] = None
        self._cache.move_to_end(key)
        while len(self._cache) > self._prefix_slots:
            self._cache.popitem(last=False)


def replay(profile: Profile, jobs: Iterable[Job]) -> list[Job]:
    """Run ``jobs`` (each submitted at its ``arrival``) through a fresh engine in virtual time:
    the latency each gets with no batching boundaries and nothing in the way (``done_at - arrival``)."""
    pending = deque(sorted(jobs, key=lambda job: job.arrival))
    batcher = Batcher(profile)
    done: list[Job] = []
    now = 0.0
    while pending or not batcher.idle:
        while pending and pending[0].arrival <= now:
            batcher.submit(pending.popleft())
        if batcher.idle:
            now = pending[0].arrival
            continue
        step = batcher.plan()
        now += batcher.cost(step)
        done += batcher.commit(step, now)
    return done


def ceiling(profile: Profile, shape: Shape | None = None) -> float:
    """Decisions/s with the engine always full of requests of ``shape``: the steady state of the
    model (n requests start and n finish per step, within the token, sequence and KV budgets)."""
    shape = shape or profile.reference
    block = profile.block_size
    prompt = max(shape.prompt, 1.0)
    cached = min(shape.prefix // block * block, prompt - 1)
    fresh, answer = prompt - cached, max(shape.answer, 1.0)
    n = min(
        profile.max_num_batched_tokens / (fresh + answer - 1),
        profile.max_num_seqs / answer,
        profile.kv_capacity_tokens / (_blocks(int(fresh + answer), block) * answer),
    )
    attention = fresh * cached + fresh * (fresh - 1) / 2 + (answer - 1) * (prompt + answer / 2 - 1)
    kv = prompt + (answer - 1) * (prompt + answer / 2)
    tokens = n * (fresh + answer - 1)
    compute = (profile.linear_flops * tokens + profile.attention_flops * n * attention) / profile.flops_per_s
    memory = (profile.weight_bytes(round(tokens)) + profile.kv_bytes * n * kv) / profile.bytes_per_s
    step = max(compute, memory) + profile.step_overhead_s + profile.seq_overhead_s * n * answer
    return n / step

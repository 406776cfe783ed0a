"""The routeyard command.

    routeyard dev                          the whole pipeline on embedded servers, until Ctrl-C
    routeyard gateway                      the OpenAI-compatible HTTP front door (POST /v1/chat/completions)
    routeyard demo                         scripted conversations through it (starts dev itself
                                           unless --bootstrap is given)
    routeyard worker router|correlator     one worker process (production)
    routeyard worker http-agents           the catalog's agents by URL (Plano's agent contract)
    routeyard worker filters [MOD:OBJ ...] the catalog's filter chains: @filter objects, http filters
    routeyard agent MODULE:OBJECT ...      run agents written with @agent
    routeyard send CONVERSATION TEXT       publish a turn, print its event id; --wait prints the response
                                           (rejected or timed out: one line, exit 1)
    routeyard chat CONVERSATION            each stdin line a turn: its decision, the replies as they
                                           stream, a status line (until /quit or end of input)
    routeyard schema export DIR            JSON Schema of every wire message and of the catalog,
                                           and asyncapi.json (topics, keys, groups, messages)
    routeyard catalog check FILE           validate an agent catalog (--agents M:O: cross-check @agents)
    routeyard catalog publish FILE         validate it and publish it as the next live version
    routeyard topics create                create routeyard's topics
    routeyard eval DATASET                 score an engine on routing cases (--compare: two)
    routeyard tune DATASET                 fit the semantic engine's thresholds on labelled cases
    routeyard replay                       route recorded conversations again with a candidate
                                           engine or catalog; compare with the recorded decisions
    routeyard explain EVENT_ID             why a turn went where it went, and how it ended
    routeyard variants report AGENT        compare an agent's variants (rates, latency, shadows)
    routeyard dlq list|show|replay         look at dead letters; re-drive them, each once

Settings come from ROUTEYARD_* variables (and --env-file); the flags below override the most common
ones, before or after the command. Each command checks only the settings it reads.

Engines: worker and eval use ROUTEYARD_ROUTER__ENGINE (default rules); dev and demo use semantic
(no GPU, no network) unless --engine or ROUTEYARD_ROUTER__ENGINE says otherwise; replay uses the
engine the replayed decisions were made with unless --engine or ROUTEYARD_ROUTER__ENGINE is given.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from routeyard.consumers.cli import catalog as catalog_cli
from routeyard.consumers.cli import chat, configuration, flags, offline
from routeyard.consumers.cli.exits import exit_status
from routeyard.consumers.cli.targets import load_agent as load_agent  # its old home; still importable here
from routeyard.consumers.cli.targets import load_agents
from routeyard.consumers.errors import UsageError
from routeyard.consumers.settings import EngineName, Settings
from routeyard.consumers.tools import dlq
from routeyard.router.catalog import Catalog, load_catalog

if typing.TYPE_CHECKING:
    from routeyard.consumers.filters.filter import Filter

ENGINES: tuple[str, ...] = typing.get_args(EngineName)


DEV_ENGINE: EngineName = "semantic"
"""The engine of `routeyard dev` and `demo` when none is chosen: it needs no GPU and no network."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "func", None) is _demo:
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    # A one-shot command says in one line why it cannot connect; the client's own ERROR lines
    # about each failed attempt are for the long-running processes' logs.
    quiet = logging.WARNING if getattr(args, "func", None) in _LONG_RUNNING else logging.CRITICAL
    logging.getLogger("aiokafka").setLevel(max(quiet, logging.getLogger().level))
    try:
        _refuse_ignored_flags(args)
        settings = _settings(args)
        result: int = args.func(args, settings)
        sys.stdout.flush()  # here, so a closed pipe is seen while we can still end quietly
        return result
    except BrokenPipeError:
        return flags.quiet_broken_pipe()
    except (Exception, KeyboardInterrupt) as exc:
        status = exit_status(exc)
        if status is None:
            raise
        if status.message:
            print(status.message, file=sys.stderr)
        return status.code


def _refuse_ignored_flags(args: argparse.Namespace) -> None:
    if args.func is _dev and (args.bootstrap or args.redis):
        raise UsageError("dev starts its own broker and Redis; to attach to yours use `routeyard worker`")


def _settings(args: argparse.Namespace) -> Settings:
    settings = configuration.load(args.env_file, args.uses, _flag_settings(args))
    if args.func in (_dev, _demo) and "engine" not in settings.router.model_fields_set:
        settings = settings.model_copy(update={"router": settings.router.model_copy(update={"engine": DEV_ENGINE})})
    return settings


def _flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gives (they win over variables), as Settings' keyword arguments."""
    found: dict[str, Any] = {"kafka": {}, "redis": {}, "router": {}}
    if args.bootstrap:
        found["kafka"]["bootstrap"] = args.bootstrap
    if args.redis:
        found["redis"]["url"] = args.redis
    if args.prefix is not None:
        found["topic_prefix"] = args.prefix
    for name in ("catalog", "engine", "mode"):
        if getattr(args, name, None):
            found["router"][name] = getattr(args, name)
    return {key: value for key, value in found.items() if value or key == "topic_prefix"}


def _parser() -> argparse.ArgumentParser:
    parser = flags.Parser(prog="routeyard", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"routeyard {flags.package_version()}")
    flags.add_global_flags(parser, top=True)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    dev = _command(commands, "dev", _dev, "run the whole pipeline on embedded servers")
    dev.add_argument("--catalog", type=Path, help="agent catalog (default: the demo's)")
    dev.add_argument("--agents", nargs="*", default=None, help="MODULE:OBJECT agents (default: the demo's)")
    dev.add_argument("--engine", choices=offline.ENGINES, help=f"decision engine (default: {DEV_ENGINE})")
    dev.add_argument("--app-dir", type=Path, metavar="DIR", help="import --agents modules from DIR (default: cwd)")
    dev.add_argument("--filters", nargs="*", default=[], help="MODULE:OBJECT @filter objects the catalog's chains use")
    dev.add_argument(
        "--env-out",
        type=Path,
        default=Path("dev.env"),
        metavar="FILE",
        help="write the attach settings here as KEY=VALUE lines, for --env-file (default: dev.env)",
    )
    dev.add_argument("--kafka-port", type=int, metavar="PORT", help="embedded broker's port (default: a free one)")
    dev.add_argument("--redis-port", type=int, metavar="PORT", help="embedded Valkey's port (default: a free one)")

    dev.add_argument(
        "--gateway-port",
        type=int,
        metavar="PORT",
        help="the HTTP gateway's port (default: ROUTEYARD_GATEWAY__PORT, 8080; 0: a free one)",
    )

    gateway = _command(
        commands,
        "gateway",
        _gateway,
        "serve the OpenAI-compatible HTTP gateway",
        uses=("kafka", "redis", "topic_prefix", "router", "gateway", "observability"),
    )
    gateway.add_argument("--catalog", type=Path, help="agent catalog (default: ROUTEYARD_ROUTER__CATALOG, agents.yaml)")
    gateway.add_argument("--host", help="address to listen on (default: ROUTEYARD_GATEWAY__HOST, 127.0.0.1)")
    gateway.add_argument("--port", type=int, help="port to listen on (default: ROUTEYARD_GATEWAY__PORT, 8080)")

    demo = _command(commands, "demo", _demo, "play scripted conversations and print what happens")
    demo.add_argument("--mode", choices=["parallel", "sequential"], help="multi-intent mode (default: parallel)")
    demo.add_argument("--engine", choices=offline.ENGINES, help=f"decision engine (default: {DEV_ENGINE})")

    worker = _command(commands, "worker", _worker, "run a router, correlator, http-agents or filters worker")
    worker.add_argument(
        "role",
        choices=["router", "correlator", "http-agents", "filters"],
        help="which worker: router, correlator, http-agents (the catalog's agents with a url), or filters",
    )
    worker.add_argument(
        "targets", nargs="*", metavar="MODULE:OBJECT", help="filters only: @filter objects to run (python filters)"
    )
    worker.add_argument("--app-dir", type=Path, help="filters only: put this folder first on sys.path (default: cwd)")
    worker.add_argument("--catalog", type=Path, help="agent catalog (default: ROUTEYARD_ROUTER__CATALOG, agents.yaml)")
    worker.add_argument(
        "--engine", choices=offline.ENGINES, help="decision engine (default: ROUTEYARD_ROUTER__ENGINE, rules)"
    )
    worker.add_argument(
        "--mode",
        choices=["parallel", "sequential"],
        help="multi-intent mode (default: ROUTEYARD_ROUTER__MODE, parallel)",
    )

    agent = _command(commands, "agent", _agent, "run agents written with @agent")
    agent.add_argument(
        "targets",
        nargs="+",
        metavar="MODULE:OBJECT",
        help="the @agent objects to run: module:object or path/to/file.py:object, e.g. translator:translate",
    )
    agent.add_argument("--app-dir", type=Path, metavar="DIR", help="import the modules from DIR (default: cwd)")
    agent.add_argument(
        "--register",
        action="store_true",
        help="announce the agents on the registry topic while they run (ROUTEYARD_REGISTRY__ALLOW must name them)",
    )

    send = _command(commands, "send", _send, "publish one turn", uses=("kafka", "topic_prefix", "router"))
    send.add_argument("conversation", help="conversation id (turns of one conversation share it)")
    send.add_argument("text", help="the user's message")
    send.add_argument("--wait", action="store_true", help="wait for the response and print it")
    send.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="with --wait: seconds to wait (default 60)"
    )
    send.add_argument("--tenant", help="tenant of the turn (checked against ROUTEYARD_ROUTER__TENANTS)")
    send.add_argument(
        "--mode", dest="send_mode", choices=["parallel", "sequential"], help="multi-intent mode for this turn"
    )
    send.add_argument("--agents", nargs="+", metavar="NAME", help="restrict this turn to these agents")
    send.add_argument("--json", action="store_true", help="with --wait: the raw response as JSON (event id on stderr)")

    schema = _command(
        commands, "schema", _schema, "export the wire contract as JSON Schema and AsyncAPI", uses=("topic_prefix",)
    )
    schema.add_argument("action", choices=["export"], help="export: write one JSON Schema file per message")
    schema.add_argument("directory", type=Path, help="where to write them (created if missing)")
    schema.add_argument("--catalog", type=Path, help="also describe this catalog's agent topics in asyncapi.json")

    catalog = _command(
        commands, "catalog", _catalog, "validate or publish an agent catalog", uses=("kafka", "topic_prefix")
    )
    catalog_cli.add_arguments(catalog)

    topics = _command(
        commands, "topics", _topics, "create routeyard's topics", uses=("kafka", "topic_prefix", "router")
    )
    topics.add_argument("action", choices=["create"], help="create: create the topics that are missing")
    topics.add_argument("--catalog", type=Path, help="also create the agent topics of this catalog")

    offline.add_commands(commands, _command)
    chat.add_commands(commands, _command)
    dlq.add_commands(commands, _command)
    return parser


def _command(
    commands: Any, name: str, func: Callable[..., int], help_text: str, uses: configuration.Uses = None
) -> argparse.ArgumentParser:
    """A command's parser; ``uses``: the settings sections it reads (None: all), the only ones checked."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text, parents=[flags.global_flags()]
    )
    parser.set_defaults(func=func, uses=uses)
    return parser


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.consumers.app import check_engine, run_until_signal
    from routeyard.consumers.dev.envfile import attach_env, export_line, write_env_file
    from routeyard.consumers.dev.server import demo_agents, dev_settings, embedded_servers, run_pipeline

    check_engine(settings)
    agents = load_agents(args.agents, args.app_dir) if args.agents is not None else demo_agents()
    settings, catalog = dev_settings(settings, args.catalog)
    filters = _dev_filters(args, catalog)
    with embedded_servers(settings, kafka_port=args.kafka_port, redis_port=args.redis_port) as live:
        env = attach_env(live)
        write_env_file(args.env_out, env)
        print(
            f"routeyard dev: broker {live.kafka.bootstrap}, redis {live.redis.url.get_secret_value()}, "
            f"prefix {live.topic_prefix!r}, engine {live.router.engine}, "
            f"{flags.plural(len(agents), 'agent')}. Ctrl-C stops.\n"
            f"  attach from another shell:\n    {export_line(env)}\n"
            f"  or: routeyard --env-file {args.env_out} agent MODULE:OBJECT",
            flush=True,
        )
        if args.gateway_port is not None:
            live = live.model_copy(update={"gateway": live.gateway.model_copy(update={"port": args.gateway_port})})

        def gateway_up(url: str) -> None:
            print(f"  gateway: {url}/v1  (OpenAI-compatible; model 'routeyard'; page: {url}/)", flush=True)

        run_until_signal(
            lambda stop: run_pipeline(live, catalog, agents, stop, gateway=gateway_up, watch=True, filters=filters),
            live,
            "dev",
        )
    print("routeyard dev: stopped", flush=True)
    return 0


def _dev_filters(args: argparse.Namespace, catalog: Catalog) -> list[Filter]:
    """The @filter objects given (their names checked against the catalog's python filters)."""
    from routeyard.consumers.cli.targets import load_filters
    from routeyard.consumers.workers.filters import check_filters

    filters = load_filters(args.filters, args.app_dir)
    if filters or catalog.filters:
        check_filters(catalog, filters, "the catalog")
    return filters


def _gateway(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.consumers.app import run_until_signal
    from routeyard.consumers.gateway import run_gateway

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    cfg = settings.gateway.model_validate(settings.gateway.model_dump() | overrides)
    settings = settings.model_copy(update={"gateway": cfg})

    def started(url: str) -> None:
        print(f"routeyard gateway: {url}/v1 (instance {cfg.instance}). Ctrl-C stops.", flush=True)

    # None: the gateway follows ROUTEYARD_ROUTER__CATALOG (a file, or topic:) while it serves
    run_until_signal(lambda stop: run_gateway(settings, stop, None, started=started), settings, "gateway")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.consumers.app import check_engine
    from routeyard.consumers.dev.demo.run import play

    if args.bootstrap:
        asyncio.run(play(settings))
        return 0
    from routeyard.consumers.dev.server import demo_agents, dev_settings, embedded_servers, run_pipeline

    settings, catalog = dev_settings(settings, None)
    check_engine(settings)

    async def demo(live: Settings) -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        pipeline = asyncio.create_task(run_pipeline(live, catalog, demo_agents(), stop, ready))
        await asyncio.wait([pipeline, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        try:
            await play(live)
        finally:
            stop.set()
            await pipeline

    with embedded_servers(settings) as live:
        print(
            f"routeyard demo: embedded broker {live.kafka.bootstrap}, redis {live.redis.url.get_secret_value()}, "
            f"engine {live.router.engine}",
            flush=True,
        )
        asyncio.run(demo(live))
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.consumers.app import run_correlator, run_router, run_until_signal
    from routeyard.consumers.catalogs.live import TOPIC

    if args.targets and args.role != "filters":
        raise UsageError(f"worker {args.role} takes no MODULE:OBJECT (only worker filters does)")
    if args.role == "router":
        from routeyard.consumers.app import check_engine

        check_engine(settings)
        if str(settings.router.catalog) != TOPIC:
            load_catalog(settings.router.catalog)  # a bad catalog file: its problems, exit 2
        run_until_signal(lambda stop: run_router(settings, stop), settings, "router")
    elif args.role == "http-agents":
        _http_agents(settings)
    elif args.role == "filters":
        _filters(args, settings)
    else:
        run_until_signal(lambda stop: run_correlator(settings, stop), settings, "correlator")
    return 0


def _filters(args: argparse.Namespace, settings: Settings) -> None:
    from routeyard.consumers.app import run_until_signal
    from routeyard.consumers.cli.attach import check_redis, one_failure
    from routeyard.consumers.cli.targets import load_filters
    from routeyard.consumers.workers.filters import check_filters, run_filters

    catalog = load_catalog(settings.router.catalog)
    given = load_filters(args.targets, args.app_dir)
    check_filters(catalog, given, str(settings.router.catalog))
    asyncio.run(check_redis(settings, "worker filters"))

    async def run(stop: asyncio.Event) -> None:
        with one_failure():
            await run_filters(settings, catalog, given, stop)

    run_until_signal(run, settings, "filters")


def _http_agents(settings: Settings) -> None:
    from routeyard.consumers.app import run_until_signal
    from routeyard.consumers.cli.attach import check_redis, one_failure
    from routeyard.consumers.workers.http_agents import check_http_agents, run_http_agents

    catalog = load_catalog(settings.router.catalog)
    check_http_agents(catalog, str(settings.router.catalog))
    asyncio.run(check_redis(settings, "worker http-agents"))

    async def run(stop: asyncio.Event) -> None:
        with one_failure():
            await run_http_agents(settings, catalog, stop)

    run_until_signal(run, settings, "http-agents")


def _agent(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.consumers.cli.attach import run_agents

    agents = load_agents(args.targets, args.app_dir)
    if args.register:
        agents = [dataclasses.replace(a, register=True) for a in agents]
    run_agents(agents, settings)
    return 0


def _send(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.consumers.cli.send import send

    return asyncio.run(send(args, settings))


def _schema(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.consumers.tools.contract import export_contract

    catalog = load_catalog(args.catalog) if args.catalog else None
    for path in export_contract(args.directory, settings.topics, catalog):
        print(path)
    return 0


def _catalog(args: argparse.Namespace, settings: Settings) -> int:
    return catalog_cli.run(args, settings)


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.consumers.app import create_topics

    catalog = load_catalog(args.catalog) if args.catalog else None
    asyncio.run(create_topics(settings, catalog))
    print("topics ready:", ", ".join(settings.topics.core()))
    return 0


_LONG_RUNNING = (_dev, _demo, _worker, _agent, _gateway)
"""Processes that keep running: their logs carry the Kafka client's warnings and errors."""


if __name__ == "__main__":
    raise SystemExit(main())

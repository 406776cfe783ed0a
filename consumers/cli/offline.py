"""The offline tools of the ``routeyard`` command: ``eval`` (score engines on labelled routing
cases) and ``replay`` (route recorded traffic again with a candidate, compare with what was decided).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from routeyard.consumers.cli.dataset import TAGS_HELP, eval_cases, warn_rules
from routeyard.consumers.cli.flags import timestamp
from routeyard.consumers.errors import UsageError
from routeyard.consumers.settings import EngineName, Settings
from routeyard.router.catalog import load_catalog

if TYPE_CHECKING:
    from routeyard.consumers.tools.replay import Selection
    from routeyard.consumers.tools.replay_report import ReplayReport
    from routeyard.router.catalog import Catalog
    from routeyard.router.engines.scoring import Report
    from routeyard.router.evaluation.evaluate import Case

ENGINES: tuple[str, ...] = typing.get_args(EngineName)

Command = Callable[[Any, str, Callable[..., int], str], argparse.ArgumentParser]


def add_commands(commands: Any, command: Command) -> None:
    """Register ``eval`` and ``replay`` with the CLI's sub-parsers (``command`` makes one)."""
    _eval_parser(commands, command)
    _tune_parser(commands, command)
    _replay_parser(commands, command)
    _explain_parser(commands, command)
    _variants_parser(commands, command)


# -- routeyard eval ------------------------------------------------------------------------------


def _eval_parser(commands: Any, command: Command) -> None:
    evaluate = command(commands, "eval", _eval, "score engines on a routing dataset (JSON Lines, gzip or plain)")
    evaluate.epilog, evaluate.formatter_class = TAGS_HELP, argparse.RawDescriptionHelpFormatter
    evaluate.add_argument("dataset", type=Path, help="routing cases, JSON Lines (.jsonl or .jsonl.gz)")
    evaluate.add_argument(
        "--catalog", type=Path, metavar="AGENTS_YAML", help="score this catalog's agents instead of each case's own"
    )
    evaluate.add_argument(
        "--continuation",
        action=argparse.BooleanOptionalAction,
        help="apply the continuation policy after the engine (default: ROUTEYARD_ROUTER__CONTINUATION, on)",
    )
    evaluate.add_argument("--engine", choices=ENGINES, help="engine to score (default: ROUTEYARD_ROUTER__ENGINE)")
    evaluate.add_argument("--fallback", nargs="+", choices=ENGINES, metavar="NAME", help="its fallback engines")
    evaluate.add_argument(
        "--compare",
        metavar="ENGINE_OR_ENV_FILE",
        help="also score this engine (same fallbacks), or the settings of this env file, on the same cases",
    )
    evaluate.add_argument("--limit", type=_positive, metavar="N", help="only the first N cases")
    evaluate.add_argument("--sample", type=_positive, metavar="N", help="N cases drawn at random (after --limit)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed for --sample")
    evaluate.add_argument("--batch-size", type=_positive, default=64, metavar="N", help="cases per engine call")
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="output directory (default ./eval-<timestamp>)")
    evaluate.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bar on stderr (default: on a terminal)"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _eval(args: argparse.Namespace, settings: Settings) -> int:
    if args.continuation is not None:
        settings = settings.model_copy(
            update={"router": settings.router.model_copy(update={"continuation": args.continuation})}
        )
    runs = _eval_configs(args, settings)
    cases = eval_cases(args.dataset, args.catalog, limit=args.limit, sample=args.sample, seed=args.seed)
    warn_rules([n for _, s in runs for n in (s.router.engine, *s.router.fallback)], cases)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    reports = [
        (name, asyncio.run(_score_engine(s, cases, args.batch_size, _ProgressBar(name, show)))) for name, s in runs
    ]
    markdown = _eval_markdown(reports, args.dataset, len(cases))
    print(markdown)
    _write_eval(args.out or Path(f"eval-{time.strftime('%Y%m%d-%H%M%S')}"), reports, markdown, args.dataset)
    return 0


def _eval_configs(args: argparse.Namespace, settings: Settings) -> list[tuple[str, Settings]]:
    """(name, settings) of the engine to score and of the one to compare it with, if any."""
    engine = args.engine or settings.router.engine
    fallback = args.fallback if args.fallback is not None else settings.router.fallback
    first = _with_engine(settings, engine, fallback)
    runs = [(_chain_name(first), first)]
    if args.compare is None:
        return runs
    if Path(args.compare).is_file():
        try:
            second = Settings(_env_file=args.compare)
        except ValueError as exc:  # pydantic's ValidationError
            raise UsageError(str(exc)) from None
        name = Path(args.compare).name
    elif args.compare in ENGINES:
        second = _with_engine(settings, args.compare, fallback)
        name = _chain_name(second)
    else:
        raise UsageError(f"--compare {args.compare!r} is neither an engine ({', '.join(ENGINES)}) nor an env file")
    return [*runs, (name if name != runs[0][0] else f"{name} #2", second)]


def _with_engine(settings: Settings, engine: str, fallback: Sequence[str]) -> Settings:
    router = settings.router.model_copy(update={"engine": engine, "fallback": list(fallback)})
    return settings.model_copy(update={"router": router})


def _chain_name(settings: Settings) -> str:
    cfg = settings.router
    return "+".join([cfg.engine, *[n for n in cfg.fallback if n != cfg.engine]])


async def _score_engine(settings: Settings, cases: list[Case], batch_size: int, bar: _ProgressBar) -> Report:
    from routeyard.consumers.app import build_engine
    from routeyard.router.engines.scoring import score
    from routeyard.router.evaluation.evaluate import run_engine

    cfg = settings.router
    continuation = cfg.continuation_override if cfg.continuation else None
    async with build_engine(settings) as engine:
        outcomes = await run_engine(engine, cases, batch_size=batch_size, progress=bar, continuation=continuation)
    return score(cases, outcomes)


def _eval_markdown(reports: list[tuple[str, Report]], dataset: Path, n: int) -> str:
    from routeyard.router.engines.scoring import compare_markdown, report_markdown

    parts = [f"# routeyard eval: {dataset.name} ({n} cases)"]
    if len(reports) == 2:
        (first, a), (second, b) = reports
        parts.append(compare_markdown(a, b, (first, second)))
    parts += [report_markdown(report, name) for name, report in reports]
    return "\n\n".join(parts)


def _write_eval(out: Path, reports: list[tuple[str, Report]], markdown: str, dataset: Path) -> None:
    from routeyard.consumers.tools.plots import PlotsUnavailable, write_plots
    from routeyard.router.engines.scoring import report_json

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.md"]
    written[0].write_bytes(report_json(reports, dataset=str(dataset)))
    written[1].write_text(markdown + "\n", encoding="utf-8")
    try:
        written += write_plots(reports, out)
    except PlotsUnavailable as exc:
        print(f"routeyard: {exc}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)


class _ProgressBar:
    """``label [#####.....] done/total rate/s`` on stderr, redrawn at most 10 times a second."""

    def __init__(self, label: str, enabled: bool, stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.enabled, self.width = label, enabled, width
        self.stream = stream or sys.stderr
        self._start = self._drawn = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (0 < done < total and now - self._drawn < 0.1):
            return
        self._drawn = now
        filled = self.width * done // total if total else self.width
        rate = done / (now - self._start) if now > self._start else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {rate:,.0f}/s")
        self.stream.write("\n" if done >= total else "")
        self.stream.flush()


# -- routeyard tune -----------------------------------------------------------------------------


def _tune_parser(commands: Any, command: Command) -> None:
    tune = command(
        commands,
        "tune",
        _tune,
        "fit the semantic engine's thresholds and weights on a labelled routing dataset; "
        "write them as an env file that workers, eval --compare and replay read",
    )
    tune.set_defaults(uses=("semantic",))
    tune.add_argument("dataset", type=Path, help="labelled routing cases, JSON Lines (.jsonl or .jsonl.gz)")
    tune.add_argument("--limit", type=_positive, default=2000, metavar="N", help="cases drawn at random (default 2000)")
    tune.add_argument("--all", action="store_true", help="use every case (slow on large files)")
    tune.add_argument(
        "--holdout",
        type=_fraction,
        default=0.3,
        metavar="F",
        help="share of the cases kept out of the search and scored after it (default 0.3; 0: none)",
    )
    tune.add_argument("--seed", type=int, default=0, help="seed for the sample and the held-out split")
    tune.add_argument("--out", type=Path, metavar="FILE", help="write the fitted settings here (env file)")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _tune(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.router.evaluation.tuning import tune

    base = settings.semantic
    print(f"routeyard tune: encoding {args.dataset.name} with {base.model} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    result = tune(args.dataset, base, None if args.all else args.limit, args.seed, holdout=args.holdout)
    changed = result.changed(base)
    lines = [f"ROUTEYARD_SEMANTIC__{name.upper()}={value}" for name, value in sorted(changed.items())]
    print(
        f"# routeyard tune: {args.dataset.name}, {len(result.trials)} settings tried, "
        f"{time.monotonic() - started:.0f} s\n"
    )
    print(result.table())
    print("\nfitted settings (those that changed):" if lines else "\nthe current settings are already the best found")
    print("\n".join(lines))
    if args.out:
        header = f"# fitted by routeyard tune on {args.dataset.name} (seed {args.seed})\n"
        args.out.write_text(header + "".join(line + "\n" for line in lines), encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


# -- routeyard replay ----------------------------------------------------------------------------


def _replay_parser(commands: Any, command: Command) -> None:
    replay = command(
        commands,
        "replay",
        _replay,
        "route recorded conversations (of --prefix) again with a candidate engine or catalog, without "
        "consumer groups or dispatching, and compare with the recorded decisions",
    )
    replay.add_argument(
        "--engine",
        choices=ENGINES,
        help="candidate engine (default: ROUTEYARD_ROUTER__ENGINE if set, else the engine of the recorded decisions)",
    )
    replay.add_argument("--fallback", nargs="+", choices=ENGINES, metavar="NAME", help="its fallback engines")
    replay.add_argument(
        "--catalog",
        type=Path,
        help="candidate agent catalog (default: ROUTEYARD_ROUTER__CATALOG, else ./agents.yaml, else the demo's "
        "if the recorded decisions were made with it)",
    )
    replay.add_argument("--since", type=timestamp, metavar="TS", help="records at or after this ISO time (naive: UTC)")
    replay.add_argument("--until", type=timestamp, metavar="TS", help="records before this ISO time (naive: UTC)")
    replay.add_argument("--skip", type=_count, default=0, metavar="N", help="skip the first N selected records")
    replay.add_argument("--limit", type=_count, metavar="N", help="replay at most N turns")
    replay.add_argument("--labels", type=Path, metavar="FILE", help='JSON Lines {"event_id", "expected_routes"}')
    replay.add_argument(
        "--dispatch-prefix", metavar="P", help="also republish the selected events to P's conversations topic"
    )
    replay.add_argument("--examples", type=_count, default=5, metavar="N", help="changed turns to show (default 5)")
    replay.add_argument("--out", type=Path, metavar="DIR", help="write replay.json, turns.jsonl and replay.md here")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.consumers.tools.replay import Selection, shadow_topics
    from routeyard.consumers.tools.replay_defaults import candidate_settings
    from routeyard.consumers.tools.replay_report import load_labels, replay_markdown, write_report

    labels = load_labels(args.labels) if args.labels else None
    selection = Selection(since=args.since, until=args.until, skip=args.skip, limit=args.limit)
    selection.check()
    if args.dispatch_prefix is not None:
        shadow_topics(settings.topic_prefix, args.dispatch_prefix)  # refuse before starting the engine
    candidate = candidate_settings(settings, fallback=args.fallback)
    catalog = load_catalog(candidate.router.catalog)
    report = asyncio.run(_run_replay(candidate, catalog, selection, labels, args.dispatch_prefix))
    markdown = replay_markdown(report, examples=args.examples)
    print(markdown)
    if args.out:
        written = write_report(report, markdown, args.out)
        print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


async def _run_replay(
    settings: Settings,
    catalog: Catalog,
    selection: Selection,
    labels: dict[str, list[str]] | None,
    dispatch_prefix: str | None,
) -> ReplayReport:
    from routeyard.consumers.app import build_engine
    from routeyard.consumers.tools.replay import replay

    async with build_engine(settings) as engine:
        return await replay(settings, engine, catalog, selection, labels=labels, dispatch_prefix=dispatch_prefix)


# -- routeyard explain ---------------------------------------------------------------------------


def _explain_parser(commands: Any, command: Command) -> None:
    explain = command(
        commands,
        "explain",
        _explain,
        "why a turn went where it went: its recorded decision (engine, model, catalog, raw output, "
        "scores, fallback reason, latency) and how it ended",
    )
    explain.set_defaults(uses=("kafka", "topic_prefix"))
    explain.add_argument("event_id", help="the event id that routeyard send printed")
    explain.add_argument(
        "--conversation", metavar="ID", help="the event's conversation id: read only its partition (faster)"
    )
    explain.add_argument("--json", action="store_true", help="print the records found as JSON")


def _explain(args: argparse.Namespace, settings: Settings) -> int:
    import msgspec
    from routeyard.consumers.tools.explain import explain_markdown, find_event

    found = asyncio.run(find_event(settings.kafka, settings.topics, args.event_id, args.conversation))
    if args.json:
        document = {
            "event": found.event,
            "decisions": found.decisions,
            "responses": found.responses,
            "dead_letters": found.dead_letters,
        }
        print(msgspec.json.format(msgspec.json.encode(document)).decode())
    else:
        print(explain_markdown(found))
    return 0 if found.found else 1


def _variants_parser(commands: Any, command: Command) -> None:
    variants = command(
        commands,
        "variants",
        _variants,
        "compare an agent's variants: ok/error/timeout rates, reply latency, shadow agreement",
    )
    variants.set_defaults(uses=("kafka", "topic_prefix"))
    variants.add_argument("action", choices=["report"], help="report: read the topics and print per variant")
    variants.add_argument("agent", help="the catalog agent whose variants to compare")
    variants.add_argument(
        "--since",
        metavar="TIME",
        type=_since,
        help="only decisions at or after this ISO 8601 time (UTC if no zone); shadow replies agree with "
        "the served one when their normalised texts are equal or their token Jaccard similarity is >= 0.6",
    )


def _since(text: str) -> Any:
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _variants(args: argparse.Namespace, settings: Settings) -> int:
    from routeyard.consumers.tools.variants import read_topics, report, report_text

    decisions, responses, shadows = asyncio.run(read_topics(settings.kafka, settings.topics))
    rows = report(args.agent, decisions, responses, shadows, args.since)
    print(report_text(args.agent, rows))
    return 0 if rows else 1

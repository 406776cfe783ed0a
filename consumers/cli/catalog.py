"""``routeyard catalog check FILE [--agents MODULE:OBJECT ...]`` and ``routeyard catalog publish FILE``.

check: validate the catalog and list its agents; with ``--agents``, also cross-check each
@agent's name, description and topic against the catalog, one line per disagreement (exit 1).
publish: validate exactly as check does (a bad catalog: its problems, exit 2, nothing published),
then publish it to ``<prefix>catalog`` as the next version, which every router worker reading
``ROUTEYARD_ROUTER__CATALOG=topic:`` takes between two batches.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from routeyard.consumers.agents.agent import Agent
from routeyard.consumers.cli import flags
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import Catalog, CatalogError, catalog_from_text, load_catalog
from routeyard.schemas import Topics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["check", "publish"],
        help="check: load the catalog and list its agents; publish: validate it and publish it as the next version",
    )
    parser.add_argument("file", type=Path, help="the catalog (YAML or JSON)")
    parser.add_argument(
        "--agents",
        nargs="+",
        metavar="MODULE:OBJECT",
        help="with check: @agent objects whose names, descriptions and topics must agree with the catalog",
    )
    parser.add_argument("--app-dir", type=Path, metavar="DIR", help="import the --agents modules from DIR")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "publish":
        return _publish(args.file, settings)
    catalog = load_catalog(args.file)
    _describe(args.file, catalog, settings.topics)
    if not args.agents:
        return 0
    from routeyard.consumers.cli.targets import load_agents

    problems = disagreements(catalog, load_agents(args.agents, args.app_dir), settings.topics)
    for line in problems:
        print(f"{args.file}: {line}")
    return 1 if problems else 0


def _describe(path: Path, catalog: Catalog, topics: Topics) -> None:
    default = catalog.default_agent
    print(
        f"{path}: {flags.plural(len(catalog.agents), 'agent')}, version {catalog.version}, "
        f"default agent: {default.name if default else 'none'}"
    )
    for spec in catalog.agents:
        topic = spec.topic or topics.agent(spec.name)
        url = f"  url {spec.url}" if spec.url else ""
        print(f"  {spec.name:<24} timeout {spec.timeout_s:g}s  topic {topic}{url}")


def disagreements(catalog: Catalog, agents: Sequence[Agent], topics: Topics) -> list[str]:
    """One line per @agent that the catalog does not describe the same way."""
    lines: list[str] = []
    for agent in agents:
        spec = catalog.get(agent.name)
        if spec is None:
            lines.append(f"@agent {agent.name!r} is not in the catalog")
            continue
        if agent.description.strip() != spec.description:
            lines.append(
                f"{agent.name}: description differs: @agent says {agent.description.strip()!r}, "
                f"the catalog {spec.description!r}"
            )
        ours, theirs = agent.topic or topics.agent(agent.name), spec.topic or topics.agent(spec.name)
        if ours != theirs:
            lines.append(f"{agent.name}: topic differs: @agent consumes {ours!r}, the catalog sends to {theirs!r}")
    return lines


def _publish(path: Path, settings: Settings) -> int:
    from routeyard.consumers.app import make_bus
    from routeyard.consumers.catalogs.published import catalog_topic, publish_catalog

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read agent catalog {path}: {exc.strerror}") from None
    catalog_from_text(text, source=str(path))  # refused before connecting to anything
    topic = catalog_topic(settings.topic_prefix)
    published = asyncio.run(publish_catalog(make_bus(settings), topic, text, source=str(path)))
    print(
        f"{path}: published version {published.version} to {topic} "
        f"({flags.plural(len(published.catalog.agents), 'agent')})"
    )
    return 0

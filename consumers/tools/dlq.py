"""``routeyard dlq list|show|replay``: look at dead letters and re-drive them once a fix is in.

    letters = await read_letters(settings.kafka, settings.topics)          # every dead letter
    picked = select(letters, stage="decode", since=yesterday)
    result = await redrive(settings, redis, picked)                         # each one at most once

A dead letter is named by its own place on ``<prefix>deadletter``: ``PARTITION:OFFSET`` (its id).
The topic is read without a consumer group (every partition from the beginning until caught up,
as ``routeyard.consumers.tools.replay`` reads), so nothing moves for a live consumer.

Re-driving publishes a letter's original bytes and key, unchanged, to its source topic (only a
topic of this prefix). Each letter is re-driven once: its id is added to the Redis set
``{ns}:dlq:redriven`` *before* it is published (and removed again if the publish fails), so a
second run - or two operators at once - never publishes it twice. A re-driven record that is
still bad is dead-lettered again, as a new letter with a new reason. A truncated letter (its
original was larger than a dead letter keeps) is refused: it cannot be re-driven byte for byte.

Errors::

    DlqError    bad options (an unknown id, a malformed range, a letter from another prefix's topic).
                Not retriable: fix the options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from routeyard.consumers.errors import DlqError as DlqError
from routeyard.consumers.kafka.bus import Outgoing, make_producer, publish
from routeyard.consumers.settings import KafkaSettings, Settings
from routeyard.consumers.stores.connection import Redis
from routeyard.consumers.stores.redriven import RedrivenSet
from routeyard.consumers.tools.replay import read_topics
from routeyard.schemas import DeadLetter, DecodeError, Topics, dead_letter_decoder

REDRIVE_HEADER = "routeyard-redriven-from"


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter and where it lies on the dead-letter topic."""

    partition: int
    offset: int
    letter: DeadLetter

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def event_id(self) -> str | None:
        """The original's ``event_id``, when the original is a JSON object that has one."""
        payload = _json(self.letter.original)
        value = payload.get("event_id") if isinstance(payload, dict) else None
        return value if isinstance(value, str) else None

    @property
    def source(self) -> str:
        return f"{self.letter.source_topic}[{self.letter.source_partition}]@{self.letter.source_offset}"


@dataclass(frozen=True, slots=True)
class Redrive:
    published: list[Letter]
    already: list[Letter]
    """Re-driven by an earlier run: not published again."""
    refused: list[Letter] = field(default_factory=list)
    """Truncated letters: only a prefix of the original is kept, so it cannot be re-driven."""


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # includes UnicodeDecodeError; JSON nested too deep
        return None


async def read_letters(kafka: KafkaSettings, topics: Topics, *, settle_s: float = 0.5) -> list[Letter]:
    """Every decodable dead letter, by partition then offset."""
    found = await read_topics(kafka, [topics.dead_letters], settle_s=settle_s)
    letters: list[Letter] = []
    for record in found[topics.dead_letters]:
        try:
            letters.append(Letter(record.partition, record.offset, dead_letter_decoder.decode(record.value or b"")))
        except DecodeError:
            continue  # not a routeyard dead letter: nothing to show or re-drive
    return sorted(letters, key=lambda x: (x.partition, x.offset))


def select(
    letters: Iterable[Letter],
    *,
    stage: str | None = None,
    since: datetime | None = None,
    ids: Sequence[str] = (),
    partition: int | None = None,
    offsets: tuple[int, int] | None = None,
    limit: int | None = None,
) -> list[Letter]:
    """Letters matching every given filter; ``offsets`` is an inclusive range (with ``partition``)."""
    wanted = {parse_id(i) for i in ids}
    low = since if since is None or since.tzinfo else since.replace(tzinfo=UTC)
    picked = [
        x
        for x in letters
        if (stage is None or x.letter.stage == stage)
        and (low is None or _aware(x.letter.failed_at) >= low)
        and (not wanted or (x.partition, x.offset) in wanted)
        and (partition is None or x.partition == partition)
        and (offsets is None or offsets[0] <= x.offset <= offsets[1])
    ]
    return picked[:limit] if limit is not None else picked


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_id(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise DlqError(f"a dead letter id is PARTITION:OFFSET, got {text!r}")
    return int(partition), int(offset)


def parse_range(text: str) -> tuple[int, int]:
    """``7`` or ``3-9`` (inclusive)."""
    first, sep, last = text.partition("-")
    if not first.isdigit() or (sep and not last.isdigit()):
        raise DlqError(f"an offset range is N or N-M, got {text!r}")
    low, high = int(first), int(last) if sep else int(first)
    if high < low:
        raise DlqError(f"offset range {text!r} is inverted")
    return low, high


def find(letters: Sequence[Letter], ref: str) -> Letter:
    """By id (``P:O``), by offset alone (when one partition has it) or by the original's event id."""
    if ":" in ref:
        matches = [x for x in letters if (x.partition, x.offset) == parse_id(ref)]
    elif ref.isdigit():
        matches = [x for x in letters if x.offset == int(ref)]
    else:
        matches = [x for x in letters if x.event_id == ref]
    if not matches:
        raise DlqError(f"no dead letter {ref!r}")
    if len(matches) > 1:
        raise DlqError(f"{ref!r} names {len(matches)} dead letters: use one of {', '.join(x.id for x in matches)}")
    return matches[0]


async def redrive(settings: Settings, redis: Redis, letters: Sequence[Letter], *, dry_run: bool = False) -> Redrive:
    """Publish each letter's original to its source topic, at most once per letter (see the docstring).
    Truncated letters are refused (``Redrive.refused``), never published."""
    refused = [x for x in letters if x.letter.truncated]
    letters = [x for x in letters if not x.letter.truncated]
    foreign = sorted(
        {x.letter.source_topic for x in letters if not x.letter.source_topic.startswith(settings.topic_prefix)}
    )
    if foreign:
        raise DlqError(f"dead letters from topics outside prefix {settings.topic_prefix!r}: {', '.join(foreign)}")
    redriven = RedrivenSet(redis, settings.namespace)
    if dry_run:
        done = await redriven.seen([x.id for x in letters])
        return Redrive(
            published=[x for x, seen in zip(letters, done, strict=True) if not seen],
            already=[x for x, seen in zip(letters, done, strict=True) if seen],
            refused=refused,
        )
    claimed: list[Letter] = []
    already: list[Letter] = []
    for letter in letters:
        (claimed if await redriven.claim(letter.id) else already).append(letter)
    if claimed:
        await _publish(settings, claimed, redriven)
    return Redrive(published=claimed, already=already, refused=refused)


async def _publish(settings: Settings, letters: Sequence[Letter], redriven: RedrivenSet) -> None:
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        await publish(producer, [_outgoing(x) for x in letters])
    except BaseException:
        await redriven.release([x.id for x in letters])  # not published: may be re-driven again
        raise
    finally:
        await producer.stop()


def _outgoing(x: Letter) -> Outgoing:
    key = x.letter.key.decode(errors="replace") if x.letter.key is not None else None
    return Outgoing(
        topic=x.letter.source_topic, value=x.letter.original, key=key, headers=[(REDRIVE_HEADER, x.id.encode())]
    )


# -- presentation ---------------------------------------------------------------------------------


SUMMARY_HEADER = f"{'ID':<10} {'FAILED AT':<20}  {'STAGE':<10} {'SOURCE':<40} {'EVENT ID':<24} REASON"


def summary_line(x: Letter) -> str:
    reason = " ".join(x.letter.error.split())
    reason = reason if len(reason) <= 80 else reason[:77] + "..."
    failed = _aware(x.letter.failed_at).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{x.id:<10} {failed}  {x.letter.stage:<10} {x.source:<40} {x.event_id or '-':<24} {reason}"


def describe(x: Letter) -> str:
    letter = x.letter
    payload = _json(letter.original)
    if payload is not None:
        shown = json.dumps(payload, indent=2, ensure_ascii=False)
    else:
        shown = letter.original.decode("utf-8", errors="backslashreplace")
    lines = [
        f"dead letter {x.id}",
        f"failed at:  {_aware(letter.failed_at).isoformat()}",
        f"stage:      {letter.stage}",
        f"reason:     {letter.error}" + (f" ({letter.error_type})" if letter.error_type else ""),
        f"source:     {x.source}",
        f"key:        {letter.key.decode(errors='backslashreplace') if letter.key is not None else '-'}",
        f"event id:   {x.event_id or '-'}",
        f"original:   {_size(letter)}",
        f"original ({len(letter.original)} bytes{', JSON' if payload is not None else ', not JSON'}):",
        shown,
    ]
    return "\n".join(lines)


def _size(letter: DeadLetter) -> str:
    if not letter.original_size:  # a letter written before sizes were recorded
        return f"{len(letter.original)} bytes"
    kept = f", truncated: first {len(letter.original)} kept" if letter.truncated else ""
    return f"{letter.original_size} bytes{kept}, sha256 {letter.original_sha256}"


def refusal(x: Letter) -> str:
    """Why a truncated letter is not re-driven, in one line."""
    return (
        f"refused: {x.id} is truncated (original {x.letter.original_size} bytes, "
        f"{len(x.letter.original)} kept): it cannot be re-driven byte for byte"
    )


# -- the command ----------------------------------------------------------------------------------

Command = Callable[[Any, str, Callable[..., int], str], argparse.ArgumentParser]


def add_commands(commands: Any, command: Command) -> None:
    """Register ``dlq list|show|replay`` with the CLI's sub-parsers (``command`` makes one)."""
    from routeyard.consumers.cli.flags import global_flags

    parser = command(commands, "dlq", _dlq, "list, show and re-drive dead letters")
    parser.set_defaults(uses=("kafka", "redis", "topic_prefix"))
    actions = parser.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")
    flags = [global_flags()]
    listing = actions.add_parser("list", help="dead letters: time, stage, reason, source, event id", parents=flags)
    _filters(listing)
    show = actions.add_parser("show", help="one dead letter in full, with its original payload", parents=flags)
    show.add_argument("ref", metavar="ID|OFFSET|EVENT_ID", help="PARTITION:OFFSET, an offset, or the event id")
    again = actions.add_parser(
        "replay", help="re-drive dead letters to their source topic, each at most once", parents=flags
    )
    _filters(again)
    again.add_argument("--id", dest="ids", action="append", default=[], metavar="P:O", help="this letter (repeatable)")
    again.add_argument("--partition", type=int, help="only this partition of the dead-letter topic")
    again.add_argument("--offsets", type=parse_range, metavar="N[-M]", help="only these offsets (with --partition)")
    again.add_argument("--all", action="store_true", help="every dead letter (otherwise a filter is required)")
    again.add_argument("--dry-run", action="store_true", help="print what would be re-driven, publish nothing")


def _filters(parser: argparse.ArgumentParser) -> None:
    from routeyard.consumers.cli.flags import timestamp

    parser.add_argument("--stage", help="only letters of this stage (decode, route, correlate, agent, ...)")
    parser.add_argument("--since", type=timestamp, metavar="TS", help="failed at or after this ISO time (naive: UTC)")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N letters")


def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))  # DlqError: exit 2 (routeyard.consumers.cli.exits)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    letters = await read_letters(settings.kafka, settings.topics)
    if args.dlq_action == "show":
        print(describe(find(letters, args.ref)))
        return 0
    if args.dlq_action == "list":
        print(SUMMARY_HEADER)
        for x in select(letters, stage=args.stage, since=args.since, limit=args.limit):
            print(summary_line(x))
        return 0
    return await _replay(args, settings, letters)


async def _replay(args: argparse.Namespace, settings: Settings, letters: list[Letter]) -> int:
    from routeyard.consumers.stores.connection import redis_client

    filtered = any([args.stage, args.since, args.ids, args.partition is not None, args.offsets])
    if not filtered and not args.all:
        raise DlqError("choose dead letters (--id, --partition/--offsets, --stage, --since) or --all")
    if args.offsets and args.partition is None:
        raise DlqError("--offsets needs --partition")
    picked = select(
        letters,
        stage=args.stage,
        since=args.since,
        ids=args.ids,
        partition=args.partition,
        offsets=args.offsets,
        limit=args.limit,
    )
    async with redis_client(settings) as redis:
        result = await redrive(settings, redis, picked, dry_run=args.dry_run)
    verb = "would re-drive" if args.dry_run else "re-driven"
    for x in result.published:
        print(f"{verb}: {x.id} -> {x.letter.source_topic} ({x.event_id or 'no event id'})")
    for x in result.already:
        print(f"already re-driven: {x.id}")
    for x in result.refused:
        print(refusal(x))
    print(
        f"{len(result.published)} {verb}, {len(result.already)} already re-driven, "
        f"{len(result.refused)} refused (truncated), {len(picked)} selected"
    )
    return 1 if result.refused else 0

"""``routeyard chat CONVERSATION``: an interactive conversation with a running pipeline over Kafka.

Each line typed (or piped) on stdin is one turn, sent asking for a stream. The turn prints its
decision line, then the agents' replies as they are written, each line labelled by its agent
(agents that do not stream print their whole reply when the response comes), then a status line::

    you> weather in Paris, and tell me a story
      decision: [WeatherAgent, StoryAgent] mode=parallel engine=semantic 3.12 ms
        StoryAgent      < Once upon a time ...
        WeatherAgent    < Paris today: 21°C
      response: complete in 0.84 s

Empty lines are skipped; ``/quit`` or end of input ends the chat (exit 0). A turn the router
refuses or nobody answers in ``--timeout`` seconds prints one line and the chat goes on. Agent
text is shown without terminal control sequences (an agent cannot drive the terminal), and a line
longer than ``MAX_LINE_BYTES`` is refused with one line.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from routeyard.consumers.errors import TurnRejected, TurnTimeout
from routeyard.consumers.settings import Settings
from routeyard.schemas import AgentChunk, ConversationResponse, RoutingDecision

if TYPE_CHECKING:
    from routeyard.consumers.client import RouteyardClient

__all__ = ["add_commands", "chat"]

MAX_LINE_BYTES = 64 * 1024
QUIT = "/quit"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def add_commands(commands: Any, command: Any) -> None:
    """Register ``chat`` with the CLI's sub-parsers (``command`` makes one)."""
    parser = command(
        commands, "chat", _run, "talk to a running pipeline: each stdin line is a turn; replies stream as written"
    )
    parser.set_defaults(uses=("kafka", "topic_prefix", "router"))
    parser.add_argument("conversation", help="conversation id (the chat's turns share it, so context carries over)")
    parser.add_argument("--tenant", help="tenant of the turns (checked against ROUTEYARD_ROUTER__TENANTS)")
    parser.add_argument(
        "--mode", dest="chat_mode", choices=["parallel", "sequential"], help="multi-intent mode for every turn"
    )
    parser.add_argument("--agents", nargs="+", metavar="NAME", help="restrict every turn to these agents")
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="seconds to wait for each response (default 60)"
    )


def _run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(chat(args, settings, sys.stdin, sys.stdout))


async def chat(args: argparse.Namespace, settings: Settings, stdin: TextIO, out: TextIO) -> int:
    from routeyard.consumers.client import RouteyardClient  # the Kafka client: only when chatting

    lines = _Lines(stdin, out if stdin.isatty() else None)
    async with RouteyardClient(
        settings.kafka,
        prefix=settings.topic_prefix,
        tenant=args.tenant,
        tenant_topic=settings.router.tenant_response_topics and bool(args.tenant),
        watch_decisions=True,
    ) as client:
        while (line := await lines.next()) is not None and line != QUIT:
            if line:
                await _turn(client, args, line, out)
    return 0


class _Lines:
    """stdin's lines, read by a daemon thread (a blocked read never holds up the exit), stripped;
    a line over MAX_LINE_BYTES comes as "" after one line saying so on stderr."""

    def __init__(self, stdin: TextIO, prompt: TextIO | None) -> None:
        self._stdin, self._prompt = stdin, prompt
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._ask = threading.Event()
        threading.Thread(target=self._read, args=(loop,), name="routeyard-chat-stdin", daemon=True).start()

    async def next(self) -> str | None:
        if self._prompt is not None:
            self._prompt.write("you> ")
            self._prompt.flush()
        self._ask.set()
        return await self._queue.get()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            self._ask.wait()
            self._ask.clear()
            line = self._line()
            loop.call_soon_threadsafe(self._queue.put_nowait, line)
            if line is None:
                return

    def _line(self) -> str | None:
        raw = self._stdin.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return None
        if len(raw.encode()) > MAX_LINE_BYTES and not raw.endswith("\n"):
            while (rest := self._stdin.readline(MAX_LINE_BYTES)) and not rest.endswith("\n"):
                pass
            print(f"  refused: a line longer than {MAX_LINE_BYTES} bytes", file=sys.stderr, flush=True)
            return ""
        return raw.strip()


async def _turn(client: RouteyardClient, args: argparse.Namespace, text: str, out: TextIO) -> None:
    view, started = _View(out), time.monotonic()
    try:
        stream = client.stream(args.conversation, text, timeout=args.timeout, mode=args.chat_mode, agents=args.agents)
        async for item in stream:
            view.show(item, time.monotonic() - started)
    except TurnRejected as exc:
        view.end_line()
        print(f"  rejected: {_clean(exc.reason)}", file=out, flush=True)
    except TurnTimeout as exc:
        view.end_line()
        print(f"  {exc}", file=out, flush=True)


class _View:
    """Prints one turn's items as they come: chunks continue their agent's line."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._agent: str | None = None
        self._streamed: set[str] = set()

    def show(self, item: RoutingDecision | AgentChunk | ConversationResponse, elapsed: float) -> None:
        if isinstance(item, RoutingDecision):
            from routeyard.consumers.cli.transcript import decision_line

            self._line(decision_line(item))
        elif isinstance(item, AgentChunk):
            self._chunk(item)
        else:
            self._response(item, elapsed)

    def _chunk(self, chunk: AgentChunk) -> None:
        if chunk.agent != self._agent:
            self.end_line()
            self._out.write(f"    {_clean(chunk.agent):<16}< ")
            self._agent = chunk.agent
        self._streamed.add(chunk.task_id)
        self._out.write(_clean(chunk.text).replace("\n", "\n" + " " * 22))
        self._out.flush()

    def _response(self, response: ConversationResponse, elapsed: float) -> None:
        for reply in response.replies:
            if reply.status != "ok":
                self._line(f"    {_clean(reply.agent):<16}< error: {_clean(reply.error or '')}")
            elif reply.task_id not in self._streamed:
                self._line(f"    {_clean(reply.agent):<16}< {_clean(reply.content)}")
        if response.timed_out:
            self._line(f"    timed out: {', '.join(map(_clean, response.timed_out))}")
        why = f" ({_clean(response.reason)})" if response.reason else ""
        self._line(f"  response: {response.status}{why} in {elapsed:.2f} s")

    def _line(self, text: str) -> None:
        self.end_line()
        print(text, file=self._out, flush=True)

    def end_line(self) -> None:
        if self._agent is not None:
            print(file=self._out, flush=True)
            self._agent = None


def _clean(text: str) -> str:
    """Text without terminal control characters (escape sequences, carriage returns); newlines kept."""
    return _CONTROL.sub("", text.replace("\r\n", "\n"))

"""``routeyard send``: publish one turn; print its event id first (``routeyard explain`` works even
if nothing comes), and with ``--wait`` its decision and replies as a transcript (``--json``: the
raw response, for scripts; the event id then goes to stderr so stdout is one JSON document).

Rejected or unanswered: one line and exit 1 (``TurnRejected``, ``TurnTimeout``: see exits.py).
"""

from __future__ import annotations

import argparse
import sys

import msgspec
from routeyard.consumers.cli.transcript import describe, wait_decision
from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.errors import TurnRejected
from routeyard.consumers.settings import Settings
from routeyard.schemas import ConversationResponse

__all__ = ["send"]


async def send(args: argparse.Namespace, settings: Settings) -> int:
    as_json = args.wait and args.json
    async with RouteyardClient(
        settings.kafka,
        prefix=settings.topic_prefix,
        tenant=args.tenant,
        tenant_topic=settings.router.tenant_response_topics and bool(args.tenant),
        watch_decisions=args.wait and not as_json,
    ) as client:
        event = client.event(args.conversation, args.text, mode=args.send_mode, agents=args.agents)
        print(event.event_id, file=sys.stderr if as_json else sys.stdout, flush=True)
        if not args.wait:
            await client.publish([event])
            return 0
        (response,) = await client.ask_many([event], timeout=args.timeout)  # TurnTimeout: exit 1
        if response.status == "rejected":
            raise TurnRejected(event.event_id, response.reason or "")
        if as_json:
            print(_json(response))
        else:
            print(describe(await wait_decision(client, response), response), end="")
        return 0


def _json(response: ConversationResponse) -> str:
    return msgspec.json.format(msgspec.json.encode(response)).decode()

"""FaststreamAgent: a routeyard agent written with FastStream instead of ``@agent``.

Any framework that can consume a Kafka topic and publish to another can be a routeyard agent.
This one uses FastStream's ``KafkaBroker``: a subscriber on ``<prefix>agent.FaststreamAgent``
in the consumer group of the same name, whose handler receives the ``AgentTask`` already
decoded and validated (routeyard's msgspec Structs, through FastStream's msgspec serializer)
and publishes an ``AgentReply`` to the topic the task names.

Compared with ``@agent`` you give up what routeyard's runtime adds (dedup of redelivered tasks
in Redis, deadline enforcement, error replies for exceptions, bounded concurrency) and keep
full control of the consumer.

Run it::

    python examples/faststream_agent.py --bootstrap 127.0.0.1:9092 --prefix routeyard.
"""

import argparse
import asyncio

from fast_depends.msgspec import MsgSpecSerializer
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaBroker as Broker
from faststream.middlewares import AckPolicy
from routeyard.schemas import AgentReply, AgentTask, Topics

NAME = "FaststreamAgent"


async def handle(task: AgentTask, broker: Broker) -> None:
    """One task in, one reply out. ``task`` is decoded from JSON by its type annotation;
    ``broker`` is injected from FastStream's context (the broker that received the task)."""
    last = next((m.content for m in reversed(task.messages) if m.role == "user"), "")
    reply = AgentReply(
        task_id=task.task_id,
        event_id=task.event_id,
        conversation_id=task.conversation_id,
        tenant=task.tenant,
        agent=task.agent,
        token=task.token,  # a reply without its task's token is refused
        content=f"faststream: {last}",
    )
    # The reply topic comes with each task, so publish explicitly rather than through a
    # @broker.publisher (which has one fixed topic). Key by conversation to keep its order.
    await broker.publish(reply, topic=task.reply_topic, key=task.conversation_id.encode())


def build_broker(bootstrap: str, prefix: str = "routeyard.", name: str = NAME) -> KafkaBroker:
    """A broker with the agent's subscriber registered; nothing connects until it starts."""
    broker = KafkaBroker(
        bootstrap,
        serializer=MsgSpecSerializer(),  # decode/encode routeyard's msgspec Structs (not pydantic)
        acks="all",
        enable_idempotence=False,  # tansu (the embedded dev broker) rejects idempotent producers
    )
    topic = Topics(prefix=prefix).agent(name)
    broker.subscriber(
        topic,
        group_id=topic,  # every copy of this process shares the partitions
        auto_offset_reset="earliest",  # FastStream's default is "latest": a new group would miss
        # tasks published before it joined (and tansu's "latest" is
        # unreliable anyway)
        fetch_max_wait_ms=25,  # tansu does not wake a waiting fetch on new data
        # ACK: commit the offset after the handler returns, i.e. after the reply was
        # acknowledged (FastStream's default, ACK_FIRST, auto-commits before processing). If the
        # handler raises, ACK still commits, so a poison task cannot wedge the partition and the
        # correlator reports this agent as timed out; NACK_ON_ERROR would redeliver instead.
        ack_policy=AckPolicy.ACK,
        title=name,
        description="Echoes the latest user message, prefixed with 'faststream:'",
    )(handle)
    return broker


async def run(bootstrap: str, prefix: str, stop: asyncio.Event, name: str = NAME) -> None:
    """Serve until ``stop`` is set (for tests and for embedding in another asyncio program)."""
    async with build_broker(bootstrap, prefix, name) as broker:  # connect ... close
        await broker.start()  # start the subscribers: join the group, consume
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--prefix", default="routeyard.", help="routeyard's topic prefix")
    parser.add_argument("--name", default=NAME, help="the agent's name in the catalog")
    args = parser.parse_args(argv)
    # FastStream's application: logging, lifespan hooks, and a clean stop on Ctrl-C / SIGTERM.
    app = FastStream(build_broker(args.bootstrap, args.prefix, args.name))
    asyncio.run(app.run())


if __name__ == "__main__":
    main()

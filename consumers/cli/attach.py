"""``routeyard agent``: run agents against a running pipeline (``routeyard dev``'s or a deployment's).

Python agents need the broker and Redis (each task's id is remembered there once answered). Redis
is checked before anything starts, so a missing ``--redis`` is one line naming both ways to set
it rather than a traceback per agent; a failure inside the agents' TaskGroup is raised as itself
(not as an ExceptionGroup) so the command's exit map can explain it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from routeyard.consumers.agents.agent import Agent
from routeyard.consumers.errors import CannotReach
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.connection import failure, redis_client

__all__ = ["check_redis", "one_failure", "run_agents", "shown_url"]


def run_agents(agents: Sequence[Agent], settings: Settings) -> None:
    """Check Redis, then run every agent until SIGINT/SIGTERM."""
    from routeyard.consumers.app import run_agent, run_until_signal

    asyncio.run(check_redis(settings))

    async def run_all(stop: asyncio.Event) -> None:
        with one_failure():
            async with asyncio.TaskGroup() as group:
                for agent in agents:
                    group.create_task(run_agent(agent, settings, stop))

    run_until_signal(run_all, settings, "agent")


async def check_redis(settings: Settings, command: str = "agent") -> None:
    """Raises ``CannotReach`` if Redis does not answer a PING (refused, unknown host, wrong password)."""
    try:
        async with redis_client(settings):
            return
    except Exception as exc:
        if failure(exc) is None and not isinstance(exc, OSError):
            raise
        url = shown_url(settings.redis.url.get_secret_value())
        what = f"Redis at {url} refused the credentials" if failure(exc) == "denied" else f"cannot reach Redis at {url}"
        raise CannotReach(command, f"{what} (set --redis or ROUTEYARD_REDIS__URL; routeyard dev prints both)") from None


def shown_url(url: str) -> str:
    """``url`` with its password masked, fit for a message."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


@contextlib.contextmanager
def one_failure() -> Iterator[None]:
    """A TaskGroup's ExceptionGroup of one failure (or of several of one kind) re-raised as that
    failure; anything else as it is."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if leaves and all(type(leaf) is type(leaves[0]) for leaf in leaves):
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc

"""``routeyard send`` to a prefix whose topics do not exist: one line saying so, not a bare
TimeoutError from deep inside the client (seen in the first-hour walkthrough)."""

from __future__ import annotations

import pytest
from routeyard.consumers.cli.exits import exit_status
from routeyard.consumers.client import _partitions
from routeyard.consumers.errors import CannotReach
from routeyard.consumers.kafka.memory import MemoryBus


async def test_a_topic_that_never_appears_is_one_line_naming_it() -> None:
    reader = MemoryBus().consumer(None)
    await reader.start()
    with pytest.raises(CannotReach) as caught:
        await _partitions(reader, "nobody.responses", timeout=0.2)
    status = exit_status(caught.value)
    assert status is not None and status.code == 1
    assert status.message == (
        "routeyard send: no topic 'nobody.responses' on the broker after 0.2 s: is routeyard running there "
        "with this topic prefix? (`routeyard topics create` creates its topics)"
    )

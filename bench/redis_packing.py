"""Packing one batch-sized script call into RESP: redis-py's asyncio connection as installed,
against a connection that hands the arguments to hiredis as they are (the ``_HiredisPacking``
mixin the composition root used before issue 14), against redis-py's pure-Python packer.

    python bench/redis_packing.py [--writes 300] [--value-bytes 600] [--repeat 200]

The call is ``CorrelationStore.write_many``'s compare-and-set: EVALSHA, 1 + W keys, then four
arguments per write (expected bytes, new bytes, ttl, wake time), so 5 W + 3 arguments in all.
Nothing is sent: only ``pack_command`` is timed (best of 5 rounds of ``--repeat`` calls), and each
packer's output is checked to be byte-identical to redis-py's. Prints microseconds per call and
the ratio to redis-py's own.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.asyncio.connection import Connection
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE


class _HandMade(Connection):
    """The removed ``_HiredisPacking``: every argument passed to hiredis untouched."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


def script_call(writes: int, value_bytes: int) -> tuple[Any, ...]:
    keys = ["ns:wake", *(f"ns:_:corr:{i:032x}" for i in range(writes))]
    args: list[Any] = []
    for i in range(writes):
        args += [os.urandom(value_bytes), os.urandom(value_bytes), 86400, f"{1.7e9 + i:.3f}"]
    return ("EVALSHA", "0" * 40, len(keys), *keys, *args)


def best_us(pack: Callable[..., list[bytes]], call: tuple[Any, ...], repeat: int) -> float:
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            pack(*call)
        rounds.append((time.perf_counter() - started) / repeat)
    return min(rounds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--value-bytes", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    call = script_call(args.writes, args.value_bytes)
    installed, hand_made = Connection(), _HandMade()
    packers = {
        "redis-py asyncio, as installed": installed.pack_command,
        "hand-made hiredis mixin": hand_made.pack_command,
        "redis-py pure Python": installed._pack_command_python,
    }
    reference = b"".join(installed.pack_command(*call))
    print(f"redis {redis.__version__}, hiredis available: {HIREDIS_AVAILABLE}, {len(call)} arguments per call")
    base = None
    for name, pack in packers.items():
        assert b"".join(pack(*call)) == reference, f"{name}: packs differently"
        us = best_us(pack, call, args.repeat)
        base = base or us
        print(f"  {name:<32} {us:8.1f} us/call   x{us / base:.2f}")


if __name__ == "__main__":
    main()

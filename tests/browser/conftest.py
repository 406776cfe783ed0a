"""The browser tests' fixtures: one headless Chromium per test, skipped where none is installed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.cdp import Chromium, find_chromium


@pytest.fixture
def browser() -> Iterator[Chromium]:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH (chromium, chromium-browser, google-chrome) or in $ROUTEYARD_CHROMIUM")
    with Chromium(binary) as chromium:
        yield chromium


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    return Path(os.environ.get("ROUTEYARD_SCREENSHOTS") or tmp_path)

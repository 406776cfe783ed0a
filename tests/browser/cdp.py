"""A small driver for headless Chromium over the DevTools protocol (a websocket, JSON messages).

    with Chromium(find_chromium()) as browser:
        browser.navigate("http://127.0.0.1:8000/")
        browser.wait_for("document.querySelectorAll('.turn').length > 0")
        browser.screenshot(path)

No selenium or playwright: the browser is started with ``--remote-debugging-port=0`` and writes the
port it chose to ``DevToolsActivePort`` in its profile folder; the driver opens one page target and
talks to it in a flat session (``Target.attachToTarget`` with ``flatten``).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container: the sandbox needs user namespaces
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1100,900",
    "--remote-debugging-port=0",
]


class CDPError(RuntimeError):
    """The browser answered a command with an error, or a page script threw."""


def find_chromium() -> str | None:
    """``$ROUTEYARD_CHROMIUM``, else the first Chromium or Chrome on PATH; None where there is none."""
    chosen = os.environ.get("ROUTEYARD_CHROMIUM")
    if chosen:
        return shutil.which(chosen)
    return next((path for name in NAMES if (path := shutil.which(name))), None)


class Chromium:
    """One headless browser with one page; a context manager that always ends the process."""

    def __init__(self, binary: str, *, start_timeout: float = 30.0) -> None:
        self.binary = binary
        self.start_timeout = start_timeout
        self._ids = itertools.count(1)
        self._profile = Path(tempfile.mkdtemp(prefix="routeyard-chromium-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: ClientConnection | None = None
        self._closing = contextlib.ExitStack()
        self._session = ""
        self.console: list[str] = []  # the page's console messages and uncaught exceptions

    def __enter__(self) -> Chromium:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        args = [self.binary, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        socket = connect(self._endpoint(), max_size=64 * 2**20, open_timeout=self.start_timeout)
        self._socket = self._closing.enter_context(socket)
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)
        self._session = attached["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")

    def _endpoint(self) -> str:
        active = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise CDPError(f"{self.binary} exited with status {self._process.returncode} at start")
            lines = active.read_text().split("\n") if active.exists() else []
            if len(lines) >= 2 and lines[1]:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise CDPError(f"{self.binary} did not open its DevTools port within {self.start_timeout:.0f}s")

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        """Send one command and wait for its answer (events that arrive meanwhile are noted)."""
        assert self._socket is not None, "the browser is not started"
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        self._socket.send(json.dumps(message))
        while True:
            answer = json.loads(self._socket.recv(timeout=60))
            if answer.get("id") == ident:
                if "error" in answer:
                    raise CDPError(f"{method}: {answer['error'].get('message')}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            self._note(answer)

    def _note(self, event: dict[str, Any]) -> None:
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled":
            texts = [str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])]
            self.console.append(f"{params.get('type')}: {' '.join(texts)}")
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"exception: {details.get('exception', {}).get('description', details.get('text'))}")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited, values as JSON)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = self.send("Runtime.evaluate", params)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def navigate(self, url: str, timeout: float = 20.0) -> None:
        """Open url and wait until its document has loaded."""
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CDPError(f"navigate to {url}: {answer['errorText']}")
        page = json.dumps(url.split("?")[0])
        self.wait_for(f"location.href.startsWith({page}) && document.readyState === 'complete'", timeout)

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll a JavaScript expression until it is truthy; its value, or CDPError with the console."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise CDPError(f"still false after {timeout:.0f}s: {expression}; console: {self.console}")

    def screenshot(self, path: Path) -> Path:
        """Write a PNG of the page as it looks now."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """End the browser (politely, then by force) and remove its profile; safe to call twice."""
        if self._socket is not None:
            with contextlib.suppress(Exception):  # it may close the socket before it answers
                self.send("Browser.close", session=False)
            self._closing.close()
            self._socket = None
        if self._process is not None:
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None
        shutil.rmtree(self._profile, ignore_errors=True)

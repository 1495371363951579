"""A real headless Chromium, driven over the Chrome DevTools Protocol (websocket-client).

``browser()`` starts Chromium with a fresh profile and everything that phones home switched
off; ``load(page, path)`` shows a file and waits until every plotly figure is drawn. The
:class:`Page` keeps the console errors and uncaught exceptions and every network request
since the last load, and gives ``evaluate(js)`` and a PNG screenshot. Used by the report
tests only.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         # software WebGL (SwiftShader) for plotly's 3D surfaces on a machine without a GPU
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--window-size=1200,900", "--remote-debugging-port=0"]


def chromium() -> str:
    """The Chromium executable, or a skip (a failure where LANDSCAPE_REQUIRE_BROWSER is set)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    reason = "no Chromium on PATH (apt-get install chromium; .ci/run installs it)"
    if os.environ.get("LANDSCAPE_REQUIRE_BROWSER"):
        pytest.fail(f"LANDSCAPE_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


@dataclass
class Page:
    ws: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _id: int = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = self._receive()
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def _receive(self) -> dict[str, Any]:
        msg = json.loads(self.ws.recv())
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description")))
                                        for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(p["exceptionDetails"].get("exception", {}).get(
                "description", p["exceptionDetails"].get("text")))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append(p["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            self.requests.append(p["request"]["url"])
        return msg

    def evaluate(self, js: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        res = self.send("Runtime.evaluate", expression=f"JSON.stringify({js})",
                        returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return json.loads(res["result"]["value"])

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])


@contextmanager
def browser(timeout: float = 60.0) -> Iterator[Page]:
    """A fresh headless Chromium with one page; :func:`load` shows a file in it."""
    import websocket

    profile = tempfile.mkdtemp(prefix="landscape-chromium-")
    proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file, deadline = Path(profile) / "DevToolsActivePort", time.time() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        page = Page(websocket.create_connection(target["webSocketDebuggerUrl"],
                                                timeout=timeout, suppress_origin=True))
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        try:
            yield page
        finally:
            page.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def load(page: Page, path: Path, timeout: float = 60.0) -> Page:
    """Navigate ``page`` to the local file ``path`` and wait until every plotly figure is
    drawn; the page's errors and requests are reset first."""
    page.errors.clear()
    page.requests.clear()
    page.send("Page.navigate", url=path.resolve().as_uri())
    while page._receive().get("method") != "Page.loadEventFired":
        pass
    deadline = time.time() + timeout
    while not page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot'))"
                            ".every(d => d._fullLayout && d.querySelector('.main-svg'))"):
        if time.time() > deadline:
            raise RuntimeError("the page's figures were not drawn in time")
        time.sleep(0.2)
    time.sleep(0.5)  # WebGL scenes draw on the next animation frames
    page.evaluate("1")  # drain the events of those frames (console errors included)
    return page

"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: no
port, no extra package): load a page from disk, collect its console errors and exceptions,
evaluate script, click at a point like a user, and take screenshots.

    python tests/browser.py results/report/index.html docs/report.png   # the committed screenshot
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class Browser:
    """One headless Chromium with one page; messages are JSON separated by NUL bytes on fds 3
    (to the browser) and 4 (from it)."""

    def __init__(self, width: int = 1280, height: int = 900):
        binary = find_chromium()
        if binary is None:
            raise RuntimeError("no chromium on PATH (Debian: apt install chromium)")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        self._profile = tempfile.mkdtemp(prefix="bench-chromium-")

        def fds():  # the child sees the pipes as fds 3 and 4 (dup2 makes them inheritable; every
            # other descriptor of ours is not, PEP 446, and closes at exec)
            high_r, high_w = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox",
             "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking",
             f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
             "about:blank"],
            close_fds=False, preexec_fn=fds,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if os.environ.get(
                "BENCH_BROWSER_DEBUG") else subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer, self._next_id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1,
                                                         "mobile": False}, session=True)

    def _read(self, timeout: float) -> dict:
        deadline = time.time() + timeout
        while b"\0" not in self._buffer:
            if time.time() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = False,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == event:
                return self.events.pop(i)
        deadline = time.time() + timeout
        while time.time() < deadline:
            e = self._read(deadline - time.time())
            if e.get("method") == event:
                return e
            self.events.append(e)
        raise TimeoutError(f"no {event}")

    def open(self, path: Path) -> None:
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=True)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A left click at (x, y) of the viewport, as a user's mouse."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y,
                                                   "button": "left", "clickCount": 1},
                      session=True)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        self.send("Runtime.evaluate", {"expression": "1"}, session=True)  # flush events
        found = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                found.append(str(p.get("exceptionDetails", {}).get("text")))
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") == "error":
                found.append(" ".join(str(a.get("value")) for a in p.get("args", [])))
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                found.append(str(p["entry"].get("text")))
        return found

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    page, shot = Path(sys.argv[1]), Path(sys.argv[2])
    with Browser() as browser:
        browser.open(page)
        problems = browser.errors()
        browser.screenshot(shot)
    print(f"{shot}: {'no console errors' if not problems else problems}")

"""Headless Chromium driven over the DevTools protocol through a pipe (--remote-debugging-pipe:
no port, no websocket library): open a page, click, evaluate, take screenshots, and collect
console errors, uncaught exceptions and the URLs the page tried to fetch.

    with Chromium() as browser:
        browser.open(path.as_uri(), width=1280)
        browser.click("a.cell")
        browser.screenshot(Path("page.png"))
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

# Debian's chromium; the flags keep it off the network (no sync, updates, field trials).
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--disable-domain-reliability", "--metrics-recording-only",
    "--disable-breakpad", "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars", "--mute-audio",
    "--remote-debugging-pipe",
)


class BrowserError(RuntimeError):
    """Chromium is missing, died, or a DevTools command failed."""


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageProblems:
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for

    @property
    def network(self) -> list[str]:
        """Requests that would leave the machine (anything but file:, data:, about:)."""
        return [u for u in self.requests if not u.startswith(("file:", "data:", "about:"))]


def _high_fd(fd: int) -> int:
    new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return new


class Chromium:
    def __init__(self, executable: str | None = None, *, timeout: float = 30.0) -> None:
        found = executable or find_chromium()
        if not found:
            raise BrowserError("chromium is not installed (apt-get install chromium)")
        self.executable = found
        self.timeout = timeout
        self.problems = PageProblems()
        self._profile = tempfile.TemporaryDirectory(prefix="wgref-chromium-")
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._session = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_browser = self._from_browser = -1

    # -- process ---------------------------------------------------------------------------

    def start(self) -> Chromium:
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()
        child_r, child_w = _high_fd(cmd_r), _high_fd(out_w)

        def plumb() -> None:  # in the child: fd 3 = commands in, fd 4 = replies out
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        log = Path(self._profile.name) / "chromium.log"
        argv = [self.executable, *FLAGS, f"--user-data-dir={self._profile.name}/profile",
                "about:blank"]
        with log.open("wb") as log_fh:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=log_fh,
                preexec_fn=plumb, pass_fds=(3, 4), start_new_session=True)
        os.close(child_r)
        os.close(child_w)
        self._to_browser, self._from_browser = cmd_w, out_r
        self.log_path = log
        targets = self.call("Target.getTargets")["targetInfos"]
        pages = [t for t in targets if t.get("type") == "page"]
        target = (pages[0]["targetId"] if pages else
                  self.call("Target.createTarget", url="about:blank")["targetId"])
        self._session = self.call("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        return self

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(BrowserError, OSError):
                self._send("Browser.close", {}, "")
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for fd in (self._to_browser, self._from_browser):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_browser = self._from_browser = -1
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- protocol --------------------------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any], session: str) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            written = os.write(self._to_browser, data)
            data = data[written:]
        return self._next_id

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for chromium")
            ready, _, _ = select.select([self._from_browser], [], [], min(left, 0.5))
            if not ready:
                if self._proc is not None and self._proc.poll() is not None:
                    raise BrowserError(f"chromium exited ({self._proc.returncode}): "
                                       f"{self._log_tail()}")
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium closed the pipe: {self._log_tail()}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def call(self, method: str, *, session: bool = False, timeout: float | None = None,
             **params: Any) -> dict[str, Any]:
        """Send a command and wait for its reply (events that arrive meanwhile are kept)."""
        ident = self._send(method, params, self._session if session else "")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            message = self._read_message(deadline)
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        self._events.append(message)
        method, params = message["method"], message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            self.problems.console_errors.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception", {})
            self.problems.exceptions.append(str(exc.get("description") or details.get("text")))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.problems.console_errors.append(
                    f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            self.problems.requests.append(str(params.get("request", {}).get("url", "")))

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        for i, message in enumerate(self._events):
            if message.get("method") == method:
                del self._events[i]
                return message
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            message = self._read_message(deadline)
            if "method" in message:
                self._event(message)
                if message["method"] == method:
                    self._events.remove(message)
                    return message

    # -- page ------------------------------------------------------------------------------

    def viewport(self, width: int, height: int = 900, *, scale: float = 1.0,
                 mobile: bool = False) -> None:
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                  height=height, deviceScaleFactor=scale, mobile=mobile)

    def open(self, url: str, *, width: int = 1280, height: int = 900, scale: float = 1.0,
             mobile: bool = False) -> None:
        self.viewport(width, height, scale=scale, mobile=mobile)
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        reply = self.call("Page.navigate", session=True, url=url)
        if reply.get("errorText"):
            raise BrowserError(f"{url}: {reply['errorText']}")
        if reply.get("loaderId"):  # none for a same-document (#fragment) navigation
            self.wait_event("Page.loadEventFired")
        self.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)))")

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", session=True, expression=expression,
                          returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression[:80]}: {text}")
        return reply.get("result", {}).get("value")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the first element that matches."""
        rect = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2,"
            " w: r.width, h: r.height}; })()")
        if not rect or not rect["w"] or not rect["h"]:
            raise BrowserError(f"nothing visible to click at {selector}")
        x, y = rect["x"], rect["y"]
        self.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y,
                      button="left", buttons=1, clickCount=1)
        self.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)))")

    def key(self, key: str, code: str, key_code: int) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", session=True, type=kind, key=key, code=code,
                      windowsVirtualKeyCode=key_code)

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics", session=True)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000),
                "scale": 1})
        data = self.call("Page.captureScreenshot", session=True, timeout=60, **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

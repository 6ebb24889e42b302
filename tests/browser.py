"""Headless Chromium driven over the DevTools protocol: used by the browser tests and the viewer benchmarks.

WebGL2 comes from SwiftShader (software), so the tests and figures do not depend on a GPU.
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

from tests.comfy_host import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
INSTALL_HINT = ("Chromium is not installed: run scripts/setup.sh as root (it installs Debian's 'chromium'), or "
                "'sudo apt-get install chromium' (Debian/Ubuntu), or put a chromium binary on PATH")
FLAGS = ["--headless", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--ignore-gpu-blocklist", "--disable-dev-shm-usage", "--mute-audio"]


class Page:
    """A minimal Chrome DevTools Protocol client for one page."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=120)
        self.next_id = 0
        self.console: list[str] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg
            if msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append("EXCEPTION " + json.dumps(msg["params"].get("exceptionDetails", {}))[:500])

    def eval(self, expr: str, timeout: float | None = None):
        r = self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        result = r.get("result", {})
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript error: {json.dumps(result['exceptionDetails'])[:1500]}")
        return result.get("result", {}).get("value")

    def wait_for(self, expr: str, timeout: float = 90.0, interval: float = 0.25):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = self.eval(expr)
            if last is True:
                return
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {expr} (last value {last!r})")

    def screenshot(self, path, clip: dict | None = None) -> str:
        params = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.call("Page.captureScreenshot", **params)["result"]["data"]
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return os.fspath(path)

    def mouse(self, kind: str, x: float, y: float, buttons: int = 0, button: str = "none"):
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button=button, buttons=buttons, clickCount=1)

    def click(self, x: float, y: float):
        """A real left click at page coordinates (CSS pixels)."""
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, 1, "left")
        self.mouse("mouseReleased", x, y, 0, "left")

    def drag(self, x0: float, y0: float, x1: float, y1: float, steps: int = 8):
        """A real left-button drag from (x0, y0) to (x1, y1)."""
        self.mouse("mouseMoved", x0, y0)
        self.mouse("mousePressed", x0, y0, 1, "left")
        for i in range(1, steps + 1):
            self.mouse("mouseMoved", x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps, 1, "left")
        self.mouse("mouseReleased", x1, y1, 0, "left")

    def key(self, key: str, code: str, key_code: int):
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=key_code,
                      nativeVirtualKeyCode=key_code)


class Chromium:
    """One headless Chromium with a remote-debugging port, opened on ``url``."""

    def __init__(self, url: str, width: int = 1400, height: int = 900, extra_flags: list[str] | None = None):
        if not CHROMIUM:
            raise RuntimeError(INSTALL_HINT)
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="charshot-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, *(extra_flags or []), f"--user-data-dir={self.profile}",
             f"--remote-debugging-port={self.port}", f"--window-size={width},{height}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        tabs = None
        for _ in range(240):
            if self.proc.poll() is not None:
                raise RuntimeError(f"Chromium exited with code {self.proc.returncode}")
            try:
                tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json", timeout=5))
                if any(t["type"] == "page" for t in tabs):
                    break
            except OSError:
                pass
            time.sleep(0.25)
        if not tabs:
            self.close()
            raise RuntimeError("Chromium did not open its debugging port")
        self.page = Page(next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"])
        self.page.call("Runtime.enable")

    def close(self):
        try:
            self.page.ws.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

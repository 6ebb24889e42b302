"""Start a real ComfyUI server with this checkout loaded as a custom-node pack, and talk to it.

Used by the session fixture ``comfy`` in ``conftest.py``; also usable by hand:

    python tests/comfy_host.py     # starts a server on a free port and prints its address until Ctrl-C
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The newest ComfyUI front-end the browser tests also run on (scripts/setup.sh installs this pinned version into
# .cache/frontend-<version>; the host serves it with --front-end-root). The host's own is its bundled package.
NEWEST_FRONTEND = "1.58.1"
MODEL_FOLDERS = ("diffusion_models", "vae", "text_encoders", "charactershot", "checkpoints", "clip")


class WorkflowError(Exception):
    """A workflow was rejected (``status``/``body``) or failed while executing (``message``, ``history``)."""

    def __init__(self, message: str, status: int | None = None, body=None, history=None, events=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body
        self.history = history
        self.events = events or []


def comfyui_dir() -> Path:
    """The host: ``COMFYUI_DIR`` if set, else the one ``scripts/setup.sh`` unpacked."""
    env = os.environ.get("COMFYUI_DIR")
    if env:
        return Path(env)
    recorded = REPO / ".cache" / "comfyui_dir"
    if recorded.is_file():
        return Path(recorded.read_text().strip())
    return REPO / ".comfyui"


def host_flags(host: Path) -> set[str]:
    """Every ``--flag`` the host's argument parser defines (read from ``comfy/cli_args.py``, without importing it)."""
    import re

    text = (Path(host) / "comfy" / "cli_args.py").read_text(encoding="utf-8", errors="replace")
    return set(re.findall(r"""add_argument\(\s*["'](--[A-Za-z0-9][A-Za-z0-9-]*)["']""", text))


def newest_frontend_root() -> Path:
    """The ``static`` folder of the pinned newest front-end (what ``--front-end-root`` takes)."""
    return REPO / ".cache" / f"frontend-{NEWEST_FRONTEND}" / "comfyui_frontend_package" / "static"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyHost:
    """One ComfyUI process on 127.0.0.1 with temporary folders.

    ``root``: the folder that holds them (default: a new temporary one).  A new host on the ``root`` of a stopped one
    is a restart on the same folders: input, output, user and models are kept (ComfyUI itself empties temp), and
    each start's log is appended to the same file (``log_text`` reads this start's part)."""

    def __init__(self, root: Path | None = None, python: str = sys.executable, extra_args: list[str] | None = None,
                 port: int | None = None):
        self.root = Path(root or tempfile.mkdtemp(prefix="charshot-comfy-"))
        self.python = python
        self.extra_args = extra_args or []
        self.port = int(port) if port else free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.events: list[dict] = []
        self.input_dir = self.root / "input"
        self.output_dir = self.root / "output"
        self.temp_dir = self.root / "temp"
        self.user_dir = self.root / "user"
        self.models_dir = self.root / "models"
        self.custom_nodes = self.root / "custom_nodes"
        self.log_path = self.root / "comfyui.log"

    # ------------------------------------------------------------- life cycle
    def command(self, host: Path, yaml: Path) -> list[str]:
        """The server's command line, with only flags this host's ``comfy/cli_args.py`` defines.

        No network: ``--offline`` where the host has it (newer ComfyUI, where ``--disable-api-nodes`` is its deprecated
        alias), else ``--disable-api-nodes`` (0.3.75)."""
        accepted = host_flags(host)
        offline = next((f for f in ("--offline", "--disable-api-nodes") if f in accepted), None)
        cmd = [self.python, str(host / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", *([offline] if offline else []), "--database-url", "sqlite:///:memory:",
               "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
               "--temp-directory", str(self.temp_dir), "--user-directory", str(self.user_dir),
               "--extra-model-paths-config", str(yaml), *self.extra_args]
        unknown = [a for a in cmd[2:] if a.startswith("--") and a not in accepted]
        if unknown:
            raise RuntimeError(f"the ComfyUI at {host} does not accept {unknown} (its comfy/cli_args.py defines no "
                               "such flag)")
        return cmd

    def start(self, timeout: float = 180.0) -> "ComfyHost":
        host = comfyui_dir()
        if not (host / "main.py").is_file():
            raise RuntimeError(f"no ComfyUI at {host}: run scripts/setup.sh or set COMFYUI_DIR")
        for d in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir, self.custom_nodes):
            d.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FOLDERS:
            (self.models_dir / name).mkdir(parents=True, exist_ok=True)
        link = self.custom_nodes / "charactershot"
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        yaml = self.root / "extra_model_paths.yaml"
        lines = ["charshot_test:", f"  base_path: {self.root}", f"  custom_nodes: {self.custom_nodes}"]
        lines += [f"  {name}: {self.models_dir / name}" for name in MODEL_FOLDERS]
        yaml.write_text("\n".join(lines) + "\n")
        cmd = self.command(host, yaml)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")
        self._log_offset = self._log.tell()
        self.proc = subprocess.Popen(cmd, cwd=str(host), stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get_json("/object_info/CharacterShotCameraRig", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        else:
            self.stop()
            raise RuntimeError(f"ComfyUI did not serve /object_info within {timeout} s:\n{self.log_tail()}")
        failure = self.import_failure()
        if failure:
            self.stop()
            raise RuntimeError(f"the pack failed to import in ComfyUI:\n{failure}")
        if "CharacterShotCameraRig" not in self.object_info("CharacterShotCameraRig"):
            self.stop()
            raise RuntimeError(f"ComfyUI runs but does not list the pack's nodes:\n{self.log_tail()}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        if getattr(self, "_log", None):
            self._log.close()

    def log_text(self) -> str:
        """What this start of the server has logged."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(getattr(self, "_log_offset", 0))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def import_failure(self) -> str | None:
        """The log lines that say this pack failed to import, if any."""
        text = self.log_text()
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if "IMPORT FAILED" in line and "charactershot" in line:
                return "\n".join(lines[max(0, i - 40): i + 1])
            if "Cannot import" in line and "charactershot" in line:
                return "\n".join(lines[i: i + 40])
        return None

    # ------------------------------------------------------------------- HTTP
    def request(self, path: str, data: bytes | None = None, method: str | None = None, timeout: float = 30):
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()

    def get_json(self, path: str, timeout: float = 30):
        return json.loads(self.request(path, timeout=timeout)[1])

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get_json("/object_info" + (f"/{node_class}" if node_class else ""))

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        return self.request(f"/view?{q}")[1]

    def interrupt(self) -> None:
        self.request("/interrupt", data=b"{}", method="POST")

    def history(self, prompt_id: str) -> dict:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id, {})

    def queue(self, prompt: dict) -> tuple[int, dict]:
        """POST /prompt; returns (status, json body) without raising on 400."""
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        try:
            status, raw = self.request("/prompt", data=body, method="POST")
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except json.JSONDecodeError:
            return status, {"raw": raw.decode(errors="replace")}

    # --------------------------------------------------------------- running
    def run(self, prompt: dict, timeout: float = 300, on_event=None) -> dict:
        """Queue an API-format workflow, wait for it on the websocket, return its /history entry.

        Raises ``WorkflowError`` if ComfyUI rejects the prompt (HTTP 400), the run fails or is interrupted.
        ``on_event(message)`` is called for every websocket message (e.g. to interrupt after the first progress).
        """
        import websocket  # websocket-client

        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}", timeout=timeout)
        self.events = []
        try:
            status, body = self.queue(prompt)
            if status != 200:
                raise WorkflowError(f"ComfyUI rejected the prompt ({status}): {json.dumps(body)[:2000]}", status, body)
            prompt_id = body["prompt_id"]
            deadline = time.time() + timeout
            error = None
            while True:
                if time.time() > deadline:
                    raise WorkflowError(f"workflow did not finish within {timeout} s\n{self.log_tail()}",
                                        events=self.events)
                ws.settimeout(max(1.0, deadline - time.time()))
                raw = ws.recv()
                if isinstance(raw, bytes):  # binary preview frames, progress text (event 3: node id + text)
                    ev = {"type": "binary", "size": len(raw)}
                    if len(raw) >= 8 and int.from_bytes(raw[:4], "big") == 3:
                        n = int.from_bytes(raw[4:8], "big")
                        ev.update(event="text", node=raw[8:8 + n].decode("utf-8", "replace"),
                                  text=raw[8 + n:].decode("utf-8", "replace"))
                    self.events.append(ev)
                    continue
                msg = json.loads(raw)
                self.events.append(msg)
                if on_event:
                    on_event(msg)
                data = msg.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                if msg["type"] == "execution_error":
                    error = data
                elif msg["type"] == "execution_interrupted":
                    error = {"exception_message": "interrupted", "interrupted": True, **data}
                elif msg["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
                elif msg["type"] in ("execution_success",) and error is None:
                    pass
                if error is not None and msg["type"] in ("execution_error", "execution_interrupted"):
                    break
        finally:
            ws.close()
        hist = self._wait_history(prompt_id)
        if error is not None:
            raise WorkflowError(str(error.get("exception_message", error)).strip(), history=hist, events=self.events,
                                body=error)
        return hist

    def _wait_history(self, prompt_id: str, timeout: float = 30) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            h = self.history(prompt_id)
            if h and h.get("status", {}).get("completed") is not None:
                return h
            time.sleep(0.2)
        return self.history(prompt_id)


def stop_on_signals() -> None:
    """Make Ctrl-C, SIGTERM and SIGHUP end the main thread with KeyboardInterrupt, so ``finally`` blocks stop the
    server (and a second signal does not cut that short).

    ComfyUI runs in its own session (so a Ctrl-C meant for a test run does not reach it); without this, the default
    SIGTERM action would end Python at once and leave the server running."""

    def handler(signum, frame):
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # a second signal must not cut the clean-up
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, handler)


def serve(host: ComfyHost, banner: str) -> int:
    """Start ``host``, print ``banner`` (formatted with the host) and wait until Ctrl-C, SIGTERM or SIGHUP; then
    stop the server. Returns ComfyUI's exit code if it ended by itself, else 0."""
    stop_on_signals()
    try:
        host.start()
        print(banner.format(host=host), flush=True)
        while host.proc.poll() is None:
            time.sleep(0.5)
        print(f"ComfyUI exited with code {host.proc.returncode}; log: {host.log_path}", flush=True)
        return host.proc.returncode or 1
    except KeyboardInterrupt:
        return 0
    finally:
        host.stop()
        print("ComfyUI stopped", flush=True)


def main() -> None:
    sys.exit(serve(ComfyHost(), "ComfyUI with CharacterShot at {host.base} (pid {host.proc.pid}, folders under "
                                "{host.root}); Ctrl-C stops it"))


if __name__ == "__main__":
    main()

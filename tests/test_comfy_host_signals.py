"""``python tests/comfy_host.py`` and ``scripts/demo.sh --ui`` must take their ComfyUI server down when they are
stopped with SIGTERM, not leave it running."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.comfy_host import REPO, comfyui_dir, free_port

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is missing
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _serving(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("command", ["comfy_host", "demo_ui"])
def test_sigterm_stops_the_comfyui_server_too(command, tmp_path):
    if not (comfyui_dir() / "main.py").is_file():
        pytest.skip("ComfyUI is not unpacked")
    if command == "comfy_host":
        argv = [sys.executable, str(REPO / "tests" / "comfy_host.py")]
    else:  # what `scripts/demo.sh --ui` execs after the set-up
        argv = [sys.executable, str(REPO / "scripts" / "demo_workflow.py"), "--ui", "--root", str(tmp_path),
                "--port", str(free_port())]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    comfy_pid = port = None
    try:
        deadline = time.time() + 240
        seen = []
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"at http://127\.0\.0\.1:(\d+) \(pid (\d+)", line)
            if m:
                port, comfy_pid = int(m.group(1)), int(m.group(2))
                break
        assert comfy_pid, f"no banner from {command}:\n" + "".join(seen[-40:])
        assert _alive(comfy_pid) and _serving(port)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        rest = proc.stdout.read()
        assert rc == 0, rest
        assert "ComfyUI stopped" in rest
        deadline = time.time() + 20
        while time.time() < deadline and (_alive(comfy_pid) or _serving(port)):
            time.sleep(0.2)
        assert not _alive(comfy_pid), f"ComfyUI (pid {comfy_pid}) still runs after SIGTERM to its launcher"
        assert not _serving(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if comfy_pid and _alive(comfy_pid):
            os.killpg(comfy_pid, signal.SIGKILL)

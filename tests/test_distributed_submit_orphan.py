"""The Ray driver child that the Multi-View Sampler starts runs in its own session: when the ComfyUI server dies
(killed, crashed) it gets no signal, and it must not stay behind on its own (it holds a Ray connection and maybe a
cluster's actors)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from charactershot_core.distributed.submit import PACK_ROOT, write_job
from tests.distributed_inputs import make_inputs, make_job

pytest.importorskip("ray")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc") or not hasattr(signal, "SIGKILL"),
                    reason="watches the child through /proc (Linux)")
def test_the_driver_child_exits_when_its_parent_dies(tmp_path):
    inp = make_inputs(tmp_path / "in")
    job, spec = make_job(inp)
    # a "cluster" that accepts the connection and then never answers: ray.init waits inside Ray's own code
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(60)
    work = tmp_path / "store" / ".submit-test"
    write_job(str(work), job)
    from dataclasses import asdict

    (work / "request.json").write_text(json.dumps({
        "spec": asdict(spec), "address": f"127.0.0.1:{srv.getsockname()[1]}", "store": str(tmp_path / "store"),
        "groups": [0, 1], "gpus": None, "actors": 1, "connect_timeout": 5.0}))
    # the parent: starts the child as submit_to_ray does (own session), prints its pid, then waits to be killed
    parent_code = textwrap.dedent(f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-m", "charactershot_core.distributed.submit", {str(work)!r}],
                             cwd={PACK_ROOT!r}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             start_new_session=True)
        print(p.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=PACK_ROOT))
    child = int(parent.stdout.readline())
    try:
        conn, _ = srv.accept()  # the child is now inside ray.init, talking to our silent "cluster"
        assert _alive(child)
        parent.kill()
        parent.wait(10)
        deadline = time.time() + 40
        while _alive(child) and time.time() < deadline:
            time.sleep(0.25)
        assert not _alive(child), "the driver child outlived its parent"
        conn.close()
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
        srv.close()


def test_the_driver_child_stops_when_asked_through_its_stop_file(tmp_path):
    """The polite stop that needs no signal and no console (what Cancel uses on Windows when the server has no
    console): the parent writes ``stop`` into the job folder, the child's watcher raises SIGTERM in it and it exits
    through its handler, here while it waits inside ``ray.init``."""
    from charactershot_core.distributed.submit import STOP_FILE

    inp = make_inputs(tmp_path / "in")
    job, spec = make_job(inp)
    srv = socket.socket()
    # every interface: ray.init dials the node's own IP for a local address, and its connection must arrive here
    srv.bind(("0.0.0.0", 0))
    srv.listen(8)
    srv.settimeout(60)
    work = tmp_path / "store" / ".submit-test"
    write_job(str(work), job)
    from dataclasses import asdict

    (work / "request.json").write_text(json.dumps({
        "spec": asdict(spec), "address": f"127.0.0.1:{srv.getsockname()[1]}", "store": str(tmp_path / "store"),
        "groups": [0, 1], "gpus": None, "actors": 1, "connect_timeout": 5.0}))
    child = subprocess.Popen([sys.executable, "-m", "charactershot_core.distributed.submit", str(work)],
                             cwd=PACK_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=PACK_ROOT))
    conns = []
    try:
        conns.append(srv.accept()[0])  # the reachability check before ray.init
        conns.append(srv.accept()[0])  # ray.init itself: Ray's own SIGTERM handler is in place now
        assert child.poll() is None
        (work / STOP_FILE).write_text("")
        assert child.wait(40) == 143
        assert b"the parent asked to stop" in child.stderr.read()
    finally:
        for c in conns:
            c.close()
        if child.poll() is None:
            child.kill()
        srv.close()


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name == "nt", reason="POSIX signal delivery")
def test_a_stop_during_ray_init_still_exits_as_a_stop(monkeypatch):
    """``ray.init`` puts in a SIGTERM handler that exits with the signal's number (15): a stop that meets it is
    still reported as a stop (143), and once ``ray.init`` returns the child's own handler is back."""
    from charactershot_core.distributed import raylib, submit

    def ray_like_init():  # what ray.init does to the handler before it connects
        signal.signal(signal.SIGTERM, lambda signum, _f: sys.exit(signum))

    def child_stopped_inside_init(_folder):
        with raylib._keep_stop_handlers():
            ray_like_init()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        return 0

    ours = lambda *_: sys.exit(143)  # noqa: E731 - the child's own handler, as in submit's __main__
    saved = signal.signal(signal.SIGTERM, ours)
    try:
        monkeypatch.setattr(submit, "_child", child_stopped_inside_init)
        assert submit.run_child("unused") == 143
        assert signal.getsignal(signal.SIGTERM) is ours  # put back even though init was left by the stop
        with raylib._keep_stop_handlers():
            ray_like_init()
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, saved)

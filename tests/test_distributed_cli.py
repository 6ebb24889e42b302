"""The batch command without a cluster: jobs-file errors name the line and the field, a missing views folder is
named, the pack imports and runs a batch with Ray hidden (and says how to install it when asked for), an
unreachable Ray address fails in seconds, and a rerun reuses every finished group."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from charactershot_core.errors import InputError
from tests.distributed_inputs import make_inputs, write_jobs

REPO = Path(__file__).resolve().parent.parent

HIDE_RAY = textwrap.dedent("""
    import runpy, sys

    class HideRay:
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, HideRay())
    if sys.argv[1] == "--imports":
        import charactershot_core, charactershot_core.sampling
        import charactershot_core.distributed, charactershot_core.distributed.raylib
        import charactershot_core.distributed.executor, charactershot_core.distributed.batch
        import charactershot_core.distributed.jobs, charactershot_core.distributed.submit
        from charactershot_core.__main__ import build_parser, main
        build_parser().parse_args(["batch", "x.json"])
        assert "ray" not in sys.modules
        print("imports ok", flush=True)
        # asked for Ray without Ray: a clear message, nothing started
        print("rc", main(["batch", sys.argv[2], "--ray"]))
    else:
        sys.argv = ["charactershot_core"] + sys.argv[1:]
        runpy.run_module("charactershot_core", run_name="__main__", alter_sys=True)
""")


def _run(args, hide_ray=False, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, "-c", HIDE_RAY, *args] if hide_ray else [sys.executable, "-m", "charactershot_core", *args]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return p, time.time() - t0


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("dist_cli"))


def _load(tmp_path, text):
    from charactershot_core.distributed.jobs import load_jobs

    p = tmp_path / "jobs.json"
    p.write_text(textwrap.dedent(text).lstrip())
    return load_jobs(str(p))


def test_malformed_jobs_files_name_the_line_and_the_field(tmp_path):
    with pytest.raises(InputError, match=r"jobs\.json: line 3, column \d+: not valid JSON"):
        _load(tmp_path, """
            {"model": "m",
             "characters": [
               {"views": "v",, "poses": "p"}]}""")
    with pytest.raises(InputError, match=r"line 5, characters\[1\]\.seed: expected an integer, got \"one\""):
        _load(tmp_path, """
            {"model": "m",
             "characters": [
              {"views": "v", "poses": "p", "reference_pose": "r.png", "out": "a"},
              {"views": "v", "poses": "p", "reference_pose": "r.png", "out": "b",
               "seed": "one"}]}""")
    with pytest.raises(InputError, match=r"line 2, characters\[0\]: missing field 'poses'"):
        _load(tmp_path, """
            {"model": "m",
             "characters": [{"views": "v",
                             "reference_pose": "r.png", "out": "a"}]}""")
    with pytest.raises(InputError, match=r"line 3, characters\[0\]\.sead: unknown field"):
        _load(tmp_path, """
            {"model": "m",
             "characters": [{"views": "v", "poses": "p", "reference_pose": "r.png",
                             "sead": 3, "out": "a"}]}""")
    with pytest.raises(InputError, match=r"line 1, fit: unknown fit4d option\(s\) \['--iteratons', '5'\]"):
        _load(tmp_path, """
            {"model": "m", "fit": {"iteratons": 5},
             "characters": [{"views": "v", "poses": "p", "reference_pose": "r.png", "out": "a"}]}""")
    with pytest.raises(InputError, match=r"line 3, characters\[1\]\.out: the same output folder as characters\[0\]"):
        _load(tmp_path, """
            {"model": "m", "defaults": {"views": "v", "poses": "p", "reference_pose": "r.png"},
             "characters": [{"name": "a", "out": "x"},
                            {"name": "b", "out": "x"}]}""")
    ok = _load(tmp_path, """
        {"model": "m", "defaults": {"views": "v", "poses": "p", "reference_pose": "r.png", "steps": 3},
         "characters": [{"out": "x/alice", "seed": 7}]}""")
    ch = ok.characters[0]
    assert ch.name == "alice" and ch.fields["steps"] == 3 and ch.fields["views"] == str(tmp_path / "v")


def test_missing_views_folder_names_the_character_line_and_field(tmp_path, inputs):
    from charactershot_core.distributed.batch import prepare
    from charactershot_core.distributed.jobs import load_jobs

    p = write_jobs(tmp_path / "jobs.json", inputs, [{"name": "alice", "out": str(tmp_path / "o")}])
    doc = json.loads(p.read_text())
    doc["characters"][0]["views"] = str(tmp_path / "nowhere")
    p.write_text(json.dumps(doc, indent=1))
    with pytest.raises(InputError, match=r"line \d+, characters\[0\]\.views \(alice\): views: folder not found: .*nowhere"):
        prepare(load_jobs(str(p)), log=lambda m: None)
    doc["characters"][0]["views"] = str(inputs["chars"][0] / "views")
    doc["characters"][0]["poses"] = str(tmp_path / "no_poses")
    p.write_text(json.dumps(doc, indent=1))
    with pytest.raises(InputError, match=r"characters\[0\]\.poses \(alice\): poses: folder not found"):
        prepare(load_jobs(str(p)), log=lambda m: None)


def test_pack_imports_and_runs_a_batch_without_ray(tmp_path, inputs):
    from charactershot_core.distributed.batch import run_batch
    from charactershot_core.distributed.jobs import load_jobs

    jobs = write_jobs(tmp_path / "jobs.json", inputs, [{"name": "alice", "out": "out/alice"}])
    p, _ = _run(["--imports", str(jobs)], hide_ray=True)
    assert p.returncode == 0 and "imports ok" in p.stdout, p.stderr[-3000:]
    assert "rc 1" in p.stdout and "Ray is not installed" in p.stderr and "charactershot[ray]" in p.stderr
    assert not (tmp_path / "out").exists()
    p, _ = _run(["batch", str(jobs), "--summary", str(tmp_path / "summary.json")], hide_ray=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "[alice] group 2/2 sampled" in p.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary[0]["complete"] and summary[0]["sampled"] == [0, 1] and summary[0]["error"] is None
    out = tmp_path / "out" / "alice"
    assert f"alice: views -> {out}" in p.stdout
    assert sorted(n for n in os.listdir(out) if n.startswith("view")) == [f"view{k:02d}" for k in range(9)]
    # a rerun (here, in-process and local) reuses every finished group
    (o,) = run_batch(load_jobs(str(jobs)), log=lambda m: None)
    assert o.complete and o.reused == [0, 1] and o.sampled == []


def test_unreachable_ray_address_fails_in_seconds(tmp_path, inputs):
    pytest.importorskip("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    jobs = write_jobs(tmp_path / "jobs.json", inputs, [{"name": "alice", "out": "out/alice"}])
    p, seconds = _run(["batch", str(jobs), "--ray-address", f"127.0.0.1:{port}", "--connect-timeout", "2"])
    assert p.returncode == 1
    assert f"cannot reach the Ray cluster at '127.0.0.1:{port}'" in p.stderr and "ray start --head" in p.stderr
    assert seconds < 60, seconds  # python start-up and reading the inputs included; Ray itself would retry minutes


def test_addresses_are_checked_before_any_ray_call():
    from charactershot_core.distributed.raylib import _host_port, check_reachable
    from charactershot_core.distributed.submit import submit_to_ray
    from charactershot_core.errors import CharacterShotError

    assert _host_port("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert _host_port("ray://head:10001") == ("head", 10001) and _host_port("head") == ("head", 6379)
    assert _host_port("[::1]:7000") == ("::1", 7000) and _host_port("auto") is None
    with pytest.raises(InputError, match="ray_address: unknown scheme 'ftp'"):
        _host_port("ftp://head:1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    with pytest.raises(CharacterShotError, match=f"cannot reach the Ray cluster at '127.0.0.1:{port}'"):
        check_reachable(f"127.0.0.1:{port}", timeout=2)
    assert time.time() - t0 < 5
    # the ComfyUI route: an empty address is not a cluster (the node samples in process instead); nothing starts
    with pytest.raises(InputError, match="ray_address: empty"):
        submit_to_ray(None, None, "  ", "/nonexistent")

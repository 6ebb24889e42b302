"""Submit a character's view groups to Ray from a process that must not host Ray itself (the ComfyUI server).

``ray.init`` in a server process replaces its SIGTERM/SIGINT handlers and starts threads and child processes that
the server does not expect.  :func:`submit_to_ray` therefore runs the Ray *driver* in a child Python process
(``python -m charactershot_core.distributed.submit FOLDER``): the job goes to it as files (safetensors + JSON, no
pickle), the child connects to the cluster, runs the groups on :class:`.executor.RayExecutor` actors and stores each
finished group in ``store_root`` (the same :class:`~charactershot_core.sampling.store.GroupStore` the local path
uses, so finished groups are reused either way), reporting progress as JSON lines on its stdout.  The caller gets
the same :class:`~charactershot_core.sampling.executor.MultiViewResult` as from ``sample_multiview``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict
from typing import Callable, Iterable, Optional

from ..errors import CharacterShotError, InputError
from .childproc import ChildTree, parent_watch, stop_self, stop_signals

_TENSORS = ("views", "pose_frames", "reference_pose", "prompt_embeds", "negative_prompt_embeds")
_SCALARS = ("seed", "steps", "guidance", "scheduler", "dynamic_cfg", "spacing", "groups", "group_size",
            "camera_indices", "pose_latents", "scheduler_config", "low_memory")
STOP_FILE = "stop"   # written into the job folder by the parent to ask the child to stop (see childproc.stop_tree)
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------------------------------------ job as files
def write_job(folder: str, job) -> None:
    """``job.safetensors`` (the images and text embeddings) + ``job.json`` (everything else)."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    save_file({k: getattr(job, k).detach().cpu().contiguous() for k in _TENSORS}, os.path.join(folder, "job.safetensors"))
    meta = {k: getattr(job, k) for k in _SCALARS}
    meta["rig"] = job.rig.to_dict() if job.rig is not None else None
    with open(os.path.join(folder, "job.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f)


def read_job(folder: str):
    from safetensors.torch import load_file

    from ..cameras import CameraRig
    from ..sampling.job import MultiViewJob

    t = load_file(os.path.join(folder, "job.safetensors"))
    with open(os.path.join(folder, "job.json"), encoding="utf-8") as f:
        meta = json.load(f)
    rig = CameraRig.from_dict(meta.pop("rig")) if meta.get("rig") else None
    meta.pop("rig", None)
    return MultiViewJob(**{k: t[k] for k in _TENSORS}, **meta, rig=rig)


# ------------------------------------------------------------------------------------------------ parent side
def submit_to_ray(job, spec, address: str, store_root: str, groups: Optional[Iterable[int]] = None,
                  on_step: Optional[Callable] = None, on_group: Optional[Callable] = None,
                  gpus: Optional[int] = None, actors: Optional[int] = None, connect_timeout: float = 5.0,
                  python: Optional[str] = None, log: Optional[Callable[[str], None]] = None):
    """Sample ``groups`` (default: all) of ``job`` on the Ray cluster at ``address`` and return a
    :class:`~charactershot_core.sampling.executor.MultiViewResult`, without importing Ray in this process.

    ``spec``: a :class:`~charactershot_core.sampling.worker.SamplerSpec` (paths as the cluster's nodes see them).
    ``address``: ``HOST:PORT`` of a running cluster (``ray start --head`` prints it), ``auto`` (the cluster started
    on this machine) or ``local`` (a private Ray in the child, using this machine's GPUs); a server takes it from
    its owner's configuration (:mod:`.serverconfig`), never from a request.  ``store_root``: the
    group store folder (finished groups are reused from it and written to it).  ``on_step(group, step, steps,
    None)`` and ``on_group(GroupResult)`` are called in this thread; an exception raised by either (an interrupt)
    stops the child and its actors and is re-raised; finished groups stay in the store.  Errors: an unreachable
    address, Ray missing in ``python``, too many GPUs... come back as :class:`CharacterShotError` with the child's
    message; a failure after some groups finished is a ``GroupFailure`` naming them.
    """
    from ..sampling.executor import GroupFailure, MultiViewResult, finished_summary
    from ..sampling.job import assemble
    from ..sampling.store import GroupStore

    if not address or not str(address).strip():
        raise InputError("ray_address", "empty: give the cluster's HOST:PORT ('ray start --head' prints it), "
                                        "'auto' or 'local' (an empty address means: sample here, without Ray)")
    wanted = list(range(len(job.groups))) if groups is None else sorted({int(g) for g in groups})
    bad = [g for g in wanted if not 0 <= g < len(job.groups)]
    if bad:
        raise InputError("groups", f"group indices {bad} out of range: the job has {len(job.groups)} groups")
    store_root = os.path.abspath(store_root)
    os.makedirs(store_root, exist_ok=True)
    work = os.path.join(store_root, f".submit-{uuid.uuid4().hex[:12]}")
    write_job(work, job)
    with open(os.path.join(work, "request.json"), "w", encoding="utf-8") as f:
        json.dump({"spec": asdict(spec), "address": str(address).strip(), "store": store_root, "groups": wanted,
                   "gpus": gpus, "actors": actors, "connect_timeout": connect_timeout}, f)
    env = dict(os.environ)
    env["PYTHONPATH"] = PACK_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    err_path = os.path.join(work, "child.log")
    err = open(err_path, "wb")
    tree = ChildTree([python or sys.executable, "-m", "charactershot_core.distributed.submit", work],
                     cwd=PACK_ROOT, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                     stop_file=os.path.join(work, STOP_FILE))
    proc = tree.proc
    store = GroupStore(store_root)
    results, reused, sampled = {}, [], []
    error = None
    try:
        for raw in proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            kind = ev.get("event")
            if kind == "log" and log is not None:
                log(ev["message"])
            elif kind == "step" and on_step is not None:
                on_step(ev["group"], ev["step"], ev["steps"], None)
            elif kind == "group":
                res = store.load(ev["key"])
                res.index = ev["index"]
                results[res.index] = res
                (reused if ev["reused"] else sampled).append(res.index)
                if on_group is not None:
                    on_group(res)
            elif kind == "error":
                error = ev
        rc = proc.wait()
    except BaseException:
        tree.stop()
        tree.close()
        err.close()
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if proc.poll() is None:
            tree.stop()
        tree.close()
        err.close()
    try:
        if error is not None or rc != 0:
            if error is None:
                with open(err_path, "rb") as f:
                    tail = f.read()[-2000:].decode("utf-8", "replace").strip()
                error = {"message": f"the Ray driver process exited with code {rc}: {tail}", "input": None}
            msg = error["message"]
            if error.get("input"):
                raise InputError(error["input"], msg)
            if results:
                raise GroupFailure(msg if "finished groups are kept" in msg else f"{msg}; {finished_summary(results)}",
                                   results)
            raise CharacterShotError(msg)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    missing = [g for g in wanted if g not in results]
    if missing:
        raise CharacterShotError(f"the Ray driver finished without groups {missing}")
    frames = assemble(job.groups, results, job.num_views) if len(results) == len(job.groups) else None
    return MultiViewResult(job, results, frames, sorted(reused), sorted(sampled))


# ------------------------------------------------------------------------------------------------ child side
def exit_with_parent(parent_pid: int, poll: float = 0.5, grace: float = 10.0,
                     stop_file: Optional[str] = None) -> threading.Thread:
    """Watch the parent (the ComfyUI server): the child runs in its own session (POSIX) or console process group
    (Windows), so a server that dies (killed, crashed) sends it no signal.  When the parent is gone, or the parent
    wrote ``stop_file`` (its way to ask where there is no console to send a break through), raise SIGTERM in this
    process (its handler exits through the ``finally`` that shuts the actors down); if it is still alive ``grace``
    seconds later (stuck inside a Ray call that does not return to Python), end it with ``os._exit`` (Ray kills the
    actors of a dead driver).  On Windows the server's Job object ends the child anyway when the server dies."""

    parent_gone = parent_watch(parent_pid)

    def watch():
        while True:
            if parent_gone():
                why = f"the parent process {parent_pid} is gone"
                break
            if stop_file and os.path.exists(stop_file):
                why = "the parent asked to stop"
                break
            time.sleep(poll)
        sys.stderr.write(f"charactershot submit: {why}; stopping\n")
        sys.stderr.flush()
        stop_self()
        time.sleep(grace)
        os._exit(143)

    t = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    t.start()
    return t


def _child(folder: str) -> int:
    lock = threading.Lock()
    out = sys.stdout
    sys.stdout = sys.stderr  # only events on the real stdout

    def emit(**ev):
        with lock:
            out.write(json.dumps(ev) + "\n")
            out.flush()

    executor = None
    try:
        from ..sampling.executor import sample_multiview
        from ..sampling.store import GroupStore
        from ..sampling.worker import SamplerSpec
        from .executor import RayExecutor
        from .raylib import require_ray

        with open(os.path.join(folder, "request.json"), encoding="utf-8") as f:
            req = json.load(f)
        require_ray()
        job = read_job(folder)
        spec = SamplerSpec(**req["spec"])
        t0 = time.time()
        executor = RayExecutor(spec, address=req["address"], gpus=req["gpus"], actors=req["actors"],
                               max_actors=len(req["groups"]), connect_timeout=req["connect_timeout"],
                               log=lambda m: emit(event="log", message=m))
        emit(event="identity", identity=executor.identity)
        emit(event="log", message=f"ray: {len(executor.actors)} actor(s) ready in {time.time() - t0:.1f} s")
        sample_multiview(job, executor, GroupStore(req["store"]), req["groups"],
                         on_step=lambda g, i, n, _x: emit(event="step", group=g, step=i, steps=n),
                         on_group=lambda r: emit(event="group", index=r.index, key=r.key, reused=bool(r.reused)))
        emit(event="done")
        return 0
    except InputError as e:
        emit(event="error", message=e.detail, input=e.input_name)
        return 1
    except CharacterShotError as e:
        emit(event="error", message=str(e), input=None)
        return 1
    except Exception as e:  # noqa: BLE001 - reported to the parent
        emit(event="error", message=f"{type(e).__name__}: {e}", input=None)
        return 1
    finally:
        if executor is not None:
            executor.close()


def run_child(folder: str) -> int:
    """The child's exit code: 0 done, 1 failed (reported as an event), 143 stopped.  A stop that comes while
    ``ray.init`` runs meets Ray's own handler, which exits with the signal's number; it is a stop all the same."""
    try:
        return _child(folder)
    except SystemExit as e:
        return 143 if e.code in [int(s) for s in stop_signals()] else e.code


if __name__ == "__main__":
    for _sig in stop_signals():
        signal.signal(_sig, lambda *_: sys.exit(143))
    exit_with_parent(os.getppid(), stop_file=os.path.join(sys.argv[1], STOP_FILE))
    sys.exit(run_child(sys.argv[1]))

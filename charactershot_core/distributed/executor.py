"""The Ray executor: long-lived actors that each load the models once and take view groups one at a time.

``RayExecutor(spec)`` is an executor in the sense of :mod:`charactershot_core.sampling.executor` (``identity`` and
``run(job, indices, on_step)``), so :func:`~charactershot_core.sampling.executor.sample_multiview` reuses stored
groups, stores each finished group the moment it comes back and assembles, exactly as with the local executor.

* one actor per GPU (``num_gpus=1``; Ray gives each its own ``CUDA_VISIBLE_DEVICES``), or CPU actors where the
  cluster has no GPU;
* every actor builds its :class:`~charactershot_core.sampling.worker.MultiViewWorker` once from a picklable
  :class:`~charactershot_core.sampling.worker.SamplerSpec`; groups are handed to whichever actor is free, so groups
  of several characters (``run`` called from several threads) share the actors;
* an actor that dies (a killed process, a lost node) is restarted by Ray and its group retried
  (``max_restarts`` / ``max_task_retries``); when Ray gives up on it, the group goes to another live actor;
* a group's result is a pure function of its inputs, the model and the seed, so it is the same bytes whichever
  actor computes it (same device type; on CPU the number of threads of an actor is fixed by ``threads``).
"""

from __future__ import annotations

import collections
import os
import platform
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, Optional

from ..errors import CharacterShotError, InputError
from .raylib import check_gpus, cluster_resources, connect


class _GroupActor:
    """Body of the Ray actor (made remote by :class:`RayExecutor`): one worker, one group at a time; ``progress``
    answers from a second thread while a group runs."""

    def __init__(self, spec: dict, threads: int = 0):
        import torch

        from ..sampling.worker import SamplerSpec

        if threads:
            torch.set_num_threads(int(threads))
        self.spec = SamplerSpec(**spec)
        self.worker = self.spec.build()
        self.state = {"group": None, "step": 0, "steps": 0}

    def info(self) -> dict:
        import torch

        return {"identity": self.worker.identity, "pid": os.getpid(), "host": platform.node(),
                "node": _node_id(), "device": str(self.spec.resolved_device()), "threads": torch.get_num_threads()}

    def progress(self) -> dict:
        return dict(self.state, pid=os.getpid())

    def run_group(self, job, index: int):
        self.state = {"group": int(index), "step": 0, "steps": int(job.steps)}
        self.worker.check_job(job)  # errors (too many views for the embeddings...) as on the local path

        def hook(i, n, _x0):
            self.state = {"group": int(index), "step": i + 1, "steps": n}

        try:
            res = self.worker.run_group(job, int(index), hook)
            return res, {"pid": os.getpid(), "host": platform.node(), "node": _node_id()}
        finally:
            self.state = {"group": None, "step": 0, "steps": 0}


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray
        return ""


@dataclass
class _Work:
    job_ref: object
    index: int
    sink: queue.Queue
    token: int = 0
    attempts: int = 0
    cancelled: bool = False


@dataclass
class _Slot:
    handle: object
    info: dict = field(default_factory=dict)
    work: Optional[_Work] = None
    ref: object = None
    progress_ref: object = None
    polled: float = 0.0
    last_step: int = -1
    alive: bool = True


class RayExecutor:
    """View groups on Ray actors.

    ``spec``: how each actor builds its worker.  ``address``: see :func:`.raylib.connect` (``None`` reads
    ``RAY_ADDRESS``; empty starts Ray here).  ``gpus``: ``None`` = one actor per GPU of the cluster, or CPU actors
    when it has none; ``0`` = CPU actors; ``N`` = N GPU actors (an error when the cluster has fewer GPUs).
    ``actors``: number of actors (CPU mode: default the cluster's CPUs / ``cpus_per_actor``); ``max_actors`` caps
    it (e.g. at the number of groups to run).  ``threads``: torch threads per actor (default ``cpus_per_actor``).
    ``retries``: Ray's ``max_restarts`` and ``max_task_retries`` per actor; afterwards a group is handed to another
    actor up to ``retries`` more times.
    """

    POLL_S = 0.5

    def __init__(self, spec, address: Optional[str] = None, gpus: Optional[int] = None,
                 actors: Optional[int] = None, max_actors: Optional[int] = None, cpus_per_actor: int = 1,
                 threads: Optional[int] = None, retries: int = 2, start_timeout: float = 600.0,
                 connect_timeout: float = 5.0, num_cpus: Optional[int] = None, log=None):
        self.ray = connect(address, num_cpus=num_cpus, timeout=connect_timeout)
        ray = self.ray
        self.log = log or (lambda msg: None)
        res = cluster_resources(ray)
        have_gpus = int(res.get("GPU", 0))
        if gpus is not None and gpus < 0:
            raise InputError("gpus", f"expected 0 or more, got {gpus}")
        if gpus is None:
            gpus = have_gpus if actors is None else (min(actors, have_gpus) if have_gpus else 0)
        elif gpus:
            check_gpus(ray, gpus)
        if cpus_per_actor < 1:
            raise InputError("cpus_per_actor", f"expected 1 or more, got {cpus_per_actor}")
        if gpus:
            n = gpus if actors is None else int(actors)
            if n > gpus:
                raise InputError("actors", f"{n} GPU actors need {n} GPUs; {gpus} requested")
            opts = {"num_gpus": 1, "num_cpus": cpus_per_actor}
            device = "cuda"
        else:
            cpus = int(res.get("CPU", 1))
            n = int(actors) if actors is not None else max(1, cpus // cpus_per_actor)
            if n * cpus_per_actor > cpus:
                raise InputError("actors", f"{n} actors x {cpus_per_actor} CPU(s) need {n * cpus_per_actor} CPUs but "
                                           f"the Ray cluster has {cpus}; ask for fewer actors")
            opts = {"num_gpus": 0, "num_cpus": cpus_per_actor}
            device = "cpu"
        if max_actors is not None:
            n = max(1, min(n, int(max_actors)))
        if n < 1:
            raise InputError("actors", f"expected at least 1 actor, got {n}")
        self.retries = int(retries)
        spec_d = asdict(spec)
        spec_d["device"] = device
        self.spec = spec_d
        remote = ray.remote(_GroupActor).options(max_restarts=self.retries, max_task_retries=self.retries,
                                                 max_concurrency=2, **opts)
        self._slots = [_Slot(remote.remote(spec_d, threads if threads is not None else cpus_per_actor))
                       for _ in range(n)]
        self.log(f"starting {n} {'GPU' if gpus else 'CPU'} actor(s) ({opts})")
        try:
            infos = ray.get([s.handle.info.remote() for s in self._slots], timeout=start_timeout)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise CharacterShotError(
                f"the {n} actors did not start within {start_timeout:g} s: each needs {opts} and the cluster has "
                f"{ {k: v for k, v in res.items() if k in ('CPU', 'GPU')} } (other jobs may hold them); ask for "
                "fewer actors or free resources") from None
        except ray.exceptions.RayActorError as e:
            self.close()
            raise CharacterShotError(f"an actor could not load the models: {_cause(e)}") from None
        except ray.exceptions.RayTaskError as e:
            self.close()
            raise CharacterShotError(f"an actor could not load the models: {_cause(e)}") from None
        for s, info in zip(self._slots, infos):
            s.info = info
        ids = {i["identity"] for i in infos}
        if len(ids) != 1:
            where = ", ".join(f"{i['host']} pid {i['pid']}: {i['identity'][:12]}" for i in infos)
            self.close()
            raise CharacterShotError("the actors loaded different model files (model identity differs: " + where +
                                     "); every node must see the same files (a shared folder, or copies with the "
                                     "same sizes and modification times: rsync -a / cp -p)")
        self.identity = ids.pop()
        self.gpus = gpus
        self._lock = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self.history: list = []     # (group index, {"pid", "host", "node"} of its actor, id(job)), in order
        self._thread: Optional[threading.Thread] = None
        self._stop = False
        self._closed = False

    # ------------------------------------------------------------------------------------------------ public
    @property
    def actors(self) -> list:
        return [s.info for s in self._slots if s.alive]

    def actor_progress(self, timeout: float = 60.0) -> list:
        """What each live actor is doing now: ``{"group": index or None, "step", "steps", "pid"}``."""
        return self.ray.get([s.handle.progress.remote() for s in self._slots if s.alive], timeout=timeout)

    def run(self, job, indices: Iterable[int], on_step=None) -> Iterator:
        """Hand the groups ``indices`` of ``job`` to the actors; yield each :class:`GroupResult` as it finishes.
        ``on_step(group, step, steps, None)`` reports remote steps (no latent preview crosses the network)."""
        indices = [int(i) for i in indices]
        if not indices:
            return
        if self._closed:
            raise CharacterShotError("the Ray executor is closed")
        sink: queue.Queue = queue.Queue()
        job_ref = self.ray.put(job)
        works = [_Work(job_ref, gi, sink, id(job)) for gi in indices]
        with self._lock:
            self._queue.extend(works)
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, name="charactershot-ray", daemon=True)
                self._thread.start()
            self._lock.notify_all()
        left = set(indices)
        try:
            while left:
                try:
                    kind, payload = sink.get(timeout=1.0)
                except queue.Empty:
                    if self._thread is None or not self._thread.is_alive():
                        raise CharacterShotError("the Ray dispatcher stopped") from None
                    continue
                if kind == "step":
                    if on_step is not None:
                        on_step(payload[0], payload[1], payload[2], None)
                elif kind == "result":
                    left.discard(payload.index)
                    yield payload
                elif kind == "note":
                    self.log(payload)
                else:
                    raise payload
        finally:
            with self._lock:
                for w in works:
                    w.cancelled = True
                self._queue = collections.deque(w for w in self._queue if not w.cancelled)

    def close(self) -> None:
        """Stop the actors (their GPUs become free for other tasks)."""
        self._closed = True
        lock = getattr(self, "_lock", None)
        if lock is not None:
            with lock:
                self._stop = True
                lock.notify_all()
            if self._thread is not None:
                self._thread.join(timeout=10)
        for s in self._slots:
            try:
                self.ray.kill(s.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
            s.alive = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------------------------ dispatch
    def _dispatch(self) -> None:
        try:
            self._dispatch_loop()
        except Exception as e:  # noqa: BLE001 - every waiting run() must hear about it
            err = CharacterShotError(f"the Ray dispatcher failed: {type(e).__name__}: {e}")
            with self._lock:
                pending = list(self._queue) + [s.work for s in self._slots if s.work is not None]
                self._queue.clear()
            for w in pending:
                w.sink.put(("error", err))

    def _dispatch_loop(self) -> None:
        ray = self.ray
        while True:
            with self._lock:
                if self._stop:
                    return
                if self._queue and not any(s.alive for s in self._slots):
                    for w in self._queue:
                        w.sink.put(("error", CharacterShotError(
                            f"view group {w.index}: no Ray actor is left (all died and Ray's restarts are used up); "
                            "finished groups are stored, rerun to do the rest")))
                    self._queue.clear()
                for s in self._slots:
                    if s.alive and s.work is None:
                        while self._queue and self._queue[0].cancelled:
                            self._queue.popleft()
                        if not self._queue:
                            break
                        w = self._queue.popleft()
                        s.work, s.last_step, s.polled = w, -1, time.monotonic()
                        s.ref = s.handle.run_group.remote(w.job_ref, w.index)
                busy = [s for s in self._slots if s.work is not None]
                if not busy:
                    self._lock.wait(0.2)
                    continue
            now = time.monotonic()
            for s in busy:
                if s.progress_ref is None and now - s.polled >= self.POLL_S:
                    s.progress_ref, s.polled = s.handle.progress.remote(), now
            refs = [s.ref for s in busy] + [s.progress_ref for s in busy if s.progress_ref is not None]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.2, fetch_local=True)
            ready = set(ready)
            for s in busy:
                if s.progress_ref is not None and s.progress_ref in ready:
                    self._on_progress(s)
                if s.ref in ready:
                    self._on_done(s)

    def _on_progress(self, s: _Slot) -> None:
        ref, s.progress_ref = s.progress_ref, None
        try:
            p = self.ray.get(ref)
        except Exception:  # noqa: BLE001 - the actor died or restarts: its task result says what happened
            return
        w = s.work
        if w is not None and not w.cancelled and p.get("group") == w.index and p["step"] > s.last_step and p["step"]:
            s.last_step = p["step"]
            w.sink.put(("step", (w.index, p["step"] - 1, p["steps"])))

    def _on_done(self, s: _Slot) -> None:
        ray = self.ray
        w, ref = s.work, s.ref
        s.work, s.ref = None, None
        try:
            res, where = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            s.alive = False
            w.attempts += 1
            others = [o for o in self._slots if o.alive]
            if others and w.attempts <= self.retries:
                note = (f"actor pid {s.info.get('pid')} on {s.info.get('host')} is gone after Ray's retries; "
                        f"group {w.index} goes to another actor")
                w.sink.put(("note", note))
                with self._lock:
                    self._queue.appendleft(w)
                return
            w.sink.put(("error", CharacterShotError(f"view group {w.index}: the actor running it died and no actor "
                                                    f"is left to retry it ({_cause(e)})")))
            return
        except ray.exceptions.RayTaskError as e:
            w.sink.put(("error", _cause_exc(e)))
            return
        except Exception as e:  # noqa: BLE001 - object lost etc.
            w.sink.put(("error", CharacterShotError(f"view group {w.index}: {type(e).__name__}: {e}")))
            return
        self.history.append((w.index, where, w.token))
        if not w.cancelled:
            w.sink.put(("result", res))


def _cause_exc(e) -> BaseException:
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def _cause(e) -> str:
    c = _cause_exc(e)
    text = str(c).strip().splitlines()
    return f"{type(c).__name__}: {text[-1] if text else ''}"

"""Who runs the view groups: the executor seam.

:func:`sample_multiview` decides what is left to do (groups already in the store are reused), hands the rest to an
executor and stores every group the moment it finishes, so an error or an interrupt in a later group loses nothing.

An executor has one method, ``run(job, indices, on_step) -> iterator of GroupResult`` (results may arrive in any
order).  :class:`LocalExecutor` runs groups one after the other in this process with one worker; it is the default
and needs nothing beyond the pack.  Other executors (``charactershot_core.distributed``) run them elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import torch

from ..errors import CharacterShotError, InputError
from .job import GroupResult, MultiViewJob, assemble
from .store import GroupStore

GroupStepHook = Callable[[int, int, int, Callable[[], torch.Tensor]], None]  # (group, step, steps, x0_fn)


class LocalExecutor:
    """Runs the groups in this process, in the order given, with one :class:`MultiViewWorker`."""

    def __init__(self, worker):
        self.worker = worker

    @property
    def identity(self) -> str:
        return self.worker.identity

    def run(self, job: MultiViewJob, indices: Iterable[int],
            on_step: Optional[GroupStepHook] = None) -> Iterator[GroupResult]:
        for gi in indices:
            hook = None if on_step is None else (lambda i, n, x0, gi=gi: on_step(gi, i, n, x0))
            yield self.worker.run_group(job, gi, hook)


@dataclass
class MultiViewResult:
    """The groups asked for, reused or sampled, and (when every group is there) the assembled views."""

    job: MultiViewJob
    results: dict                                   # group index -> GroupResult
    frames: Optional[torch.Tensor] = None           # (V, F, H, W, 3) uint8 when all groups are present
    reused: list = field(default_factory=list)      # indices of groups taken from the store
    sampled: list = field(default_factory=list)     # indices of groups sampled now

    @property
    def complete(self) -> bool:
        return self.frames is not None


class GroupFailure(CharacterShotError):
    """A group failed; ``finished`` says which groups are safe in the store (and where)."""

    def __init__(self, message: str, finished: dict):
        super().__init__(message)
        self.finished = finished


def finished_summary(results: dict) -> str:
    if not results:
        return "no group had finished"
    parts = [f"group {gi} ({r.path})" for gi, r in sorted(results.items())]
    return "finished groups are kept and reused on a rerun with the same inputs, model and seed: " + ", ".join(parts)


def sample_multiview(job: MultiViewJob, executor, store: Optional[GroupStore] = None,
                     groups: Optional[Iterable[int]] = None, on_step: Optional[GroupStepHook] = None,
                     on_group: Optional[Callable[[GroupResult], None]] = None,
                     reuse: bool = True, passthrough: tuple = ()) -> MultiViewResult:
    """Sample the groups ``groups`` (default: all) of ``job``; reuse and persist through ``store``.

    ``executor`` is a :class:`LocalExecutor` (or anything with ``identity`` and ``run``).  Every group is stored the
    moment it finishes, so nothing finished is lost whatever stops the run.  Errors that are ``Exception``s are
    wrapped in :class:`GroupFailure` naming the finished groups, except the types in ``passthrough`` (a host's
    Cancel: ComfyUI 0.3.75's ``InterruptProcessingException`` is an ``Exception``), which propagate unchanged, as
    do ``BaseException``s (newer ComfyUI's Cancel, ``KeyboardInterrupt``) and out-of-memory errors.
    """
    wanted = list(range(len(job.groups))) if groups is None else sorted({int(g) for g in groups})
    bad = [g for g in wanted if not 0 <= g < len(job.groups)]
    if bad:
        raise InputError("groups", f"group indices {bad} out of range: the job has {len(job.groups)} groups "
                                   f"(0..{len(job.groups) - 1})")
    identity = executor.identity
    results: dict = {}
    reused, todo = [], []
    for gi in wanted:
        key = job.group_key(gi, identity)
        if reuse and store is not None and store.has(key):
            res = store.load(key)
            res.index = gi
            results[gi] = res
            reused.append(gi)
            if on_group:
                on_group(res)
        else:
            todo.append(gi)
    sampled = []
    try:
        for res in executor.run(job, todo, on_step):
            if store is not None:
                store.save(res, job.describe())
            results[res.index] = res
            sampled.append(res.index)
            if on_group:
                on_group(res)
    except CharacterShotError as e:
        if store is not None and results:
            raise GroupFailure(f"{e}; {finished_summary(results)}", results) from e
        raise
    except (torch.OutOfMemoryError, *passthrough):
        raise
    except Exception as e:  # noqa: BLE001 - BaseExceptions (Cancel, KeyboardInterrupt) are not caught at all
        raise GroupFailure(f"view group sampling failed: {type(e).__name__}: {e}; {finished_summary(results)}",
                           results) from e
    frames = None
    if len(results) == len(job.groups):
        frames = assemble(job.groups, results, job.num_views)
    return MultiViewResult(job, results, frames, reused, sampled)

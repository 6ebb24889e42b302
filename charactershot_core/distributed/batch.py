"""Whole characters: views -> multi-view videos (view groups on an executor) -> 4D fit -> export.

:func:`run_batch` reads every character's inputs first (a bad file fails before anything runs), then hands the view
groups of all characters to one executor: :class:`~charactershot_core.sampling.executor.LocalExecutor` (in this
process, one group after the other: no new dependency) or :class:`.executor.RayExecutor` (actors on every GPU of a
cluster; the characters' groups share them).  Each character's output folder is the ``sample`` CLI's
(``run.json``, ``groups/``, ``viewXX/``, ``cameras.json``), so a rerun skips finished groups and ``merge`` works on
it.  Once a character's groups are all there, its 4D fit runs as its own task (a Ray task on the cluster) into
``OUT/fit4d/`` and the export (per-frame ``.ply`` + ``.cs4d`` bundle) into ``OUT/export/``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import CharacterShotError, InputError
from .jobs import Character, JobsFile, fit_argv

FIT_DIR = "fit4d"
EXPORT_DIR = "export"


@dataclass
class Prepared:
    character: Character
    args: object            # the 'sample' command line of this character (argparse.Namespace)
    job: object             # MultiViewJob


@dataclass
class Outcome:
    name: str
    out: str
    groups: int = 0
    sampled: list = field(default_factory=list)
    reused: list = field(default_factory=list)
    complete: bool = False
    fit_dir: Optional[str] = None
    export_files: list = field(default_factory=list)
    error: Optional[str] = None
    seconds: float = 0.0
    workers: list = field(default_factory=list)   # Ray: (group index, {"pid", "host", "node"}) of each sampled group

    def summary(self) -> dict:
        return {"name": self.name, "out": self.out, "complete": self.complete, "groups": self.groups,
                "sampled": self.sampled, "reused": self.reused, "views": self.out if self.complete else None,
                "groups_dir": os.path.join(self.out, "groups"), "fit": self.fit_dir,
                "export": self.export_files, "error": self.error, "seconds": round(self.seconds, 2)}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sample_args(parser, jobs: JobsFile, ch: Character):
    """The ``sample`` command line of one character (the sample CLI's parser gives the defaults and checks)."""
    f, t = ch.fields, jobs.top
    argv = ["sample", "--views", f["views"], "--poses", f["poses"], "--reference-pose", f["reference_pose"],
            "--out", f["out"], "--model", t["model"], "--dtype", t.get("dtype", "auto"),
            "--weight-storage", t.get("weight_storage", "default"), "--text-mode", t.get("text_mode", "faithful"),
            "--camera-source", t.get("camera_source", "checkpoint")]
    for key in ("vae", "camera", "t5"):
        if t.get(key):
            argv += [f"--{key}", t[key]]
    text = f.get("text") or t.get("text")
    if text:
        argv += ["--text", text]
    for key in ("seed", "steps", "cfg", "num_frames", "scheduler", "dynamic_cfg", "prompt", "negative_prompt",
                "cameras", "group_size"):
        if f.get(key) is not None:
            argv += ["--" + key.replace("_", "-"), str(f[key])]
    if f.get("low_memory"):
        argv.append("--low-memory")
    return parser.parse_args(argv)


def prepare(jobs: JobsFile, log: Callable[[str], None] = _say) -> list:
    """Every character's :class:`MultiViewJob` (inputs read and checked, text encoded once per prompt)."""
    from ..__main__ import build_parser
    from ..sampling.cli import _text, build_job

    parser = build_parser()
    texts: dict = {}
    out = []
    for ch in jobs.characters:
        args = sample_args(parser, jobs, ch)
        tkey = (args.text, args.t5, args.model, args.prompt, args.negative_prompt)
        try:
            if tkey not in texts:
                texts[tkey] = _text(args)
            job = build_job(args, texts[tkey])
        except InputError as e:
            field_ = {"pose_frames": "poses", "rig": "cameras"}.get(e.input_name, e.input_name)
            where = ch.where(field_) if field_ in ch.key_lines else f"line {ch.line}, characters[{ch.index}]"
            raise InputError("jobs", f"{jobs.path}: {where} ({ch.name}): {e}") from None
        for w in job.warnings:
            log(f"[{ch.name}] warning: {w}")
        out.append(Prepared(ch, args, job))
    return out


# ------------------------------------------------------------------------------------------------------ fit
def fit_and_export(fit_args: list, weights: str, export_dir: str) -> dict:
    """The fit4d command line, then the export of its weights (runs in a Ray task or in this process)."""
    from ..__main__ import build_parser

    parser = build_parser()
    with contextlib.redirect_stdout(sys.stderr):  # their reports are progress here; stdout is the summary's
        a = parser.parse_args(fit_args)
        a.func(a)
        e = parser.parse_args(["export", "--weights", weights, "--out", export_dir])
        e.func(e)
    return {"weights": weights, "export": sorted(os.path.join(export_dir, n) for n in os.listdir(export_dir))}


def _fit_remote(ray, gpus: int):
    return ray.remote(fit_and_export).options(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=1)


# ------------------------------------------------------------------------------------------------------ run
def run_batch(jobs: JobsFile, use_ray: bool = False, address: Optional[str] = None, gpus: Optional[int] = None,
              actors: Optional[int] = None, cpus_per_actor: int = 1, threads: Optional[int] = None,
              connect_timeout: float = 5.0, num_cpus: Optional[int] = None, quiet: bool = False,
              retries: int = 2, log: Callable[[str], None] = _say) -> list:
    """Sample (and fit, where asked) every character of ``jobs``; returns one :class:`Outcome` per character.
    A failing character does not stop the others; finished groups are kept in its ``groups/`` folder."""
    from ..sampling.cli import _spec

    prepared = prepare(jobs, log)
    spec = _spec(prepared[0].args)
    total_groups = sum(len(p.job.groups) for p in prepared)
    if use_ray:
        executor, fit_remote = _ray_executor(spec, total_groups, log, address=address, gpus=gpus, actors=actors,
                                             cpus_per_actor=cpus_per_actor, threads=threads,
                                             connect_timeout=connect_timeout, num_cpus=num_cpus, retries=retries)
    else:
        executor, fit_remote = _local_executor(spec, threads), None
    outcomes = {p.character.index: Outcome(p.character.name, os.path.abspath(p.args.out), len(p.job.groups))
                for p in prepared}
    sampled_events = {i: threading.Event() for i in outcomes}

    def one(p: Prepared) -> None:
        _run_character(p, executor, outcomes[p.character.index], sampled_events[p.character.index], use_ray,
                       fit_remote, quiet, log)

    try:
        if use_ray:
            _run_on_ray(prepared, one, executor, sampled_events)
        else:
            for p in prepared:
                one(p)
    finally:
        if use_ray:
            executor.close()
    return [outcomes[i] for i in sorted(outcomes)]


def _ray_executor(spec, total_groups: int, log: Callable[[str], None], **options):
    """Ray actors for the view groups (one per GPU or as asked, at most one per group) and the remote fit task."""
    from .executor import RayExecutor

    t0 = time.time()
    executor = RayExecutor(spec, max_actors=total_groups, log=log, **options)
    log(f"ray: {len(executor.actors)} actor(s) ready in {time.time() - t0:.1f} s: " + ", ".join(
        f"{a['host']} pid {a['pid']} {a['device']}" for a in executor.actors))
    return executor, _fit_remote(executor.ray, executor.gpus)


def _local_executor(spec, threads: Optional[int]):
    """This process's worker: the models built once for every character."""
    from ..sampling.executor import LocalExecutor

    if threads:
        import torch

        torch.set_num_threads(threads)
    return LocalExecutor(spec.build())


def _run_on_ray(prepared: list, one: Callable, executor, sampled_events: dict) -> None:
    """Every character in its own thread (their groups share the actors); once every group is back the actors are
    closed, freeing their resources (GPUs) for the fit tasks, then the threads are joined."""
    threads_ = [threading.Thread(target=one, args=(p,), name=f"charactershot-{p.character.name}", daemon=True)
                for p in prepared]
    for t in threads_:
        t.start()
    for e in sampled_events.values():
        while not e.wait(0.5):
            pass
    executor.close()
    for t in threads_:
        while t.is_alive():
            t.join(0.5)


def _run_character(p: Prepared, executor, oc: Outcome, sampled: threading.Event, use_ray: bool, fit_remote,
                   quiet: bool, log: Callable[[str], None]) -> None:
    """Sample one character's views (and fit them, where asked) into ``oc``; errors are recorded, not raised.
    ``sampled`` is set once its groups are done (or it failed)."""
    name = p.character.name
    t1 = time.time()
    try:
        try:
            _sample_character(p, executor, oc, use_ray, quiet, log)
        finally:
            sampled.set()
        if p.character.fit is not None:
            _fit_character(p, executor, oc, fit_remote, log)
    except (CharacterShotError, OSError) as e:
        oc.error = str(e)
        log(f"[{name}] FAILED: {e}")
    except Exception as e:  # noqa: BLE001 - one character's failure must not stop the others
        cause = getattr(e, "cause", None) or e
        oc.error = f"{type(cause).__name__}: {cause}"
        log(f"[{name}] FAILED: {oc.error}")
    finally:
        sampled.set()
        oc.seconds = time.time() - t1


def _sample_character(p: Prepared, executor, oc: Outcome, use_ray: bool, quiet: bool,
                      log: Callable[[str], None]) -> None:
    """All view groups of one character (finished groups reused), assembled into ``viewXX/`` frames."""
    from ..sampling.cli import GROUPS_DIR, write_assembled, write_run_file
    from ..sampling.executor import sample_multiview
    from ..sampling.store import GroupStore

    job, name = p.job, p.character.name
    t1 = time.time()
    if not use_ray:
        for w in executor.worker.check_job(job):
            log(f"[{name}] warning: {w}")
    write_run_file(oc.out, job, executor.identity)
    store = GroupStore(os.path.join(oc.out, GROUPS_DIR))
    ng = len(job.groups)
    log(f"[{name}] {ng} view groups, {job.num_views} views x {job.num_frames} frames, seed {job.seed}")

    def on_step(gi, i, n, _x0):
        if not quiet and (i == 0 or i == n - 1 or (i + 1) % 10 == 0):
            log(f"[{name}] group {gi + 1}/{ng}: step {i + 1}/{n}")

    def on_group(res):
        how = "reused" if res.reused else "sampled"
        log(f"[{name}] group {res.index + 1}/{ng} {how} (views {res.views}) -> {res.path}")

    result = sample_multiview(job, executor, store, on_step=on_step, on_group=on_group)
    oc.sampled, oc.reused = sorted(result.sampled), sorted(result.reused)
    if use_ray:
        oc.workers = [(gi, where) for gi, where, tok in list(executor.history) if tok == id(job)]
    write_assembled(oc.out, result.frames, job.rig, job.rig.times if job.rig is not None else None)
    oc.complete = True
    log(f"[{name}] all {ng} groups: {job.num_views} views x {job.num_frames} frames -> {oc.out} "
        f"({time.time() - t1:.1f} s)")


def _fit_character(p: Prepared, executor, oc: Outcome, fit_remote, log: Callable[[str], None]) -> None:
    """The 4D fit and export of one character's assembled views (a Ray task when ``fit_remote`` is given)."""
    from ..gaussians.cli import WEIGHTS_NAME

    name = p.character.name
    fit_dir = os.path.join(oc.out, FIT_DIR)
    argv = fit_argv(p.character.fit, oc.out, os.path.join(oc.out, "cameras.json"), fit_dir)
    weights = os.path.join(fit_dir, WEIGHTS_NAME)
    export_dir = os.path.join(oc.out, EXPORT_DIR)
    log(f"[{name}] 4D fit" + (" task submitted" if fit_remote else " started"))
    if fit_remote is not None:
        res = executor.ray.get(fit_remote.remote(argv, weights, export_dir))
    else:
        res = fit_and_export(argv, weights, export_dir)
    oc.fit_dir, oc.export_files = fit_dir, res["export"]
    log(f"[{name}] 4D fit done -> {fit_dir}; export -> {export_dir} ({len(res['export'])} files)")


def format_summary(outcomes: list) -> str:
    lines = ["summary:"]
    for o in outcomes:
        if o.error:
            lines.append(f"  {o.name}: FAILED ({o.error}); finished groups are kept in {os.path.join(o.out, 'groups')}"
                         " and reused by a rerun")
            continue
        parts = [f"views -> {o.out} (viewXX/frame_XXXXX.png, cameras.json)",
                 f"groups: {len(o.sampled)} sampled, {len(o.reused)} reused ({os.path.join(o.out, 'groups')})"]
        if o.fit_dir:
            parts.append(f"4D fit -> {o.fit_dir}")
            parts.append(f"export -> {os.path.dirname(o.export_files[0]) if o.export_files else '-'} "
                         f"({len(o.export_files)} files)")
        lines.append(f"  {o.name}: {'; '.join(parts)} [{o.seconds:.1f} s]")
    return "\n".join(lines)

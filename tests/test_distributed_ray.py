"""View groups on a local Ray (num_cpus=2, one Ray per module): two actors split a character's groups and the
result equals the sequential local run exactly; a killed actor's group is retried and the result is still equal;
clear errors for too many GPUs.  Tiny checkpoints, 2 steps."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

ray = pytest.importorskip("ray")

from charactershot_core.errors import InputError  # noqa: E402
from charactershot_core.sampling.executor import LocalExecutor, sample_multiview  # noqa: E402
from charactershot_core.sampling.store import GroupStore  # noqa: E402
from tests.distributed_inputs import equal_results, make_inputs, make_job  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from charactershot_core.distributed import raylib

    inp = make_inputs(tmp_path_factory.mktemp("ray_local"))
    job, spec = make_job(inp)
    # the sequential reference, with the actors' thread count (1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        worker = spec.build()
        reference = sample_multiview(job, LocalExecutor(worker), None)
    finally:
        torch.set_num_threads(threads)
    assert reference.complete and len(job.groups) == 2
    raylib.connect("", num_cpus=2)
    yield {"inp": inp, "job": job, "spec": spec, "reference": reference, "identity": worker.identity}
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(setup):
    from charactershot_core.distributed.executor import RayExecutor

    ex = RayExecutor(setup["spec"], actors=2)
    yield ex
    ex.close()


def test_two_actors_split_the_groups_and_equal_the_sequential_run(setup, executor, tmp_path):
    assert executor.identity == setup["identity"]  # same model identity -> same group keys as the local run
    store = GroupStore(tmp_path / "groups")
    n0 = len(executor.history)
    res = sample_multiview(setup["job"], executor, store)
    assert res.complete and sorted(res.sampled) == [0, 1]
    assert equal_results(res, setup["reference"])
    pids = {where["pid"] for _, where, _ in executor.history[n0:]}
    assert len(pids) == 2, f"both actors should have taken a group: {executor.history[n0:]}"
    # stored groups reload to the same bytes, and a rerun reuses them without sending work to the actors
    again = sample_multiview(setup["job"], executor, store)
    assert again.reused == [0, 1] and again.sampled == [] and len(executor.history) == n0 + 2
    assert equal_results(again, setup["reference"])


def test_killed_actor_is_retried_and_the_result_is_unchanged(setup, executor):
    job = setup["job"]
    out = {}

    def run():
        try:
            out["res"] = sample_multiview(job, executor, None)
        except BaseException as e:  # noqa: BLE001
            out["err"] = e

    n0 = len(executor.history)
    t = threading.Thread(target=run)
    t.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and t.is_alive():
        for p in executor.actor_progress():
            # mid-group: encoding, denoising or decoding left (the group is cleared only as the result returns);
            # tiny groups spend most of their time decoding, so waiting for a step < steps can miss them all
            if p["group"] is not None:
                os.kill(p["pid"], signal.SIGKILL)
                killed = p
                break
        time.sleep(0.05)
    t.join(300)
    assert killed is not None, "no actor was seen mid-group"
    assert "err" not in out, out.get("err")
    res = out["res"]
    assert equal_results(res, setup["reference"])
    redone = [where for gi, where, _ in executor.history[n0:] if gi == killed["group"]]
    assert redone and redone[0]["pid"] != killed["pid"], "the killed actor's group must be recomputed elsewhere"


def test_more_gpus_than_the_cluster_has_is_a_clear_error(setup):
    from charactershot_core.distributed.executor import RayExecutor

    with pytest.raises(InputError, match=r"gpus: 2 GPU\(s\) requested but the Ray cluster has 0"):
        RayExecutor(setup["spec"], gpus=2)

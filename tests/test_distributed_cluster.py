"""Two characters on a Ray cluster of two fake nodes (``ray.cluster_utils.Cluster``, one CPU each, one cluster per
module): the batch runs both characters' view groups on actors of both nodes, fits one character as its own task
and says where everything is; ``submit_to_ray`` (the Ray driver in a child process, the route for the ComfyUI
server) stops at once on an interrupt, gives the same bytes for the same character and reuses finished groups."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from tests.distributed_inputs import FRAMES, VIEWS, make_inputs, make_job, write_jobs  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    from charactershot_core.distributed import raylib

    root = tmp_path_factory.mktemp("ray_cluster")
    inp = make_inputs(root, characters=2)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    raylib.connect(c.address)
    yield {"inp": inp, "root": root, "address": c.address}
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def batch(cluster):
    from charactershot_core.distributed.batch import format_summary, run_batch
    from charactershot_core.distributed.jobs import load_jobs

    root, inp = cluster["root"], cluster["inp"]
    jobs = write_jobs(root / "jobs.json", inp, [
        {"name": "alice", "char": 0, "seed": 1, "out": "out/alice",
         "fit": {"iterations": 5, "scale": 0.5, "points": 300}},
        {"name": "bob", "char": 1, "seed": 2, "out": "out/bob"}])
    outcomes = run_batch(load_jobs(str(jobs)), use_ray=True, address=cluster["address"])
    return {"outcomes": outcomes, "summary": format_summary(outcomes), "root": root}


def test_two_characters_run_on_both_nodes(batch):
    alice, bob = batch["outcomes"]
    for o in (alice, bob):
        assert o.error is None and o.complete, o.error
        assert o.sampled == [0, 1] and o.reused == []
        views = sorted(n for n in os.listdir(o.out) if n.startswith("view"))
        assert views == [f"view{k:02d}" for k in range(VIEWS)]
        assert os.path.isfile(os.path.join(o.out, "cameras.json"))
        assert json.load(open(os.path.join(o.out, "run.json")))["job"]["seed"] in (1, 2)
    nodes = {where["node"] for o in (alice, bob) for _, where in o.workers}
    assert len(nodes) == 2, f"groups should run on both fake nodes: {[o.workers for o in (alice, bob)]}"
    # alice's 4D fit ran as its own task once her groups were done; bob asked for no fit
    assert os.path.isfile(os.path.join(alice.fit_dir, "gaussians.safetensors"))
    assert any(f.endswith("bundle.cs4d") for f in alice.export_files) and all(os.path.isfile(f)
                                                                               for f in alice.export_files)
    assert bob.fit_dir is None
    for o in (alice, bob):
        assert f"{o.name}: views -> {o.out}" in batch["summary"]
    assert "4D fit ->" in batch["summary"]


def test_submit_to_ray_from_a_child_process_matches_and_reuses(cluster, batch, tmp_path):
    from charactershot_core.distributed.submit import submit_to_ray
    from charactershot_core.gaussians.fitting.data import read_frames_dir
    from charactershot_core.sampling.store import GroupStore

    job, spec = make_job(cluster["inp"], char=0, seed=1)
    alice = batch["outcomes"][0]
    # group 1 is already finished (copied from the batch's store): the child must reuse it and sample group 0
    batch_store = GroupStore(os.path.join(alice.out, "groups"))
    store = tmp_path / "store"
    keys = json.load(open(os.path.join(alice.out, "run.json")))["group_keys"]
    shutil.copytree(batch_store.path(keys[1]), store / keys[1])
    # an exception in the caller's progress hook (ComfyUI's interrupt) stops the child and its actors at once and
    # keeps what is stored (a BaseException, as newer ComfyUI raises its Cancel)
    class Interrupted(BaseException):
        pass

    def interrupt(g, i, n, x0):
        raise Interrupted

    with pytest.raises(Interrupted):
        submit_to_ray(job, spec, cluster["address"], str(store), actors=1, on_step=interrupt)
    assert GroupStore(str(store)).keys() == [keys[1]] and os.listdir(store) == [keys[1]]
    deadline = time.time() + 60
    while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:  # the actor is gone
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == 2
    steps, groups = [], []
    res = submit_to_ray(job, spec, cluster["address"], str(store), actors=1,
                        on_step=lambda g, i, n, x0: steps.append((g, i, n)), on_group=lambda r: groups.append(r.index))
    assert res.complete and res.sampled == [0] and res.reused == [1] and sorted(groups) == [0, 1]
    assert steps and all(g == 0 for g, _, _ in steps)
    expected = read_frames_dir(alice.out)  # the batch's assembled PNGs of the same character and seed
    assert expected.shape[:2] == (VIEWS, res.frames.shape[1]) and res.frames.shape[1] >= FRAMES
    assert np.array_equal(res.frames.numpy(), expected)
    # the child stored group 0 under the batch's key (same model identity, same inputs), with the same latents
    assert sorted(os.listdir(store)) == sorted(keys)
    assert torch.equal(GroupStore(str(store)).load(keys[0]).latents, batch_store.load(keys[0]).latents)

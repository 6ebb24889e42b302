"""The sampling core: guidance, jobs and group keys, workers on tiny checkpoints, reuse, interrupts, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from charactershot_core.cameras import OFFICIAL_VIEW_GROUPS, official_rig, orbit_rig
from charactershot_core.errors import CharacterShotError, InputError
from charactershot_core.sampling import (Animate2DJob, GroupStore, LocalExecutor, MultiViewJob, MultiViewWorker,
                                         animate_2d, guidance_at, make_scheduler, sample_multiview)
from charactershot_core.sampling.executor import GroupFailure
from tests.cli_inprocess import run_main
from tests.comfy_host import REPO

H, W, F = 64, 96, 9
SPEC_DYNAMIC_CFG = [2.29, 2.54, 6.97, 6.42, 2.79, 4.27, 1.04, 4.17, 1.62, 6.98, 1.01, 2.87, 6.98, 1.63, 4.33, 2.44,
                    6.38, 6.01, 3.45, 3.20, 1.66, 6.61, 1.20, 4.30, 6.99, 1.52, 1.76, 1.06, 4.13, 1.48, 2.00, 5.95,
                    4.14, 6.53, 6.14, 7.00, 6.17, 1.12, 2.10, 6.69, 7.00, 2.34, 6.21, 1.25, 7.00, 6.86, 1.06, 1.00,
                    1.00, 1.12]


def test_dynamic_cfg_follows_the_timestep_value_as_officially():
    sched = make_scheduler("dpm")
    sched.set_timesteps(50)
    ts = [int(t) for t in sched.timesteps]
    assert ts[0] == 999 and ts[-1] == 19 and len(ts) == 50  # trailing spacing
    got = [guidance_at(6.0, 50, i, t, "timestep") for i, t in enumerate(ts)]
    assert max(abs(a - b) for a, b in zip(got, SPEC_DYNAMIC_CFG)) < 0.01  # the spec lists the values to 2 decimals
    fixed = [guidance_at(6.0, 50, i, t, "step_index") for i, t in enumerate(ts)]
    assert fixed[0] == 1.0 and all(b >= a for a, b in zip(fixed, fixed[1:])) and fixed[-1] > 6.5
    assert guidance_at(6.0, 50, 3, 900, "off") == 6.0


# ------------------------------------------------------------------------------------------------ jobs
def _images(n, seed, h=H, w=W):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, h, w, 3, generator=g) * 255).to(torch.uint8)


def _text(seed=0, s=226, d=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, s, d, generator=g), torch.randn(1, s, d, generator=g)


def _job(views=9, seed=5, steps=2, **kw):
    pos, neg = _text()
    rig = orbit_rig(views).resized(W, H) if views != 21 else official_rig().resized(W, H)
    poses = _images(F, 100)
    return MultiViewJob(_images(views, 1), poses, poses[0], pos, neg, seed=seed, steps=steps, rig=rig, **kw)


def test_official_groups_and_group_keys():
    pos, neg = _text()
    job21 = MultiViewJob(_images(21, 1), _images(F, 2), _images(1, 3)[0], pos, neg)
    assert job21.groups == OFFICIAL_VIEW_GROUPS
    job = _job()
    assert job.groups == [[0, 1, 3, 5, 7], [0, 2, 4, 6, 8]]
    k0, k1 = job.group_key(0, "m"), job.group_key(1, "m")
    assert k0 != k1 and job.group_key(0, "m") == k0
    assert job.group_key(0, "other model") != k0
    assert _job(seed=6).group_key(0, "m") != k0
    # a view of group 1 changed: group 0 keeps its key, group 1 does not
    changed = _job()
    changed.views[2] = 255 - changed.views[2]
    assert changed.group_key(0, "m") == k0 and changed.group_key(1, "m") != k1
    changed.pose_frames[1] = 0
    assert changed.group_key(0, "m") != k0
    # options that do not change the numbers do not change the key
    assert _job(low_memory=True).group_key(0, "m") == k0


def test_bad_job_inputs_are_named():
    pos, neg = _text()
    views, poses = _images(9, 1), _images(F, 2)
    with pytest.raises(InputError, match="pose_frames: expected 4k\\+1 frames"):
        MultiViewJob(views, _images(6, 2), poses[0], pos, neg)
    even = MultiViewJob(views, _images(5, 2), poses[0], pos, neg)
    assert any("decodes 8 frames, not 5" in w for w in even.warnings)
    with pytest.raises(InputError, match="views: image size 90x64 is not a multiple of 16"):
        MultiViewJob(_images(9, 1, w=90), _images(F, 2, w=90), poses[0, :, :90], pos, neg)
    with pytest.raises(InputError, match="pose_frames: size 112x64 differs"):
        MultiViewJob(views, _images(F, 2, w=112), poses[0], pos, neg)
    with pytest.raises(InputError, match="reference_pose: missing"):
        MultiViewJob(views, poses, None, pos, neg)
    with pytest.raises(InputError, match="views: the camera rig has 21 views but 9 view images"):
        MultiViewJob(views, poses, poses[0], pos, neg, rig=official_rig().resized(W, H))
    with pytest.raises(InputError, match="groups: views \\[8\\] are in no view group"):
        MultiViewJob(views, poses, poses[0], pos, neg, groups=[[0, 1, 2, 3], [0, 4, 5, 6, 7]])
    with pytest.raises(InputError, match="scheduler"):
        MultiViewJob(views, poses, poses[0], pos, neg, scheduler="euler")
    job = MultiViewJob(views, poses, poses[0], pos, neg)
    assert any("trained at 720x480" in w for w in job.warnings)
    assert any("trained on 25" in w for w in job.warnings)


# ------------------------------------------------------------------------------------------------ tiny models
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from charactershot_core.models.loading import load_model_2d, load_model_4d, load_vae
    from charactershot_core.models.tiny import make_tiny_set

    ts = make_tiny_set(str(tmp_path_factory.mktemp("tiny")), views=21, with_t5=True)
    model = load_model_4d(ts.official, None, torch.float32)
    vae = load_vae(ts.official, torch.float32)
    model2d = load_model_2d(ts.official_2d, torch.float32)
    return ts, model, vae, model2d


def test_reuse_interrupt_and_assembly(tiny, tmp_path):
    _, model, vae, _ = tiny
    worker = MultiViewWorker(model, vae)
    job = _job()
    warnings = worker.check_job(job)
    assert any("not the official 21-view orbit" in w for w in warnings)
    store = GroupStore(tmp_path / "store")

    class Stop(Exception):
        pass

    def stop_in_group_1(gi, i, n, x0):
        assert x0().shape == (1, 5, 4, 4, 8, 12)  # clean-latent estimate (1, Vg, L+1, C, h, w)
        if gi == 1:
            raise Stop()

    with pytest.raises(GroupFailure) as err:
        sample_multiview(job, LocalExecutor(worker), store, on_step=stop_in_group_1)
    assert "group 0 (" in str(err.value) and "reused on a rerun" in str(err.value)
    assert list(err.value.finished) == [0] and store.has(job.group_key(0, worker.identity))
    assert not store.has(job.group_key(1, worker.identity))

    steps = []
    res = sample_multiview(job, LocalExecutor(worker), store, on_step=lambda gi, i, n, x0: steps.append(gi))
    assert res.reused == [0] and res.sampled == [1] and set(steps) == {1}
    assert res.frames.shape == (9, F, H, W, 3) and res.frames.dtype == torch.uint8
    # view 0 comes from group 0; every other view from the group that lists it
    assert torch.equal(res.frames[0], res.results[0].frames[0])
    assert torch.equal(res.frames[8], res.results[1].frames[4])
    # a fresh run without the store gives exactly the stored + reused result
    fresh = sample_multiview(job, LocalExecutor(worker), None)
    assert torch.equal(fresh.frames, res.frames)
    assert torch.equal(fresh.results[0].latents, res.results[0].latents)


@pytest.mark.parametrize("base", [BaseException, Exception], ids=["cancel-as-BaseException", "cancel-as-Exception"])
def test_a_host_cancel_propagates_unchanged_and_keeps_finished_groups(tiny, tmp_path, base):
    """Newer ComfyUI raises its Cancel as a BaseException, 0.3.75 as an Exception (passed as ``passthrough``): either
    way the Cancel itself reaches the host (not a GroupFailure) and the group finished before it stays stored."""
    _, model, vae, _ = tiny
    worker = MultiViewWorker(model, vae)
    job = _job()
    store = GroupStore(tmp_path / "store")

    class Cancel(base):
        pass

    def cancel_in_group_1(gi, i, n, x0):
        if gi == 1:
            raise Cancel()

    with pytest.raises(Cancel):
        sample_multiview(job, LocalExecutor(worker), store, on_step=cancel_in_group_1,
                         passthrough=(Cancel,) if base is Exception else ())
    assert store.keys() == [job.group_key(0, worker.identity)]
    assert not [n for n in os.listdir(store.root) if n.startswith(".")], "no partial group folder left behind"


def test_low_memory_gives_the_same_numbers(tiny):
    _, model, vae, _ = tiny
    worker = MultiViewWorker(model, vae)
    a = worker.run_group(_job(), 0)
    b = worker.run_group(_job(low_memory=True), 0)
    assert (a.latents - b.latents).abs().max().item() <= 1e-5
    # without passing the negative text to the positive half, the faithful numbers would not be reproduced
    from charactershot_core.sampling import pipeline as P

    orig = P.predict_4d

    def no_frame_text(transformer, tokens, per_sample_text, rope=None):
        inner = orig(transformer, tokens, per_sample_text, rope)
        return lambda m, t, ts, ft: inner(m, t, ts, None)

    P.predict_4d = no_frame_text
    try:
        import charactershot_core.sampling.worker as Wk

        Wk.predict_4d = no_frame_text
        c = worker.run_group(_job(low_memory=True), 0)
    finally:
        P.predict_4d = orig
        Wk.predict_4d = orig
    assert (a.latents - c.latents).abs().max().item() > 1e-4


def test_model_kinds_and_camera_checks(tiny):
    _, model, vae, model2d = tiny
    with pytest.raises(InputError, match="model: this is the 2D pose model"):
        MultiViewWorker(model2d, vae)
    pos, neg = _text()
    job2d = Animate2DJob(_images(1, 1)[0], _images(F, 2), _images(1, 3)[0], pos, neg, steps=2)
    with pytest.raises(InputError, match="model2d: this is the CharacterShot multi-view"):
        animate_2d(model, vae, job2d)
    worker = MultiViewWorker(model, vae)
    assert worker.check_job(_job(views=21)) == []  # the official rig with the official embeddings
    with pytest.raises(InputError, match="views: 25 views but the model has 21 camera embeddings"):
        worker.check_job(_job(views=25))
    rigw = MultiViewWorker(model, vae, camera_source="from_rig")
    assert any("Plücker" in w for w in rigw.check_job(_job(views=25)))


def test_out_of_memory_names_the_options(tiny, monkeypatch):
    _, model, vae, _ = tiny
    worker = MultiViewWorker(model, vae)

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(model.transformer, "forward", oom)
    with pytest.raises(CharacterShotError, match="out of memory.*low_memory.*fp8_e4m3fn.*tiling"):
        worker.run_group(_job(), 0)


def test_animate_2d_uses_the_given_reference_pose(tiny):
    _, _, vae, model2d = tiny
    pos, neg = _text()
    image, poses = _images(1, 1)[0], _images(F, 2)
    a = animate_2d(model2d, vae, Animate2DJob(image, poses, _images(1, 3)[0], pos, neg, steps=2))
    b = animate_2d(model2d, vae, Animate2DJob(image, poses, _images(1, 4)[0], pos, neg, steps=2))
    assert a.shape == (F, H, W, 3) and a.dtype == torch.uint8
    assert not torch.equal(a, b)


# ------------------------------------------------------------------------------------------------ the CLI
def _write_inputs(root, views=9):
    from PIL import Image

    (root / "views").mkdir()
    (root / "poses").mkdir()
    for k, im in enumerate(_images(views, 1).numpy()):
        Image.fromarray(im).save(root / "views" / f"view{k}.png")
    for k, im in enumerate(_images(F + 1, 2).numpy()):
        Image.fromarray(im).save(root / "poses" / f"{k}.png")
    Image.fromarray(_images(1, 3)[0].numpy()).save(root / "ref.png")
    orbit_rig(views).resized(W, H).save(str(root / "cams.json"))


def _cli(*args):
    """``python -m charactershot_core ARGS`` in this process (tests/cli_inprocess.py); the sample runs below are
    real processes."""
    return run_main(*args)


def test_cli_two_processes_with_disjoint_groups_merge_to_one_run(tiny, tmp_path):
    ts = tiny[0]
    _write_inputs(tmp_path)
    common = ["sample", "--views", str(tmp_path / "views"), "--poses", str(tmp_path / "poses"), "--reference-pose",
              str(tmp_path / "ref.png"), "--model", ts.official, "--cameras", str(tmp_path / "cams.json"),
              "--num-frames", str(F), "--steps", "2", "--seed", "7", "--quiet", "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE")
    runs = {"run0": ["--groups", "0"], "run1": ["--groups", "1"], "all": []}
    procs = {name: subprocess.Popen([sys.executable, "-m", "charactershot_core", *common, *extra, "--out",
                                     str(tmp_path / name)], cwd=str(REPO), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, env=env)
             for name, extra in runs.items()}
    outs = {name: p.communicate(timeout=600)[0] for name, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), outs
    assert "groups [1] are left" in outs["run0"] and "all 2 groups done" in outs["all"]
    r = _cli("merge", "--out", str(tmp_path / "merged"), str(tmp_path / "run0"), str(tmp_path / "run1"))
    assert r.returncode == 0, r.stderr
    for v in range(9):
        a = sorted((tmp_path / "merged" / f"view{v:02d}").iterdir())
        b = sorted((tmp_path / "all" / f"view{v:02d}").iterdir())
        assert [p.name for p in a] == [f"frame_{i:05d}.png" for i in range(1, F + 1)]
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    cams = json.loads((tmp_path / "merged" / "cameras.json").read_text())
    assert len(cams["times"]) == F
    # the 4D stage reads the output folder directly
    from charactershot_core.gaussians.fitting.data import load_multiview

    mv = load_multiview(str(tmp_path / "merged"), str(tmp_path / "merged" / "cameras.json"))
    assert mv.frames.shape == (9, F, H, W, 3)
    # a run of another job (here: its group keys differ) cannot be merged into this one
    import shutil

    shutil.copytree(tmp_path / "run1", tmp_path / "other")
    info = json.loads((tmp_path / "other" / "run.json").read_text())
    info["group_keys"] = [k[::-1] for k in info["group_keys"]]
    (tmp_path / "other" / "run.json").write_text(json.dumps(info))
    bad = _cli("merge", "--out", str(tmp_path / "m2"), str(tmp_path / "run0"), str(tmp_path / "other"))
    assert bad.returncode == 1 and "runs: " in bad.stderr and "another job" in bad.stderr


def test_official_mp4_layout_is_read_group_by_group(tmp_path):
    import cv2

    from charactershot_core.sampling import read_official_mp4

    groups = [[0, 1, 3], [0, 2, 4]]
    colours = {0: (250, 10, 10), 1: (10, 250, 10), 2: (10, 10, 250), 3: (250, 250, 10), 4: (10, 250, 250)}
    path = str(tmp_path / "official.mp4")
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for g in groups:
        for v in g:
            for _ in range(5):
                vw.write(np.full((48, 64, 3), colours[v][::-1], np.uint8))
    vw.release()
    arr = read_official_mp4(path, groups, frames_per_view=5)
    assert arr.shape == (5, 5, 48, 64, 3)
    for v in range(5):
        assert np.abs(arr[v].reshape(-1, 3).mean(0) - np.array(colours[v])).max() < 12
    with pytest.raises(InputError, match="video: .* has 30 frames; expected 2 groups x 3 views x 4 frames"):
        read_official_mp4(path, groups, frames_per_view=4)


def test_latent_preview_map_is_fitted_on_the_reference():
    from charactershot_core.sampling.preview import fit_latent_to_rgb, latents_to_rgb, preview_strip

    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 8, 12, generator=g)
    a_true = torch.randn(3, 4, generator=g) * 0.03  # stays inside [0, 1]: no clamping
    rgb = (torch.einsum("kc,chw->hwk", a_true, z) + 0.5).clamp(0, 1)
    image = (torch.nn.functional.interpolate(rgb.permute(2, 0, 1)[None], scale_factor=8, mode="nearest")[0]
             .permute(1, 2, 0) * 255).round().to(torch.uint8)
    a, b = fit_latent_to_rgb(z, image)
    back = latents_to_rgb(z, a, b).astype(int)
    assert np.abs(back - (rgb.numpy() * 255).round()).max() <= 2
    strip = preview_strip(z[None, None, None].expand(1, 3, 3, 4, 8, 12), a, b, scale=2)
    assert strip.shape == (16, 72, 3)

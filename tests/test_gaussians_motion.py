"""The trajectory-table motion model: interpolation, masked Adam, densification, save/load, and a fit that moves.

Tiny sizes (CPU, seconds)."""

from __future__ import annotations

import json

import pytest
import torch

from charactershot_core.cameras import orbit_rig
from charactershot_core.errors import InputError
from charactershot_core.gaussians.fitting.data import MultiViewVideo
from charactershot_core.gaussians.fitting.fit import FitConfig, fit, initialize
from charactershot_core.gaussians.raster.views import render_views
from charactershot_core.gaussians.model import Gaussians4D, hermite_weights
from charactershot_core.gaussians.fitting.trajectory import FrameAdam, flow_init


def tiny_rig(views=8, w=64, h=48):
    return orbit_rig(num_views=views, width=w, height=h, square_size=h)


@pytest.fixture(scope="module")
def two_frames():
    """8 views x 2 frames of the synthetic 'wave' character at 64x48: the arm goes from down (t=0) to raised."""
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = tiny_rig()
    times = [0.0, 0.4]
    ch = SyntheticCharacter(motion="wave", seed=1, n_gaussians=1500)
    frames = ch.render_views(rig, times, backend="torch")
    return MultiViewVideo(torch.from_numpy(frames), rig, times)


def small_cfg(**kw):
    base = dict(iterations=60, batch_views=2, init_points=1500, backend="torch", seed=0, densify=False)
    base.update(kw)
    return FitConfig(**base)


def motion_ratio(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Mean |frame t - frame 0| of the renders over the same for the ground truth (V, T, H, W, 3)."""
    return float((pred[:, 1:] - pred[:, :1]).abs().mean() / (gt[:, 1:] - gt[:, :1]).abs().mean())


# ----------------------------------------------------------------------------------------------- interpolation
def test_hermite_weights_hit_frames_interpolate_smoothly_and_clamp_at_the_ends():
    ts = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert hermite_weights(ts, 0.5) == [(2, 1.0)]  # a frame time reads its own row only
    assert hermite_weights(ts, -0.1) == [(0, 1.0)] and hermite_weights(ts, 1.5) == [(4, 1.0)]
    w = dict(hermite_weights(ts, 0.375))  # half-way, uniform knots: Catmull-Rom (-1, 9, 9, -1) / 16
    assert w == pytest.approx({0: -1 / 16, 1: 9 / 16, 2: 9 / 16, 3: -1 / 16})
    for t in (0.01, 0.1, 0.3, 0.62, 0.99):
        ws = hermite_weights(ts, t)
        assert sum(v for _, v in ws) == pytest.approx(1.0)
    # reproduces a straight-line motion exactly on uneven knots, ends included
    ts2 = [0.0, 0.2, 0.5, 0.6, 1.0]
    f = [3 * x - 1 for x in ts2]
    for t in (0.05, 0.3, 0.55, 0.9):
        assert sum(v * f[k] for k, v in hermite_weights(ts2, t)) == pytest.approx(3 * t - 1)


# ----------------------------------------------------------------------------------------------- representation
def test_table_model_rows_move_gaussians_and_round_trip(tmp_path, two_frames):
    model = initialize(two_frames, small_cfg())
    assert model.motion == "table" and model.is_dynamic and model.deformation is None
    n = model.num_gaussians
    assert tuple(model.splats["traj_means"].shape) == (n, 2, 3)
    x0, _, q0 = model.deformed(0.0)
    assert torch.equal(x0, model.splats["means"])  # identity trajectories at the start
    with torch.no_grad():
        model.splats["traj_means"][:, 1] += torch.tensor([0.1, 0.0, 0.0])
        model.splats["traj_quats"][:, 1] += 0.05 * torch.randn(n, 4)
    x1 = model.means_at(0.4)
    assert torch.allclose(x1 - x0, torch.tensor([0.1, 0.0, 0.0]).expand(n, 3))
    path = tmp_path / "t.safetensors"
    model.config["fit"] = {"iterations": 3}
    model.save(str(path))
    back = Gaussians4D.load(str(path))
    assert back.motion == "table" and back.config == model.config
    rig = two_frames.rig.select([0, 3])
    a = render_views(model, rig, [0.0, 0.2, 0.4], "torch")
    b = render_views(back, rig, [0.0, 0.2, 0.4], "torch")
    assert torch.equal(a, b) and not torch.allclose(a[:, 0], a[:, 2])
    # a table whose shape does not match the frames is a clear error
    from safetensors.torch import load_file, save_file

    t = load_file(str(path))
    t["splats.traj_means"] = t["splats.traj_means"][:, :1].contiguous()
    save_file(t, str(tmp_path / "bad.safetensors"), metadata={"format": "charactershot-4dgs", "version": "1",
                                                                "config": json.dumps(model.config)})
    with pytest.raises(Exception, match="trajectory table"):
        Gaussians4D.load(str(tmp_path / "bad.safetensors"))


def test_old_hexplane_weights_without_a_motion_key_still_load(tmp_path, two_frames):
    cfg = small_cfg(motion="hexplane", field={"resolution": [8, 8, 8, 2], "features": 4, "multires": [1], "width": 8})
    model = initialize(two_frames, cfg)
    assert model.motion == "hexplane" and model.deformation is not None
    with torch.no_grad():
        for p in model.deformation.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    from safetensors.torch import save_file

    old_config = {k: v for k, v in model.config.items() if k != "motion"}  # the layout before the table existed
    path = tmp_path / "old.safetensors"
    save_file(model.state_tensors(), str(path), metadata={"format": "charactershot-4dgs", "version": "1",
                                                          "config": json.dumps(old_config)})
    back = Gaussians4D.load(str(path))
    assert back.motion == "hexplane" and back.deformation is not None
    rig = two_frames.rig.select([1])
    assert torch.equal(render_views(model, rig, [0.0, 0.4], "torch"), render_views(back, rig, [0.0, 0.4], "torch"))


def test_frame_adam_moves_only_the_frames_it_is_given():
    p = torch.nn.Parameter(torch.zeros(5, 4, 3))
    opt = FrameAdam([p], lr=0.1)
    for step in range(3):
        p.grad = torch.ones_like(p)  # a gradient everywhere, but only frame 1 (then 2) was trained
        opt.step([1] if step < 2 else [2])
    assert torch.all(p[:, 0] == 0) and torch.all(p[:, 3] == 0)
    assert torch.allclose(p[:, 1], torch.full((5, 3), -0.2))  # two Adam steps of lr
    assert torch.allclose(p[:, 2], torch.full((5, 3), -0.1))  # its own bias correction: one full step
    assert opt.state[p]["step"].tolist() == [0, 2, 1, 0]


def test_densification_clones_and_splits_carry_the_trajectory_rows(two_frames):
    from gsplat.strategy import ops

    model = initialize(two_frames, small_cfg())
    n = model.num_gaussians
    with torch.no_grad():
        model.splats["traj_means"][:, 1] = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 3)
    optims = {k: torch.optim.Adam([{"params": [p], "lr": 1e-3, "name": k}]) for k, p in model.splats.items()}
    mask = torch.zeros(n, dtype=torch.bool)
    mask[[3, 7]] = True
    ops.duplicate(model.splats, optims, {}, mask)
    assert model.splats["traj_means"].shape[0] == n + 2
    assert model.splats["traj_means"][n:, 1, 0].tolist() == [3.0, 7.0]
    ops.split(model.splats, optims, {}, torch.cat([mask, torch.zeros(2, dtype=torch.bool)]))
    assert sorted(model.splats["traj_means"][-4:, 1, 0].tolist()) == [3.0, 3.0, 7.0, 7.0]


# ----------------------------------------------------------------------------------------------- the fit moves
def test_flow_initialisation_alone_moves_the_character(two_frames):
    held = [1, 5]
    train = two_frames.select_views([k for k in range(8) if k not in held])
    test = two_frames.select_views(held)
    model = initialize(train, small_cfg())
    model.splats["means"].requires_grad_(False)
    before = motion_ratio(render_views(model, test.rig, test.times, "torch"), test.frames)
    # pretend frame 1 is the reference: the hull was carved from the middle frame (index 1 of 2)
    stats = flow_init(model, train.frames, train.rig, reference=1)
    after = motion_ratio(render_views(model, test.rig, test.times, "torch"), test.frames)
    assert before == 0.0 and stats[0]["triangulated"] > 0.2
    assert after > 0.3, after


def test_a_tiny_two_frame_fit_moves_and_a_static_model_does_not(two_frames):
    held = [1, 5]
    train = two_frames.select_views([k for k in range(8) if k not in held])
    test = two_frames.select_views(held)
    result = fit(train, small_cfg(iterations=60))
    pred = render_views(result.model, test.rig, test.times, "torch")
    moved = motion_ratio(pred, test.frames)
    print(f"motion ratio of the fit: {moved:.2f}")
    assert 0.5 < moved < 1.6, moved
    # the same measure on the same model with its motion switched off (identity rows): no motion, and the test's
    # floor would fail
    still = result.model.copy()
    with torch.no_grad():
        still.splats["traj_means"].zero_()
        still.splats["traj_quats"].zero_()
        still.splats["traj_quats"][..., 0] = 1.0
    assert motion_ratio(render_views(still, test.rig, test.times, "torch"), test.frames) < 0.05
    # a fit without motion learning (no flow, table frozen, no repair of lost parts: that moves rows by itself)
    # stays still too
    frozen = fit(train, small_cfg(iterations=60, flow_init=False, lr_traj_means=0.0, lr_traj_quats=0.0,
                                  repair_lost_parts=False))
    assert motion_ratio(render_views(frozen.model, test.rig, test.times, "torch"), test.frames) < 0.05


def test_bad_motion_model_is_rejected(two_frames):
    with pytest.raises(InputError, match="motion"):
        fit(two_frames, small_cfg(motion="spline"))


def test_hexplane_fine_stage_starts_at_a_saddle(two_frames):
    """Why the HexPlane fit barely moves in short budgets (docs/4d.md): at the start of its fine stage no plane gets
    any gradient, and the only layer that does sees the same features at every time, so it learns one offset for
    all frames (a static average) until the time planes slowly leave 1."""
    from charactershot_core.gaussians.fitting import losses
    from charactershot_core.gaussians.raster.views import render_model
    from charactershot_core.gaussians.model.hexplane import TIME_PLANES

    cfg = small_cfg(motion="hexplane", field={"resolution": [8, 8, 8, 2], "features": 4, "multires": [1], "width": 8})
    model = initialize(two_frames, cfg)
    rig = two_frames.rig
    grads = []
    for fi, t in enumerate(two_frames.times):
        model.zero_grad(set_to_none=True)
        img, _, _ = render_model(model, rig.viewmats()[:2], rig.Ks()[:2], rig.width, rig.height, t, "torch")
        losses.photometric_loss(img, two_frames.frames[:2, fi]).backward()
        planes = model.deformation.grid.grids[0]
        assert all(planes[i].grad is None or float(planes[i].grad.abs().sum()) == 0.0 for i in range(6))
        assert all(float(model.deformation.pos[k].weight.grad.abs().sum()) == 0.0 for k in (1,))
        grads.append(model.deformation.pos[-1].weight.grad.clone())
        # the features the last layer sees do not depend on t (time planes start at 1)
    f0 = model.deformation.grid(model.splats["means"], 0.0)
    f1 = model.deformation.grid(model.splats["means"], 0.4)
    assert torch.allclose(f0, f1, rtol=1e-6, atol=0)
    assert float(grads[0].abs().sum()) > 0  # it learns, but a time-independent offset


def test_table_model_exports_a_moving_bundle_and_per_frame_ply(tmp_path, two_frames):
    from charactershot_core.gaussians import formats as export
    from charactershot_core.gaussians.cli import export_all

    model = initialize(two_frames, small_cfg())
    with torch.no_grad():
        model.splats["traj_means"][:, 1] += torch.tensor([0.0, 0.0, 0.2])
    files = export_all(model, str(tmp_path), list(model.times))
    names = sorted(p.split("/")[-1] for p in files)
    assert names == ["bundle.cs4d", "frame_00001.ply", "frame_00002.ply"]
    ply = export.read_ply(str(tmp_path / "frame_00002.ply"))
    assert torch.allclose(torch.as_tensor(ply["means"]), model.means_at(0.4), atol=1e-5)
    b = export.read_bundle(str(tmp_path / "bundle.cs4d"))
    pos = torch.as_tensor(b["frames"]["positions"])
    assert pos.shape[0] == 2 and float((pos[1] - pos[0])[:, 2].mean()) == pytest.approx(0.2, abs=1e-3)
    assert "scales" in b["static"] and "scales" not in b["frames"]  # no Δscale: one scale per Gaussian


def test_flow_initialisation_on_an_allowance_works_outward_on_both_sides_and_stops_in_time(two_frames, monkeypatch):
    """With a time allowance the frames are placed outward from the reference alternating sides, and a pair that
    the time left cannot pay for (measured on the pair before) is not started: the frames next to the reference on
    both sides are tracked, the far ones start where their neighbour is. A clock that advances one second per
    reading makes this exact."""
    import charactershot_core.gaussians.fitting.trajectory as traj

    rig = tiny_rig(views=4)
    px = two_frames.pixels[[0, 2, 4, 6]]
    video = MultiViewVideo(torch.cat([px[:, :1], px[:, :1], px[:, 1:], px[:, 1:], px[:, 1:]], 1), rig,
                           [0.0, 0.25, 0.5, 0.75, 1.0])  # 5 frames, the arm moves between frames 1 and 2
    model = initialize(video, small_cfg())
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(traj.time, "perf_counter", lambda: float(next(ticks)))
    stats = flow_init(model, video.pixels, rig, reference=2, seconds=4.5)
    # readings: start 0; pair (3 <- 2) starts at 1, ends at 2 (1 s for 4 views); pair (1 <- 2) starts at 3 with
    # 1.5 s left >= 2 views' worth: done; at 5 nothing is left for (4 <- 3) and (0 <- 1)
    assert stats[3]["views"] > 0 and stats[1]["views"] > 0
    assert stats[4]["views"] == 0 and stats[0]["views"] == 0
    full = flow_init(initialize(video, small_cfg()), video.pixels, rig, reference=2)
    assert all(full[f]["views"] == 4 for f in (0, 1, 3, 4))

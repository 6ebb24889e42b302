"""4D Gaussian fitting: HexPlane, losses, representation, optimiser, bad input. Tiny sizes (CPU, seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from charactershot_core.cameras import orbit_rig
from charactershot_core.errors import InputError
from charactershot_core.gaussians.fitting import losses
from charactershot_core.gaussians.fitting.data import MultiViewVideo, read_frames_dir, write_png
from charactershot_core.gaussians.fitting.fit import FitConfig, fit, initialize
from charactershot_core.gaussians.fitting.guard import FitDivergedError
from charactershot_core.gaussians.raster.views import render_views
from charactershot_core.gaussians.model.hexplane import HexPlane
from charactershot_core.gaussians.evaluation.metrics import psnr
from charactershot_core.gaussians.model import Gaussians4D


def tiny_rig(views=8, w=64, h=48):
    return orbit_rig(num_views=views, width=w, height=h, square_size=h)


@pytest.fixture(scope="module")
def synthetic_video():
    """8 views x 3 frames of the synthetic 'wave' character at 64x48."""
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = tiny_rig()
    times = [0.0, 0.5, 1.0]
    ch = SyntheticCharacter(motion="wave", seed=1, n_gaussians=1500)
    frames = ch.render_views(rig, times, backend="torch")
    return MultiViewVideo(torch.from_numpy(frames), rig, times)


def small_cfg(**kw):
    base = dict(iterations=40, batch_views=2, init_points=1500, backend="torch", seed=0, densify=False,
                field={"resolution": [8, 8, 8, 3], "features": 8, "multires": [1], "width": 16})
    base.update(kw)
    return FitConfig(**base)


# ----------------------------------------------------------------------------------------------- HexPlane
def test_hexplane_shapes_bounds_and_full_time_axis():
    hp = HexPlane([[-1, -1, 0], [1, 1, 2]], resolution=(4, 4, 4, 5), features=3, multires=(1, 2))
    assert hp.out_dim == 6
    assert [tuple(p.shape) for p in hp.grids[1]][:3] == [(1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 5, 8)]
    x = torch.rand(10, 3) * torch.tensor([2.0, 2.0, 2.0]) + torch.tensor([-1.0, -1.0, 0.0])
    f = hp(x, 0.3)
    assert f.shape == (10, 6)
    # time planes start at 1: the feature is the product of the spatial planes only, independent of t
    assert torch.allclose(hp(x, 0.0), hp(x, 1.0))
    # give the (x,t) plane of scale 0 a distinct value per time row: t=0 reads row 0, t=1 the LAST row (full axis,
    # unlike upstream which only reaches the middle row)
    with torch.no_grad():
        for planes in hp.grids:
            for p in planes:
                p.fill_(1.0)
        hp.grids[0][2].copy_(torch.arange(5.0).reshape(1, 1, 5, 1).expand(1, 3, 5, 4))
    assert torch.allclose(hp(x, 0.0)[:, 0], torch.zeros(10))
    assert torch.allclose(hp(x, 1.0)[:, 0], torch.full((10,), 4.0))
    assert torch.allclose(hp(x, 0.5)[:, 0], torch.full((10,), 2.0))
    # bounds come from the scene: a point beyond the box reads the border value (clamped), not garbage
    with torch.no_grad():
        hp.grids[0][0].copy_(torch.arange(4.0).reshape(1, 1, 1, 4).expand(1, 3, 4, 4))  # varies along x
    inside = hp(torch.tensor([[1.0, 0.0, 1.0]]), 0.5)
    outside = hp(torch.tensor([[5.0, 0.0, 1.0]]), 0.5)
    assert torch.allclose(inside, outside) and float(inside[0, 0].detach()) == pytest.approx(3.0 * 2.0)
    # gradients reach the planes
    hp(x, 0.3).sum().backward()
    assert hp.grids[0][0].grad is not None and hp.grids[0][0].grad.abs().sum() > 0
    with pytest.raises(InputError, match="bounds"):
        HexPlane([[0, 0, 0], [0, 1, 1]])


# ----------------------------------------------------------------------------------------------- losses
def test_knn_graph_matches_brute_force_and_is_symmetric():
    torch.manual_seed(0)
    pts = torch.randn(300, 3)
    idx = losses.knn(pts, 5)
    d = torch.cdist(pts, pts)
    d.fill_diagonal_(float("inf"))
    ref = d.topk(5, largest=False).indices
    assert torch.equal(idx.sort(1).values, ref.sort(1).values)
    e = losses.knn_graph(pts, 5)
    pairs = set(map(tuple, e.t().tolist()))
    assert all((j, i) in pairs for i, j in pairs)
    assert all(i != j for i, j in pairs)


def test_knn_finds_the_exact_neighbours_on_the_character_and_never_itself_among_duplicates():
    """The tree search against an exact float64 brute force on the synthetic character's surface lattice (many
    near-equal distances), and with exact duplicates (as densification's clones make): a point never lists itself."""
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    pts = SyntheticCharacter("wave", seed=0, n_gaussians=3000).gaussians_at(0.5)["means"].float()
    d = torch.cdist(pts.double(), pts.double(), compute_mode="donot_use_mm_for_euclid_dist")
    d.fill_diagonal_(float("inf"))
    ref_d = d.topk(8, largest=False).values
    idx = losses.knn(pts, 8)
    assert idx.shape == (3000, 8) and idx.dtype == torch.long
    got_d = torch.gather(d, 1, idx)
    assert torch.allclose(got_d, ref_d, rtol=0, atol=1e-12)  # the same distances, nearest first
    assert not (idx == torch.arange(3000)[:, None]).any()
    dup = torch.cat([pts[:500], pts[:500]])  # every point twice
    idx = losses.knn(dup, 3)
    assert not (idx == torch.arange(1000)[:, None]).any()
    twin = torch.cat([torch.arange(500, 1000), torch.arange(500)])
    assert (idx == twin[:, None]).any(1).all()  # each point's twin (distance 0) is among its neighbours


def test_neighbour_loss_has_gradients_and_is_zero_for_rigid_translation():
    torch.manual_seed(0)
    x = torch.randn(200, 3) * 0.3
    edges = losses.knn_graph(x, 8)
    prev = x.clone()
    moved = (x + torch.tensor([0.5, -0.2, 0.1])).requires_grad_(True)
    loss, w = losses.neighbour_loss(moved, prev, edges, 0.5, 0.25)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-10)
    assert float(w) > 0  # the motion mask is on (the points moved by 0.55 > 0.01)
    # a non-rigid motion is penalised, and the loss carries a gradient (the released code's .item() did not)
    bent = (x + 0.2 * torch.sin(3 * x)).requires_grad_(True)
    loss, w = losses.neighbour_loss(bent, prev, edges, 0.5, 0.25)
    assert float(loss.detach()) > 1e-6
    (w * loss).backward()
    assert bent.grad is not None and float(bent.grad.abs().sum()) > 0
    # below the motion threshold nothing is constrained
    still, _ = losses.neighbour_loss(x + 1e-4 * torch.randn_like(x), prev, edges, 0.5, 0.25)
    assert float(still) == 0.0
    # isometry / rigidity: zero for a rigid motion, positive for a stretch
    assert float(losses.isometry_loss(moved.detach(), x, edges)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.isometry_loss(x * 1.2, x, edges)) > 1e-3
    q = torch.tensor([[1.0, 0, 0, 0]]).expand(200, 4)
    assert float(losses.rigidity_loss(moved.detach(), q, prev, q, edges)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.rigidity_loss(x * 1.2, q, prev, q, edges)) > 1e-3


def test_sampled_neighbour_edges_keep_exact_laplacians():
    torch.manual_seed(1)
    x = torch.randn(500, 3)
    edges = losses.knn_graph(x, 6)
    nodes, sub = losses.sample_edges(edges, 500, 50, torch.Generator().manual_seed(0))
    centres = torch.unique(nodes[sub[0]])
    assert centres.numel() == 50 and nodes.numel() > 50
    full = losses.laplacian(x, edges)[nodes[sub[0]]]
    local = losses.laplacian(x[nodes], sub)[sub[0]]
    assert torch.allclose(full, local, atol=1e-6)  # every sampled centre keeps all its neighbours
    n2, s2 = losses.sample_edges(edges, 500, 1000)
    assert n2.numel() == 500 and torch.equal(s2, edges)


def test_dssim_loss_is_zero_for_identical_images_and_differentiable():
    a = torch.rand(2, 24, 24, 3)
    assert float(losses.photometric_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    b = a.clone().requires_grad_(True)
    loss = losses.photometric_loss(b, (a + 0.1).clamp(0, 1), lambda_dssim=0.5)
    loss.backward()
    assert float(loss.detach()) > 0 and float(b.grad.abs().sum()) > 0


# ----------------------------------------------------------------------------------------------- representation
def test_static_input_builds_no_deformation_field(synthetic_video):
    static = synthetic_video.select_frames([1])
    model = initialize(static, small_cfg())
    assert model.deformation is None and not model.is_dynamic and model.motion is None
    assert not any(k.startswith("deformation.") or "traj" in k for k in model.state_tensors())
    dyn = initialize(synthetic_video, small_cfg(motion="hexplane"))
    assert dyn.deformation is not None
    # the field's box comes from the scene (the hull), not a fixed cube, and contains every initial Gaussian
    lo, hi = dyn.deformation.grid.bounds
    m = dyn.splats["means"]
    assert bool((m >= lo).all() and (m <= hi).all())
    size = m.max(0).values - m.min(0).values
    assert torch.allclose(lo, m.min(0).values - 0.25 * size, atol=1e-5)
    assert torch.allclose(hi, m.max(0).values + 0.25 * size, atol=1e-5)
    # the deformation starts as the identity: the fine stage begins at the coarse solution
    x, s, q = dyn.deformed(0.7)
    assert torch.allclose(x, m) and torch.allclose(q, dyn.splats["quats"])


def test_save_load_round_trip_renders_the_same(tmp_path, synthetic_video):
    model = initialize(synthetic_video, small_cfg(motion="hexplane"))
    with torch.no_grad():  # a non-trivial deformation
        for p in model.deformation.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / "g.safetensors"
    model.save(str(path))
    back = Gaussians4D.load(str(path))
    assert back.config == model.config and back.num_gaussians == model.num_gaussians
    rig = synthetic_video.rig.select([0, 3])
    a = render_views(model, rig, [0.2, 0.9], "torch")
    b = render_views(back, rig, [0.2, 0.9], "torch")
    assert torch.equal(a, b)
    assert not torch.allclose(a[:, 0], a[:, 1])  # the deformation really moves things between the two times


# ----------------------------------------------------------------------------------------------- optimiser
def test_tiny_fit_improves_heldout_psnr_over_the_init(synthetic_video):
    held = [1, 5]
    train = synthetic_video.select_views([k for k in range(8) if k not in held])
    test = synthetic_video.select_views(held)
    cfg = small_cfg(iterations=60, coarse_fraction=0.3, densify=True, densify_from=0.2, densify_every=10,
                    neighbour_weight=1.0)
    init = initialize(train, cfg)
    before = psnr(render_views(init, test.rig, test.times, "torch"), test.frames)
    states = []
    result = fit(train, cfg, lambda s: states.append((s.iteration, s.stage, s.num_gaussians)))
    after = psnr(render_views(result.model, test.rig, test.times, "torch"), test.frames)
    assert result.iterations == 60 and result.model.is_dynamic
    assert {st for _, st, _ in states} == {"coarse", "sweep", "global"}  # the trajectory table's stages
    print(f"held-out PSNR: init {before:.2f} dB, fitted {after:.2f} dB")
    assert after > before + 1.0, (before, after)


def test_progressive_temporal_windows_grow_from_the_middle_frame():
    rig = tiny_rig(views=4, w=32, h=24)
    frames = torch.ones(4, 9, 24, 32, 3)
    frames[:, :, 8:16, 12:20] = 0.3  # a block at the centre of every view: a valid hull
    video = MultiViewVideo(frames, rig, None)
    seen = []
    fit(video, small_cfg(iterations=40, coarse_fraction=0.25, temporal_windows=True, batch_views=1,
                         init_points=200, motion="hexplane"), lambda s: seen.append((s.stage, s.frame)))
    coarse = [f for st, f in seen if st == "coarse"]
    fine = [f for st, f in seen if st == "fine"]
    assert coarse and set(coarse) == {4}  # the static stage trains the middle frame only
    assert set(fine[:5]) <= {3, 4, 5}  # the window starts around the middle
    late = fine[-10:]
    assert min(late) <= 1 or max(late) >= 7  # and grows to reach the ends


def test_nan_is_detected_with_the_iteration_and_the_last_good_state_kept(synthetic_video):
    def poison(state):
        if state.iteration == 7:
            with torch.no_grad():
                state.model.splats["means"][0, 0] = float("nan")

    cfg = small_cfg(iterations=30, snapshot_every=5)
    with pytest.raises(FitDivergedError) as err:
        fit(synthetic_video.select_frames([0]), cfg, poison)
    e = err.value
    assert e.iteration == 8 and e.good_iteration == 5
    assert "iteration 8" in str(e) and e.model is not None and e.model.all_finite()


def test_time_budget_too_small_is_a_clear_error(synthetic_video):
    with pytest.raises(InputError, match="seconds.*too small"):
        fit(synthetic_video, small_cfg(seconds=0.01))


@pytest.mark.parametrize("base", [Exception, BaseException], ids=["Exception", "BaseException"])
def test_interrupt_from_the_callback_stops_within_one_iteration(synthetic_video, base):
    # ComfyUI 0.3.75's Cancel is an Exception, newer ComfyUI's a BaseException: both must stop the fit unchanged
    seen = []

    class Stop(base):
        pass

    def cb(state):
        seen.append(state.iteration)
        if state.iteration == 3:
            raise Stop

    with pytest.raises(Stop):
        fit(synthetic_video.select_frames([0]), small_cfg(iterations=50), cb)
    assert seen == [1, 2, 3]


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_multiview_input_is_rejected_clearly(tmp_path):
    rig = tiny_rig(views=4)
    ok = torch.ones(4, 2, 48, 64, 3)
    with pytest.raises(InputError, match="cameras.*3 cameras but there are 4 views"):
        MultiViewVideo(ok, tiny_rig(views=3), [0, 1])
    with pytest.raises(InputError, match="at least 2 views"):
        MultiViewVideo(ok[:1], rig.select([0]), [0, 1])
    with pytest.raises(InputError, match="empty"):
        MultiViewVideo(torch.ones(4, 0, 48, 64, 3), rig, [])
    with pytest.raises(InputError, match="aspect"):
        MultiViewVideo(torch.ones(4, 1, 48, 48, 3), rig, None)
    with pytest.raises(InputError, match="times"):
        MultiViewVideo(ok, rig, [0.0, 0.0])
    with pytest.raises(InputError, match="NaN"):
        MultiViewVideo(ok * float("nan"), rig, [0, 1])
    # folders: empty, gaps, frames of different sizes
    with pytest.raises(InputError, match="no view"):
        read_frames_dir(str(tmp_path))
    write_png(str(tmp_path / "view0.png"), np.ones((48, 64, 3)))
    write_png(str(tmp_path / "view2.png"), np.ones((48, 64, 3)))
    with pytest.raises(InputError, match="missing \\[1\\]"):
        read_frames_dir(str(tmp_path))
    write_png(str(tmp_path / "view1.png"), np.ones((40, 64, 3)))
    with pytest.raises(InputError, match="same size"):
        read_frames_dir(str(tmp_path))


def test_all_white_views_or_mismatched_cameras_fail_at_init():
    rig = tiny_rig(views=4)
    white = MultiViewVideo(torch.ones(4, 1, 48, 64, 3), rig, None)
    with pytest.raises(InputError, match="no character"):
        initialize(white, small_cfg())
    # a blob that sits in a different place in every view: the silhouettes do not intersect
    frames = torch.ones(4, 1, 48, 64, 3)
    for k, (y, x) in enumerate([(2, 2), (40, 2), (2, 56), (40, 56)]):
        frames[k, 0, y:y + 6, x:x + 6] = 0.2
    with pytest.raises(InputError, match="cameras"):
        initialize(MultiViewVideo(frames, rig, None), small_cfg())

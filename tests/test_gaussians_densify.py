"""Densification as the fit drives it: gsplat's ``DefaultStrategy`` (pure torch, so it runs on every device) on the
fit's parameters: clone / split / prune on a hand-made parameter dict with known screen gradients keep every
per-Gaussian tensor (the trajectory table too), the strategy's per-Gaussian state and the optimisers' moments
(FrameAdam's too) in step; the statistics it gathers from our torch rasteriser's render info agree packed and
unpacked; without gsplat the fit says what to install."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from gsplat.strategy import DefaultStrategy
from torch import nn

from charactershot_core.cameras import orbit_rig
from charactershot_core.errors import CharacterShotError
from charactershot_core.gaussians.raster import render as R
from charactershot_core.gaussians.fitting.data import MultiViewVideo
from charactershot_core.gaussians.fitting.fit import FitConfig, fit
from charactershot_core.gaussians.fitting.trajectory import FrameAdam

W, H, C = 40, 20, 2          # image size and cameras of the fake render info
SCENE = 1.0                  # scene scale: "small" is a largest scale <= 0.01


def _logit(p):
    return math.log(p / (1 - p))


def _params(n_frames=3):
    """Six Gaussians with known roles (see ``_info``) and every kind of per-Gaussian tensor the fit has."""
    n = 6
    g = torch.Generator().manual_seed(0)
    small, large = math.log(0.005), math.log(0.05)
    scales = torch.full((n, 3), small)
    scales[1] = torch.tensor([large, small, small])  # large: split
    scales[5] = large
    opac = torch.full((n,), _logit(0.5))
    opac[3] = _logit(0.001)  # transparent: pruned
    p = nn.ParameterDict({
        "means": nn.Parameter(torch.randn(n, 3, generator=g)),
        "scales": nn.Parameter(scales),
        "quats": nn.Parameter(torch.randn(n, 4, generator=g)),
        "opacities": nn.Parameter(opac),
        "sh0": nn.Parameter(torch.randn(n, 1, 3, generator=g)),
        "shN": nn.Parameter(torch.randn(n, 3, 3, generator=g)),
        "traj_means": nn.Parameter(torch.randn(n, n_frames, 3, generator=g)),
        "traj_quats": nn.Parameter(torch.randn(n, n_frames, 4, generator=g)),
    })
    return p


def _optims(params):
    """Adam per parameter (FrameAdam for the table), each stepped once so that its moments are non-zero."""
    opts = {k: (FrameAdam if k.startswith("traj_") else torch.optim.Adam)([{"params": [p], "lr": 1e-3, "name": k}],
                                                                         eps=1e-15) for k, p in params.items()}
    for k, p in params.items():
        p.grad = torch.arange(1.0, p.shape[0] + 1).reshape(-1, *([1] * (p.dim() - 1))).expand_as(p).clone()
        opts[k].step()
        opts[k].zero_grad(set_to_none=True)
    return opts


def _info(n=6, threshold=2e-4):
    """Screen gradients in pixels such that, converted to NDC (x W/2 x C, y H/2 x C) and averaged over the cameras
    that drew the Gaussian, Gaussians 0, 1, 3, 4, 5 are above ``threshold`` and 2 below; 4 is drawn by no camera."""
    m2 = torch.zeros(C, n, 2, requires_grad=True)
    radii = torch.full((C, n, 2), 3, dtype=torch.int32)
    grad = torch.zeros(C, n, 2)
    # 0: x gradient of 1.5 thresholds (after normalisation) on both cameras
    grad[:, 0, 0] = 1.5 * threshold / (W / 2 * C)
    # 1: y gradient of 3 thresholds on camera 0, drawn only there (camera 1 has a zero radius)
    grad[0, 1, 1] = 3 * threshold / (H / 2 * C)
    radii[1, 1] = 0
    # 2: 0.9 threshold
    grad[:, 2, 0] = 0.9 * threshold / (W / 2 * C)
    # 3 and 5: high
    grad[:, 3, 0] = grad[:, 5, 0] = 4 * threshold / (W / 2 * C)
    # 4: a huge gradient but not drawn anywhere: no statistics
    grad[:, 4] = 1.0
    radii[:, 4] = 0
    m2.grad = grad
    return {"means2d": m2, "radii": radii, "width": W, "height": H, "n_cameras": C, "gaussian_ids": None}


def _consistent(params, optims, state):
    n = params["means"].shape[0]
    assert all(p.shape[0] == n for p in params.values())
    for k, opt in optims.items():
        (p,) = opt.param_groups[0]["params"]
        assert p is params[k]
        st = opt.state[p]
        for key, v in st.items():
            if key != "step":
                assert v.shape == p.shape, (k, key)
    for k in ("grad2d", "count", "traj_init"):
        if state.get(k) is not None:
            assert state[k].shape[0] == n, k
    return n


def test_clone_split_and_prune_on_known_gradients_keep_every_row_and_optimiser_state():
    torch.manual_seed(0)
    params = _params()
    optims = _optims(params)
    before = {k: v.detach().clone() for k, v in params.items()}
    moments = {k: optims[k].state[p]["exp_avg"].clone() for k, p in params.items()}
    s = DefaultStrategy(refine_start_iter=0, refine_every=10, reset_every=1 << 30, verbose=False)
    s.check_sanity(params, optims)
    st = s.initialize_state(SCENE)
    st["traj_init"] = torch.arange(6.0)[:, None, None].expand(6, 3, 7).clone()  # the fit keeps per-Gaussian rows here
    s.step_pre_backward(params, optims, st, 10, _info())
    s.step_post_backward(params, optims, st, 10, _info())
    # 0 small + high: cloned; 1, 5 large + high: split; 3 transparent: pruned (its clone... it is small and high:
    # cloned first, and the copy pruned too); 2 low and 4 undrawn: untouched
    n = _consistent(params, optims, st)
    assert n == 6 + 2 + 2 - 2  # 2 cloned, 2 split, 2 pruned
    assert st["grad2d"].abs().sum() == 0 and st["count"].sum() == 0  # statistics restart
    # identify rows by their spherical-harmonics rows (copied unchanged by every operation)
    key = before["shN"].reshape(6, -1)
    now = params["shN"].detach().reshape(n, -1)
    origin = [int((key == r).all(1).nonzero()[0]) for r in now]
    assert sorted(origin) == [0, 0, 1, 1, 2, 4, 5, 5]
    for row, o in enumerate(origin):
        for k in ("quats", "sh0", "traj_means", "traj_quats"):
            assert torch.equal(params[k][row], before[k][o]), (k, row)
        assert torch.equal(st["traj_init"][row], torch.full((3, 7), float(o)))
        if o in (1, 5):  # split children: scales / 1.6, a new centre, fresh moments
            assert torch.allclose(params["scales"][row], before["scales"][o] - math.log(1.6))
            assert not torch.equal(params["means"][row], before["means"][o])
            for k, p in params.items():
                assert optims[k].state[p]["exp_avg"][row].abs().sum() == 0
        else:
            assert torch.equal(params["scales"][row], before["scales"][o])
            assert torch.equal(params["means"][row], before["means"][o])
    # exactly one row of 0 keeps its moments (the original), the clone starts at zero
    rows0 = [r for r, o in enumerate(origin) if o == 0]
    kept = [r for r in rows0 if torch.equal(optims["means"].state[params["means"]]["exp_avg"][r], moments["means"][0])]
    fresh = [r for r in rows0 if optims["means"].state[params["means"]]["exp_avg"][r].abs().sum() == 0]
    assert len(kept) == 1 and len(fresh) == 1
    for k in ("traj_means", "opacities"):
        r2 = origin.index(2)
        assert torch.equal(optims[k].state[params[k]]["exp_avg"][r2], moments[k][2])
    # the split children's centres are drawn from the parent's Gaussian: within a few of its largest sigma
    for row, o in enumerate(origin):
        if o in (1, 5):
            assert (params["means"][row] - before["means"][o]).norm() < 6 * 0.05
    # the optimisers still step the new parameters
    for k, p in params.items():
        p.grad = torch.ones_like(p)
        optims[k].step()
    _consistent(params, optims, st)


def test_gsplat_statistics_from_the_torch_rasteriser_agree_packed_and_unpacked():
    """The real render info of our torch rasteriser (means2d with its retained gradient, radii, sizes, cameras) feeds
    gsplat's statistics the same, packed or not."""
    g = torch.Generator().manual_seed(3)
    n = 60
    means = (torch.rand(n, 3, generator=g) - 0.5) * 0.6
    quats, scales = torch.randn(n, 4, generator=g), torch.exp(torch.randn(n, 3, generator=g) * 0.3 - 2.5)
    opac, colors = 0.2 + 0.7 * torch.rand(n, generator=g), torch.rand(n, 3, generator=g)
    rig = orbit_rig(num_views=3, width=32, height=24, square_size=24)
    target = torch.rand(3, 24, 32, 3, generator=g)
    stats = {}
    for packed in (False, True):
        params = nn.ParameterDict({"means": nn.Parameter(means.clone()), "scales": nn.Parameter(scales.log()),
                                   "quats": nn.Parameter(quats.clone()),
                                   "opacities": nn.Parameter(torch.logit(opac))})
        s = DefaultStrategy(refine_start_iter=0, refine_every=100)
        st = s.initialize_state(1.0)
        img, _, info = R.rasterize(params["means"], params["quats"], params["scales"].exp(),
                                   torch.sigmoid(params["opacities"]), colors, rig.viewmats(), rig.Ks(), 32, 24,
                                   backend="torch", packed=packed)
        s.step_pre_backward(params, {}, st, 1, info)
        (img - target).abs().mean().backward()
        s.step_post_backward(params, {}, st, 1, info, packed=packed)
        stats[packed] = (st["grad2d"], st["count"])
    ref = stats[False]
    assert ref[1].sum() > n and (ref[0] > 0).sum() > n // 2  # most Gaussians drawn by several cameras
    for key, (g2, cnt) in stats.items():
        assert torch.equal(cnt, ref[1]), key
        assert torch.allclose(g2, ref[0], rtol=1e-5, atol=1e-12), key


def test_fit_without_gsplat_says_what_to_install(monkeypatch):
    """gsplat is a hard requirement (its strategy densifies every fit): without it the fit stops at once with an
    error that names the package and how to install it."""
    monkeypatch.setitem(sys.modules, "gsplat", None)
    monkeypatch.setitem(sys.modules, "gsplat.strategy", None)
    rig = orbit_rig(num_views=3, width=24, height=16, square_size=16)
    frames = torch.ones(3, 1, 16, 24, 3)
    frames[:, :, 5:11, 9:15] = 0.3  # a character in every view, so the input checks pass
    video = MultiViewVideo(frames, rig, [0.0])
    with pytest.raises(CharacterShotError, match=r"needs the gsplat package.*pip install"):
        fit(video, FitConfig(iterations=5, backend="torch", init_points=100))

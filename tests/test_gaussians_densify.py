"""The pack's own densification strategy (``gaussians/densify.py``), used by the fit when gsplat is not importable:
clone / split / prune / opacity reset on a hand-made parameter dict with known screen gradients, every per-Gaussian
tensor and optimiser state kept in step, the same decisions as gsplat's ``DefaultStrategy`` on the same statistics,
and a short fit with gsplat made unimportable (one log line, growth, pruning, a falling loss)."""

from __future__ import annotations

import logging
import math
import sys

import pytest
import torch
from torch import nn

from charactershot_core.cameras import orbit_rig
from charactershot_core.gaussians import densify as D
from charactershot_core.gaussians import render as R
from charactershot_core.gaussians.data import MultiViewVideo
from charactershot_core.gaussians.fit import FitConfig, fit
from charactershot_core.gaussians.trajectory import FrameAdam

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
    return {"means2d": m2, "radii": radii, "width": W, "height": H, "n_cameras": C}


def _still(n):
    """Render info of ``n`` Gaussians, all drawn, with zero screen gradients."""
    m2 = torch.zeros(C, n, 2, requires_grad=True)
    m2.grad = torch.zeros(C, n, 2)
    return {"means2d": m2, "radii": torch.full((C, n, 2), 3, dtype=torch.int32), "width": W, "height": H,
            "n_cameras": C}


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


def test_statistics_use_the_screen_normalisation_and_only_drawn_pairs():
    params = _params()
    s = D.DensifyStrategy(refine_start_iter=0, refine_every=100)
    st = s.initialize_state(SCENE)
    s.step_post_backward(params, {}, st, 1, _info())
    assert st["count"].tolist() == [2, 1, 2, 2, 0, 2]
    mean = (st["grad2d"] / st["count"].clamp_min(1)).tolist()
    assert mean[0] == pytest.approx(3e-4, rel=1e-5)
    assert mean[1] == pytest.approx(6e-4, rel=1e-5) and mean[2] == pytest.approx(1.8e-4, rel=1e-5)
    assert mean[4] == 0.0


def test_clone_split_and_prune_on_known_gradients_keep_every_row_and_optimiser_state():
    torch.manual_seed(0)
    params = _params()
    optims = _optims(params)
    before = {k: v.detach().clone() for k, v in params.items()}
    moments = {k: optims[k].state[p]["exp_avg"].clone() for k, p in params.items()}
    s = D.DensifyStrategy(refine_start_iter=0, refine_every=10, reset_every=1 << 30)
    s.check_sanity(params, optims)
    st = s.initialize_state(SCENE)
    st["traj_init"] = torch.arange(6.0)[:, None, None].expand(6, 3, 7).clone()  # the fit keeps per-Gaussian rows here
    s.step_pre_backward(params, optims, st, 10, _info())
    s.step_post_backward(params, optims, st, 10, _info())
    # 0 small + high: cloned; 1, 5 large + high: split; 3 transparent: pruned (its clone... it is small and high:
    # cloned first, and the copy pruned too); 2 low and 4 undrawn: untouched
    assert st["last_refine"] == {"step": 10, "cloned": 2, "split": 2, "pruned": 2, "gaussians": 6 + 2 + 2 - 2}
    n = _consistent(params, optims, st)
    assert n == 8
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


def test_large_gaussians_are_pruned_after_the_first_opacity_reset_and_the_reset_clamps_opacities():
    params = _params()
    optims = _optims(params)
    s = D.DensifyStrategy(refine_start_iter=0, refine_every=4, reset_every=6, grow_grad2d=1.0, prune_scale3d=0.02)
    st = s.initialize_state(SCENE)
    s.step_post_backward(params, optims, st, 4, _info())  # before the reset: only the transparent one goes
    assert st["last_refine"]["pruned"] == 1 and params["means"].shape[0] == 5
    s.step_post_backward(params, optims, st, 6, _still(5))  # the reset: every opacity <= 2 x prune_opa, moments zeroed
    assert torch.sigmoid(params["opacities"]).max() <= 0.01 + 1e-6
    assert optims["opacities"].state[params["opacities"]]["exp_avg"].abs().sum() == 0
    assert optims["means"].state[params["means"]]["exp_avg"].abs().sum() > 0
    s.prune_opa = 0.0  # now the size test alone: 1 and 5 (largest scale 0.05 > 0.02) are too big
    s.step_post_backward(params, optims, st, 8, _still(5))
    assert st["last_refine"]["pruned"] == 2 and params["means"].shape[0] == 3
    _consistent(params, optims, st)


def test_sanity_check_names_what_is_wrong():
    params = _params()
    optims = _optims(params)
    s = D.DensifyStrategy()
    with pytest.raises(ValueError, match="one optimiser per trainable parameter"):
        s.check_sanity(params, {k: v for k, v in optims.items() if k != "sh0"})
    params["extra"] = nn.Parameter(torch.zeros(5, 2))
    optims["extra"] = torch.optim.Adam([params["extra"]])
    with pytest.raises(ValueError, match="one row per Gaussian"):
        s.check_sanity(params, optims)


# ------------------------------------------------------------------------------------- against gsplat
def _random_case(seed, n=300):
    g = torch.Generator().manual_seed(seed)
    params = nn.ParameterDict({
        "means": nn.Parameter(torch.randn(n, 3, generator=g)),
        "scales": nn.Parameter(torch.randn(n, 3, generator=g) - 4.0),  # largest scales around 0.01-0.05
        "quats": nn.Parameter(torch.randn(n, 4, generator=g)),
        "opacities": nn.Parameter(torch.randn(n, generator=g) * 3 - 2),
        "sh0": nn.Parameter(torch.randn(n, 1, 3, generator=g)),
        "traj_means": nn.Parameter(torch.randn(n, 4, 3, generator=g)),
    })
    infos = []
    for _ in range(3):
        m2 = torch.zeros(C, n, 2, requires_grad=True)
        m2.grad = torch.randn(C, n, 2, generator=g) * 6e-6
        radii = (torch.rand(C, n, 1, generator=g) > 0.3).to(torch.int32).expand(C, n, 2) * 4
        infos.append({"means2d": m2, "radii": radii, "width": W, "height": H, "n_cameras": C, "gaussian_ids": None})
    return params, infos


def _run(cls, seed):
    params, infos = _random_case(seed)
    optims = {k: torch.optim.Adam([{"params": [p], "lr": 1e-3, "name": k}]) for k, p in params.items()}
    s = cls(refine_start_iter=0, refine_every=3, reset_every=1 << 30, verbose=False)
    s.check_sanity(params, optims)
    st = s.initialize_state(scene_scale=2.0)
    for i, info in enumerate(infos, start=1):
        s.step_pre_backward(params, optims, st, i, info)
        if i < 3:
            s.step_post_backward(params, optims, st, i, info)
            stats = (st["grad2d"].clone(), st["count"].clone())
        else:
            torch.manual_seed(1)
            s.step_post_backward(params, optims, st, i, info)
    return params, optims, stats, st


@pytest.mark.parametrize("seed", [0, 1])
def test_same_statistics_and_decisions_as_gsplats_default_strategy(seed):
    gsplat_strategy = pytest.importorskip("gsplat.strategy")
    ours, o_opt, o_stats, o_state = _run(D.DensifyStrategy, seed)
    theirs, _, t_stats, _ = _run(gsplat_strategy.DefaultStrategy, seed)
    last = o_state["last_refine"]
    assert last["cloned"] > 10 and last["split"] > 10 and last["pruned"] > 10  # all three happen
    assert torch.allclose(o_stats[0], t_stats[0], rtol=1e-6, atol=0) and torch.equal(o_stats[1], t_stats[1])
    n = ours["means"].shape[0]
    assert n == theirs["means"].shape[0] and n != 300  # the same number cloned, split and pruned
    # the same Gaussians (as multisets of rows: the order differs), centres aside (split samples are random)
    for k in ("scales", "quats", "opacities", "sh0", "traj_means"):
        a = ours[k].detach().reshape(n, -1)
        b = theirs[k].detach().reshape(n, -1)
        assert torch.equal(torch.sort(a.sum(1)).values, torch.sort(b.sum(1)).values), k
    for k, p in ours.items():
        assert o_opt[k].param_groups[0]["params"][0] is p


# ------------------------------------------------------------------------------------- the fit without gsplat
@pytest.fixture(scope="module")
def video():
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = orbit_rig(num_views=6, width=48, height=32, square_size=32)
    frames = SyntheticCharacter(motion="wave", seed=1, n_gaussians=800).render_views(rig, [0.0, 1.0], backend="torch")
    return MultiViewVideo(torch.from_numpy(frames), rig, [0.0, 1.0])


@pytest.fixture
def no_gsplat(monkeypatch, caplog):
    """gsplat not importable at all: ``import gsplat`` and ``import gsplat.strategy`` raise, the render hook too."""
    monkeypatch.setitem(sys.modules, "gsplat", None)
    monkeypatch.setitem(sys.modules, "gsplat.strategy", None)
    monkeypatch.setattr(D, "_STRATEGY_IMPORT_FAILURE", None)
    monkeypatch.setattr(R, "_GSPLAT_FAILURE", None)
    monkeypatch.setattr(R, "_GSPLAT", None)

    def missing():
        import gsplat  # noqa: F401  (raises: sys.modules says it does not exist)
    monkeypatch.setattr(R, "_import_gsplat", missing)
    caplog.set_level(logging.WARNING, logger="CharacterShot")


def _strategy_lines(caplog):
    return [r for r in caplog.records if r.name == "CharacterShot" and "gsplat is not importable" in r.getMessage()]


def test_strategy_class_is_gsplats_when_it_imports():
    pytest.importorskip("gsplat.strategy")
    from gsplat.strategy import DefaultStrategy

    assert D.strategy_class() is DefaultStrategy


@pytest.mark.parametrize("motion", ["table", "hexplane"])
def test_fit_densifies_with_our_strategy_when_gsplat_is_not_importable(no_gsplat, caplog, monkeypatch, video, motion):
    refines, problems = [], []
    original = D.DensifyStrategy.step_post_backward

    def watched(self, params, optimizers, state, step, info, packed=False):
        original(self, params, optimizers, state, step, info, packed)
        last = state.get("last_refine")
        if last is not None and (not refines or refines[-1] is not last):
            refines.append(last)
        try:
            _consistent(params, optimizers, state)
        except AssertionError as e:
            problems.append(repr(e))
    monkeypatch.setattr(D.DensifyStrategy, "step_post_backward", watched)
    transparent = {}

    def cb(state):
        if state.iteration == 2:  # make 25 Gaussians transparent: the next refinement must prune them
            with torch.no_grad():
                state.model.splats["opacities"][:25] = -12.0
            transparent["n"] = state.model.num_gaussians

    cfg = FitConfig(motion=motion, iterations=30, batch_views=2, init_points=600, backend="auto", seed=0,
                    densify=True, densify_from=0.0, densify_until=0.9, densify_every=8, grow_grad2d=1e-3,
                    coarse_fraction=0.3, field={"resolution": [6, 6, 6, 2], "features": 4, "multires": [1], "width": 8})
    res = fit(video, cfg, cb)
    assert len(_strategy_lines(caplog)) == 1  # the one line (the fixture reset the once-per-process latch)
    assert "No module named" in D._STRATEGY_IMPORT_FAILURE or "halted" in D._STRATEGY_IMPORT_FAILURE
    assert D.strategy_class() is D.DensifyStrategy and len(_strategy_lines(caplog)) == 1  # not logged again
    assert not problems
    assert len(refines) >= 2
    assert 0 < refines[0]["cloned"] + refines[0]["split"] < transparent["n"]  # where the gradient is high, not all
    assert refines[0]["pruned"] >= 25
    m = res.model
    n = m.num_gaussians
    assert all(p.shape[0] == n for p in m.splats.values()) and m.all_finite()
    assert n == refines[-1]["gaussians"] and n != transparent["n"]
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0]


def test_statistics_from_the_torch_rasteriser_agree_packed_and_unpacked_and_with_gsplat():
    """The real render info of our torch rasteriser (means2d with its retained gradient, radii, sizes, cameras)."""
    g = torch.Generator().manual_seed(3)
    n = 60
    means = (torch.rand(n, 3, generator=g) - 0.5) * 0.6
    quats, scales = torch.randn(n, 4, generator=g), torch.exp(torch.randn(n, 3, generator=g) * 0.3 - 2.5)
    opac, colors = 0.2 + 0.7 * torch.rand(n, generator=g), torch.rand(n, 3, generator=g)
    rig = orbit_rig(num_views=3, width=32, height=24, square_size=24)
    target = torch.rand(3, 24, 32, 3, generator=g)
    stats = {}
    strategies = {"ours": D.DensifyStrategy}
    try:
        from gsplat.strategy import DefaultStrategy
        strategies["gsplat"] = DefaultStrategy
    except ImportError:
        pass
    for name, cls in strategies.items():
        for packed in (False, True):
            params = nn.ParameterDict({"means": nn.Parameter(means.clone()), "scales": nn.Parameter(scales.log()),
                                       "quats": nn.Parameter(quats.clone()),
                                       "opacities": nn.Parameter(torch.logit(opac))})
            s = cls(refine_start_iter=0, refine_every=100)
            st = s.initialize_state(1.0)
            img, _, info = R.rasterize(params["means"], params["quats"], params["scales"].exp(),
                                       torch.sigmoid(params["opacities"]), colors, rig.viewmats(), rig.Ks(), 32, 24,
                                       backend="torch", packed=packed)
            s.step_pre_backward(params, {}, st, 1, info)
            (img - target).abs().mean().backward()
            s.step_post_backward(params, {}, st, 1, info, packed=packed)
            stats[name, packed] = (st["grad2d"], st["count"])
    ref = stats["ours", False]
    assert ref[1].sum() > n and (ref[0] > 0).sum() > n // 2  # most Gaussians drawn by several cameras
    for key, (g2, cnt) in stats.items():
        assert torch.equal(cnt, ref[1]), key
        assert torch.allclose(g2, ref[0], rtol=1e-5, atol=1e-12), key

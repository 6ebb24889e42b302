"""Devices without float64 (Apple's mps): the float32 accumulation path, forced on the CPU with
CHARACTERSHOT_NO_FLOAT64=1, renders and fits like the float64 path and creates no float64 tensor at all."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from charactershot_core.cameras import orbit_rig
from charactershot_core.gaussians.fitting.data import MultiViewVideo
from charactershot_core.gaussians.fitting.fit import FitConfig, fit
from charactershot_core.gaussians.raster.views import render_views
from charactershot_core.gaussians.evaluation.metrics import psnr
from charactershot_core.gaussians.raster.precision import NO_FLOAT64_ENV, accum_dtype, has_float64, segment_scan
from charactershot_core.gaussians.raster.render import rasterize
from charactershot_core.gaussians.synthetic import SyntheticCharacter


def tiny_rig(views=8, w=64, h=48):
    return orbit_rig(num_views=views, width=w, height=h, square_size=h)


@pytest.fixture(scope="module")
def video():
    rig = tiny_rig()
    times = [0.0, 0.5, 1.0]
    frames = SyntheticCharacter(motion="wave", seed=1, n_gaussians=1500).render_views(rig, times, backend="torch")
    return MultiViewVideo(torch.from_numpy(frames), rig, times)


def _db(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(psnr(a.reshape(-1, *a.shape[-3:]), b.reshape(-1, *b.shape[-3:])))


class Float64Watch(TorchDispatchMode):
    """Records every aten operation whose output is a float64 tensor (factory functions, casts, reductions with
    ``dtype=``, ...): everything that would fail on a device without float64."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                self.seen.append(f"{func} at {_caller()}")
        return out


def _caller() -> str:
    """The innermost frame of the pack's code (file:line) that led to the operation."""
    import traceback

    for fr in reversed(traceback.extract_stack()):
        if "charactershot_core" in fr.filename:
            return f"{fr.filename.split('charactershot_core')[-1]}:{fr.lineno}"
    return "?"


def test_the_choice_is_made_in_one_place(monkeypatch):
    monkeypatch.delenv(NO_FLOAT64_ENV, raising=False)
    assert accum_dtype("cpu") == torch.float64 and has_float64(torch.zeros(1))
    assert accum_dtype("mps") == torch.float32 and not has_float64("mps")
    monkeypatch.setenv(NO_FLOAT64_ENV, "1")
    assert accum_dtype("cpu") == torch.float32


def test_segmented_pairwise_scan_matches_float64_sums():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 700, (400,), generator=g)
    seg = torch.repeat_interleave(torch.arange(400), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    x = -torch.rand(int(lengths.sum()), generator=g) * 7  # log(1 - alpha) terms
    ref = torch.zeros_like(x, dtype=torch.float64)
    for s, n in zip(starts.tolist(), lengths.tolist()):
        ref[s:s + n] = torch.cumsum(x[s:s + n].double(), 0)
    got = segment_scan(x, starts, seg)
    assert got.dtype == torch.float32
    # relative to each run's own size: a plain float32 running sum over all runs would be off by ~1e-2 here
    assert float(((got.double() - ref).abs() / ref.abs().clamp_min(1)).max()) < 2e-6
    naive = torch.cumsum(x, 0) - torch.cumsum(x, 0)[starts][seg] + x[starts][seg]
    assert float((naive.double() - ref).abs().max()) > 10 * float((got.double() - ref).abs().max())


def test_forced_float32_renders_and_gradients_match_float64(monkeypatch):
    ch = SyntheticCharacter(motion="wave", seed=0, n_gaussians=3000)
    rig = tiny_rig(views=4, w=96, h=72)
    monkeypatch.delenv(NO_FLOAT64_ENV, raising=False)

    def run():
        p = {k: v.clone().requires_grad_(True) for k, v in ch.gaussians_at(0.5).items()
             if k in ("means", "quats", "scales", "opacities", "colors")}
        img, alpha, _ = rasterize(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"],
                                  rig.viewmats(), rig.Ks(), rig.width, rig.height, backend="torch",
                                  backgrounds=torch.ones(len(rig), 3))
        (img.square().sum() + alpha.sum()).backward()
        return img.detach(), {k: v.grad for k, v in p.items()}

    img64, g64 = run()
    monkeypatch.setenv(NO_FLOAT64_ENV, "1")
    img32, g32 = run()
    db = _db(img32, img64)
    print(f"float32 path vs float64 path, renders: {db:.1f} dB")
    assert db > 100.0
    for k in g64:
        rel = float((g32[k] - g64[k]).norm() / g64[k].norm().clamp_min(1e-12))
        assert rel < 1e-4, (k, rel)


def test_forced_float32_fit_matches_float64(monkeypatch, video):
    cfg = FitConfig(iterations=40, batch_views=2, init_points=1500, backend="torch", seed=0, densify=False)
    monkeypatch.delenv(NO_FLOAT64_ENV, raising=False)
    m64 = fit(video, cfg).model
    r64 = render_views(m64, video.rig, video.times, "torch")
    monkeypatch.setenv(NO_FLOAT64_ENV, "1")
    m32 = fit(video, cfg).model
    r32 = render_views(m32, video.rig, video.times, "torch")
    between = _db(r32, r64)
    gt = video.frames
    q64, q32 = _db(r64, gt), _db(r32, gt)
    print(f"fits, float32 path vs float64 path: {between:.1f} dB between their renders; vs the views "
          f"{q32:.2f} dB and {q64:.2f} dB")
    assert between > 40.0
    assert abs(q32 - q64) < 0.1


def test_no_float64_tensor_is_created_when_forced(monkeypatch, video):
    """A whole table fit (coarse stage, optical-flow initialisation, sweep, densification, NaN checks, snapshots)
    and its renders, watched op by op: with the float32 path forced nothing makes a float64 tensor; the same run on
    the float64 path does (so the watch sees them)."""
    cfg = FitConfig(iterations=30, batch_views=2, init_points=800, backend="torch", seed=0, densify=True,
                    densify_every=5, snapshot_every=10)

    def watched():
        with Float64Watch() as w:
            model = fit(video, cfg).model
            render_views(model, video.rig.select([0, 3]), [0.25, 1.0], "torch")
        return w.seen

    monkeypatch.delenv(NO_FLOAT64_ENV, raising=False)
    assert watched(), "the float64 path makes float64 tensors: the watch must see them"
    monkeypatch.setenv(NO_FLOAT64_ENV, "1")
    seen = watched()
    assert not seen, f"float64 tensors made on the forced float32 path by: {sorted(set(seen))}"

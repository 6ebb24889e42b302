"""gsplat failing in every way it can (missing, failed JIT build, an error in its kernels, forward or backward): under
"auto" one log line and the torch rasteriser on the same device for the rest of the process; an explicit "gsplat"
raises GsplatUnavailableError saying how to fix the install; the fit, its preview and render_views pass the user's
choice to every render; the fit runs on the device it is given; NaN checks are read every few iterations.

gsplat is made to fail through render.py's import hook (``_import_gsplat``), and ``_device_supports_gsplat`` is
patched so that the gsplat paths are taken on this CPU-only machine.
"""

from __future__ import annotations

import logging
import types

import pytest
import torch

from charactershot_core.cameras import orbit_rig
from charactershot_core.errors import InputError
from charactershot_core.gaussians.raster import render as R
from charactershot_core.gaussians.fitting.data import MultiViewVideo
from charactershot_core.gaussians.fitting.fit import FitConfig, fit
from charactershot_core.gaussians.fitting.guard import FitDivergedError
from charactershot_core.gaussians.raster.views import pick_device, render_views

BUILD_ERROR = "Error building extension 'gsplat_cuda': nvcc fatal : Unsupported gpu architecture 'compute_120'"
KERNEL_ERROR = "CUDA error: no kernel image is available for execution on the device"


def _scene(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 3, generator=g)
    means = torch.stack([(u[:, 0] - 0.5) * 0.6, (u[:, 1] - 0.5) * 0.6, (u[:, 2] - 0.5) * 0.6], 1)
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.3 - 2.5)
    opac = 0.2 + 0.7 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    return means, quats, scales, opac, colors


def _render(backend, **kw):
    rig = orbit_rig(num_views=2, width=24, height=16, square_size=16)
    return R.rasterize(*_scene(), rig.viewmats(), rig.Ks(), rig.width, rig.height, backend=backend, **kw)


def _fake_gsplat(rasterization):
    return types.SimpleNamespace(rasterization=rasterization, __name__="gsplat")


def _raises(exc):
    def hook():
        raise exc
    return hook


def _kernel_fails(*a, **k):
    raise RuntimeError(KERNEL_ERROR)


def _torch_as_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, near_plane, far_plane,
                     radius_clip, eps2d, sh_degree, packed, backgrounds, render_mode, absgrad, rasterize_mode):
    """A working stand-in for gsplat.rasterization (the torch rasteriser under gsplat's keyword names)."""
    return R._rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                              backgrounds, near_plane, far_plane, radius_clip, rasterize_mode, absgrad, packed,
                              render_mode, eps2d)


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError(KERNEL_ERROR + " (rasterize_to_pixels_bwd)")


def _backward_fails(*a, **k):
    img, alpha, info = _torch_as_gsplat(*a, **k)
    return _FailingBackward.apply(img), alpha, info


@pytest.fixture
def gsplat_env(monkeypatch, caplog):
    """A fresh process state for gsplat (no latch, nothing loaded) on a pretend CUDA device; returns a function
    that installs an import hook and counts its calls."""
    monkeypatch.setattr(R, "_GSPLAT_FAILURE", None)
    monkeypatch.setattr(R, "_GSPLAT", None)
    monkeypatch.setattr(R, "_device_supports_gsplat", lambda dev: True)
    caplog.set_level(logging.WARNING, logger="CharacterShot")
    calls = []

    def install(hook):
        def counted():
            calls.append(1)
            return hook()
        monkeypatch.setattr(R, "_import_gsplat", counted)
        return calls
    return install


def _gsplat_lines(caplog):
    return [r for r in caplog.records if r.name == "CharacterShot" and "gsplat cannot be used" in r.getMessage()]


FAILURES = {
    "missing": _raises(ModuleNotFoundError("No module named 'gsplat'")),
    "no toolkit": _raises(ImportError("gsplat has no prebuilt CUDA extension and found no CUDA toolkit")),
    "jit build error": _raises(RuntimeError(BUILD_ERROR)),
    "broken shared object": _raises(OSError("gsplat_cuda.so: undefined symbol: _ZN3c104cuda9SetDevice")),
    "kernel error": lambda: _fake_gsplat(_kernel_fails),
}
REASONS = {"missing": "No module named 'gsplat'", "no toolkit": "no CUDA toolkit", "jit build error": "nvcc fatal",
           "broken shared object": "undefined symbol", "kernel error": "no kernel image"}


@pytest.mark.parametrize("how", list(FAILURES))
def test_auto_falls_back_to_torch_with_one_log_line_and_stays_there(gsplat_env, caplog, how):
    calls = gsplat_env(FAILURES[how])
    want, want_alpha, _ = _render("torch")
    for _ in range(3):
        img, alpha, info = _render("auto")
        assert info["backend"] == "torch"
        assert img.device == want.device and torch.equal(img, want) and torch.equal(alpha, want_alpha)
    lines = _gsplat_lines(caplog)
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    msg = lines[0].getMessage()
    assert REASONS[how] in msg and "torch rasteriser" in msg and "To fix it" in msg
    assert "\n" not in msg
    assert len(calls) == 1  # the latch: gsplat is not tried (or rebuilt) again in this process
    assert REASONS[how] in R._GSPLAT_FAILURE
    assert not R.gsplat_available("cuda") and R.resolve_backend("auto", "cuda") == "torch"


@pytest.mark.parametrize("how", list(FAILURES))
def test_explicit_gsplat_raises_an_error_that_says_how_to_fix_the_install(gsplat_env, caplog, how):
    gsplat_env(FAILURES[how])
    with pytest.raises(R.GsplatUnavailableError) as e:
        _render("gsplat")
    err = e.value
    assert isinstance(err, InputError) and err.input_name == "backend"
    text = str(err)
    assert REASONS[how] in text and REASONS[how] in err.reason
    assert "To fix it" in text and "nvcc" in text and "TORCH_EXTENSIONS_DIR" in text and "'auto'" in text
    # the failure latched: a later "auto" renders with torch without trying gsplat again, "gsplat" still raises
    assert _render("auto")[2]["backend"] == "torch"
    with pytest.raises(R.GsplatUnavailableError):
        _render("gsplat")
    assert len(_gsplat_lines(caplog)) == 1


def test_working_gsplat_is_used_and_out_of_memory_is_not_a_gsplat_failure(gsplat_env, caplog):
    gsplat_env(lambda: _fake_gsplat(_torch_as_gsplat))
    img, _, info = _render("auto")
    assert info["backend"] == "gsplat" and R._GSPLAT_FAILURE is None

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    R._GSPLAT.rasterization = oom
    with pytest.raises(torch.OutOfMemoryError):
        _render("auto")
    assert R._GSPLAT_FAILURE is None and not _gsplat_lines(caplog)  # the torch rasteriser would need more memory


def test_the_users_choice_reaches_every_render_call(gsplat_env, caplog, monkeypatch):
    """render_views passes "auto" (not the resolved "gsplat") to each chunk: gsplat breaking mid-way falls back."""
    n = []

    def works_once(*a, **k):
        n.append(1)
        if len(n) > 1:
            raise RuntimeError(KERNEL_ERROR)
        return _torch_as_gsplat(*a, **k)

    gsplat_env(lambda: _fake_gsplat(works_once))
    from charactershot_core.gaussians.model import make_gaussians

    means, _, _, _, colors = _scene(60)
    model = make_gaussians(means, colors, 0.05, 0, [0.0], None)
    rig = orbit_rig(num_views=3, width=24, height=16, square_size=16)
    got = render_views(model, rig, None, "auto", "cpu", chunk=1)
    want = render_views(model, rig, None, "torch", "cpu", chunk=1)
    assert torch.allclose(got, want, atol=1e-6) and len(n) == 2
    assert len(_gsplat_lines(caplog)) == 1


# ----------------------------------------------------------------------------------------------- the fit
@pytest.fixture(scope="module")
def video():
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = orbit_rig(num_views=6, width=48, height=32, square_size=32)
    frames = SyntheticCharacter(motion="wave", seed=1, n_gaussians=800).render_views(rig, [0.0, 1.0], backend="torch")
    return MultiViewVideo(torch.from_numpy(frames), rig, [0.0, 1.0])


def _cfg(**kw):
    base = dict(iterations=12, batch_views=2, init_points=600, backend="auto", seed=0, densify=False,
                coarse_fraction=0.3, field={"resolution": [6, 6, 6, 2], "features": 4, "multires": [1], "width": 8})
    base.update(kw)
    return FitConfig(**base)


@pytest.mark.parametrize("how", ["jit build error", "kernel error", "backward kernel error"])
def test_fit_under_auto_completes_with_torch_when_gsplat_fails(gsplat_env, caplog, video, how):
    hook = (lambda: _fake_gsplat(_backward_fails)) if how == "backward kernel error" else FAILURES[how]
    gsplat_env(hook)
    previews = []

    def cb(state):
        if state.iteration in (1, 6):
            previews.append(state.preview())  # the fit's preview renders with the user's choice too

    res = fit(video, _cfg(), cb)
    assert res.iterations == 12 and res.backend == "torch" and res.device == "cpu"
    assert res.model.all_finite() and len(previews) == 2
    assert len(_gsplat_lines(caplog)) == 1
    assert ("no kernel image" if "kernel" in how else "nvcc fatal") in R._GSPLAT_FAILURE


def test_fit_with_working_gsplat_reports_it_and_explicit_gsplat_needs_cuda(gsplat_env, video):
    gsplat_env(lambda: _fake_gsplat(_torch_as_gsplat))
    res = fit(video, _cfg(iterations=3))
    assert res.backend == "gsplat" and R._GSPLAT_FAILURE is None
    with pytest.raises(InputError, match="backend: gsplat needs a CUDA GPU and the fit runs on cpu"):
        fit(video, _cfg(backend="gsplat", device="cpu"))


def test_pick_device_takes_the_given_device_for_every_backend():
    # the nodes pass ComfyUI's torch device: the torch rasteriser runs there, not on the CPU
    assert pick_device("torch", "cuda:1") == "cuda:1"
    assert pick_device("torch", torch.device("cuda", 0)) == "cuda:0"
    assert pick_device("auto", "cuda") == "cuda"
    assert pick_device("gsplat", "cuda:0") == "cuda:0"
    assert pick_device("torch", "cpu") == "cpu" and pick_device("auto", torch.device("cpu")) == "cpu"
    with pytest.raises(InputError, match="gsplat needs a CUDA GPU"):
        pick_device("gsplat", "cpu")
    with pytest.raises(InputError, match="expected auto, torch or gsplat"):
        pick_device("vulkan", "cpu")
    if not torch.cuda.is_available():
        assert pick_device("torch") == "cpu" and pick_device("auto") == "cpu"
        with pytest.raises(InputError, match="gsplat needs a CUDA GPU"):
            pick_device("gsplat")


def test_fit_runs_on_the_given_device(video):
    res = fit(video, _cfg(iterations=2, backend="torch", device="cpu"))
    assert res.device == "cpu" and res.model.splats["means"].device.type == "cpu"
    with pytest.raises(RuntimeError):  # "meta" proves the fit really puts its tensors on the given device
        fit(video, _cfg(iterations=2, backend="torch", device="meta"))


def test_nan_flags_are_read_every_few_iterations_and_name_the_exact_iteration(video):
    seen = []

    def poison(state):
        seen.append(state.iteration)
        if state.iteration == 7:
            with torch.no_grad():
                state.model.splats["means"][0, 0] = float("nan")

    with pytest.raises(FitDivergedError) as err:
        fit(video.select_frames([0]), _cfg(iterations=40, check_every=10, snapshot_every=25, backend="torch"), poison)
    e = err.value
    # the parameters broke at iteration 8; the host read the flags of iterations 1-10 at the start of iteration 11
    assert e.iteration == 8 and e.what == "the Gaussian parameters" and e.good_iteration == 0
    assert seen == list(range(1, 11)) and e.model is not None and e.model.all_finite()


def test_two_frame_time_axis_has_a_finite_smoothness_term():
    # a 2-frame video gets 2 time cells: the second difference along time is empty (its mean was NaN, which made
    # every fit of a 2-frame video diverge at its first deformation iteration)
    from charactershot_core.gaussians.model.hexplane import HexPlane

    hp = HexPlane([[-1, -1, -1], [1, 1, 1]], resolution=(4, 4, 4, 2), features=3, multires=(1,))
    ts = hp.time_smoothness()
    assert torch.isfinite(ts) and float(ts) == 0.0 and torch.isfinite(hp.space_smoothness())

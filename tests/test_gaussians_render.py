"""Rasteriser backends (torch vs a brute-force reference), the info gsplat's DefaultStrategy needs, and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from charactershot_core.cameras import CameraRig, official_rig
from charactershot_core.errors import InputError
from charactershot_core.gaussians.raster import _torch_raster as tr
from charactershot_core.gaussians.raster import render as render_mod
from charactershot_core.gaussians.evaluation.metrics import fg_box, psnr, score, ssim
from charactershot_core.gaussians.raster.render import rasterize, resolve_backend

F64 = torch.float64


# ------------------------------------------------------------------------------------- reference renderer
def _look_at_rig(angles, w, h, f=40.0, radius=3.0, height=0.8, target=0.9):
    c2w = []
    for a in angles:
        pos = np.array([radius * math.sin(a), -radius * math.cos(a), height])
        fwd = np.array([0.0, 0.0, target]) - pos
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -fwd, pos
        c2w.append(m)
    return CameraRig(np.array(c2w), f, f, w / 2 + 0.3, h / 2 - 0.2, w, h)


def brute_force(means, quats, scales, opac, colors, viewmats, Ks, w, h, bg=None, antialiased=False, eps2d=0.3):
    """Per pixel, every Gaussian front to back (plain loops over Gaussians, dense over pixels), gsplat's rules:
    EWA with the frustum-clamped Jacobian, alpha = min(0.999, o exp(-sigma)), skip alpha < 1/255, stop before T
    would fall to <= 1e-4. Differentiable with autograd."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    qw, qx, qy, qz = q.unbind(-1)
    rot = torch.stack([1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy),
                       2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx),
                       2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy)], -1)
    rot = rot.reshape(-1, 3, 3)
    cov = rot @ torch.diag_embed(scales ** 2) @ rot.transpose(1, 2)
    images, alphas = [], []
    for c in range(viewmats.shape[0]):
        vm, k = viewmats[c], Ks[c]
        pc = means @ vm[:3, :3].T + vm[:3, 3]
        cc = vm[:3, :3] @ cov @ vm[:3, :3].T
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        tz = pc[:, 2]
        u, v = fx * pc[:, 0] / tz + cx, fy * pc[:, 1] / tz + cy
        lx = 0.3 * 0.5 * w / fx
        ly = 0.3 * 0.5 * h / fy
        txc = tz * torch.clamp(pc[:, 0] / tz, -(cx / fx + lx), (w - cx) / fx + lx)
        tyc = tz * torch.clamp(pc[:, 1] / tz, -(cy / fy + ly), (h - cy) / fy + ly)
        jac = torch.zeros(len(tz), 2, 3, dtype=means.dtype)
        jac[:, 0, 0], jac[:, 0, 2] = fx / tz, -fx * txc / tz ** 2
        jac[:, 1, 1], jac[:, 1, 2] = fy / tz, -fy * tyc / tz ** 2
        c2 = jac @ cc @ jac.transpose(1, 2)
        det0 = c2[:, 0, 0] * c2[:, 1, 1] - c2[:, 0, 1] ** 2
        c2 = c2 + eps2d * torch.eye(2, dtype=means.dtype)
        det = c2[:, 0, 0] * c2[:, 1, 1] - c2[:, 0, 1] ** 2
        inv = torch.linalg.inv(c2)
        o = opac * torch.sqrt(det0 / det) if antialiased else opac
        px, py = torch.meshgrid(torch.arange(w, dtype=means.dtype) + 0.5, torch.arange(h, dtype=means.dtype) + 0.5,
                                indexing="xy")
        trans = torch.ones(h, w, dtype=means.dtype)
        img = torch.zeros(h, w, colors.shape[1], dtype=means.dtype)
        done = torch.zeros(h, w, dtype=torch.bool)
        for g in torch.argsort(tz.detach()).tolist():
            if tz[g] < 0.01:
                continue
            dx, dy = px - u[g], py - v[g]
            sigma = 0.5 * (inv[g, 0, 0] * dx * dx + inv[g, 1, 1] * dy * dy) + inv[g, 0, 1] * dx * dy
            a = torch.clamp(o[g] * torch.exp(-sigma), max=0.999)
            use = (a >= 1 / 255) & ~done
            nxt = trans * (1 - a)
            stop = use & (nxt <= 1e-4)
            done = done | stop
            use = use & ~stop
            img = img + torch.where(use[..., None], (a * trans)[..., None] * colors[g], torch.zeros_like(img))
            trans = torch.where(use, nxt, trans)
        if bg is not None:
            img = img + trans[..., None] * bg[c]
        images.append(img)
        alphas.append((1 - trans)[..., None])
    return torch.stack(images), torch.stack(alphas)


def _scene(n=40, seed=0, opacity=(0.05, 0.95), scale=(0.02, 0.1), dtype=F64):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([1.0, 1.0, 1.6], dtype=dtype)
    means = means + torch.tensor([0.0, 0.0, 0.9], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * (scale[1] - scale[0]) + scale[0]
    opac = torch.rand(n, generator=g, dtype=dtype) * (opacity[1] - opacity[0]) + opacity[0]
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    return [means, quats, scales, opac, colors]


def _compare_with_brute(params, rig, antialiased=False, bg=None, fwd_tol=1e-9, grad_tol=1e-7):
    vm, ks = rig.viewmats(dtype=F64), rig.Ks(dtype=F64)
    mode = "antialiased" if antialiased else "classic"
    p1 = [t.clone().requires_grad_(True) for t in params]
    img, alpha, info = rasterize(*p1, vm, ks, rig.width, rig.height, backend="torch", backgrounds=bg,
                                 rasterize_mode=mode)
    g = torch.Generator().manual_seed(1)
    gi = torch.randn(img.shape, generator=g, dtype=F64)
    ga = torch.randn(alpha.shape, generator=g, dtype=F64)
    ((img * gi).sum() + (alpha * ga).sum()).backward()
    p2 = [t.clone().requires_grad_(True) for t in params]
    img2, alpha2 = brute_force(*p2, vm, ks, rig.width, rig.height, bg=bg, antialiased=antialiased)
    ((img2 * gi).sum() + (alpha2 * ga).sum()).backward()
    assert img.shape == img2.shape and alpha.shape == alpha2.shape
    assert (img - img2).abs().max().item() < fwd_tol
    assert (alpha - alpha2).abs().max().item() < fwd_tol
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), p1, p2):
        err = (a.grad - b.grad).abs().max().item() / max(b.grad.abs().max().item(), 1e-12)
        assert err < grad_tol, f"gradient of {name}: relative error {err}"
    return img, alpha, info


# ------------------------------------------------------------------------------------------------ tests
def test_torch_backend_matches_brute_force_forward_and_gradients():
    rig = _look_at_rig([0.3, 2.0], 40, 30)
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.5, 0.1]], dtype=F64)
    img, alpha, _ = _compare_with_brute(_scene(40, seed=0), rig, bg=bg)
    assert alpha.max() > 0.5 and alpha.min() == 0.0  # a non-trivial scene with empty pixels


def test_torch_backend_matches_brute_force_antialiased():
    _compare_with_brute(_scene(30, seed=3), _look_at_rig([1.0], 36, 28), antialiased=True)


def test_early_termination_matches_brute_force():
    # many opaque layers: most pixels stop compositing at T <= 1e-4 like gsplat's kernel
    params = _scene(60, seed=5, opacity=(0.9, 0.99), scale=(0.08, 0.15))
    img, alpha, _ = _compare_with_brute(params, _look_at_rig([0.0], 32, 24))
    assert alpha.max().item() > 1 - 2e-4


def test_depth_groups_skip_finished_pixels_and_match_brute_force(monkeypatch):
    # front-to-back depth groups drop pairs behind pixels whose transmittance already fell to <= 1e-4
    monkeypatch.setattr(tr, "MIN_GROUP", 4)
    params = _scene(250, seed=6, opacity=(0.9, 0.99), scale=(0.08, 0.16))
    rig = _look_at_rig([0.0, 2.0], 32, 24)
    with torch.no_grad():
        radii, m2, dep, con, op = tr.project(params[0], params[1], params[2], params[3], rig.viewmats(dtype=F64),
                                            rig.Ks(dtype=F64), 32, 24)
    sel = (radii[0] > 0).all(-1)
    args = (m2[0][sel], con[0][sel], op[0][sel], torch.zeros(int(sel.sum()), dtype=torch.int64), dep[0][sel], 32, 24,
            32 * 24)
    e1, p1, a1 = tr.enumerate_pairs(*args, depth_batches=1)
    e8, p8, a8 = tr.enumerate_pairs(*args, depth_batches=8)
    assert 0 < len(p8) < 0.8 * len(p1)  # many pairs skipped
    assert torch.all(p8[1:] >= p8[:-1]) and torch.all(p1[1:] >= p1[:-1])  # sorted by pixel
    _compare_with_brute(params, rig)  # rasterize uses the depth groups too (MIN_GROUP patched)


def test_float32_close_to_float64():
    rig = _look_at_rig([0.5, 2.5], 40, 30)
    p64 = [t.clone().requires_grad_(True) for t in _scene(50, seed=2)]
    i64, a64, _ = rasterize(*p64, rig.viewmats(dtype=F64), rig.Ks(dtype=F64), 40, 30, backend="torch")
    p32 = [t.detach().float().requires_grad_(True) for t in p64]
    i32, a32, _ = rasterize(*p32, rig.viewmats(), rig.Ks(), 40, 30, backend="torch")
    assert i32.dtype == torch.float32
    assert (i32.double() - i64).abs().max() < 1e-4
    assert (a32.double() - a64).abs().max() < 1e-4
    ((i64 - 0.5) ** 2).sum().backward()
    ((i32 - 0.5) ** 2).sum().backward()
    for a, b in zip(p32, p64):
        assert (a.grad.double() - b.grad).abs().max() / b.grad.abs().max() < 1e-3


def test_sh_colours_match_gsplat_reference_and_brute_force():
    from gsplat.cuda._torch_impl import _spherical_harmonics

    g = torch.Generator().manual_seed(7)
    dirs = torch.randn(200, 3, generator=g, dtype=F64)
    for degree in range(5):
        coeffs = torch.randn(200, (degree + 1) ** 2, 3, generator=g, dtype=F64)
        ours = tr.eval_sh(degree, dirs, coeffs)
        ref = _spherical_harmonics(degree, dirs, coeffs)
        assert torch.allclose(ours, ref, atol=1e-10), degree
    # rendering with SH degree 1 equals rendering the view-dependent colours computed by hand
    rig = _look_at_rig([0.4], 32, 24)
    means, quats, scales, opac, _ = _scene(25, seed=4)
    sh = torch.randn(25, 4, 3, generator=g, dtype=F64) * 0.3
    vm, ks = rig.viewmats(dtype=F64), rig.Ks(dtype=F64)
    img, _, _ = rasterize(means, quats, scales, opac, sh, vm, ks, 32, 24, sh_degree=1, backend="torch")
    campos = torch.linalg.inv(vm)[0, :3, 3]
    cols = torch.clamp_min(_spherical_harmonics(1, means - campos, sh) + 0.5, 0.0)
    ref, _ = brute_force(means, quats, scales, opac, cols, vm, ks, 32, 24)
    assert (img - ref).abs().max() < 1e-9


def test_projection_matches_gsplat_pure_torch_reference():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    rig = _look_at_rig([0.3, 1.9, 4.0], 48, 36)
    means, quats, scales, opac, _ = _scene(200, seed=21, scale=(0.01, 0.2))
    means = means * 1.6  # some Gaussians off-screen, some beside the camera
    vm, ks = rig.viewmats(dtype=F64), rig.Ks(dtype=F64)
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    r_ref, m_ref, d_ref, c_ref, comp_ref = _fully_fused_projection(means, covars, vm, ks, 48, 36,
                                                                   calc_compensations=True)
    ones = torch.ones_like(opac)
    radii, m2, dep, con, op = tr.project(means, quats, scales, ones, vm, ks, 48, 36)
    vis = (r_ref > 0).all(-1)
    assert vis.sum() > 100 and (~vis).sum() > 0
    assert torch.allclose(m2, m_ref, atol=1e-9) and torch.allclose(dep, d_ref, atol=1e-12)
    assert torch.allclose(con[vis], c_ref[vis], rtol=1e-9, atol=1e-12)
    # same culling; at opacity 1 the opacity-aware extent of gsplat's CUDA kernel is sqrt(2 ln 255) = 3.329 sigma
    # (the pure-torch reference uses 3.33), so a radius may differ by one pixel
    assert torch.equal((radii > 0).all(-1), vis)
    assert (radii[vis] - r_ref[vis]).abs().max() <= 1
    # antialiasing compensation (opacity 1 x compensation); it also shrinks the opacity-aware extent
    _, _, _, _, op_aa = tr.project(means, quats, scales, ones, vm, ks, 48, 36, antialiased=True)
    assert torch.allclose(op_aa[vis], comp_ref[vis], atol=1e-9)


def test_projected_gaussian_lands_where_the_rig_projects_it():
    rig = official_rig().scaled(0.25)
    point = np.array([[0.12, -0.05, 1.1]])
    uv, depth = rig.project(point)
    means = torch.tensor(point, dtype=F64)
    img, alpha, info = rasterize(means, torch.tensor([[1.0, 0, 0, 0]], dtype=F64),
                                 torch.full((1, 3), 0.01, dtype=F64), torch.tensor([0.9], dtype=F64),
                                 torch.ones(1, 3, dtype=F64), rig.viewmats(dtype=F64), rig.Ks(dtype=F64), rig.width,
                                 rig.height, backend="torch")
    assert torch.allclose(info["means2d"][:, 0], torch.as_tensor(uv[:, 0]), atol=1e-9)
    assert torch.allclose(info["depths"][:, 0], torch.as_tensor(depth[:, 0]), atol=1e-9)
    for v in range(len(rig)):
        a = alpha[v, ..., 0]
        if a.sum() == 0:
            continue  # behind / outside this camera
        ys, xs = torch.meshgrid(torch.arange(rig.height, dtype=F64) + 0.5, torch.arange(rig.width, dtype=F64) + 0.5,
                                indexing="ij")
        cu, cv = (a * xs).sum() / a.sum(), (a * ys).sum() / a.sum()
        assert abs(cu - uv[v, 0, 0]) < 0.05 and abs(cv - uv[v, 0, 1]) < 0.05
        iy, ix = divmod(int(torch.argmax(a)), rig.width)
        assert (ix, iy) == (int(uv[v, 0, 0]), int(uv[v, 0, 1]))


def test_white_background_and_empty_pixels():
    rig = _look_at_rig([0.0, 1.0], 30, 20)
    params = [t.float() for t in _scene(10, seed=1, scale=(0.01, 0.02))]
    img, alpha, _ = rasterize(*params, rig.viewmats(), rig.Ks(), 30, 20, backend="torch",
                              backgrounds=torch.ones(2, 3))
    empty = alpha[..., 0] == 0
    assert empty.sum() > 100
    assert torch.all(img[empty] == 1.0)
    # everything behind the camera: an all-background image, alpha 0, radii 0
    means = params[0].clone()
    means[:, 1] = -10.0  # behind camera 0 (at y = -3 looking +y)
    img, alpha, info = rasterize(means, *params[1:], rig.viewmats()[:1], rig.Ks()[:1], 30, 20, backend="torch",
                                 backgrounds=torch.ones(1, 3))
    assert torch.all(img == 1.0) and torch.all(alpha == 0) and torch.all(info["radii"] == 0)


def test_info_has_what_default_strategy_needs_and_packed_matches_unpacked():
    rig = _look_at_rig([0.2, 1.7, 3.5], 32, 24)
    params = [t.float().requires_grad_(True) for t in _scene(30, seed=8)]
    vm, ks = rig.viewmats(), rig.Ks()
    img_u, a_u, info_u = rasterize(*params, vm, ks, 32, 24, backend="torch", packed=False)
    img_p, a_p, info_p = rasterize(*params, vm, ks, 32, 24, backend="torch", packed=True)
    assert torch.allclose(img_u, img_p) and torch.allclose(a_u, a_p)
    assert info_u["radii"].shape == (3, 30, 2) and info_u["radii"].dtype == torch.int32
    assert info_u["means2d"].shape == (3, 30, 2) and info_u["depths"].shape == (3, 30)
    assert info_u["width"] == 32 and info_u["height"] == 24 and info_u["n_cameras"] == 3
    assert info_u["gaussian_ids"] is None and info_u["backend"] == "torch"
    nnz = int((info_u["radii"] > 0).all(-1).sum())
    assert info_p["means2d"].shape == (nnz, 2) and info_p["radii"].shape == (nnz, 2)
    assert info_p["gaussian_ids"].shape == (nnz,) and info_p["camera_ids"].shape == (nnz,)
    # means2d gradients agree between the layouts
    for info, img in ((info_u, img_u), (info_p, img_p)):
        info["means2d"].retain_grad()
    (img_u.sum() + a_u.sum()).backward()
    (img_p.sum() + a_p.sum()).backward()
    sel = (info_u["radii"] > 0).all(-1)
    assert torch.allclose(info_u["means2d"].grad[sel], info_p["means2d"].grad, atol=1e-5)
    assert torch.all(info_u["means2d"].grad[~sel] == 0)


def test_absgrad_accumulates_absolute_pixel_gradients():
    rig = _look_at_rig([0.2, 2.2], 32, 24)
    params = [t.float().requires_grad_(True) for t in _scene(20, seed=9)]
    img, alpha, info = rasterize(*params, rig.viewmats(), rig.Ks(), 32, 24, backend="torch", absgrad=True)
    info["means2d"].retain_grad()
    ((img - 0.3) ** 2).sum().backward()
    absgrad, grad = info["means2d"].absgrad, info["means2d"].grad
    assert absgrad.shape == grad.shape
    assert torch.all(absgrad >= grad.abs() - 1e-6)
    assert absgrad.sum() > grad.abs().sum()  # pixels pull in different directions


def test_camera_chunking_gives_the_same_result(monkeypatch):
    rig = _look_at_rig([0.1, 1.1, 2.1, 3.1], 30, 20)
    params = [t.requires_grad_(True) for t in _scene(30, seed=11)]
    vm, ks = rig.viewmats(dtype=F64), rig.Ks(dtype=F64)
    img1, a1, _ = rasterize(*params, vm, ks, 30, 20, backend="torch")
    img1.sum().backward()
    g1 = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    monkeypatch.setattr(render_mod, "PAIR_BUDGET", 10)  # one camera per chunk
    assert len(render_mod._camera_chunks(torch.ones(4, 5, 2, dtype=torch.int32), 10)) == 4
    img2, a2, _ = rasterize(*params, vm, ks, 30, 20, backend="torch")
    img2.sum().backward()
    assert torch.allclose(img1, img2, atol=1e-12) and torch.allclose(a1, a2, atol=1e-12)
    for a, b in zip(g1, params):
        assert torch.allclose(a, b.grad, atol=1e-10)


def test_too_many_pairs_for_memory_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(render_mod, "MAX_PAIRS_ONE_CAMERA", 5000)
    rig = _look_at_rig([0.0], 64, 48)
    params = [t.float() for t in _scene(20, seed=1, scale=(0.3, 0.5))]  # huge splats
    with pytest.raises(InputError) as e:
        rasterize(*params, rig.viewmats(), rig.Ks(), 64, 48, backend="torch")
    assert e.value.input_name == "scales" and "gsplat" in str(e.value)


def test_expected_depth_mode():
    rig = _look_at_rig([0.0], 24, 18, f=30.0)
    means = torch.tensor([[0.0, 0.0, 0.9]], dtype=F64)
    img, alpha, _ = rasterize(means, torch.tensor([[1.0, 0, 0, 0]], dtype=F64), torch.full((1, 3), 0.2, dtype=F64),
                              torch.tensor([0.99], dtype=F64), torch.ones(1, 3, dtype=F64), rig.viewmats(dtype=F64),
                              rig.Ks(dtype=F64), 24, 18, backend="torch", render_mode="RGB+ED")
    assert img.shape == (1, 18, 24, 4)
    cam_dist = float(np.linalg.norm(rig.centers[0] - np.array([0.0, 0.0, 0.9])))
    covered = alpha[0, ..., 0] > 0.05
    depth = img[0, ..., 3][covered]
    assert torch.allclose(depth, torch.full_like(depth, cam_dist), atol=1e-6)


@pytest.mark.parametrize("packed", [False, True])
def test_default_strategy_densifies_and_prunes_on_the_torch_backend(packed):
    from gsplat.strategy import DefaultStrategy

    torch.manual_seed(0)
    rig = _look_at_rig([0.0, 1.5, 3.0], 32, 24)
    vm, ks = rig.viewmats(), rig.Ks()
    # target: a brighter, larger scene
    tgt_params = [t.float() for t in _scene(40, seed=12)]
    with torch.no_grad():
        target, _, _ = rasterize(*tgt_params, vm, ks, 32, 24, backend="torch", backgrounds=torch.ones(3, 3))
    init = [t.float() for t in _scene(20, seed=13, scale=(0.05, 0.08))]
    params = torch.nn.ParameterDict({
        "means": torch.nn.Parameter(init[0]), "quats": torch.nn.Parameter(init[1]),
        "scales": torch.nn.Parameter(torch.log(init[2])), "opacities": torch.nn.Parameter(torch.logit(init[3])),
        "colors": torch.nn.Parameter(init[4]),
    })
    params["opacities"].data[:3] = -8.0  # a few nearly transparent Gaussians to prune
    opts = {k: torch.optim.Adam([v], lr=1e-2) for k, v in params.items()}
    strategy = DefaultStrategy(refine_start_iter=2, refine_every=3, refine_stop_iter=100, reset_every=1000,
                               grow_grad2d=1e-7, grow_scale3d=0.01, prune_opa=0.005, verbose=False)
    strategy.check_sanity(params, opts)
    state = strategy.initialize_state(scene_scale=1.0)
    counts = [len(params["means"])]
    for step in range(10):
        img, alpha, info = rasterize(params["means"], params["quats"], torch.exp(params["scales"]),
                                     torch.sigmoid(params["opacities"]), params["colors"], vm, ks, 32, 24,
                                     backend="torch", backgrounds=torch.ones(3, 3), packed=packed)
        strategy.step_pre_backward(params, opts, state, step, info)
        loss = (img - target).abs().mean()
        loss.backward()
        strategy.step_post_backward(params, opts, state, step, info, packed=packed)
        for o in opts.values():
            o.step()
            o.zero_grad(set_to_none=True)
        counts.append(len(params["means"]))
    assert max(counts) > counts[0]  # duplicated / split
    assert all(len(v) == counts[-1] for v in params.values())
    assert all(o.state[o.param_groups[0]["params"][0]]["exp_avg"].shape[0] == counts[-1] for o in opts.values())
    assert torch.sigmoid(params["opacities"]).min() > 0.005  # the transparent ones were pruned
    assert counts[-1] < max(counts) or counts[-1] > counts[0]


@pytest.mark.parametrize(
    "change, name",
    [
        (lambda p: p.update(means=p["means"][:, :2]), "means"),
        (lambda p: p.update(quats=p["quats"][:-1]), "quats"),
        (lambda p: p.update(scales=p["scales"][:, :2]), "scales"),
        (lambda p: p.update(opacities=p["opacities"][:, None]), "opacities"),
        (lambda p: p.update(colors=p["colors"][:-2]), "colors"),
        (lambda p: p.update(Ks=p["Ks"][:1]), "Ks"),
        (lambda p: p["means"].__setitem__((3, 1), float("nan")), "means"),
        (lambda p: p["scales"].__setitem__((0, 0), float("inf")), "scales"),
        (lambda p: p.update(means=p["means"][:0], quats=p["quats"][:0], scales=p["scales"][:0],
                            opacities=p["opacities"][:0], colors=p["colors"][:0]), "means"),
        (lambda p: p.update(sh_degree=2), "colors"),
        (lambda p: p.update(backgrounds=torch.ones(5, 3)), "backgrounds"),
        (lambda p: p.update(backend="vulkan"), "backend"),
        (lambda p: p.update(rasterize_mode="fancy"), "rasterize_mode"),
    ],
)
def test_bad_inputs_give_clear_errors(change, name):
    rig = _look_at_rig([0.0, 1.0], 16, 12)
    means, quats, scales, opac, colors = [t.float() for t in _scene(8, seed=0)]
    p = dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors, viewmats=rig.viewmats(),
             Ks=rig.Ks(), width=16, height=12, backend="torch")
    change(p)
    with pytest.raises(InputError) as e:
        rasterize(**p)
    assert e.value.input_name == name
    assert str(e.value).startswith(name + ":")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_backend_resolution_without_cuda():
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("AUTO") == "torch"
    with pytest.raises(InputError, match="CUDA"):
        resolve_backend("gsplat", "cpu")
    rig = _look_at_rig([0.0], 16, 12)
    params = [t.float() for t in _scene(5)]
    with pytest.raises(InputError, match="backend"):
        rasterize(*params, rig.viewmats(), rig.Ks(), 16, 12, backend="gsplat")


# ----------------------------------------------------------------------------------------------- metrics
def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook SSIM: explicit 11x11 Gaussian-weighted window sums at every valid position, per channel."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x ** 2) / (2 * 1.5 ** 2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    h, w, ch = a.shape
    for c in range(ch):
        for i in range(h - 10):
            for j in range(w - 10):
                pa, pb = a[i:i + 11, j:j + 11, c], b[i:i + 11, j:j + 11, c]
                ma, mb = (win * pa).sum(), (win * pb).sum()
                va = (win * (pa - ma) ** 2).sum()
                vb = (win * (pb - mb) ** 2).sum()
                cov = (win * (pa - ma) * (pb - mb)).sum()
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_metrics_against_references():
    rng = np.random.default_rng(0)
    a = rng.random((2, 20, 24, 3))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    mse = ((a - b) ** 2).reshape(2, -1).mean(1)
    assert psnr(a, b) == pytest.approx(float(np.mean(10 * np.log10(1 / mse))), abs=1e-9)
    ref = np.mean([_ssim_reference(a[k], b[k]) for k in range(2)])
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert psnr(a, a) == math.inf
    try:
        import kornia
    except ImportError:
        kornia = None
    if kornia is not None:
        ta, tb = torch.as_tensor(a).permute(0, 3, 1, 2), torch.as_tensor(b).permute(0, 3, 1, 2)
        kmap = kornia.metrics.ssim(ta, tb, 11)[..., 5:-5, 5:-5]  # kornia pads; crop to the valid region
        assert ssim(a, b) == pytest.approx(float(kmap.mean()), abs=1e-6)
        assert psnr(a, b) == pytest.approx(float(np.mean([kornia.metrics.psnr(ta[k], tb[k], 1.0) for k in range(2)])),
                                           abs=1e-6)


def test_fg_box_and_score():
    gt = np.ones((30, 40, 3))
    gt[10:15, 20:26] = 0.5
    gt[12, 30] = [1.0, 0.96, 1.0]  # one channel below 0.97 counts
    assert fg_box(gt) == (6, 19, 16, 35)
    assert fg_box(np.ones((5, 5, 3))) is None
    pred = gt.copy()
    pred[11, 21] = 0.0
    s = score(pred[None], gt[None])
    assert set(s) == {"psnr", "ssim", "psnr_fg", "ssim_fg"}
    y0, y1, x0, x1 = 6, 19, 16, 35
    box_mse = ((pred[y0:y1, x0:x1] - gt[y0:y1, x0:x1]) ** 2).mean()
    assert s["psnr_fg"] == pytest.approx(10 * math.log10(1 / box_mse))
    assert s["psnr_fg"] < s["psnr"] and s["ssim_fg"] < s["ssim"] < 1.0
    with pytest.raises(InputError, match="prediction"):
        score(pred[None, :, :20], gt[None])

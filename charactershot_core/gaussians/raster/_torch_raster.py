"""Pure-torch Gaussian rasteriser (any device, differentiable), following gsplat 1.5.3's semantics.

Pipeline (spec GAUSSIANS §1.6):

1. ``project``: world -> camera (OpenCV), EWA covariance ``J W Σ Wᵀ Jᵀ + eps2d I`` with gsplat's frustum clamp of
   the Jacobian, conics, optional antialiasing compensation, opacity-aware 3.33-sigma radii (``radii`` int32 [C, N, 2],
   0 for culled Gaussians), all in plain autograd (cheap: one row per (camera, Gaussian)).
2. ``Composite`` (a ``torch.autograd.Function`` with a hand-written backward): for every visible (camera, Gaussian)
   entry, enumerate the pixels whose centre lies inside the ellipse where ``alpha >= 1/255`` (row by row, so no
   pixel of the bounding box is wasted), compute ``alpha = min(0.999, o exp(-sigma))``, drop ``alpha < 1/255``,
   order the pairs by (pixel, depth) with one stable int64 sort, build the per-pixel exclusive transmittance from a
   cumulative sum of ``log(1 - alpha)``, stop each pixel before ``T`` would fall to ``<= 1e-4`` (as gsplat does)
   and accumulate colours with segmented cumulative sums. The sums run in ``precision.accum_dtype``: float64 where
   the device has it, else (``mps``) float32 summed per pixel, pairwise (``precision.segment_scan``). The backward pass recomputes the per-pair
   terms and scatters the gradients of the 2D means, conics, opacities and colours back with one ``index_add``.

Everything is vectorised; there is no Python loop over Gaussians or pixels (only over camera chunks, to bound
memory).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..rotations import quat_to_rotmat
from .precision import accum_dtype, segment_scan

ALPHA_THRESHOLD = 1.0 / 255.0
T_THRESHOLD = 1e-4
MAX_ALPHA = 0.999
RADIUS_EXTEND = 3.33
#: fewest entries per depth group in ``enumerate_pairs`` (small sets are processed in one group)
MIN_GROUP = 256


# --------------------------------------------------------------------------------------------- projection
def quat_scale_to_covar(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Σ = R S Sᵀ Rᵀ for (N, 4) quaternions and (N, 3) linear scales -> (N, 3, 3)."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d=0.3, near_plane=0.01,
            far_plane=1e10, radius_clip=0.0, antialiased=False, covars=None):
    """Project N Gaussians into C pinhole cameras (gsplat's fused EWA projection, pinhole model).

    Returns ``radii`` (C, N, 2) int32, ``means2d`` (C, N, 2), ``depths`` (C, N), ``conics`` (C, N, 3) = the upper
    triangle (a, b, c) of the inverse 2D covariance, and ``opacities`` (C, N) (times the antialiasing compensation
    when ``antialiased``).
    """
    R = viewmats[:, :3, :3]  # (C, 3, 3)
    t = viewmats[:, :3, 3]  # (C, 3)
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # (C, N, 3)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tx, ty, tz = means_c.unbind(-1)
    # the projected means use the true position; the Jacobian uses gsplat's frustum-clamped one
    rz = 1.0 / tz
    mx = fx * tx * rz + cx
    my = fy * ty * rz + cy
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    txc = tz * torch.minimum(torch.maximum(tx * rz, -lim_x_neg), lim_x_pos)
    tyc = tz * torch.minimum(torch.maximum(ty * rz, -lim_y_neg), lim_y_pos)
    # rows of T = J W (the EWA Jacobian times the camera rotation), (C, N, 3) each
    t0 = (fx * rz)[..., None] * R[:, None, 0, :] - (fx * txc * rz * rz)[..., None] * R[:, None, 2, :]
    t1 = (fy * rz)[..., None] * R[:, None, 1, :] - (fy * tyc * rz * rz)[..., None] * R[:, None, 2, :]
    if covars is None:
        # Σ = M Mᵀ with M = R_q S, so cov2d = (T M)(T M)ᵀ: elementwise, no tiny batched matmuls
        m = quat_to_rotmat(quats) * scales[..., None, :]  # (N, 3, 3)
        u0 = (t0[..., :, None] * m[None]).sum(-2)  # (C, N, 3): u0_j = sum_k t0_k m_kj
        u1 = (t1[..., :, None] * m[None]).sum(-2)
        c00 = (u0 * u0).sum(-1)
        c01 = (u0 * u1).sum(-1)
        c11 = (u1 * u1).sum(-1)
    else:
        s0 = (t0[..., :, None] * covars[None]).sum(-2)  # (T Σ) rows
        s1 = (t1[..., :, None] * covars[None]).sum(-2)
        c00 = (s0 * t0).sum(-1)
        c01 = (s0 * t1).sum(-1)
        c11 = (s1 * t1).sum(-1)
    c10 = c01
    det_orig = c00 * c11 - c01 * c10
    c00 = c00 + eps2d
    c11 = c11 + eps2d
    det = c00 * c11 - c01 * c10
    det_safe = det.clamp(min=1e-10)
    conics = torch.stack([c11 / det_safe, -0.5 * (c01 + c10) / det_safe, c00 / det_safe], dim=-1)
    opac = opacities[None, :].expand(tz.shape)
    if antialiased:
        opac = opac * torch.sqrt(torch.clamp(det_orig / det_safe, min=0.0))
    means2d = torch.stack([mx, my], dim=-1)

    with torch.no_grad():
        o = opac.detach()
        extend = torch.sqrt(2.0 * torch.log(o.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=RADIUS_EXTEND)
        rx = torch.ceil(extend * torch.sqrt(c00.detach().clamp(min=0)))
        ry = torch.ceil(extend * torch.sqrt(c11.detach().clamp(min=0)))
        mxd, myd = mx.detach(), my.detach()
        valid = (tz.detach() >= near_plane) & (tz.detach() <= far_plane) & (det.detach() > 0)
        valid &= o >= ALPHA_THRESHOLD
        valid &= ~((rx <= radius_clip) & (ry <= radius_clip))
        valid &= ~((mxd + rx <= 0) | (mxd - rx >= width) | (myd + ry <= 0) | (myd - ry >= height))
        valid &= torch.isfinite(mxd) & torch.isfinite(myd)
        radii = torch.stack([rx, ry], dim=-1)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return radii, means2d, tz, conics, opac


# ------------------------------------------------------------------------------------ spherical harmonics
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
       1.445305721320277, -0.5900435899266435)
_C4 = (2.5033429417967046, -1.7701307697799304, 0.9461746957575601, -0.6690465435572892, 0.10578554691520431,
       -0.6690465435572892, 0.47308734787878004, -1.7701307697799304, 0.6258357354491761)


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Real SH basis (the 3DGS/INRIA convention) up to ``degree`` (0..4) at unit-normalised ``dirs`` (..., 3)
    -> (..., (degree+1)^2)."""
    d = F.normalize(dirs, p=2, dim=-1)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [_C2[0] * xy, _C2[1] * yz, _C2[2] * (2 * zz - xx - yy), _C2[3] * xz, _C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy), _C3[1] * xy * z, _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _C3[4] * x * (4 * zz - xx - yy), _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    if degree >= 4:
        out += [
            _C4[0] * xy * (xx - yy), _C4[1] * yz * (3 * xx - yy), _C4[2] * xy * (7 * zz - 1),
            _C4[3] * yz * (7 * zz - 3), _C4[4] * (zz * (35 * zz - 30) + 3), _C4[5] * xz * (7 * zz - 3),
            _C4[6] * (xx - yy) * (7 * zz - 1), _C4[7] * xz * (xx - 3 * yy),
            _C4[8] * (xx * (xx - 3 * yy) - yy * (3 * xx - yy)),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, dirs: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Evaluate SH colours: ``coeffs`` (..., K, 3) with K >= (degree+1)^2, ``dirs`` (..., 3) -> (..., 3)."""
    k = (degree + 1) ** 2
    basis = sh_basis(degree, dirs)  # (..., k)
    return (basis[..., :, None] * coeffs[..., :k, :]).sum(-2)


# ------------------------------------------------------------------------------------------ compositing
def _segments(keys: torch.Tensor):
    """For sorted int64 ``keys`` (P,): start index of each run, end index (inclusive), run id of every element."""
    p = keys.shape[0]
    new = torch.ones(p, dtype=torch.bool, device=keys.device)
    if p > 1:
        new[1:] = keys[1:] != keys[:-1]
    starts = torch.nonzero(new).squeeze(1)
    seg = torch.cumsum(new.to(torch.int64), 0) - 1
    ends = torch.empty_like(starts)
    if starts.numel():
        ends[:-1] = starts[1:] - 1
        ends[-1] = p - 1
    return starts, ends, seg


def _segment_sum(values: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` (P, ...) over contiguous runs [starts, ends]: one float64 cumulative sum, or where the device
    has no float64 a float32 pairwise sum per run."""
    acc = accum_dtype(values.device)
    if acc != torch.float64:
        return segment_scan(values.to(acc), starts, seg)[ends]
    cs = torch.cumsum(values.double(), 0)
    total = cs[ends]
    before = torch.zeros_like(total)
    nz = starts > 0
    before[nz] = cs[starts[nz] - 1]
    return total - before


def _expand_rows(ent_f, ent_i, width, height, n_img_rows, done_rows_cs):
    """Pairs of a set of (depth-sorted) entries: one record per (entry, image row), then one per pixel of the row's
    span inside the ``alpha >= 1/255`` ellipse. Spans whose pixels are all finished already are dropped.

    ``ent_f`` (E, 7) = mx, my, a, b, c, o, s_lim; ``ent_i`` (E, 2) = entry id, first flat pixel of its image.
    Returns ``eid`` (P,), ``pix`` (P,), ``alpha`` (P,), in entry (depth) order.
    """
    device, dt = ent_f.device, ent_f.dtype
    mx, my, a, b, c, o, s_lim = ent_f.unbind(1)
    detc = (a * c - b * b).clamp(min=1e-20)
    ext_y = torch.sqrt(2.0 * s_lim * a / detc)
    i0 = torch.ceil(my - ext_y - 0.5).clamp(min=0)
    i1 = torch.floor(my + ext_y - 0.5).clamp(max=height - 1)
    nrows = (i1 - i0 + 1).clamp(min=0).to(torch.int64)
    row_first = torch.cumsum(nrows, 0) - nrows
    ent_ii = torch.cat([ent_i, (i0.to(torch.int64) - row_first)[:, None]], 1)
    rows_fe = torch.repeat_interleave(ent_f, nrows, dim=0)  # (R, 7)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    if rows_fe.shape[0] == 0:
        return empty, empty, torch.zeros(0, dtype=dt, device=device)
    rows_ie = torch.repeat_interleave(ent_ii, nrows, dim=0)  # (R, 3)
    rmx, rmy, ra, rb, rc, ro, rs = rows_fe.unbind(1)
    row_i = rows_ie[:, 2] + torch.arange(rows_fe.shape[0], device=device)
    dy = rmy - (row_i.to(dt) + 0.5)
    # within a row, sigma(dx) = 0.5 a dx^2 + (b dy) dx + 0.5 c dy^2 with dx = mean_x - pixel_centre_x
    disc = rb * rb * dy * dy - ra * (rc * dy * dy - 2.0 * rs)
    half = torch.sqrt(disc.clamp(min=0)) / ra
    centre = rmx + rb * dy / ra  # pixel-centre x where sigma is smallest on this row
    j0 = torch.ceil(centre - half - 0.5).clamp(min=0)
    j1 = torch.floor(centre + half - 0.5).clamp(max=width - 1)
    ncols = torch.where(disc >= 0, (j1 - j0 + 1).clamp(min=0), torch.zeros_like(j1)).to(torch.int64)
    j0i = j0.to(torch.int64)
    row_start = rows_ie[:, 1] + row_i * width  # flat index of pixel (row, 0)
    if done_rows_cs is not None:
        grow = torch.div(row_start, width, rounding_mode="floor").clamp(max=n_img_rows - 1)
        j1i = (j0i + ncols).clamp(max=width)
        n_done = done_rows_cs[grow, j1i] - done_rows_cs[grow, j0i.clamp(max=width)]
        ncols = torch.where(n_done >= ncols, torch.zeros_like(ncols), ncols)
    col_first = torch.cumsum(ncols, 0) - ncols
    rows_int = torch.stack([row_start + j0i - col_first, rows_ie[:, 0], col_first], 1)
    rows_f = torch.stack([rmx - 0.5 - j0, 0.5 * ra, rb * dy, 0.5 * rc * dy * dy, ro], 1)
    p_int = torch.repeat_interleave(rows_int, ncols, dim=0)
    if p_int.shape[0] == 0:
        return empty, empty, torch.zeros(0, dtype=dt, device=device)
    p_f = torch.repeat_interleave(rows_f, ncols, dim=0)
    ar = torch.arange(p_int.shape[0], device=device)
    pix = ar + p_int[:, 0]
    dx = p_f[:, 0] - (ar - p_int[:, 2]).to(dt)
    sigma = (p_f[:, 1] * dx + p_f[:, 2]) * dx + p_f[:, 3]
    alpha = torch.clamp(p_f[:, 4] * torch.exp(-sigma), max=MAX_ALPHA)
    return p_int[:, 1], pix, alpha


def enumerate_pairs(means2d, conics, opac, pix_base, depth, width, height, n_pix=None, depth_batches=16):
    """The (entry, pixel) pairs that the compositor uses, sorted by (pixel, depth). No gradients.

    A pair is a pixel whose centre lies in the entry's ``alpha >= 1/255`` ellipse, with ``alpha`` computed exactly
    as the compositing kernel does, and that is not behind the point where its pixel's transmittance would fall to
    ``<= 1e-4`` (gsplat's early termination). To avoid sorting pairs that termination throws away, entries are
    processed front to back in ``depth_batches`` groups: after each group the per-pixel transmittance and the
    finished pixels are known, and the next groups skip finished pixels (whole row spans first, then single pairs);
    one stable sort by pixel of the remaining pairs (generated in depth order) then orders them per pixel.

    ``means2d`` (E, 2), ``conics`` (E, 3), ``opac`` (E,), ``pix_base`` (E,) int64 offset of the entry's image in the
    flat pixel array, ``depth`` (E,); ``n_pix`` the size of the flat pixel array. Returns ``eid`` (P,) int64,
    ``pix`` (P,) int64 and ``alpha`` (P,).
    """
    device, dt = means2d.device, means2d.dtype
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    e = means2d.shape[0]
    if e == 0:
        return empty, empty, torch.zeros(0, dtype=dt, device=device)
    if n_pix is None:
        n_pix = int(pix_base.max()) + width * height
    n_img_rows = n_pix // width
    order = torch.argsort(depth)  # front to back
    ent = torch.cat([means2d, conics, opac[:, None]], 1).index_select(0, order)  # (E, 6) depth-sorted
    o = ent[:, 5]
    # sigma <= s_lim  <=>  alpha >= 1/255 (with a small margin; alpha itself decides afterwards)
    s_lim = torch.log(o.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD) + 1e-3
    ent_f = torch.cat([ent, s_lim[:, None]], 1)
    ent_i = torch.stack([order, pix_base.index_select(0, order)], 1)

    acc = accum_dtype(device)
    log_t = torch.zeros(n_pix, dtype=acc, device=device)  # log transmittance so far
    done = torch.zeros(n_pix, dtype=torch.bool, device=device)
    log_thr = math.log(T_THRESHOLD)
    n_b = max(1, min(int(depth_batches), e // MIN_GROUP + 1))
    bounds = [round(k * e / n_b) for k in range(n_b + 1)]
    out_e, out_p, out_a = [], [], []
    for k in range(n_b):
        b0, b1 = bounds[k], bounds[k + 1]
        if b1 <= b0:
            continue
        done_cs = None
        if k > 0:
            done_cs = torch.zeros(n_img_rows, width + 1, dtype=torch.int32, device=device)
            done_cs[:, 1:] = torch.cumsum(done.view(n_img_rows, width).to(torch.int32), 1)
        eid, pix, alpha = _expand_rows(ent_f[b0:b1], ent_i[b0:b1], width, height, n_img_rows, done_cs)
        if eid.numel() == 0:
            continue
        keep = alpha >= ALPHA_THRESHOLD
        if k > 0:
            keep &= ~done[pix]
        if not bool(keep.all()):
            idx = torch.nonzero(keep).squeeze(1)
            eid, pix, alpha = eid[idx], pix[idx], alpha[idx]
            if eid.numel() == 0:
                continue
        # transmittance after this depth group (pairs past a termination point inside the group are kept here and
        # dropped exactly by the compositor); pixels whose transmittance fell to <= 1e-4 are finished for the
        # following, deeper groups
        log_t.index_add_(0, pix, torch.log1p(-alpha.to(acc)))
        torch.le(log_t, log_thr, out=done)
        out_e.append(eid)
        out_p.append(pix)
        out_a.append(alpha)
    if not out_e:
        return empty, empty, torch.zeros(0, dtype=dt, device=device)
    cat = (lambda xs: xs[0]) if len(out_e) == 1 else torch.cat
    pix, perm = torch.sort(cat(out_p), stable=True)  # pairs come in depth order: a stable sort keeps it per pixel
    return cat(out_e)[perm], pix, cat(out_a)[perm]


def _pixel_centres(pix, width, height, dtype):
    """Pixel-centre coordinates of flat indices into stacked (images, height, width) grids."""
    px = (pix % width).to(dtype) + 0.5
    py = (torch.div(pix, width, rounding_mode="floor") % height).to(dtype) + 0.5
    return px, py


class Composite(torch.autograd.Function):
    """Front-to-back alpha compositing of projected Gaussians into images.

    Inputs: ``means2d`` (E, 2), ``conics`` (E, 3), ``opac`` (E,), ``colors`` (E, D), plus the pair structure from
    :func:`enumerate_pairs` and ``n_pix`` (number of pixels of all images of the chunk).
    Outputs: ``image`` (n_pix, D) without background, ``alpha`` (n_pix,).
    """

    @staticmethod
    def forward(ctx, means2d, conics, opac, colors, eid, pix, alpha, n_pix, width, height, absgrad_sink):
        dev, dt = colors.device, colors.dtype
        d = colors.shape[1]
        image = torch.zeros(n_pix, d, device=dev, dtype=dt)
        alpha_img = torch.zeros(n_pix, device=dev, dtype=dt)
        ctx.width, ctx.height, ctx.absgrad_sink = width, height, absgrad_sink
        ctx.empty = True
        if eid.numel() == 0:
            ctx.save_for_backward(means2d, conics, opac, colors)
            return image, alpha_img
        # ``alpha`` was computed by ``enumerate_pairs`` from these very (detached) values
        valid = alpha >= ALPHA_THRESHOLD  # enumerate_pairs already dropped the others; kept as a guard
        starts, ends, seg = _segments(pix)
        acc = accum_dtype(dev)
        la = torch.where(valid, torch.log1p(-alpha.to(acc)), torch.zeros((), dtype=acc, device=dev))
        if acc == torch.float64:
            cs = torch.cumsum(la, 0)
            excl = cs - la
            logt_excl = excl - excl[starts][seg]
        else:  # per pixel, pairwise: a long float32 running sum would drown each pixel's own terms
            logt_excl = segment_scan(la, starts, seg) - la
        keep = valid & (logt_excl + la > math.log(T_THRESHOLD))
        if not bool(keep.any()):
            ctx.save_for_backward(means2d, conics, opac, colors)
            return image, alpha_img
        ctx.empty = False
        if not bool(keep.all()):
            idx = torch.nonzero(keep).squeeze(1)
            eid, pix, alpha, logt_excl = eid[idx], pix[idx], alpha[idx], logt_excl[idx]
            starts, ends, seg = _segments(pix)
        t_excl = torch.exp(logt_excl)
        w = alpha.to(acc) * t_excl
        seg_pix = pix[starts]
        col = _segment_sum(colors.index_select(0, eid).to(acc) * w[:, None], starts, ends, seg)
        image[seg_pix] = col.to(dt)
        t_final = t_excl[ends] * (1.0 - alpha[ends].to(acc))
        alpha_img[seg_pix] = (1.0 - t_final).to(dt)
        ctx.save_for_backward(means2d, conics, opac, colors, eid, pix, alpha, t_excl.to(dt), ends, seg,
                              t_final.to(dt))
        return image, alpha_img

    @staticmethod
    def backward(ctx, g_image, g_alpha):
        if ctx.empty:
            means2d, conics, opac, colors = ctx.saved_tensors
            return (torch.zeros_like(means2d), torch.zeros_like(conics), torch.zeros_like(opac),
                    torch.zeros_like(colors), None, None, None, None, None, None, None)
        means2d, conics, opac, colors, eid, pix, alpha, t_excl, ends, seg, t_final = ctx.saved_tensors
        dt = colors.dtype
        width = ctx.width
        d = colors.shape[1]
        gpa = torch.cat([g_image, g_alpha[:, None]], 1).index_select(0, pix)  # (P, D + 1)
        gp, gap = gpa[:, :d], gpa[:, d]
        params = torch.cat([means2d, conics, opac[:, None], colors], 1).index_select(0, eid)  # (P, 6 + D)
        c = params[:, 6:]
        w = alpha * t_excl
        gc = (gp * c).sum(1)
        acc = accum_dtype(gp.device)
        q = (gc * w).to(acc)
        if acc == torch.float64:
            cq = torch.cumsum(q, 0)
        else:
            starts = torch.cat([ends.new_zeros(1), ends[:-1] + 1])  # runs are contiguous
            cq = segment_scan(q, starts, seg)
        suffix = (cq[ends][seg] - cq).to(dt)  # sum over the later pairs of the same pixel
        one_minus = 1.0 - alpha
        g_a = t_excl * gc - suffix / one_minus + gap * t_final[seg] / one_minus
        # alpha = min(0.999, o exp(-sigma))
        px, py = _pixel_centres(pix, width, ctx.height, dt)
        dx = params[:, 0] - px
        dy = params[:, 1] - py
        ca, cb, cc = params[:, 2], params[:, 3], params[:, 4]
        sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        e = torch.exp(-sigma)
        o = params[:, 5]
        unclamped = (o * e) <= MAX_ALPHA
        g_a = torch.where(unclamped, g_a, torch.zeros_like(g_a))
        # per-pair gradients of (mean x, mean y, conic a, b, c, opacity, colours), written into one buffer
        packed = torch.empty(gp.shape[0], 6 + d, device=gp.device, dtype=dt)
        g_sigma = -(o * e) * g_a
        torch.mul(g_a, e, out=packed[:, 5])
        torch.mul(g_sigma, ca * dx + cb * dy, out=packed[:, 0])
        torch.mul(g_sigma, cb * dx + cc * dy, out=packed[:, 1])
        hs = 0.5 * g_sigma
        torch.mul(hs * dx, dx, out=packed[:, 2])
        torch.mul(g_sigma * dx, dy, out=packed[:, 3])
        torch.mul(hs * dy, dy, out=packed[:, 4])
        torch.mul(gp, w[:, None], out=packed[:, 6:])
        g_mx, g_my = packed[:, 0], packed[:, 1]
        grads = torch.zeros(means2d.shape[0], packed.shape[1], device=packed.device, dtype=dt)
        grads.index_add_(0, eid, packed)
        sink = ctx.absgrad_sink
        if sink is not None:
            absg = torch.zeros(means2d.shape[0], 2, device=packed.device, dtype=dt)
            absg.index_add_(0, eid, torch.stack([g_mx.abs(), g_my.abs()], 1))
            sink(absg)
        return grads[:, 0:2], grads[:, 2:5], grads[:, 5], grads[:, 6:], None, None, None, None, None, None, None

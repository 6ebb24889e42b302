"""The trajectory-table motion model's helpers: a frame-masked Adam and the optical-flow initialisation.

* :class:`FrameAdam` updates only the table rows (frames) an iteration touched. Plain Adam would keep moving every
  other frame's row by its momentum although no image of that frame was seen.
* :func:`flow_init` fills the table before the photometric fit: dense optical flow (OpenCV DIS) between consecutive
  frames of every training view, forward-backward checked and kept on the character, sampled where each Gaussian's
  centre projects in the views that see it (a point z-buffer), triangulated into a 3D displacement by damped
  Gauss-Newton over the views, made robust by a median over each Gaussian's nearest neighbours, and chained outward
  from the reference (middle) frame. Each Gaussian's rotation per frame comes from a Kabsch fit of its neighbours'
  displacements. Every frame then starts near its target, so the photometric gradients exist from the first step.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.nn import functional as F

from .init import FG_THRESHOLD
from .losses import knn
from ..rotations import rotmat_to_quat

#: forward-backward consistency: a flow vector is kept when going there and back misses by less than this many
#: pixels plus this share of its length (looser than the usual 1 px + 5 %: at 180x120 a limb moves 10-30 px a frame)
FB_PX, FB_REL = 2.5, 0.15


class FrameAdam(torch.optim.Optimizer):
    """Adam for (N, F, D) table parameters that updates only the frames passed to :meth:`step`.

    State: ``exp_avg`` and ``exp_avg_sq`` of the parameter's shape (Gaussian-major, so gsplat's densification
    indexes and extends them with the rows) and ``step``, one count per frame (bias correction per frame)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-15):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, frames=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                    st["step"] = torch.zeros(p.shape[1], dtype=torch.int64)  # per frame, on the CPU
                fr = list(range(p.shape[1])) if frames is None else sorted({int(f) for f in frames})
                if not fr:
                    continue
                idx = torch.as_tensor(fr, device=p.device)
                g = p.grad.index_select(1, idx)
                m = st["exp_avg"].index_select(1, idx).mul_(b1).add_(g, alpha=1 - b1)
                v = st["exp_avg_sq"].index_select(1, idx).mul_(b2).addcmul_(g, g, value=1 - b2)
                st["exp_avg"].index_copy_(1, idx, m)
                st["exp_avg_sq"].index_copy_(1, idx, v)
                st["step"][fr] += 1
                k = st["step"][fr].tolist()  # bias corrections in Python floats (float64 on the host)
                bc1 = torch.tensor([1 - b1 ** c for c in k], dtype=p.dtype, device=p.device).reshape(1, -1, 1)
                bc2 = torch.tensor([1 - b2 ** c for c in k], dtype=p.dtype, device=p.device).reshape(1, -1, 1)
                upd = (m / bc1) / ((v / bc2).sqrt() + group["eps"]) * group["lr"]
                p.index_copy_(1, idx, p.index_select(1, idx) - upd)


# ------------------------------------------------------------------------------------------ optical flow
def _gray(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] or uint8 -> (H, W) uint8 grey (the mean of the 8-bit channels)."""
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(img.mean(-1).astype(np.uint8))


def flow_scale(height: int, width: int) -> float:
    """Resampling factor of the images for the flow solve: 2 up to 360 px on the long side (DIS works on 8-bit grey
    images and patches of 8 px: 180x120 is too small for its pyramid), else down to 360 px on the long side (the
    flow of a 720x480 frame at 360x240 is plenty for an initialisation, and 4x cheaper per pair)."""
    long = max(int(height), int(width))
    return 2.0 if long <= 360 else 360.0 / long


class PairFlows:
    """Forward and backward DIS flow between two frames of each view, computed when asked (one frame pair of all
    views at a time: nothing of the size of the whole video).

    ``frames`` (V, T, H, W, 3) uint8 (or float in [0, 1]); ``views`` the view indices to use (default all)."""

    def __init__(self, frames: torch.Tensor, views=None, scale: float | None = None):
        from ...opencv import cv2

        self.frames = frames
        v, nt, h, w, _ = frames.shape
        self.h, self.w = h, w
        self.views = list(range(v)) if views is None else [int(k) for k in views]
        self.scale = flow_scale(h, w) if scale is None else float(scale)
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.dis.setFinestScale(0 if self.scale == 1.0 else 1)
        self._grays = {}
        self._last = ()

    def gray(self, k: int, i: int) -> np.ndarray:
        from ...opencv import cv2

        key = (k, i)
        if key not in self._grays:
            if len(self._grays) > 4 * len(self.frames):  # keep the grey images of the last two frames only
                self._grays = {kk: g for kk, g in self._grays.items() if kk[1] in self._last}
            g = _gray(self.frames[k, i].numpy())
            if self.scale != 1.0:
                size = (max(8, round(self.w * self.scale)), max(8, round(self.h * self.scale)))
                g = cv2.resize(g, size, interpolation=cv2.INTER_CUBIC if self.scale > 1 else cv2.INTER_AREA)
            self._grays[key] = g
        return self._grays[key]

    def one(self, k: int, i: int, j: int):
        """Flow of view ``k`` from frame i to frame j and back -> two (H, W, 2) float32 arrays (pixels x, y)."""
        from ...opencv import cv2

        self._last = (i, j)
        a, b = self.gray(k, i), self.gray(k, j)
        f = self.dis.calc(a, b, None)
        r = self.dis.calc(b, a, None)
        if self.scale != 1.0:
            interp = cv2.INTER_AREA if self.scale > 1 else cv2.INTER_LINEAR
            f = cv2.resize(f, (self.w, self.h), interpolation=interp) / self.scale
            r = cv2.resize(r, (self.w, self.h), interpolation=interp) / self.scale
        return f, r

    def pair(self, i: int, j: int, views=None):
        """Flows i -> j and j -> i of ``views`` (default: the chosen ones) -> two (V', H, W, 2) float32 tensors."""
        views = self.views if views is None else views
        fwd = np.empty((len(views), self.h, self.w, 2), np.float32)
        bwd = np.empty_like(fwd)
        for n, k in enumerate(views):
            fwd[n], bwd[n] = self.one(k, i, j)
        return torch.from_numpy(fwd), torch.from_numpy(bwd)


def video_flows(frames: torch.Tensor, upsample: int = 2):
    """Forward and backward DIS flow between consecutive frames of every view (whole-video arrays: for small videos
    and tests; the fit uses :class:`PairFlows`, one pair at a time).

    ``frames`` (V, T, H, W, 3) uint8 or in [0, 1] -> ``(fwd, bwd)`` each (V, T-1, H, W, 2) float32 pixels (x, y),
    where ``fwd[v, i]`` maps frame i to i+1 and ``bwd[v, i]`` frame i+1 to i."""
    v, nt, h, w, _ = frames.shape
    fwd = np.zeros((v, max(0, nt - 1), h, w, 2), np.float32)
    bwd = np.zeros_like(fwd)
    pf = PairFlows(frames, scale=float(upsample))
    for k in range(v):
        for i in range(nt - 1):
            fwd[k, i], bwd[k, i] = pf.one(k, i, i + 1)
    return torch.from_numpy(fwd), torch.from_numpy(bwd)


def _sample(img: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of (V, H, W, C) at pixel coordinates u, v (V, N) (pixel j covers [j, j+1)) -> (V, N, C)."""
    vv, h, w, c = img.shape
    gx = (u / w) * 2 - 1
    gy = (v / h) * 2 - 1
    grid = torch.stack([gx, gy], -1)[:, :, None, :]  # (V, N, 1, 2)
    out = F.grid_sample(img.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].permute(0, 2, 1)


def _project(w2c: torch.Tensor, k: torch.Tensor, x: torch.Tensor):
    """Points (N,3) into cameras: w2c (V,4,4) OpenCV, K (V,3,3) -> u, v, z (V, N) and camera coords (V, N, 3)."""
    cam = torch.einsum("vij,nj->vni", w2c[:, :3, :3], x) + w2c[:, None, :3, 3]
    z = cam[..., 2].clamp_min(1e-6)
    u = k[:, 0, 0, None] * cam[..., 0] / z + k[:, 0, 2, None]
    v = k[:, 1, 1, None] * cam[..., 1] / z + k[:, 1, 2, None]
    return u, v, cam[..., 2], cam


def _visible(u, v, z, h, w, tol: float, cell: int = 2) -> torch.Tensor:
    """Point z-buffer: a centre is visible in a view when it is in the image and within ``tol`` of the nearest
    centre that falls in the same ``cell`` x ``cell`` pixel block."""
    vv, n = u.shape
    cw, ch = (w + cell - 1) // cell, (h + cell - 1) // cell
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h) & (z > 1e-3)
    ci = (u.clamp(0, w - 1) // cell).long() * 1 + (v.clamp(0, h - 1) // cell).long() * cw
    zmin = torch.full((vv, cw * ch), float("inf"))
    zz = torch.where(inside, z, torch.full_like(z, float("inf")))
    zmin.scatter_reduce_(1, ci, zz, reduce="amin")
    return inside & (z <= zmin.gather(1, ci) + tol)


def _kabsch(p: torch.Tensor, q: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Rotations R (N,3,3) minimising sum_k w ||R p_k - q_k||^2 for centred offsets p, q (N, K, 3)."""
    if w is None:
        w = torch.ones(p.shape[:2])
    hmat = torch.einsum("nk,nki,nkj->nij", w, p, q)  # sum w p q^T
    u, _, vt = torch.linalg.svd(hmat)
    d = torch.sign(torch.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    dm = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    return vt.transpose(1, 2) @ dm @ u.transpose(1, 2)


def _foreground(frames: torch.Tensor, i: int, views) -> torch.Tensor:
    """(V', H, W) bool: the character pixels (smallest channel below ``FG_THRESHOLD``) of frame i of ``views``."""
    x = frames[views, i]
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    return x.min(-1).values < FG_THRESHOLD


def spread_views(num_views: int, n: int) -> list[int]:
    """``n`` evenly spread view indices of ``num_views`` (all when n >= num_views; at least 2)."""
    n = int(max(2, min(num_views, n)))
    if n >= num_views:
        return list(range(num_views))
    return sorted({int(round(x)) for x in np.linspace(0, num_views, n, endpoint=False)})


@torch.no_grad()
def flow_init(model, frames: torch.Tensor, rig, reference: int, k_neighbours: int = 12, min_views: int = 2,
              huber_px: float = 1.5, log=None, seconds: float | None = None) -> dict:
    """Fill the trajectory table of ``model`` (a table model whose canonical Gaussians fit frame ``reference``)
    from the flow of the training ``frames`` (V, T, H, W, 3) uint8 (or float in [0, 1]) seen by ``rig``; see the
    module docstring. The flow is computed one frame pair at a time (:class:`PairFlows`). ``seconds``: a time
    allowance. With one, each frame pair uses as many evenly spread views as the time left allows for the pairs left
    (from the measured cost per view of the pair before; the first pair uses up to 6), and once it is spent the
    remaining frames keep their neighbour's position (the photometric sweep then moves them).

    Returns statistics: per frame, the share of Gaussians with a triangulated displacement, the median move and the
    number of views used; ``"knn"``: the (N, k) nearest neighbours of the canonical centres it used."""

    v, nt, h, w, _ = frames.shape
    dev = model.splats["means"].device
    if nt < 2:
        return {}
    frames = frames.cpu()
    t_begin = time.perf_counter()
    deadline = None if seconds is None else t_begin + float(seconds)
    v_all = v
    views = list(range(v_all)) if deadline is None else spread_views(v_all, 6)
    flows = PairFlows(frames)
    w2c_all = torch.from_numpy(rig.w2c_cv().astype(np.float32))
    ks_all = rig.Ks(device="cpu").float()
    canon = model.splats["means"].detach().float().cpu()
    n = canon.shape[0]
    ext = float((canon.max(0).values - canon.min(0).values).norm())
    tol = 0.02 * ext
    nbr = knn(canon, k_neighbours)  # (N, k) neighbours on the canonical shape (articulation is local)
    stats = {"knn": nbr}
    nbr_all = torch.cat([torch.arange(n)[:, None], nbr], 1)
    pos = {reference: canon.clone()}
    rot = {reference: torch.eye(3).expand(n, 3, 3).clone()}
    # outward from the reference, alternating sides: a spent allowance leaves both ends of the clip alike
    fwd = [(f, f - 1) for f in range(reference + 1, nt)]
    bwd = [(f, f + 1) for f in range(reference - 1, -1, -1)]
    order = [p for pair in zip(fwd, bwd) for p in pair] + fwd[len(bwd):] + bwd[len(fwd):]
    last = None  # (seconds, views) of the pair before
    for step, (f, g) in enumerate(order):  # frame f from its (already placed) neighbour g
        x = pos[g]
        t_pair = time.perf_counter()
        if deadline is not None:
            left = deadline - t_pair
            per_view = None if last is None else max(1e-6, last[0] / last[1])
            if left <= 0 or (per_view is not None and left < min_views * per_view):
                # allowance spent (or too little left for one more pair): the frame starts where its neighbour is
                pos[f], rot[f] = x, rot[g]
                stats[f] = {"triangulated": 0.0, "median_move": 0.0, "views": 0}
                continue
            if per_view is not None:
                views = spread_views(v_all, int(left / (len(order) - step) / per_view))
        w2c, ks, v = w2c_all[views], ks_all[views], len(views)
        flow, back = flows.pair(g, f, views)  # g -> f, checked with f -> g
        tu, tv, ok = _flow_targets(frames, flow, back, w2c, ks, x, g, f, views, tol)
        delta = _triangulate_moves(w2c, ks, x, tu, tv, ok, huber_px)
        good = ok.sum(0) >= min_views
        # robust articulation: median displacement over the neighbourhood's triangulated Gaussians
        d = torch.where(good[:, None], delta, torch.full_like(delta, float("nan")))
        dn = d[nbr_all]  # (N, k+1, 3)
        med = torch.nanmedian(dn, dim=1).values
        known = ~torch.isnan(med).any(-1)
        xf = torch.where(known[:, None], x + torch.nan_to_num(med), x)
        xf = _propagate_rigidly(x, xf, known, nbr)
        # per-Gaussian rotation from the neighbourhood (Kabsch on neighbour offsets, g -> f)
        p = x[nbr] - x[:, None]
        q = xf[nbr] - xf[:, None]
        rr = _kabsch(p, q) @ rot[g]
        pos[f], rot[f] = xf, rr
        stats[f] = {"triangulated": float(good.float().mean()), "median_move": float(med.norm(dim=-1).median()),
                    "views": v}
        last = (time.perf_counter() - t_pair, v)
        if log is not None:
            log(f"flow init: frame {f} from {g}: {stats[f]['triangulated'] * 100:.0f}% triangulated, median move "
                f"{stats[f]['median_move']:.4f}")
    tm = torch.stack([pos[f] - canon for f in range(nt)], 1)
    tq = torch.stack([rotmat_to_quat(rot[f]) for f in range(nt)], 1)
    model.splats["traj_means"].data.copy_(tm.to(dev))
    model.splats["traj_quats"].data.copy_(tq.to(dev))
    return stats


def _flow_targets(frames, flow, back, w2c, ks, x, g: int, f: int, views, tol: float):
    """Where the flow g -> f (``back``: f -> g) takes the Gaussians at ``x`` (frame g) in each of ``views``:
    target pixels (V, N) ``tu``, ``tv`` and ``ok``, where the match is trusted (visible, forward-backward
    consistent, on the foreground in both frames, inside the image)."""
    h, w = frames.shape[2], frames.shape[3]
    fg_g, fg_f = _foreground(frames, g, views), _foreground(frames, f, views)
    u, vv, z, _ = _project(w2c, ks, x)
    vis = _visible(u, vv, z, h, w, tol)
    fl = _sample(flow, u, vv)  # (V, N, 2)
    tu, tv = u + fl[..., 0], vv + fl[..., 1]
    bk = _sample(back, tu, tv)
    err = (fl + bk).norm(dim=-1)
    ok = vis & (err < FB_PX + FB_REL * fl.norm(dim=-1))
    ok &= _sample(fg_g.float()[..., None], u, vv)[..., 0] > 0.5
    ok &= _sample(fg_f.float()[..., None], tu, tv)[..., 0] > 0.5
    ok &= (tu >= 0) & (tu < w) & (tv >= 0) & (tv < h)
    return tu, tv, ok


def _triangulate_moves(w2c, ks, x, tu, tv, ok, huber_px: float) -> torch.Tensor:
    """The (N, 3) displacements that bring the projections of ``x`` onto the targets (``tu``, ``tv``) where ``ok``:
    damped Gauss-Newton on sum_v ||pi_v(x + delta) - target_v||^2, 3 steps, Huber weights after the first."""
    v, n = tu.shape
    delta = torch.zeros(n, 3)
    wts = ok.float()
    for it in range(3):
        u1, v1, _, cam = _project(w2c, ks, x + delta)
        zc = cam[..., 2].clamp_min(1e-3)
        fx, fy = ks[:, 0, 0, None], ks[:, 1, 1, None]
        # d(u,v)/d(cam) (V, N, 2, 3), then * R (world -> cam)
        j = torch.zeros(v, n, 2, 3)
        j[..., 0, 0] = fx / zc
        j[..., 0, 2] = -fx * cam[..., 0] / zc ** 2
        j[..., 1, 1] = fy / zc
        j[..., 1, 2] = -fy * cam[..., 1] / zc ** 2
        j = torch.einsum("vnab,vbc->vnac", j, w2c[:, :3, :3])
        r = torch.stack([tu - u1, tv - v1], -1)  # (V, N, 2)
        if it > 0:
            rn = r.norm(dim=-1)
            wts = ok.float() * torch.where(rn > huber_px, huber_px / rn.clamp_min(1e-6), torch.ones_like(rn))
        jtj = torch.einsum("vn,vnai,vnaj->nij", wts, j, j)
        jtr = torch.einsum("vn,vnai,vna->ni", wts, j, r)
        lam = 1e-3 * jtj.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1.0) + 1e-6
        delta = delta + torch.linalg.solve(jtj + lam[:, None, None] * torch.eye(3), jtr[..., None])[..., 0]
    return delta


def _propagate_rigidly(x: torch.Tensor, xf: torch.Tensor, known: torch.Tensor, nbr: torch.Tensor,
                       hops: int = 40) -> torch.Tensor:
    """Carry the motion of the tracked Gaussians (``known``) to the untracked ones (flat colour, occluded), hop by
    hop over the neighbour graph: an untracked Gaussian goes where its tracked neighbours' local rigid motions
    (a Kabsch fit of each one's tracked neighbourhood) take it, averaged. A forearm of flat skin then turns with the
    upper arm instead of staying behind. Gaussians no hop reaches keep their place."""
    known = known.clone()
    xf = xf.clone()
    if bool(known.all()) or not bool(known.any()):
        return xf
    kw = known[nbr].float()  # (N, k)
    rot = _kabsch(x[nbr] - x[:, None], xf[nbr] - xf[:, None], kw)
    few = kw.sum(1) < 3  # too few tracked neighbours for a rotation: translate only
    rot[few] = torch.eye(3)
    for _ in range(hops):
        unk = torch.nonzero(~known).squeeze(1)
        if unk.numel() == 0:
            break
        nb = nbr[unk]
        kn = known[nb]
        has = kn.any(1)
        if not bool(has.any()):
            break
        pred = xf[nb] + torch.einsum("mkij,mkj->mki", rot[nb], x[unk][:, None] - x[nb])
        wsum = kn.sum(1, keepdim=True).clamp_min(1)
        mean = (pred * kn[..., None]).sum(1) / wsum
        sel = unk[has]
        xf[sel] = mean[has]
        first = nb[has, kn[has].float().argmax(1)]
        rot[sel] = rot[first]
        known[sel] = True
    return xf


def edge_weights(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Dynamic-3DGS edge weights exp(-d^2 / (2 s^2)) with s the mean edge length (scale free)."""
    i, j = edges
    d2 = (x[i] - x[j]).square().sum(-1)
    s2 = d2.mean().clamp_min(1e-12)
    return torch.exp(-d2 / (2 * s2))


def temporal_smoothness(prev: torch.Tensor, cur: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
    """Mean squared second difference of positions over three consecutive frames."""
    return (prev - 2 * cur + nxt).square().sum(-1).mean()


__all__ = ["FrameAdam", "PairFlows", "flow_init", "video_flows", "edge_weights", "temporal_smoothness"]

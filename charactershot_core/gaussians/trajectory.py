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

import numpy as np
import torch
from torch.nn import functional as F

from .init import FG_THRESHOLD
from .losses import knn

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
                    st["step"] = torch.zeros(p.shape[1], dtype=torch.float64)
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
                k = st["step"][fr]
                bc1 = (1 - b1 ** k).to(p.dtype).to(p.device).reshape(1, -1, 1)
                bc2 = (1 - b2 ** k).to(p.dtype).to(p.device).reshape(1, -1, 1)
                upd = (m / bc1) / ((v / bc2).sqrt() + group["eps"]) * group["lr"]
                p.index_copy_(1, idx, p.index_select(1, idx) - upd)


# ------------------------------------------------------------------------------------------ optical flow
def _gray(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8).mean(-1).astype(np.uint8))


def video_flows(frames: torch.Tensor, upsample: int = 2):
    """Forward and backward DIS flow between consecutive frames of every view.

    ``frames`` (V, T, H, W, 3) in [0, 1] -> ``(fwd, bwd)`` each (V, T-1, H, W, 2) float32 pixels (x, y), where
    ``fwd[v, i]`` maps frame i to i+1 and ``bwd[v, i]`` frame i+1 to i. The images are upsampled ``upsample`` times
    for the solve (DIS works on 8-bit grey images and patches of 8 px: 180x120 is too small for its pyramid)."""
    from ..opencv import cv2

    v, nt, h, w, _ = frames.shape
    fwd = np.zeros((v, max(0, nt - 1), h, w, 2), np.float32)
    bwd = np.zeros_like(fwd)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0 if upsample <= 1 else 1)
    arr = frames.numpy()
    size = (w * upsample, h * upsample)
    for k in range(v):
        grays = [_gray(arr[k, i]) for i in range(nt)]
        if upsample > 1:
            grays = [cv2.resize(g, size, interpolation=cv2.INTER_CUBIC) for g in grays]
        for i in range(nt - 1):
            a, b = grays[i], grays[i + 1]
            f = dis.calc(a, b, None)
            r = dis.calc(b, a, None)
            if upsample > 1:
                f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) / upsample
                r = cv2.resize(r, (w, h), interpolation=cv2.INTER_AREA) / upsample
            fwd[k, i], bwd[k, i] = f, r
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


def _rotmat_to_quat(m: torch.Tensor) -> torch.Tensor:
    from .synthetic import rotmat_to_quat

    return torch.from_numpy(rotmat_to_quat(m.double().numpy())).float()


@torch.no_grad()
def flow_init(model, frames: torch.Tensor, rig, reference: int, k_neighbours: int = 12, min_views: int = 2,
              huber_px: float = 1.5, log=None) -> dict:
    """Fill the trajectory table of ``model`` (a table model whose canonical Gaussians fit frame ``reference``)
    from the flow of the training ``frames`` (V, T, H, W, 3) seen by ``rig``; see the module docstring.

    Returns statistics: per frame, the share of Gaussians with a triangulated displacement and the median move;
    ``"knn"``: the (N, k) nearest neighbours of the canonical centres it used."""
    v, nt, h, w, _ = frames.shape
    dev = model.splats["means"].device
    if nt < 2:
        return {}
    fwd, bwd = video_flows(frames.cpu())
    fg = frames.cpu().min(-1).values < FG_THRESHOLD  # (V, T, H, W)
    w2c = torch.as_tensor(rig.w2c_cv(), dtype=torch.float32)
    ks = rig.Ks(device="cpu").float()
    canon = model.splats["means"].detach().float().cpu()
    n = canon.shape[0]
    ext = float((canon.max(0).values - canon.min(0).values).norm())
    tol = 0.02 * ext
    nbr = knn(canon, k_neighbours)  # (N, k) neighbours on the canonical shape (articulation is local)
    stats = {"knn": nbr}
    nbr_all = torch.cat([torch.arange(n)[:, None], nbr], 1)
    pos = {reference: canon.clone()}
    rot = {reference: torch.eye(3).expand(n, 3, 3).clone()}
    order = [(f, f - 1) for f in range(reference + 1, nt)] + [(f, f + 1) for f in range(reference - 1, -1, -1)]
    for f, g in order:  # frame f from its (already placed) neighbour g
        x = pos[g]
        if f > g:  # flow g -> f = forward flow of pair g; check with the backward flow
            flow, back = fwd[:, g], bwd[:, g]
        else:
            flow, back = bwd[:, f], fwd[:, f]
        u, vv, z, _ = _project(w2c, ks, x)
        vis = _visible(u, vv, z, h, w, tol)
        fl = _sample(flow, u, vv)  # (V, N, 2)
        tu, tv = u + fl[..., 0], vv + fl[..., 1]
        bk = _sample(back, tu, tv)
        err = (fl + bk).norm(dim=-1)
        ok = vis & (err < FB_PX + FB_REL * fl.norm(dim=-1))
        ok &= _sample(fg[:, g].float()[..., None], u, vv)[..., 0] > 0.5
        ok &= _sample(fg[:, f].float()[..., None], tu, tv)[..., 0] > 0.5
        ok &= (tu >= 0) & (tu < w) & (tv >= 0) & (tv < h)
        # damped Gauss-Newton for delta: sum_v ||pi_v(x + delta) - target_v||^2, 3 steps, Huber weights
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
        stats[f] = {"triangulated": float(good.float().mean()), "median_move": float(med.norm(dim=-1).median())}
        if log is not None:
            log(f"flow init: frame {f} from {g}: {stats[f]['triangulated'] * 100:.0f}% triangulated, median move "
                f"{stats[f]['median_move']:.4f}")
    tm = torch.stack([pos[f] - canon for f in range(nt)], 1)
    tq = torch.stack([_rotmat_to_quat(rot[f]) for f in range(nt)], 1)
    model.splats["traj_means"].data.copy_(tm.to(dev))
    model.splats["traj_quats"].data.copy_(tq.to(dev))
    return stats


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


__all__ = ["FrameAdam", "flow_init", "video_flows", "edge_weights", "temporal_smoothness"]

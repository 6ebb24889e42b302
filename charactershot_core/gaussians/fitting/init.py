"""Initial Gaussians from the views themselves: a visual hull carved from the silhouettes on the white background,
coloured from the views that face each surface point (instead of the official 2000 random grey points, §C.9)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from ...cameras import CameraRig, closest_point_to_lines
from ...errors import InputError

FG_THRESHOLD = 0.97  # a pixel is character when its smallest channel is below this (the fg box rule)


def silhouettes(frames: torch.Tensor, threshold: float = FG_THRESHOLD, dilate: int = 0) -> torch.Tensor:
    """(V, H, W, 3) float images -> (V, H, W) bool foreground masks, slightly dilated to tolerate soft edges."""
    m = frames.min(dim=-1).values < threshold
    if dilate > 0:
        k = 2 * dilate + 1
        m = F.max_pool2d(m.float()[:, None], k, stride=1, padding=dilate)[:, 0] > 0
    return m


def look_at_point(rig: CameraRig) -> np.ndarray:
    """Least-squares point closest to every camera's optical axis (the orbit's centre)."""
    c, d = rig.centers, rig.forwards
    p = closest_point_to_lines(c, d)
    return c.mean(0) + d.mean(0) if p is None else p


def _project(rig: CameraRig, pts: torch.Tensor):
    w2c = torch.from_numpy(rig.w2c_cv().astype(np.float32))
    cam = torch.einsum("vij,nj->vni", w2c[:, :3, :3], pts) + w2c[:, None, :3, 3]
    z = cam[..., 2]
    fx, fy, cx, cy = (torch.from_numpy(np.asarray(a, np.float32))[:, None] for a in (rig.fx, rig.fy, rig.cx, rig.cy))
    u = fx * cam[..., 0] / z.clamp_min(1e-6) + cx
    v = fy * cam[..., 1] / z.clamp_min(1e-6) + cy
    return u, v, z


def _carve(rig: CameraRig, masks: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, res: int,
           tolerance: int, chunk: int = 262144):
    """Occupancy (res^3 bool) of the box [lo, hi]: a voxel is kept unless more than ``tolerance`` views put it on
    the background or outside the image (the character is in frame in every view)."""
    axes = [torch.linspace(float(lo[i]), float(hi[i]), res) for i in range(3)]
    gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
    pts = torch.stack([gx, gy, gz], -1).reshape(-1, 3)
    v, h, w = masks.shape
    flat = masks.reshape(v, -1)
    keep = torch.empty(pts.shape[0], dtype=torch.bool)
    for s in range(0, pts.shape[0], chunk):
        u, vv, z = _project(rig, pts[s:s + chunk])
        ui, vi = u.floor().long(), vv.floor().long()
        inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h) & (z > 0)
        lin = (vi.clamp(0, h - 1) * w + ui.clamp(0, w - 1))
        fg = torch.gather(flat, 1, lin)
        votes_bg = (~(inside & fg)).sum(0)
        keep[s:s + chunk] = votes_bg <= tolerance
    return keep.reshape(res, res, res), pts.reshape(res, res, res, 3)


def visual_hull(frames: torch.Tensor, rig: CameraRig, num_points: int = 30000, resolution: int = 96,
                threshold: float = FG_THRESHOLD, seed: int = 0):
    """Carve a visual hull from (V, H, W, 3) images on white and colour its surface.

    Returns ``(points (N,3), colors (N,3), voxel_size)``. Raises ``InputError`` when nothing survives (no character
    on the white background, or cameras that do not match the images).
    """
    v = frames.shape[0]
    masks = silhouettes(frames, threshold)
    if not bool(masks.any()):
        raise InputError("frames", "no character found: every pixel is white background (smallest channel >= "
                                   f"{threshold})")
    # 1) coarse carve in a cube around the orbit's centre, big enough to hold what the cameras see
    centre = torch.from_numpy(np.asarray(look_at_point(rig), np.float32))
    dist = float(np.median(np.linalg.norm(rig.centers - centre.numpy(), axis=1)))
    half_fov = max(math.atan(0.5 * rig.width / float(np.min(rig.fx))), math.atan(0.5 * rig.height / float(np.min(rig.fy))))
    half = dist * math.tan(half_fov) * 1.05
    tol = 0 if v < 8 else 1
    lo, hi = centre - half, centre + half
    occ, pts = _carve(rig, masks, lo, hi, 64, tol)
    if not bool(occ.any()):
        raise InputError("cameras", "the silhouettes do not intersect in 3D: the cameras do not match the views")
    sel = pts[occ]
    step = (hi - lo) / 63
    lo2, hi2 = sel.min(0).values - 2 * step, sel.max(0).values + 2 * step
    # 2) fine carve in the hull's box, same voxel size on every axis
    ext = (hi2 - lo2).max()
    vox = float(ext) / (resolution - 1)
    res = resolution
    lo2 = (lo2 + hi2) / 2 - ext / 2
    hi2 = lo2 + ext
    occ, pts = _carve(rig, masks, lo2, hi2, res, tol)
    if not bool(occ.any()):
        raise InputError("cameras", "the silhouettes do not intersect in 3D: the cameras do not match the views")
    # surface voxels: occupied with at least one free 6-neighbour
    o = occ.float()[None, None]
    eroded = -F.max_pool3d(-o, 3, stride=1, padding=1)
    surface = occ & (eroded[0, 0] < 0.5)
    interior = occ & ~surface
    spts = pts[surface]
    normals = _normals(occ.float(), surface)
    colors = _colour(frames, rig, spts, normals, masks)
    gen = torch.Generator().manual_seed(seed)
    n_surf = spts.shape[0]
    # most points on the surface (what the views see), a few inside so the body is opaque from every side
    n_in = min(int(interior.sum()), num_points // 10)
    n_s = min(n_surf, num_points - n_in)
    pick = torch.randperm(n_surf, generator=gen)[:n_s]
    p = spts[pick] + (torch.rand(n_s, 3, generator=gen) - 0.5) * vox
    c = colors[pick]
    if n_in > 0:
        ipts = pts[interior]
        ipick = torch.randperm(ipts.shape[0], generator=gen)[:n_in]
        # interior points take the colour of their nearest surface point
        near = torch.cdist(ipts[ipick], spts).argmin(1)
        p = torch.cat([p, ipts[ipick]])
        c = torch.cat([c, colors[near]])
    # spacing of the sampled surface set: area per point ~ (surface voxels / samples) voxels
    spacing = vox * math.sqrt(max(1.0, n_surf / max(n_s, 1)))
    return p, c.clamp(0, 1), spacing


def _normals(occ: torch.Tensor, surface: torch.Tensor) -> torch.Tensor:
    """Outward normals of surface voxels from the smoothed occupancy gradient."""
    o = occ[None, None]
    o = F.avg_pool3d(o, 3, stride=1, padding=1)[0, 0]
    g = torch.stack(torch.gradient(o), dim=-1)  # points inward (towards higher occupancy)
    n = -g[surface]
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def _colour(frames, rig, pts, normals, masks, chunk: int = 65536) -> torch.Tensor:
    """Average colour of each point over the views whose camera faces its normal and sees it as foreground."""
    v, h, w, _ = frames.shape
    centres = torch.from_numpy(np.asarray(rig.centers, np.float32))
    flat = frames.reshape(v, -1, 3)
    mflat = masks.reshape(v, -1)
    out = torch.empty(pts.shape[0], 3)
    for s in range(0, pts.shape[0], chunk):
        p = pts[s:s + chunk]
        n = normals[s:s + chunk]
        u, vv, z = _project(rig, p)
        ui, vi = u.floor().long().clamp(0, w - 1), vv.floor().long().clamp(0, h - 1)
        lin = vi * w + ui
        to_cam = centres[:, None, :] - p[None]
        to_cam = to_cam / to_cam.norm(dim=-1, keepdim=True)
        facing = (to_cam * n[None]).sum(-1)  # (V, n)
        fg = torch.gather(mflat, 1, lin)
        wgt = (facing.clamp_min(0) ** 4) * fg * (z > 0)
        col = torch.stack([torch.gather(flat[..., c], 1, lin) for c in range(3)], -1)  # (V, n, 3)
        tot = wgt.sum(0)
        avg = (col * wgt[..., None]).sum(0) / tot.clamp_min(1e-6)[:, None]
        # points no view faces: plain mean over views that see them as foreground
        fallback = (col * fg[..., None]).sum(0) / fg.sum(0).clamp_min(1)[:, None]
        out[s:s + chunk] = torch.where((tot > 1e-6)[:, None], avg, fallback)
    return out

"""Parts the flow lost, found again frame by frame (trajectory table; issue 22).

The optical flow tracks a limb while it moves a few pixels a frame and has texture; a flat-coloured forearm that
swings down by ~60 degrees in the last frame of a clip is lost: its Gaussians stay near where the inner frame had
them, where that frame's ground truth shows background. There the photometric loss only fades them (their opacity
is shared by every frame, so the limb fades everywhere) and the pixels where the limb now is pull nothing, because no
Gaussian covers them. This module finds such a part in one frame and moves it, as a rigid piece, to where that
frame's silhouettes say it is:

1. **lost Gaussians** (:func:`lost_mask`): centres that fall on the frame's background in more views than the
   visual hull tolerates, and were not lost in the neighbouring frame (a floater lost everywhere is no part);
2. **unexplained volume** (:func:`unexplained_voxels`): the frame's own visual hull (its silhouettes in every
   training view) minus what the kept Gaussians already explain: voxels that project, in a good share of the views
   that see them, onto character pixels no kept Gaussian's centre falls near;
3. **a rigid fit** (:func:`register_part`): the lost Gaussians' positions in the neighbouring frame (where the part
   still had its shape) are turned about their attachment (the kept Gaussians next to them) and moved, over a set
   of rotations, then refined by ICP, to match the unexplained volume (trimmed two-sided chamfer);
4. the frame's rows of the table are set to the fitted positions and rotations (:func:`repair_frame`), when that
   takes most of the lost Gaussians back inside the frame's silhouettes; otherwise nothing changes.

Only that frame's rows move: the other frames, the canonical Gaussians, colours and opacities stay. The photometric
fit then refines from there (the limb now overlaps its target). Pure torch / numpy / scipy on the CPU: a frame with
nothing lost costs a projection of the centres; one with a lost limb a few seconds at the demo's size (2-10 s
measured on a loaded 2-core CPU).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from ..rotations import quat_mul, rotmat_to_quat
from .init import FG_THRESHOLD
from .trajectory import _propagate_rigidly

#: a Gaussian is lost in a frame when its centre is on that frame's background (or outside the image) in more than
#: this many training views (the visual hull's own tolerance for 8 or more views)
LOST_TOLERANCE = 1
#: a voxel is unexplained when no kept Gaussian's centre projects within its projected size (at least this many
#: pixels) of it in at least ``UNEXPLAINED_SHARE`` of the views whose image it falls in
COVER_RADIUS_PX = 1
UNEXPLAINED_SHARE = 0.3
#: fewer lost Gaussians or unexplained voxels than these: nothing to repair
MIN_LOST = 20
#: a fitted Gaussian takes its new place when it lands within this many voxel sizes of an unexplained voxel
ACCEPT_VOXELS = 1.5
MIN_UNEXPLAINED = 10
#: this many lost Gaussians or more with (almost) nothing unexplained: the silhouettes are covered but a part is drawn
#: on the background as well (a leg left behind beside the one that crossed it): the lost Gaussians are carried
#: along with their kept neighbours' local rigid motion from the neighbouring frame, where they were in place
CARRY_LOST = 500

# one line for the node's tooltip and the CLI's help: what the repair trades (docs/4d.md, "Parts the flow lost")
HELP_REPAIR = ("Trajectory table: put back a part (a lowered arm, a foot) that a frame's start lost, fitted as rigid "
               "pieces into the space that frame's views say the character fills: about 2 % of the fit's time; off, "
               "such a limb stays missing in that frame (the demo's worst frame: 29.4 dB with it, 24.6 dB without).")


def silhouettes_of(pixels: torch.Tensor, frame: int) -> torch.Tensor:
    """(V, H, W) bool character masks of one frame of (V, T, H, W, 3) uint8 (or float in [0, 1]) training images."""
    x = pixels[:, frame]
    if x.dtype == torch.uint8:
        return x.min(-1).values.cpu() < FG_THRESHOLD * 255
    return x.min(-1).values.cpu() < FG_THRESHOLD


def _project(w2c: torch.Tensor, ks: torch.Tensor, x: torch.Tensor):
    cam = torch.einsum("vij,nj->vni", w2c[:, :3, :3], x) + w2c[:, None, :3, 3]
    z = cam[..., 2]
    zc = z.clamp_min(1e-6)
    u = ks[:, 0, 0, None] * cam[..., 0] / zc + ks[:, 0, 2, None]
    v = ks[:, 1, 1, None] * cam[..., 1] / zc + ks[:, 1, 2, None]
    return u, v, z


def background_votes(x: torch.Tensor, w2c: torch.Tensor, ks: torch.Tensor, sil: torch.Tensor) -> torch.Tensor:
    """(N,) the number of views in which each point of ``x`` (N, 3) falls on the background or outside the image."""
    nv, h, w = sil.shape
    u, v, z = _project(w2c, ks, x)
    ui, vi = u.floor().long(), v.floor().long()
    inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h) & (z > 0)
    fg = sil.reshape(nv, -1).gather(1, vi.clamp(0, h - 1) * w + ui.clamp(0, w - 1))
    return (~(inside & fg)).sum(0)


def lost_mask(x_f: torch.Tensor, x_g: torch.Tensor, w2c, ks, sil_f, sil_g,
              tolerance: int = LOST_TOLERANCE) -> torch.Tensor:
    """(N,) bool: Gaussians whose centre in frame f (``x_f``) is on that frame's background in more than
    ``tolerance`` views, while in the neighbouring frame g (``x_g``) it is not."""
    return (background_votes(x_f, w2c, ks, sil_f) > tolerance) & (background_votes(x_g, w2c, ks, sil_g) <= tolerance)


def _carve(w2c, ks, sil, lo: torch.Tensor, hi: torch.Tensor, res: int, tolerance: int):
    ext = float((hi - lo).max())
    step = ext / (res - 1)
    axes = [torch.arange(float(lo[i]), float(hi[i]) + 0.5 * step, step) for i in range(3)]
    g = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    keep = background_votes(g, w2c, ks, sil) <= tolerance
    return g[keep], step


def hull_voxels(w2c, ks, sil, lo, hi, res: int = 80, tolerance: int = LOST_TOLERANCE):
    """Centres (M, 3) of the visual-hull voxels of one frame's silhouettes ``sil`` (V, H, W) in the box ``lo``-``hi``
    (``res`` voxels on its longest side), and the voxel size."""
    return _carve(w2c, ks, sil, lo, hi, res, tolerance)


def unexplained_voxels(vox: torch.Tensor, x_kept: torch.Tensor, w2c, ks, sil, radius: int = COVER_RADIUS_PX,
                       share: float = UNEXPLAINED_SHARE) -> torch.Tensor:
    """The hull voxels ``vox`` (M, 3) that project, in at least ``share`` of the views whose image they fall in, onto
    character pixels of ``sil`` (V, H, W) where no centre of ``x_kept`` falls within ``radius`` pixels."""
    nv, h, w = sil.shape
    if vox.shape[0] == 0:
        return vox
    u, v, z = _project(w2c, ks, x_kept)
    ui, vi = u.floor().long(), v.floor().long()
    inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h) & (z > 0)
    covered = torch.zeros(nv, h * w, dtype=torch.float32)
    lin = vi.clamp(0, h - 1) * w + ui.clamp(0, w - 1)
    covered.scatter_(1, lin, inside.float())
    covered = covered.reshape(nv, 1, h, w)
    if radius > 0:
        covered = F.max_pool2d(covered, 2 * radius + 1, stride=1, padding=radius)
    covered = covered.reshape(nv, -1) > 0
    u, v, z = _project(w2c, ks, vox)
    ui, vi = u.floor().long(), v.floor().long()
    inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h) & (z > 0)
    lin = vi.clamp(0, h - 1) * w + ui.clamp(0, w - 1)
    fg = sil.reshape(nv, -1).gather(1, lin)
    miss = inside & fg & ~covered.gather(1, lin)
    n_in = inside.sum(0).clamp_min(1)
    return vox[miss.sum(0).float() >= share * n_in.float()]


def _components(x: np.ndarray, radius: float) -> list[np.ndarray]:
    """Index arrays of the connected groups of points ``x`` (N, 3) closer than ``radius``, largest first."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = x.shape[0]
    pairs = cKDTree(x).query_pairs(radius, output_type="ndarray")
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    k, lab = connected_components(g, directed=False)
    groups = [np.nonzero(lab == c)[0] for c in range(k)]
    return sorted(groups, key=len, reverse=True)


def _random_rotations(n: int, max_angle: float, seed: int) -> np.ndarray:
    """The identity and ``n`` - 1 rotations (3, 3) with uniformly random axes and angles in [0, max_angle]."""
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    ang = np.sqrt(rng.uniform(0, 1, n)) * max_angle  # more samples at large angles (the volume grows with them)
    ang[0] = 0.0
    kx = np.zeros((n, 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
    kx = kx - kx.transpose(0, 2, 1)
    s, c = np.sin(ang)[:, None, None], np.cos(ang)[:, None, None]
    return np.eye(3)[None] + s * kx + (1 - c) * (kx @ kx)


def _trimmed(d: np.ndarray, keep: float) -> float:
    k = max(1, math.ceil(keep * d.shape[0]))
    return float(np.partition(d, k - 1)[:k].mean())


def _chamfer(a: np.ndarray, b: np.ndarray, tree_b, keep: float) -> float:
    from scipy.spatial import cKDTree

    da, _ = tree_b.query(a)
    db, _ = cKDTree(a).query(b)
    return _trimmed(da, keep) + _trimmed(db, keep)


def _kabsch_about(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    hmat = p.T @ q
    u, _, vt = np.linalg.svd(hmat)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def register_part(y: np.ndarray, targets: np.ndarray, pivot_from: np.ndarray, pivot_to: np.ndarray,
                  candidates: int = 256, max_angle: float = math.pi, icp_steps: int = 15, keep: float = 0.8,
                  seed: int = 0, sample: int = 400, free: bool = True):
    """The rigid motion (R (3, 3), t (3,)) that takes the part ``y`` (N, 3) onto ``targets`` (M, 3): rotations about
    ``pivot_from`` moved to ``pivot_to`` (the joint: the identity and random ones up to ``max_angle``), the best by
    trimmed two-sided chamfer, then ICP about the same joint (a limb turns about where it is attached; a free
    translation would let a straight limb flip end for end). Returns ``(R, t, chamfer)``: x -> R x + t."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    ys = y if y.shape[0] <= sample else y[rng.choice(y.shape[0], sample, replace=False)]
    ts = targets if targets.shape[0] <= sample else targets[rng.choice(targets.shape[0], sample, replace=False)]
    tree = cKDTree(ts)
    best = (None, float("inf"))
    for r in _random_rotations(candidates, max_angle, seed):
        moved = (ys - pivot_from) @ r.T + pivot_to
        c = _chamfer(moved, ts, tree, keep)
        if c < best[1]:
            best = (r, c)
    r = best[0]
    t = pivot_to - r @ pivot_from
    for _ in range(icp_steps):  # point-to-point ICP, both directions matched, the worst (1 - keep) left out
        moved = ys @ r.T + t
        d1, i1 = tree.query(moved)
        d2, i2 = cKDTree(moved).query(ts)
        src = np.concatenate([ys, ys[i2]])
        dst = np.concatenate([ts[i1], ts])
        dist = np.concatenate([d1, d2])
        ok = dist <= np.quantile(dist, keep)
        src, dst = src[ok], dst[ok]
        cs, cd = (src.mean(0), dst.mean(0)) if free else (pivot_from, pivot_to)
        r = _kabsch_about(src - cs, dst - cd)
        t = cd - r @ cs
    c = _chamfer(ys @ r.T + t, ts, tree, keep)
    return r, t, c


@torch.no_grad()
def repair_frame(model, frame: int, neighbour: int, pixels: torch.Tensor, rig, k_attach: int = 8,
                 seed: int = 0, rounds: int = 4) -> dict:
    """Find the parts of a table ``model`` lost in training ``frame`` and put them back (module docstring), using
    the ``neighbour`` frame's rows as the parts' shapes. ``pixels`` (V, T, H, W, 3) are the training images of
    ``rig``'s cameras. The lost Gaussians are grouped into connected parts (in the neighbour frame); each part is
    fitted rigidly to the unexplained volume, and the Gaussians the fit takes inside the frame's silhouettes get
    their row; what stays outside is fitted again, as its own piece, for up to ``rounds`` rounds (a raised arm bent
    at the elbow goes down straight: two pieces). Returns what it found: ``lost``, ``unexplained`` (voxels),
    ``moved`` (Gaussians whose row changed), ``angles`` (degrees, one per accepted piece), ``lost_after``."""
    from scipy.spatial import cKDTree

    out = {"frame": int(frame), "lost": 0, "unexplained": 0, "moved": 0, "angles": [], "lost_after": 0}
    w2c = torch.from_numpy(rig.w2c_cv().astype(np.float32))
    ks = rig.Ks(device="cpu").float()
    sil_f, sil_g = silhouettes_of(pixels, frame), silhouettes_of(pixels, neighbour)
    x_f = model.frame_state(frame)[0].detach().float().cpu()
    x_g = model.frame_state(neighbour)[0].detach().float().cpu()
    lost = lost_mask(x_f, x_g, w2c, ks, sil_f, sil_g)
    out["lost"] = out["lost_after"] = int(lost.sum())
    if out["lost"] < MIN_LOST:
        return out
    kept = ~lost
    lo, hi = x_f[kept].min(0).values, x_f[kept].max(0).values
    pad = 0.25 * float((hi - lo).max())
    hull, step = hull_voxels(w2c, ks, sil_f, lo - pad, hi + pad)
    # a kept centre explains the pixels its Gaussian covers: about its projected size (1 px at least)
    sig = model.splats["scales"].detach().float().cpu().exp().max(-1).values[kept]
    _, _, z = _project(w2c, ks, x_f[kept])
    px = (ks[:, 0, 0, None] * sig[None] / z.clamp_min(1e-6)).median()
    radius = int(min(4, max(COVER_RADIUS_PX, round(float(px)))))
    vox = unexplained_voxels(hull, x_f[kept], w2c, ks, sil_f, radius=radius)
    out["unexplained"] = int(vox.shape[0])
    xg_np = x_g.numpy().astype(np.float64)
    if out["unexplained"] < MIN_UNEXPLAINED:
        if out["lost"] >= CARRY_LOST:
            _carry_lost(model, frame, neighbour, x_g, x_f, lost, kept, xg_np, k_attach, w2c, ks, sil_f, out)
        return out
    spacing = float(np.median(cKDTree(xg_np).query(xg_np, k=2)[0][:, 1]))
    lost_idx = torch.nonzero(lost).squeeze(1).numpy()
    placed = kept.clone()  # Gaussians whose frame-f position is trusted (kept, or moved inside the silhouettes)
    x_new = x_f.clone()
    rot_new = {}
    tree_g = cKDTree(xg_np)
    for comp in _components(xg_np[lost_idx], 3.0 * spacing):
        rest = lost_idx[comp]
        for rnd in range(rounds):
            if rest.size < MIN_LOST or vox.shape[0] < MIN_UNEXPLAINED:
                break
            y = xg_np[rest]
            _, nb = tree_g.query(y, k=k_attach + 1)
            att = np.unique(nb.reshape(-1))
            att = att[placed.numpy()[att]]
            if att.size >= 3:
                p_from, p_to = xg_np[att].mean(0), x_new[att].numpy().astype(np.float64).mean(0)
            else:
                p_from, p_to = y.mean(0), vox.numpy().astype(np.float64).mean(0)
            r, t, _ = register_part(y, vox.numpy().astype(np.float64), p_from, p_to, seed=seed + rnd)
            new = torch.from_numpy((y @ r.T + t).astype(np.float32))
            # a Gaussian takes its new place when it lands in the unexplained volume
            near = cKDTree(vox.numpy()).query(new.numpy().astype(np.float64))[0] <= ACCEPT_VOXELS * step
            ok = near & (background_votes(new, w2c, ks, sil_f) <= LOST_TOLERANCE).numpy()
            if ok.sum() < MIN_LOST // 2:
                break
            sel = rest[ok]
            x_new[sel] = new[ok]
            placed[sel] = True
            for i in sel.tolist():
                rot_new[i] = r
            out["angles"].append(round(float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))), 1))
            rest = rest[~ok]  # the unexplained volume stays as it is: pieces of one limb may share it
    if not rot_new:
        return out
    # the lost Gaussians no piece took follow their placed neighbours' local rigid motion (from frame g), as the
    # flow initialisation carries untracked Gaussians: bits of the limb the fit left out go with it
    left = lost & ~placed
    if bool(left.any()):
        nbr = torch.from_numpy(tree_g.query(xg_np, k=k_attach + 1)[1][:, 1:].astype(np.int64))
        carried = _propagate_rigidly(x_g, x_new, placed, nbr)
        x_new[left] = carried[left]
        rot_id = np.eye(3)
        for i in torch.nonzero(left).squeeze(1).tolist():
            rot_new[i] = rot_id
    dev = model.splats["means"].device
    idx = torch.as_tensor(sorted(rot_new), dtype=torch.long)
    rq = rotmat_to_quat(torch.from_numpy(np.stack([rot_new[i] for i in idx.tolist()]).astype(np.float32)))
    tm, tq = model.splats["traj_means"], model.splats["traj_quats"]
    ig = idx.to(dev)
    tm[ig, frame] = x_new[idx].to(dev) - model.splats["means"][ig].detach()
    tq[ig, frame] = quat_mul(rq.to(dev), tq[ig, neighbour])
    out["moved"] = int(idx.shape[0])
    out["lost_after"] = int((background_votes(x_new[lost], w2c, ks, sil_f) > LOST_TOLERANCE).sum())
    return out


def _carry_lost(model, frame: int, neighbour: int, x_g, x_f, lost, kept, xg_np, k_attach: int, w2c, ks, sil_f,
                out: dict) -> None:
    """Frame ``frame``'s lost Gaussians carried from ``neighbour`` by their kept neighbours' local rigid motion
    (``CARRY_LOST``); those that land inside the frame's silhouettes take the new place (their rotation: the
    neighbour frame's)."""
    from scipy.spatial import cKDTree

    nbr = torch.from_numpy(cKDTree(xg_np).query(xg_np, k=k_attach + 1)[1][:, 1:].astype(np.int64))
    carried = _propagate_rigidly(x_g, x_f, kept, nbr)
    inside = background_votes(carried, w2c, ks, sil_f) <= LOST_TOLERANCE
    take = lost & inside
    out["carried"] = int(take.sum())
    if not bool(take.any()):
        return
    dev = model.splats["means"].device
    idx = torch.nonzero(take).squeeze(1)
    ig = idx.to(dev)
    tm, tq = model.splats["traj_means"], model.splats["traj_quats"]
    tm[ig, frame] = carried[idx].to(dev) - model.splats["means"][ig].detach()
    tq[ig, frame] = tq[ig, neighbour]
    out["moved"] = int(idx.shape[0])
    x_new = x_f.clone()
    x_new[idx] = carried[idx]
    out["lost_after"] = int((background_votes(x_new[lost], w2c, ks, sil_f) > LOST_TOLERANCE).sum())


def repair_toward(model, frame: int, reference: int, pixels: torch.Tensor, rig, seed: int = 0,
                  iteration: int | None = None) -> dict:
    """:func:`repair_frame` of ``frame`` with its neighbour towards the ``reference`` (middle) frame as the part's
    shape; ``iteration`` and the time it took (``seconds``) are recorded with the result."""
    import time

    t0 = time.perf_counter()
    g = frame + 1 if frame < reference else frame - 1
    out = repair_frame(model, frame, g, pixels, rig, seed=seed)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    if iteration is not None:
        out["iteration"] = int(iteration)
    return out

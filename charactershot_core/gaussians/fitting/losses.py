"""Losses of the 4D fit: photometric (L1 + D-SSIM), the neighbour constraint of the paper (spec §C.7, with
gradients), and Dynamic-3DGS style rigidity / isometry on a KNN graph (spec GAUSSIANS §2.3)."""

from __future__ import annotations

import numpy as np
import torch

from ..evaluation.metrics import ssim_map


# ------------------------------------------------------------------ photometric
def photometric_loss(pred: torch.Tensor, gt: torch.Tensor, lambda_dssim: float = 0.2) -> torch.Tensor:
    """(1 - λ) L1 + λ (1 - SSIM) on (B, H, W, 3)."""
    l1 = (pred - gt).abs().mean()
    if lambda_dssim <= 0 or min(pred.shape[1], pred.shape[2]) < 11:
        return l1
    return (1 - lambda_dssim) * l1 + lambda_dssim * (1 - ssim_map(pred, gt).mean())


# ------------------------------------------------------------------ KNN graph
@torch.no_grad()
def knn(points: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) indices of each point's k nearest other points, nearest first, by scipy's ``cKDTree`` in float64
    (exact; 60-100x faster than chunked brute force at 20k points, benchmarks/bench_knn.py). A point never lists
    itself, also where duplicates (clones) sit at distance 0."""
    from scipy.spatial import cKDTree

    n = points.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return torch.zeros(n, 0, dtype=torch.long, device=points.device)
    pts = points.detach().cpu().numpy().astype(np.float64)  # float64 in numpy only (no such tensor on mps)
    _, idx = cKDTree(pts).query(pts, k=k + 1, workers=max(1, torch.get_num_threads()))
    drop = idx == np.arange(n)[:, None]  # the point itself; where a duplicate took its place, the farthest
    drop[~drop.any(1), -1] = True
    out = idx[~drop].reshape(n, k)
    return torch.from_numpy(out.astype(np.int64)).to(points.device)


@torch.no_grad()
def knn_graph(points: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Symmetric KNN graph as a (2, E) edge list (i, j), both directions, duplicates removed, no self edges."""
    return graph_from_knn(knn(points, k))


@torch.no_grad()
def graph_from_knn(idx: torch.Tensor) -> torch.Tensor:
    """The symmetric (2, E) edge list of a (N, k) nearest-neighbour table (see :func:`knn_graph`)."""
    n, kk = idx.shape
    points = idx
    if kk == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=points.device)
    i = torch.arange(n, device=points.device).repeat_interleave(kk)
    j = idx.reshape(-1)
    e = torch.cat([torch.stack([i, j]), torch.stack([j, i])], dim=1)
    key = torch.unique(e[0] * n + e[1])
    return torch.stack([key // n, key % n])


def sample_edges(edges: torch.Tensor, n: int, max_nodes: int, generator=None):
    """A random subset of at most ``max_nodes`` centre nodes with ALL their edges (so their Laplacians are exact).

    Returns ``(nodes, local_edges)``: the nodes whose positions are needed (the centres and their neighbours) and the
    selected edges renumbered into ``nodes``. With ``n <= max_nodes`` everything is kept.
    """
    if n <= max_nodes:
        return torch.arange(n, device=edges.device), edges
    centre = torch.zeros(n, dtype=torch.bool, device=edges.device)
    centre[torch.randperm(n, generator=generator)[:max_nodes].to(edges.device)] = True
    sel = edges[:, centre[edges[0]]]
    nodes = torch.unique(sel.reshape(-1))
    remap = torch.full((n,), -1, dtype=torch.long, device=edges.device)
    remap[nodes] = torch.arange(nodes.numel(), device=edges.device)
    return nodes, remap[sel]


def laplacian(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """L_i(X) = X_i - mean of X_j over the neighbours j of i."""
    i, j = edges
    n = x.shape[0]
    s = torch.zeros_like(x).index_add(0, i, x[j])
    deg = torch.zeros(n, device=x.device, dtype=x.dtype).index_add(0, i, torch.ones_like(i, dtype=x.dtype))
    return x - s / deg.clamp_min(1).unsqueeze(-1)


# ------------------------------------------------------------------ neighbour constraint (paper §C.7)
def neighbour_loss(x_cur: torch.Tensor, x_prev: torch.Tensor, edges: torch.Tensor, t: float, t_prev: float,
                   motion_threshold: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's neighbour-constrained Laplacian loss between deformed centres at ``t`` and ``t_prev``.

    Returns ``(loss, weight)``: loss = Σ_edges ‖L_i(Xc) − L_i(Xp)‖² m_i m_j max(‖Xp_i − Xp_j‖, 1e-3) / (Σ m_i m_j + 1e-6)
    with the motion mask m_i = [‖Xc_i − Xp_i‖ > threshold]; weight = mean_i 0.01 / (100 |t − t'| + 1) σ(‖Xc_i − Xp_i‖),
    the dynamic time weight (a detached scalar). Unlike the released code the loss keeps its gradient.
    """
    i, j = edges
    if i.numel() == 0:
        z = x_cur.sum() * 0.0
        return z, z.detach()
    motion = (x_cur - x_prev).norm(dim=-1)
    m = (motion > motion_threshold).to(x_cur.dtype).detach()
    diff = laplacian(x_cur, edges) - laplacian(x_prev, edges)
    mm = m[i] * m[j]
    dist = (x_prev[i] - x_prev[j]).norm(dim=-1).clamp_min(1e-3)
    loss = (diff[i].square().sum(-1) * mm * dist).sum() / (mm.sum() + 1e-6)
    weight = (0.01 / (100.0 * abs(float(t) - float(t_prev)) + 1.0) * torch.sigmoid(motion)).mean().detach()
    return loss, weight


def isometry_loss(x_cur: torch.Tensor, x_ref: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean |‖Xc_i − Xc_j‖ − ‖Xr_i − Xr_j‖| over edges (edge lengths preserved)."""
    i, j = edges
    if i.numel() == 0:
        return x_cur.sum() * 0.0
    return ((x_cur[i] - x_cur[j]).norm(dim=-1) - (x_ref[i] - x_ref[j]).norm(dim=-1)).abs().mean()


def rigidity_loss(x_cur, q_cur, x_prev, q_prev, edges) -> torch.Tensor:
    """Dynamic-3DGS local rigidity: neighbour offsets move with the Gaussian's own rotation between two times."""
    from ..rotations import quat_to_rotmat

    i, j = edges
    if i.numel() == 0:
        return x_cur.sum() * 0.0
    r_cur = quat_to_rotmat(q_cur)
    r_prev = quat_to_rotmat(q_prev)
    rel = r_cur @ r_prev.transpose(-1, -2)  # rotation from prev to cur, per Gaussian
    off_prev = (x_prev[j] - x_prev[i]).unsqueeze(-1)
    off_cur = x_cur[j] - x_cur[i]
    pred = (rel[i] @ off_prev).squeeze(-1)
    return (off_cur - pred).norm(dim=-1).mean()

"""Quaternions and rotation matrices: the one module the whole 4D package uses for rotations.

Conventions: quaternions are ``(..., 4)`` in **wxyz** order (scalar first, as gsplat, the .ply/.spz writers and the
4D bundle store them); products are Hamilton products; rotation matrices are ``(..., 3, 3)`` and act on column
vectors (``x' = R @ x``). Every function takes torch tensors or numpy arrays and returns the same kind, so the
fitting code (torch) and the synthetic character and the exporters (numpy) share one implementation.

* ``quat_mul(a, b)``: Hamilton product (broadcasting);
* ``normalise(q)``: unit quaternions (a zero quaternion stays zero);
* ``canonical(q)``: unit float32 quaternions with w >= 0, zero -> identity (for file formats);
* ``quat_to_rotmat(q)`` / ``rotmat_to_quat(m)``;
* ``rx(a)``, ``ry(a)``, ``rz(a)``: float64 rotation matrices about one axis by ``a`` radians.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_EPS = 1e-12


def _parts(q):
    return q.unbind(-1) if isinstance(q, torch.Tensor) else tuple(np.moveaxis(np.asarray(q), -1, 0))


def _stack(parts, like):
    return torch.stack(parts, -1) if isinstance(like, torch.Tensor) else np.stack(parts, -1)


def quat_mul(a, b):
    """Hamilton product of wxyz quaternions (broadcasting)."""
    aw, ax, ay, az = _parts(a)
    bw, bx, by, bz = _parts(b)
    return _stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                   aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], a)


def normalise(q):
    """Unit quaternions (the norm is clamped at 1e-12, so a zero quaternion stays zero)."""
    if isinstance(q, torch.Tensor):
        return q / q.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), _EPS)


def canonical(q) -> np.ndarray:
    """numpy float32 unit quaternions with w >= 0 (q and -q are the same rotation); a zero quaternion becomes the
    identity. The form the file formats store."""
    q = np.asarray(q.detach().cpu().numpy() if isinstance(q, torch.Tensor) else q)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    q = q / np.where(norm > 0, norm, 1.0)
    q = np.where(norm > 0, q, np.array([1.0, 0.0, 0.0, 0.0], np.float32))
    return np.where(q[..., :1] < 0, -q, q).astype(np.float32)


def quat_to_rotmat(q):
    """(..., 4) wxyz quaternions (any norm) -> (..., 3, 3) rotation matrices."""
    w, x, y, z = _parts(normalise(q))
    m = _stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], q)
    return m.reshape(tuple(q.shape[:-1]) + (3, 3))


def _rotmat_to_quat_np(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    shape = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = np.stack([
        np.stack([1 + tr, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], 1),
        np.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], m[:, 0, 1] + m[:, 1, 0],
                  m[:, 0, 2] + m[:, 2, 0]], 1),
        np.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
                  m[:, 1, 2] + m[:, 2, 1]], 1),
        np.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                  1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], 1),
    ], 1)  # (M, 4 candidates, 4)
    diag = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], 1)
    best = np.argmax(diag, axis=1)
    q = cands[np.arange(m.shape[0]), best]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(q[:, :1] < 0, -q, q)
    return q.reshape(shape + (4,))


def rotmat_to_quat(m):
    """(..., 3, 3) rotation matrices -> (..., 4) unit wxyz quaternions with w >= 0. Computed in float64 (the
    largest of the four candidate forms, stable for any rotation); numpy in -> float64 numpy out, torch in ->
    float32 torch out on the CPU."""
    if isinstance(m, torch.Tensor):
        q = _rotmat_to_quat_np(m.detach().cpu().numpy().astype(np.float64))  # float64 in numpy only
        return torch.from_numpy(q.astype(np.float32))
    return _rotmat_to_quat_np(m)


def rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


__all__ = ["quat_mul", "normalise", "canonical", "quat_to_rotmat", "rotmat_to_quat", "rx", "ry", "rz"]

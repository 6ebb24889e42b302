"""What every format writer shares: array checks, the atomic write, SH DC <-> RGB, logit/sigmoid, and the baked
frames of a model."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from ...errors import InputError
from ..model import SH_C0


def as_array(x, name: str, dtype=np.float32) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError):
        raise InputError(name, f"expected a numeric array, got {type(x).__name__}") from None
    return arr


def atomic_write_bytes(path, data: bytes) -> str:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.basename(path)[-16:], dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def rgb_to_sh0(rgb):
    """RGB in [0, 1] -> SH DC coefficients (``rgb = 0.5 + C0 * dc``)."""
    return (np.asarray(rgb, dtype=np.float32) - 0.5) / SH_C0


def sh0_to_rgb(dc):
    return 0.5 + SH_C0 * np.asarray(dc, dtype=np.float32)


def logit(p):
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def gaussian_arrays(means, quats, scales, opacities, sh, activated):
    """Checked float32 numpy arrays of one set of Gaussians (means (N, 3), quats (N, 4), log-scales (N, 3), logit
    opacities (N,), SH (N, K, 3)); ``activated``: linear scales and opacities in [0, 1] are converted."""
    m = as_array(means, "means")
    if m.ndim != 2 or m.shape[1] != 3:
        raise InputError("means", f"expected shape (N, 3), got {m.shape}")
    n = m.shape[0]
    if n == 0:
        raise InputError("means", "the Gaussian set is empty; there is nothing to export")
    q = as_array(quats, "quats")
    s = as_array(scales, "scales")
    o = as_array(opacities, "opacities").reshape(-1)
    c = as_array(sh, "sh")
    if q.shape != (n, 4):
        raise InputError("quats", f"expected shape ({n}, 4), got {q.shape}")
    if s.shape != (n, 3):
        raise InputError("scales", f"expected shape ({n}, 3), got {s.shape}")
    if o.shape != (n,):
        raise InputError("opacities", f"expected {n} values, got {o.shape[0]}")
    if c.ndim == 2 and c.shape == (n, 3):
        c = c[:, None, :]
    if c.ndim != 3 or c.shape[0] != n or c.shape[2] != 3 or c.shape[1] not in (1, 4, 9, 16, 25):
        raise InputError("sh", f"expected SH coefficients (N, K, 3) with K in 1, 4, 9, 16, 25 (or (N, 3) DC), "
                               f"got {c.shape}")
    for name, arr in (("means", m), ("quats", q), ("scales", s), ("opacities", o), ("sh", c)):
        if not np.all(np.isfinite(arr)):
            raise InputError(name, "contains NaN or infinite values")
    if activated:
        if np.any(s <= 0):
            raise InputError("scales", "linear scales must be positive")
        s = np.log(s)
        o = logit(o)
    return m, q, s, o, c


def baked_frames(model, times) -> tuple[list, list[dict]]:
    """``model.baked(t)`` for each of ``times`` (None: the static model once) -> (times, frames)."""
    ts = list(times) if times is not None else [None]
    with torch.no_grad():
        return ts, [model.baked(t) for t in ts]

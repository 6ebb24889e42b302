"""Niantic ``.spz`` (per frame), read from the public sources and written here from their description:

``.spz`` **version 3** (the version Niantic's reference library writes by default and PlayCanvas' splat-transform,
SuperSplat and Spark read; v4 needs ZSTD): a gzip stream of a 16-byte header (``u32`` magic ``NGSP``, ``u32``
version, ``u32`` count, ``u8`` SH degree, ``u8`` fractional bits, ``u8`` flags, ``u8`` reserved) then the
attributes one after the other: positions as 24-bit signed fixed point (``round(x * 2^fractional_bits)``), alpha
bytes (``sigmoid(opacity) * 255``), colour bytes (``(dc * 0.15 + 0.5) * 255``, SH DC not RGB), log-scale bytes
(``(log s + 10) * 16``), rotations as "smallest three" (2-bit index of the largest of x, y, z, w, then three
10-bit sign + magnitude fields scaled by sqrt(1/2)), and the higher SH coefficients as bytes
(``x * 128 + 128``, coefficient-major with the colour channel inner; degree-1 coefficients keep 5 bits, the rest
4). Axes are written as they are (the same axes as our ``.ply``; splat-transform reads ``.spz`` without
conversion, so both files show the same orientation in one viewer).
"""

from __future__ import annotations

import gzip
import math
import os
import struct

import numpy as np

from ...errors import InputError
from .common import atomic_write_bytes, gaussian_arrays, sigmoid

SPZ_MAGIC = 0x5053474E  # "NGSP"
SPZ_VERSION = 3
SPZ_COLOR_SCALE = 0.15
SPZ_FRACTIONAL_BITS = 12
# Niantic's reference reader refuses files of more than 10 million points
SPZ_MAX_POINTS = 10_000_000


def _smallest_three(quats_wxyz: np.ndarray) -> np.ndarray:
    """Unit quaternions (N, 4) wxyz -> spz v3 packed uint32 (x, y, z, w order; largest dropped)."""
    q = quats_wxyz.astype(np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    q = q[:, [1, 2, 3, 0]]  # xyzw
    n = q.shape[0]
    largest = np.argmax(np.abs(q), axis=1)
    rows = np.arange(n)
    q = np.where(q[rows, largest][:, None] < 0, -q, q)
    packed = np.zeros(n, np.uint64)
    for j in range(4):
        keep = largest != j
        mag = np.clip(np.round(np.abs(q[:, j]) / math.sqrt(0.5) * 511.0), 0, 511).astype(np.uint64)
        neg = (q[:, j] < 0).astype(np.uint64)
        field = (neg << np.uint64(9)) | mag
        packed = np.where(keep, (packed << np.uint64(10)) | field, packed)
    packed |= largest.astype(np.uint64) << np.uint64(30)
    return packed.astype("<u4")


def _sh_bytes(rest: np.ndarray) -> np.ndarray:
    """(N, K-1, 3) SH rest coefficients -> spz bytes (coefficient-major, channel inner), bucketed like spz."""
    n, k1, _ = rest.shape
    q = np.round(rest.astype(np.float64) * 128.0) + 128.0
    bucket = np.full((1, k1, 1), 16.0)
    bucket[:, :3] = 8.0  # degree 1: 5 bits
    q = np.floor((q + bucket / 2) / bucket) * bucket
    return np.clip(q, 0, 255).astype(np.uint8).reshape(n, k1 * 3)


def spz_bytes(means, quats, scales, opacities, sh, fractional_bits: int | None = None, level: int = 6) -> bytes:
    """An spz v3 file: ``scales`` log, ``opacities`` logits, ``quats`` wxyz, ``sh`` (N, K, 3) (K = 1, 4, 9, 16)."""
    m, q, s, o, c = gaussian_arrays(means, quats, scales, opacities, sh, False)
    n, k = m.shape[0], c.shape[1]
    if n > SPZ_MAX_POINTS:
        raise InputError("gaussians", f"{n} Gaussians are more than .spz readers accept ({SPZ_MAX_POINTS}); "
                                      f"prune the model or export .ply")
    degree = int(round(math.sqrt(k))) - 1
    if degree > 3:
        raise InputError("sh", f"spz v{SPZ_VERSION} stores SH degree 0-3, the model has degree {degree}")
    top = float(np.abs(m).max())
    if fractional_bits is None:
        fractional_bits = SPZ_FRACTIONAL_BITS
        while fractional_bits > 0 and top * (1 << fractional_bits) >= (1 << 23) - 1:
            fractional_bits -= 1
    if top * (1 << fractional_bits) >= (1 << 23):
        raise InputError("means", f"positions up to {top:g} do not fit 24-bit fixed point in .spz")
    fixed = np.clip(np.round(m.astype(np.float64) * (1 << fractional_bits)), -(1 << 23), (1 << 23) - 1)
    fixed = fixed.astype("<i4").reshape(-1).view(np.uint8).reshape(-1, 4)[:, :3]
    alpha = np.clip(np.round(sigmoid(o) * 255.0), 0, 255).astype(np.uint8)
    color = np.clip(np.round((c[:, 0, :].astype(np.float64) * SPZ_COLOR_SCALE + 0.5) * 255.0), 0, 255).astype(np.uint8)
    scale = np.clip(np.round((s.astype(np.float64) + 10.0) * 16.0), 0, 255).astype(np.uint8)
    rot = _smallest_three(q)
    header = struct.pack("<IIIBBBB", SPZ_MAGIC, SPZ_VERSION, n, degree, fractional_bits, 0, 0)
    parts = [header, fixed.tobytes(), alpha.tobytes(), color.tobytes(), scale.tobytes(), rot.tobytes()]
    if k > 1:
        parts.append(_sh_bytes(c[:, 1:, :]).tobytes())
    return gzip.compress(b"".join(parts), compresslevel=level, mtime=0)


def write_spz(path, means, quats, scales, opacities, sh, **kw) -> str:
    return atomic_write_bytes(path, spz_bytes(means, quats, scales, opacities, sh, **kw))


def read_spz(data) -> dict:
    """Decode an spz v2/v3 file (bytes or a path) to ``means``, ``quats`` wxyz, log ``scales``, logit
    ``opacities``, ``sh`` (N, K, 3) — our own reader, for round trips; the tests also read with splat-transform."""
    if not isinstance(data, (bytes, bytearray)):
        with open(os.fspath(data), "rb") as f:
            data = f.read()
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError):
        raise InputError("spz", "not a gzip stream (not an .spz v2/v3 file)") from None
    if len(raw) < 16:
        raise InputError("spz", "truncated header")
    magic, version, n, degree, fb, _flags, _ = struct.unpack("<IIIBBBB", raw[:16])
    if magic != SPZ_MAGIC or version not in (2, 3):
        raise InputError("spz", f"not an spz v2/v3 file (magic {magic:#x}, version {version})")
    k = (degree + 1) ** 2
    buf = np.frombuffer(raw, np.uint8, offset=16)
    off = 0

    def take(size):
        nonlocal off
        if off + size > buf.size:
            raise InputError("spz", "the file is truncated")
        out = buf[off:off + size]
        off += size
        return out

    p = take(9 * n).reshape(n, 3, 3).astype(np.int32)
    fixed = p[..., 0] | (p[..., 1] << 8) | (p[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = (fixed / float(1 << fb)).astype(np.float32)
    alpha = take(n).astype(np.float64) / 255.0
    color = take(3 * n).reshape(n, 3).astype(np.float64)
    scale = take(3 * n).reshape(n, 3).astype(np.float64)
    if version == 2:
        xyz = take(3 * n).reshape(n, 3).astype(np.float64) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - (xyz ** 2).sum(1)))
        quats = np.concatenate([w[:, None], xyz], 1)
    else:
        packed = take(4 * n).view("<u4").astype(np.uint64)
        largest = (packed >> np.uint64(30)).astype(np.int64)
        xyzw = np.zeros((n, 4))
        rest = packed.copy()
        for j in (3, 2, 1, 0):
            keep = largest != j
            mag = (rest & np.uint64(511)).astype(np.float64)
            neg = ((rest >> np.uint64(9)) & np.uint64(1)).astype(bool)
            v = math.sqrt(0.5) * mag / 511.0
            xyzw[:, j] = np.where(keep, np.where(neg, -v, v), 0.0)
            rest = np.where(keep, rest >> np.uint64(10), rest)
        rows = np.arange(n)
        xyzw[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - (xyzw ** 2).sum(1)))
        quats = xyzw[:, [3, 0, 1, 2]]
    sh = np.zeros((n, k, 3), np.float32)
    sh[:, 0, :] = (color / 255.0 - 0.5) / SPZ_COLOR_SCALE
    if k > 1:
        sh[:, 1:, :] = ((take(n * (k - 1) * 3).reshape(n, k - 1, 3).astype(np.float32)) - 128.0) / 128.0
    a = np.clip(alpha, 1e-6, 1 - 1e-6)
    return {"means": means, "quats": quats.astype(np.float32), "scales": (scale / 16.0 - 10.0).astype(np.float32),
            "opacities": np.log(a / (1 - a)).astype(np.float32), "sh": sh, "sh_degree": degree,
            "fractional_bits": fb, "version": version}

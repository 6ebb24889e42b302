"""Exports other viewers open: per-frame Niantic ``.spz``, one ``.splatv`` (splaTV), a PLY sequence, the one-file
HTML viewer, and the ``formats`` choice the CLI and Save 4D Gaussians share.

Formats (read from the public sources, written here from their descriptions; docs/4d.md lists which viewer opens
which file):

* ``.spz`` **version 3** (the version Niantic's reference library writes by default and PlayCanvas' splat-transform,
  SuperSplat and Spark read; v4 needs ZSTD): a gzip stream of a 16-byte header (``u32`` magic ``NGSP``, ``u32``
  version, ``u32`` count, ``u8`` SH degree, ``u8`` fractional bits, ``u8`` flags, ``u8`` reserved) then the
  attributes one after the other: positions as 24-bit signed fixed point (``round(x * 2^fractional_bits)``), alpha
  bytes (``sigmoid(opacity) * 255``), colour bytes (``(dc * 0.15 + 0.5) * 255``, SH DC not RGB), log-scale bytes
  (``(log s + 10) * 16``), rotations as "smallest three" (2-bit index of the largest of x, y, z, w, then three
  10-bit sign + magnitude fields scaled by sqrt(1/2)), and the higher SH coefficients as bytes
  (``x * 128 + 128``, coefficient-major with the colour channel inner; degree-1 coefficients keep 5 bits, the rest
  4). Axes are written as they are (the same axes as our ``.ply``; splat-transform reads ``.spz`` without
  conversion, so both files show the same orientation in one viewer).
* ``.splatv`` (antimatter15's splaTV; also gsplat.js's ``SplatvLoader``): ``u32`` magic ``0x674b``, ``u32`` JSON
  length, a JSON list of chunks (``[{"type": "splat", "size", "texwidth": 4096, "texheight", "cameras"}]``), then
  an RGBA32UI texture of 16 words (64 bytes) per Gaussian: position (3 × f32), rotation wxyz (4 halves), linear
  scale (3 halves + 0), RGBA bytes, cubic motion (9 halves: velocity, acceleration and jerk terms of
  ``Δ = m1·dt + m2·dt² + m3·dt³``), rotation velocity (4 halves, ``q(t) = normalise(q0 + ω·dt)``), and the temporal
  centre and width (2 halves; opacity × ``exp(−(dt/width)²)``), with ``dt = t − centre`` and t in [0, 1].
  Our model moves every Gaussian along its own trajectory; ``fit_motion`` fits that motion per Gaussian by least
  squares over the frame times and reports how far the cubic is from the model (``position_*`` figures relative
  to the character's size). With time windows (``splatv_bytes(windows=W)``) each Gaussian is written W times,
  each copy fitted to its part of the clip and faded in and out by the temporal opacity; with one window the
  temporal width keeps the Gaussian visible over the whole clip.
* PLY sequence: ``{prefix}frame_00001.ply``, ``frame_00002.ply``...: SuperSplat imports files dropped together as
  an animation when every name matches ``(.*?)(\\d+)(\\.compressed)?\\.ply`` with the same prefix, and orders them
  by that number (``is_supersplat_sequence`` is that rule).
* ``.html``: our WebGL2 viewer (web/js/splat4d_*.js, inlined at export time) and the ``.cs4d`` bundle (base64)
  in one file that plays from disk with no network and no server.

Every writer is atomic (a temporary file and a rename); ``export_formats`` writes a whole set into a private
folder first, so a failure leaves no partial set.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import struct
import tempfile
import time

import numpy as np
import torch

from ..errors import InputError
from . import export

FORMATS = ("ply", "spz", "splatv", "html", "bundle")
DEFAULT_FORMATS = ("ply", "bundle")

SPZ_MAGIC = 0x5053474E  # "NGSP"
SPZ_VERSION = 3
SPZ_COLOR_SCALE = 0.15
SPZ_FRACTIONAL_BITS = 12
# Niantic's reference reader refuses files of more than 10 million points
SPZ_MAX_POINTS = 10_000_000

SPLATV_MAGIC = 0x674B
SPLATV_TEXWIDTH = 4096  # 1024 Gaussians per texture row (the players index texels as (i & 0x3ff) << 2 | k, i >> 10)
# texture rows: WebGL2 devices give MAX_TEXTURE_SIZE >= 4096 (the spec's floor is 2048; desktops give 16384)
SPLATV_MAX_ROWS = 4096
SPLATV_MAX_GAUSSIANS = 1024 * SPLATV_MAX_ROWS
SPLATV_STATIC_WIDTH = 1000.0  # temporal width for Gaussians visible all the time: exp(-(0.5/1000)^2) ~ 1
HALF_MAX = 65504.0

_SEQUENCE_RULE = re.compile(r"(.*?)(\d+)(?:\.compressed)?\.ply$")


# ------------------------------------------------------------------------------------------------- choice
def parse_formats(value, name: str = "formats") -> list[str]:
    """``"ply, spz"`` / ``["ply", "spz"]`` -> the chosen format names in FORMATS order; unknown names are an error."""
    if value is None:
        return list(DEFAULT_FORMATS)
    items = value.replace(";", ",").split(",") if isinstance(value, str) else list(value)
    chosen = []
    for item in items:
        if not isinstance(item, str):
            raise InputError(name, f"expected format names, got {item!r}")
        key = item.strip().lower().lstrip(".")
        if not key:
            continue
        if key == "cs4d":
            key = "bundle"
        if key not in FORMATS:
            raise InputError(name, f"unknown format {item.strip()!r}; expected some of {', '.join(FORMATS)}")
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise InputError(name, f"no format chosen; expected some of {', '.join(FORMATS)}")
    return [f for f in FORMATS if f in chosen]


def is_supersplat_sequence(names) -> bool:
    """SuperSplat's rule for files dropped together to import as an animation: at least two ``.ply`` names (lower
    case) ending in a number, all with the same text before that number."""
    names = [os.path.basename(n).lower() for n in names]
    if len(names) < 2:
        return False
    first = _SEQUENCE_RULE.match(names[0])
    if not first:
        return False
    return all((m := _SEQUENCE_RULE.match(n)) is not None and m.group(1) == first.group(1) for n in names[1:])


# ---------------------------------------------------------------------------------------------------- spz
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
    m, q, s, o, c = export._ply_arrays(means, quats, scales, opacities, sh, False)
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
    alpha = np.clip(np.round(export._sigmoid(o) * 255.0), 0, 255).astype(np.uint8)
    color = np.clip(np.round((c[:, 0, :].astype(np.float64) * SPZ_COLOR_SCALE + 0.5) * 255.0), 0, 255).astype(np.uint8)
    scale = np.clip(np.round((s.astype(np.float64) + 10.0) * 16.0), 0, 255).astype(np.uint8)
    rot = _smallest_three(q)
    header = struct.pack("<IIIBBBB", SPZ_MAGIC, SPZ_VERSION, n, degree, fractional_bits, 0, 0)
    parts = [header, fixed.tobytes(), alpha.tobytes(), color.tobytes(), scale.tobytes(), rot.tobytes()]
    if k > 1:
        parts.append(_sh_bytes(c[:, 1:, :]).tobytes())
    return gzip.compress(b"".join(parts), compresslevel=level, mtime=0)


def write_spz(path, means, quats, scales, opacities, sh, **kw) -> str:
    return export.atomic_write_bytes(path, spz_bytes(means, quats, scales, opacities, sh, **kw))


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


# ------------------------------------------------------------------------------------------------- splatv
def _halves(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -HALF_MAX, HALF_MAX).astype("<f2")


def fit_motion(times, positions, rotations, centre: float | None = None, weights=None, score: bool = True) -> dict:
    """Least-squares fit of splaTV's motion model to per-frame positions (T, N, 3) and wxyz rotations (T, N, 4).

    Position: ``p(t) = p0 + m1·dt + m2·dt² + m3·dt³`` (fewer terms for fewer than four frames); rotation:
    ``q(t) = normalise(q0 + ω·dt)`` with the quaternions' signs aligned to the frame nearest the centre;
    ``dt = t − centre`` (default: the middle of the time range). The coefficients are then rounded to what the
    file stores (f32 positions, halves elsewhere) and the fit is scored on the frames with those stored values.

    ``weights`` (T,): per-frame weights of the least squares (a window's temporal opacity; frames under 1e-3 do
    not count); ``score=False`` skips the report.

    Returns ``p0`` (N, 3) f32, ``motion`` (N, 9) halves (m1, m2, m3), ``q0`` (N, 4), ``omega`` (N, 4) halves,
    ``centre`` and the report: ``size`` (largest side of the character's box over all frames), position error
    relative to ``size`` over all Gaussians and frames (``position_mean_rel``, ``position_p95_rel``,
    ``position_max_rel``), ``gaussians_over_1pct`` (share of Gaussians whose worst frame is off by more than 1 % of
    the size), and the rotation error in degrees (``rotation_mean_deg``, ``rotation_p95_deg``).
    """
    t = np.asarray(times, np.float64).reshape(-1)
    pos = np.asarray(positions, np.float64)
    rot = np.asarray(rotations, np.float64)
    nt, n = pos.shape[:2]
    if t.shape[0] != nt or rot.shape[:2] != (nt, n):
        raise InputError("times", f"expected {nt} times and rotations of shape ({nt}, {n}, 4)")
    if centre is None:
        centre = 0.5 * (float(t.min()) + float(t.max()))
    dt = t - centre
    sw = np.ones(nt) if weights is None else np.sqrt(np.clip(np.asarray(weights, np.float64).reshape(-1), 0, None))
    terms = min(4, int((sw > 1e-3).sum()))
    a = np.stack([dt ** j for j in range(terms)], 1)  # (T, terms)
    # least squares for every Gaussian at once: one small pseudo-inverse (terms x T) times the (T, 3N) targets
    coef = np.linalg.pinv(a * sw[:, None]) @ (pos.reshape(nt, -1) * sw[:, None])
    coef = coef.reshape(terms, n, 3)
    p0 = coef[0].astype(np.float32)
    motion = np.zeros((n, 9), np.float64)
    for j in range(1, terms):
        motion[:, 3 * (j - 1):3 * j] = coef[j]
    motion_h = _halves(motion)

    rot = rot / np.maximum(np.linalg.norm(rot, axis=-1, keepdims=True), 1e-12)
    ref = rot[int(np.argmin(np.abs(dt) - 1e6 * (sw > 1e-3)))]
    sign = np.where((rot * ref[None]).sum(-1, keepdims=True) < 0, -1.0, 1.0)
    rot_aligned = rot * sign
    rterms = min(2, terms)
    b = np.stack([dt ** j for j in range(rterms)], 1)
    rcoef = np.linalg.pinv(b * sw[:, None]) @ (rot_aligned.reshape(nt, -1) * sw[:, None])
    rcoef = rcoef.reshape(rterms, n, 4)
    q0_h = _halves(rcoef[0])
    omega_h = _halves(rcoef[1]) if rterms > 1 else np.zeros((n, 4), "<f2")

    out = {"p0": p0, "motion": motion_h, "q0": q0_h, "omega": omega_h, "centre": float(centre)}
    if not score:
        return out
    # score what the file stores
    m = motion_h.astype(np.float64).reshape(n, 3, 3)
    fit = (p0.astype(np.float64)[None] + dt[:, None, None] * m[None, :, 0] + dt[:, None, None] ** 2 * m[None, :, 1]
           + dt[:, None, None] ** 3 * m[None, :, 2])
    err = np.linalg.norm(fit - pos, axis=-1)  # (T, N)
    flat = pos.reshape(-1, 3)
    size = float((flat.max(0) - flat.min(0)).max()) if n else 0.0
    size = size if size > 0 else 1.0
    qf = q0_h.astype(np.float64)[None] + dt[:, None, None] * omega_h.astype(np.float64)[None]
    qf = qf / np.maximum(np.linalg.norm(qf, axis=-1, keepdims=True), 1e-12)
    cosang = np.clip(np.abs((qf * rot_aligned).sum(-1)), 0.0, 1.0)
    ang = np.degrees(2.0 * np.arccos(cosang))
    rel = err / size
    report = {
        "size": size, "frames": int(nt), "centre": float(centre), "position_terms": int(terms),
        "position_mean_rel": float(rel.mean()), "position_p95_rel": float(np.percentile(rel, 95)),
        "position_max_rel": float(rel.max()),
        "gaussians_over_1pct": float((rel.max(0) > 0.01).mean()),
        "rotation_mean_deg": float(ang.mean()), "rotation_p95_deg": float(np.percentile(ang, 95)),
    }
    return {**out, "report": report}


def splatv_cameras(rig) -> list[dict]:
    """A rig's views in splaTV's camera JSON (INRIA cameras.json: OpenCV camera-to-world rotation rows and
    centre, focal lengths in pixels)."""
    if rig is None:
        return []
    c2w = rig.c2w_cv
    out = []
    for k in range(len(rig)):
        out.append({"id": k, "img_name": str(rig.names[k]) if getattr(rig, "names", None) else f"view{k:02d}",
                    "width": int(rig.width), "height": int(rig.height),
                    "position": [float(x) for x in c2w[k, :3, 3]],
                    "rotation": [[float(x) for x in row] for row in c2w[k, :3, :3]],
                    "fx": float(rig.fx[k]), "fy": float(rig.fy[k])})
    return out


def auto_windows(frames: int) -> int:
    """The default number of .splatv time windows: one per 5 frames, at most 5 (1 for fewer than 10 frames)."""
    return max(1, min(5, int(frames) // 5))


SPLATV_WINDOW_WIDTH = 0.6  # temporal width of a window's copies over the centres' spacing (their weights sum to 1-1.12)


def splatv_bytes(times, positions, rotations, scales, colors, opacities, cameras=None, meta: dict | None = None,
                 centre: float | None = None, windows: int | None = None) -> tuple[bytes, dict]:
    """A ``.splatv`` file and its motion-fit report.

    ``positions`` (T, N, 3), ``rotations`` (T, N, 4) wxyz, ``scales`` (N, 3) **linear** (splaTV has no scale
    motion: pass the scales of the frame nearest the centre), ``colors`` (N, 3) RGB in [0, 1], ``opacities``
    (N,) in [0, 1], ``times`` in [0, 1], ``cameras`` as ``splatv_cameras``.

    ``windows`` (None or 0: ``auto_windows``, one per 5 frames up to 5) > 1 splits the clip into that many time
    windows, the way splaTV's own scenes live: every Gaussian is written once per window (W x N in the file), each copy with its own cubic fitted to the frames it is visible
    at (least squares weighted by its temporal opacity), a temporal centre (the first on the clip's first time, the
    last on its last, the others evenly between) and a width of 0.6 times the spacing of the centres, so the copies
    fade into one another. The report then scores the blend at each frame
    (each copy's error weighted by its temporal opacity) and adds ``coverage_min`` / ``coverage_max``: the sum of
    the copies' temporal opacities over the frames (1 = the Gaussian's own opacity; a dip between windows thins
    the character a little there).
    """
    pos = np.asarray(positions, np.float32)
    if pos.ndim != 3 or pos.shape[2] != 3:
        raise InputError("positions", f"expected (T, N, 3), got {pos.shape}")
    nt, n = pos.shape[:2]
    if n == 0:
        raise InputError("gaussians", "the Gaussian set is empty; there is nothing to export")
    if windows is None or (isinstance(windows, (int, np.integer)) and windows == 0):
        windows = auto_windows(nt)
    if not isinstance(windows, (int, np.integer)) or not 1 <= int(windows) <= max(1, nt // 2):
        raise InputError("splatv_windows", f"expected a whole number of time windows from 1 to {max(1, nt // 2)} "
                                    f"(at least 2 frames each), got {windows!r}")
    windows = int(windows)
    total = n * windows
    if total > SPLATV_MAX_GAUSSIANS:
        raise InputError("gaussians", f"{n} Gaussians x {windows} windows are more than a .splatv texture holds in "
                                      f"WebGL2 players ({SPLATV_MAX_GAUSSIANS}: {SPLATV_MAX_ROWS} rows of 1024)")
    t = np.asarray(times, np.float64).reshape(-1)
    if t.shape[0] != nt or np.any(t < 0) or np.any(t > 1):
        raise InputError("times", f"expected {nt} frame times in [0, 1]")
    scl = np.asarray(scales, np.float32)
    col = np.clip(np.asarray(colors, np.float64), 0.0, 1.0)
    opa = np.clip(np.asarray(opacities, np.float64).reshape(-1), 0.0, 1.0)
    if scl.shape != (n, 3) or col.shape != (n, 3) or opa.shape != (n,):
        raise InputError("gaussians", f"expected scales and colours of shape ({n}, 3) and {n} opacities")
    if windows == 1:
        fits = [fit_motion(t, pos, rotations, centre)]
        widths = [SPLATV_STATIC_WIDTH]
        report = {**fits[0]["report"], "windows": 1}
    else:
        lo, hi = float(t.min()), float(t.max())
        spacing = (hi - lo) / (windows - 1)  # centres on the clip's ends and evenly between them
        width = SPLATV_WINDOW_WIDTH * spacing
        fits, widths, weights = [], [], []
        for k in range(windows):
            ck = lo + k * spacing
            g = np.exp(-((t - ck) / width) ** 2)
            g = np.where(g < 0.02, 0.0, g)  # splaTV's shader skips a Gaussian below 0.02
            fits.append(fit_motion(t, pos, rotations, ck, weights=g, score=False))
            widths.append(width)
            weights.append(g)
        report = _blend_report(t, pos, rotations, fits, np.stack(weights))
        report["windows"] = windows
    rows = -(-4 * total // SPLATV_TEXWIDTH)
    words = np.zeros((rows * SPLATV_TEXWIDTH // 4, 16), "<u4")
    rgba = np.empty((n, 4), np.uint8)
    rgba[:, :3] = np.round(col * 255.0).astype(np.uint8)
    rgba[:, 3] = np.round(opa * 255.0).astype(np.uint8)
    for k, (fit, width) in enumerate(zip(fits, widths)):
        w = words[k * n:(k + 1) * n]
        w[:, 0:3] = fit["p0"].astype("<f4").view("<u4")
        halves = np.zeros((n, 26), "<f2")  # words 3..15 as 26 halves
        halves[:, 0:4] = fit["q0"]
        halves[:, 4:7] = _halves(scl)
        # word 7 (halves 8, 9) is the RGBA bytes, set below
        halves[:, 10:19] = fit["motion"]
        halves[:, 20:24] = fit["omega"]
        halves[:, 24] = fit["centre"]
        halves[:, 25] = width
        w[:, 3:16] = halves.view("<u4")
        w[:, 7] = rgba.view("<u4").reshape(n)
    tex = words.tobytes()
    chunk = {"type": "splat", "size": len(tex), "texwidth": SPLATV_TEXWIDTH, "texheight": rows,
             "cameras": cameras or []}
    chunk["charactershot"] = {**(meta or {}), "count": total, "windows": windows}
    hjson = json.dumps([chunk], separators=(",", ":"), allow_nan=False).encode("utf-8")
    data = struct.pack("<II", SPLATV_MAGIC, len(hjson)) + hjson + tex
    return data, report


def _blend_report(t, pos, rotations, fits, weights) -> dict:
    """The report of ``fit_motion`` for copies blended by their temporal weights (W, T) at the frame times."""
    pos = np.asarray(pos, np.float64)
    rot = np.asarray(rotations, np.float64)
    rot = rot / np.maximum(np.linalg.norm(rot, axis=-1, keepdims=True), 1e-12)
    nt, n = pos.shape[:2]
    err = np.zeros((nt, n))
    ang = np.zeros((nt, n))
    for fit, g in zip(fits, weights):
        dt = t - fit["centre"]
        m = fit["motion"].astype(np.float64).reshape(n, 3, 3)
        p = (fit["p0"].astype(np.float64)[None] + dt[:, None, None] * m[None, :, 0]
             + dt[:, None, None] ** 2 * m[None, :, 1] + dt[:, None, None] ** 3 * m[None, :, 2])
        q = fit["q0"].astype(np.float64)[None] + dt[:, None, None] * fit["omega"].astype(np.float64)[None]
        q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
        err += g[:, None] * np.linalg.norm(p - pos, axis=-1)
        ang += g[:, None] * np.degrees(2.0 * np.arccos(np.clip(np.abs((q * rot).sum(-1)), 0.0, 1.0)))
    cover = weights.sum(0)
    err /= np.maximum(cover, 1e-12)[:, None]
    ang /= np.maximum(cover, 1e-12)[:, None]
    flat = pos.reshape(-1, 3)
    size = float((flat.max(0) - flat.min(0)).max()) or 1.0
    rel = err / size
    return {"size": size, "frames": int(nt), "position_terms": 4,
            "position_mean_rel": float(rel.mean()), "position_p95_rel": float(np.percentile(rel, 95)),
            "position_max_rel": float(rel.max()), "gaussians_over_1pct": float((rel.max(0) > 0.01).mean()),
            "rotation_mean_deg": float(ang.mean()), "rotation_p95_deg": float(np.percentile(ang, 95)),
            "coverage_min": float(cover.min()), "coverage_max": float(cover.max())}


def read_splatv(data) -> dict:
    """Decode a ``.splatv`` (bytes or a path): ``count``, ``chunk`` (the JSON) and per-Gaussian float arrays
    ``position``, ``rotation`` (wxyz), ``scale``, ``rgba`` (bytes), ``motion`` (N, 9), ``omega``, ``trbf`` (N, 2)."""
    if not isinstance(data, (bytes, bytearray)):
        with open(os.fspath(data), "rb") as f:
            data = f.read()
    magic, hlen = struct.unpack("<II", data[:8])
    if magic != SPLATV_MAGIC:
        raise InputError("splatv", "not a .splatv file (bad magic)")
    chunks = json.loads(data[8:8 + hlen].decode("utf-8"))
    chunk = chunks[0]
    tex = np.frombuffer(data, "<u4", offset=8 + hlen, count=chunk["size"] // 4).reshape(-1, 16)
    n = int(chunk.get("charactershot", {}).get("count", tex.shape[0]))
    tex = tex[:n]
    h = tex[:, 3:16].copy().view("<f2").astype(np.float32)
    return {"count": n, "chunk": chunk, "position": tex[:, 0:3].copy().view("<f4"), "rotation": h[:, 0:4],
            "scale": h[:, 4:7], "rgba": tex[:, 7].copy().view(np.uint8).reshape(n, 4), "motion": h[:, 10:19],
            "omega": h[:, 20:24], "trbf": h[:, 24:26]}


def splatv_state(decoded: dict, t: float) -> dict:
    """Positions, normalised wxyz rotations and temporal opacity factor at time ``t`` as splaTV's shader computes."""
    dt = float(t) - decoded["trbf"][:, 0:1].astype(np.float64)
    m = decoded["motion"].astype(np.float64)
    pos = decoded["position"].astype(np.float64) + m[:, 0:3] * dt + m[:, 3:6] * dt ** 2 + m[:, 6:9] * dt ** 3
    rot = decoded["rotation"].astype(np.float64) + decoded["omega"].astype(np.float64) * dt
    rot /= np.maximum(np.linalg.norm(rot, axis=1, keepdims=True), 1e-12)
    fade = np.exp(-(dt[:, 0] / decoded["trbf"][:, 1].astype(np.float64)) ** 2)
    return {"positions": pos, "rotations": rot, "fade": fade}


# --------------------------------------------------------------------------------------------- one-file HTML
_WEB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "web", "js")


def html_bytes(bundle: bytes, title: str = "CharacterShot 4D") -> bytes:
    """Our WebGL2 viewer (web/js/splat4d_data.js, splat4d_sort_worker.js, splat4d_viewer.js, read now and inlined)
    with the bundle as base64: one page that plays the character from disk, no network, no server."""
    from .html_viewer import build_html

    return build_html(bundle, title, _WEB)


# --------------------------------------------------------------------------------------------------- driver
def _frames(model, times):
    ts = list(times) if times is not None else [None]
    with torch.no_grad():
        return ts, [model.baked(t) for t in ts]


def _bundle_parts(frames, dynamic: bool):
    f0 = frames[0]
    static = {"sh": torch.cat([f0["sh0"], f0["shN"]], dim=1), "opacities": torch.sigmoid(f0["opacities"])}
    dyn = {"positions": torch.stack([f["means"] for f in frames]),
           "rotations": torch.stack([f["quats"] for f in frames])}
    scales = torch.stack([f["scales"] for f in frames])
    if dynamic and len(frames) > 1 and bool((scales - scales[:1]).abs().max() > 1e-6):
        dyn["scales"] = torch.exp(scales)
    else:
        static["scales"] = torch.exp(scales[0])
    return static, dyn


def bundle_meta(model, rig_dict: dict | None = None, rig_source: str = "") -> dict:
    meta = {"source": "charactershot 4D Gaussians", "sh_degree": model.sh_degree,
            "rasterize_mode": model.config.get("rasterize_mode", "classic")}
    if rig_dict:
        meta["cameras"] = rig_dict
        meta["cameras_source"] = rig_source
    return meta


def export_formats(model, out_dir: str, times, formats=DEFAULT_FORMATS, prefix: str = "", rig=None,
                   rig_source: str = "", splatv_windows: int | None = None) -> tuple[list[str], dict]:
    """Write ``formats`` of ``model`` baked at ``times`` (None: a static model) into ``out_dir``.

    Files: ``{prefix}frame_00001.ply`` ... (``{prefix}gaussians.ply`` for a static model), ``{prefix}frame_00001.spz``
    ... (``gaussians.spz``), ``{prefix}motion.splatv``, ``{prefix}viewer.html``, ``{prefix}bundle.cs4d``. ``rig`` (a
    CameraRig) gives the cameras the bundle, the HTML and the ``.splatv`` carry; ``splatv_windows``: time windows of
    the ``.splatv`` (``splatv_bytes``). Everything is written into a
    private temporary folder inside ``out_dir`` and moved in at the end: an error leaves none of the set.
    Returns the paths and a summary (per format: ``files``, ``bytes``, ``seconds``; ``splatv``: the motion fit).
    """
    chosen = parse_formats(formats)
    if model is None or getattr(model, "num_gaussians", 0) == 0:
        raise InputError("gaussians", "the model has no Gaussians; there is nothing to export")
    if times is not None and not list(times):
        raise InputError("times", "expected at least one frame time")
    os.makedirs(out_dir, exist_ok=True)
    n = model.num_gaussians
    if "spz" in chosen and n > SPZ_MAX_POINTS:
        raise InputError("formats", f"spz: {n} Gaussians are more than .spz readers accept ({SPZ_MAX_POINTS})")
    if splatv_windows is None or splatv_windows == 0:
        splatv_windows = auto_windows(len(times) if times is not None else 1)
    if "splatv" in chosen and n * max(1, int(splatv_windows)) > SPLATV_MAX_GAUSSIANS:
        raise InputError("formats", f"splatv: {n} Gaussians x {splatv_windows} time window(s) are more than a "
                                    f".splatv player holds ({SPLATV_MAX_GAUSSIANS})")
    t0 = time.perf_counter()
    ts, frames = _frames(model, times)
    summary: dict = {"count": n, "frames": len(ts), "formats": chosen, "bake_seconds": time.perf_counter() - t0}
    tmp = tempfile.mkdtemp(prefix=".charshot-partial-", dir=out_dir)
    written: list[str] = []
    try:
        def record(fmt, paths, start):
            summary[fmt] = {"files": len(paths), "bytes": int(sum(os.path.getsize(p) for p in paths)),
                            "seconds": time.perf_counter() - start, **summary.get(fmt, {})}
            written.extend(paths)

        if "ply" in chosen or "spz" in chosen:
            for fmt in ("ply", "spz"):
                if fmt not in chosen:
                    continue
                start, paths = time.perf_counter(), []
                for i, fr in enumerate(frames):
                    name = f"{prefix}frame_{i + 1:05d}.{fmt}" if times is not None else f"{prefix}gaussians.{fmt}"
                    path = os.path.join(tmp, name)
                    sh = torch.cat([fr["sh0"], fr["shN"]], dim=1)
                    writer = export.write_ply if fmt == "ply" else write_spz
                    writer(path, fr["means"], fr["quats"], fr["scales"], fr["opacities"], sh)
                    paths.append(path)
                record(fmt, paths, start)
        if "splatv" in chosen:
            start = time.perf_counter()
            tt = [0.0] if times is None else [float(x) for x in times]
            mid = int(np.argmin(np.abs(np.asarray(tt) - 0.5 * (min(tt) + max(tt)))))
            f = frames[mid]
            rgb = export.sh0_to_rgb(f["sh0"][:, 0, :].numpy())
            data, report = splatv_bytes(
                tt, torch.stack([fr["means"] for fr in frames]).numpy(),
                torch.stack([fr["quats"] for fr in frames]).numpy(), torch.exp(f["scales"]).numpy(), rgb,
                torch.sigmoid(f["opacities"]).numpy(), splatv_cameras(rig),
                meta={"times": tt, "source": "charactershot 4D Gaussians"}, windows=splatv_windows)
            path = export.atomic_write_bytes(os.path.join(tmp, f"{prefix}motion.splatv"), data)
            summary["splatv"] = {"fit": report}
            record("splatv", [path], start)
        bundle_data = None
        if "bundle" in chosen or "html" in chosen:
            start = time.perf_counter()
            static, dyn = _bundle_parts(frames, model.is_dynamic)
            path = os.path.join(tmp, f"{prefix}bundle.cs4d")
            export.write_bundle(path, static, dyn, times if times is not None else [0.0],
                                meta=bundle_meta(model, rig.to_dict() if rig is not None else None, rig_source))
            with open(path, "rb") as fh:
                bundle_data = fh.read()
            if "bundle" in chosen:
                record("bundle", [path], start)
            else:
                os.unlink(path)
            if "html" in chosen:
                start = time.perf_counter()
                hp = export.atomic_write_bytes(os.path.join(tmp, f"{prefix}viewer.html"), html_bytes(bundle_data))
                record("html", [hp], start)
        final = []
        for p in written:
            dest = os.path.join(out_dir, os.path.basename(p))
            os.replace(p, dest)
            final.append(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary["seconds"] = time.perf_counter() - t0
    return final, summary


def summary_text(summary: dict) -> str:
    """One line per format for the node's text output and the CLI."""
    lines = [f"{summary['count']} Gaussians x {summary['frames']} frames"]
    for fmt in summary.get("formats", []):
        s = summary.get(fmt)
        if not s:
            continue
        line = f"{fmt}: {s['files']} file(s), {s['bytes'] / 1e6:.2f} MB, {s['seconds']:.2f} s"
        if fmt == "splatv":
            r = s["fit"]
            line += f"; {r.get('windows', 1)} time window(s)"
            line += (f"; cubic motion fit error (of the character's size): mean {100 * r['position_mean_rel']:.3f} %, "
                     f"p95 {100 * r['position_p95_rel']:.3f} %, max {100 * r['position_max_rel']:.2f} %; "
                     f"{100 * r['gaussians_over_1pct']:.1f} % of Gaussians off by > 1 % at some frame; rotation "
                     f"mean {r['rotation_mean_deg']:.2f} deg, p95 {r['rotation_p95_deg']:.2f} deg")
        lines.append(line)
    return "\n".join(lines)


__all__ = ["FORMATS", "DEFAULT_FORMATS", "SPZ_VERSION", "parse_formats", "is_supersplat_sequence", "spz_bytes",
           "write_spz", "read_spz", "fit_motion", "splatv_bytes", "read_splatv", "splatv_state", "splatv_cameras",
           "html_bytes", "export_formats", "summary_text", "bundle_meta"]

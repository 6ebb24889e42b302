"""One ``.splatv`` file (splaTV), read from the public sources and written here from their description:

``.splatv`` (antimatter15's splaTV; also gsplat.js's ``SplatvLoader``): ``u32`` magic ``0x674b``, ``u32`` JSON
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
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from ...errors import InputError

SPLATV_MAGIC = 0x674B
SPLATV_TEXWIDTH = 4096  # 1024 Gaussians per texture row (the players index texels as (i & 0x3ff) << 2 | k, i >> 10)
# texture rows: WebGL2 devices give MAX_TEXTURE_SIZE >= 4096 (the spec's floor is 2048; desktops give 16384)
SPLATV_MAX_ROWS = 4096
SPLATV_MAX_GAUSSIANS = 1024 * SPLATV_MAX_ROWS
SPLATV_STATIC_WIDTH = 1000.0  # temporal width for Gaussians visible all the time: exp(-(0.5/1000)^2) ~ 1
HALF_MAX = 65504.0


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

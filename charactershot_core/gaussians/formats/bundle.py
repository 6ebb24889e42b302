"""The 4D bundle (``.cs4d``) for the web widget, the HTML viewer and Preview 4D: the one writer and reader.

Documented byte by byte in ``docs/4d_bundle_format.md``: a JSON header, static attributes once (RGBA8 colour +
opacity, optional SH rest, static log-scales) and per-frame positions, rotations and (optionally) log-scales
quantised to 16 bits, delta-coded between frames, split into byte planes and gzip-compressed. ``write_bundle``
writes arrays; ``write_model_bundle`` bakes a model at given times first. Writes are atomic.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import InputError
from ..rotations import canonical
from .common import as_array, atomic_write_bytes, baked_frames, sh0_to_rgb

BUNDLE_MAGIC = b"CS4D"
BUNDLE_VERSION = 1


def _quantise_u16(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, levels: int = 65535) -> np.ndarray:
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.round((values - lo) / span * levels)
    return np.clip(q, 0, levels).astype(np.uint16)


def _dequantise_u16(q: np.ndarray, lo: np.ndarray, hi: np.ndarray, levels: int = 65535) -> np.ndarray:
    span = np.where(hi > lo, hi - lo, 0.0)
    return (lo + q.astype(np.float64) / levels * span).astype(np.float32)


def _encode_u16_delta_planes(q: np.ndarray) -> bytes:
    """(T, N, C) uint16 -> per frame: (q_t - q_{t-1}) mod 2^16 (q_{-1} = 0), low-byte plane then high-byte plane."""
    d = q.astype(np.int32)
    d[1:] -= q[:-1].astype(np.int32)
    d = (d & 0xFFFF).astype(np.uint16).reshape(q.shape[0], -1)
    out = np.empty((q.shape[0], 2, d.shape[1]), np.uint8)
    out[:, 0] = (d & 0xFF).astype(np.uint8)
    out[:, 1] = (d >> 8).astype(np.uint8)
    return out.tobytes()


def _decode_u16_delta_planes(buf: bytes, t: int, n: int, c: int) -> np.ndarray:
    planes = np.frombuffer(buf, np.uint8).reshape(t, 2, n * c)
    d = planes[:, 0].astype(np.uint32) | (planes[:, 1].astype(np.uint32) << 8)
    q = np.cumsum(d, axis=0) & 0xFFFF
    return q.astype(np.uint16).reshape(t, n, c)


def write_bundle(path, static: dict, frames: dict, times, meta: dict | None = None, level: int = 6,
                 position_bits: int = 14, rotation_bits: int = 10, scale_bits: int = 12) -> dict:
    """Write the 4D bundle (``docs/4d_bundle_format.md``) atomically and return a quantisation report.

    ``static``: ``colors`` (N, 3) RGB in [0, 1] **or** ``sh`` (N, K, 3) SH coefficients (the DC gives the colour,
    the rest is stored as float16), ``opacities`` (N,) in [0, 1], and ``scales`` (N, 3) linear when they do not
    change per frame. ``frames``: ``positions`` (T, N, 3), ``rotations`` (T, N, 4) wxyz, optional ``scales``
    (T, N, 3) linear. ``times``: T frame times. ``meta``: any JSON-serialisable dict (rig, units, mode...).
    ``position_bits``, ``rotation_bits``, ``scale_bits`` (8 to 16): quantisation precision of each block; fewer bits
    compress better. The defaults (14, 10, 12) keep positions within 3.1e-5 of the scene extent and quaternion
    components within 9.8e-4 (at most about 0.2 degree of rotation).

    The report has ``bytes``, ``count``, ``frames``, the scene ``extent`` (largest side of the position box) and
    the largest decoding errors: ``position_max_error`` (world units), ``position_rel_error`` (over the extent) and
    ``position_max_error_per_frame`` (a list of T), ``rotation_max_error`` (per quaternion component),
    ``scale_max_rel_error``, ``color_max_error``.
    """
    arr = _bundle_arrays(static, frames, times)
    lp, lr, lsc = _levels(position_bits, rotation_bits, scale_bits)
    t, n = arr.pos.shape[:2]
    blocks: list[dict] = []
    payload = bytearray()

    def add(name: str, raw: bytes, **info):
        comp = gzip.compress(raw, compresslevel=level, mtime=0)
        blocks.append({"name": name, "offset": len(payload), "length": len(comp), "raw_length": len(raw), **info})
        payload.extend(comp)

    # static colour + opacity
    rgba = np.empty((n, 4), np.uint8)
    rgba[:, :3] = np.round(arr.rgb * 255.0).astype(np.uint8)
    rgba[:, 3] = np.round(np.clip(arr.opac, 0.0, 1.0) * 255.0).astype(np.uint8)
    add("rgba", rgba.tobytes(), encoding="u8", shape=[n, 4])
    if arr.sh_rest.shape[1] > 0:
        add("sh_rest", arr.sh_rest.astype("<f2").tobytes(), encoding="f16", shape=[n, arr.sh_rest.shape[1], 3])
    # positions; rotations: unit quaternions with w >= 0, components mapped from [-1, 1]; log-scales
    p_lo, p_hi = arr.pos.reshape(-1, 3).min(0).astype(np.float64), arr.pos.reshape(-1, 3).max(0).astype(np.float64)
    q_pos = _add_u16_block(add, "positions", arr.pos, p_lo, p_hi, lp)
    rq = canonical(arr.rot)
    r_lo, r_hi = np.full(4, -1.0), np.full(4, 1.0)
    q_rot = _add_u16_block(add, "rotations", rq, r_lo, r_hi, lr)
    ls = np.log(arr.scl)
    s_lo, s_hi = ls.reshape(-1, 3).min(0).astype(np.float64), ls.reshape(-1, 3).max(0).astype(np.float64)
    q_scl = _add_u16_block(add, "log_scales", ls, s_lo, s_hi, lsc, per_frame=bool(arr.per_frame_scales))

    header = {
        "format": "charactershot-4d-bundle",
        "version": BUNDLE_VERSION,
        "count": n,
        "frames": t,
        "times": arr.times,
        "sh_degree": int(round((1 + arr.sh_rest.shape[1]) ** 0.5)) - 1,
        "quaternion_order": "wxyz",
        "blocks": blocks,
        "meta": meta or {},
    }
    try:
        hjson = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise InputError("meta", f"bundle metadata must be JSON-serialisable: {e}") from None
    hjson += b" " * ((-(12 + len(hjson))) % 4)  # payload starts on a 4-byte boundary
    data = BUNDLE_MAGIC + struct.pack("<II", BUNDLE_VERSION, len(hjson)) + hjson + bytes(payload)
    atomic_write_bytes(path, data)

    extent = float(np.max(p_hi - p_lo)) if n else 0.0
    pos_err_frames = np.abs(_dequantise_u16(q_pos, p_lo, p_hi, lp) - arr.pos).reshape(t, -1).max(1)
    pos_err = float(pos_err_frames.max())
    rot_err = float(np.abs(_dequantise_u16(q_rot, r_lo, r_hi, lr) - rq).max())
    scl_err = float(np.abs(np.exp(_dequantise_u16(q_scl, s_lo, s_hi, lsc).astype(np.float64)) / arr.scl - 1.0).max())
    col_err = float(np.abs(rgba[:, :3] / 255.0 - arr.rgb).max())
    return {
        "path": os.fspath(path), "bytes": len(data), "count": n, "frames": t, "extent": extent,
        "position_max_error": pos_err, "position_rel_error": pos_err / extent if extent > 0 else 0.0,
        "position_max_error_per_frame": [float(x) for x in pos_err_frames],
        "rotation_max_error": rot_err, "scale_max_rel_error": scl_err, "color_max_error": col_err,
    }


def _add_u16_block(add, name: str, values: np.ndarray, lo: np.ndarray, hi: np.ndarray, levels: int, **info):
    """Quantise (T, N, C) ``values`` to ``levels`` over [lo, hi] per channel, add them as a delta-coded byte-plane
    block and return the quantised values (for the error report)."""
    q = _quantise_u16(values, lo, hi, levels)
    add(name, _encode_u16_delta_planes(q), encoding="u16-delta-planes", shape=list(q.shape), min=lo.tolist(),
        max=hi.tolist(), levels=levels, **info)
    return q


def _levels(position_bits, rotation_bits, scale_bits) -> tuple[int, int, int]:
    """Quantisation levels (2^bits - 1) of positions, rotations and scales; bits must be whole numbers 8-16."""
    levels = []
    for name, bits in (("position_bits", position_bits), ("rotation_bits", rotation_bits), ("scale_bits", scale_bits)):
        if not isinstance(bits, (int, np.integer)) or not 8 <= int(bits) <= 16:
            raise InputError(name, f"expected an integer number of bits from 8 to 16, got {bits!r}")
        levels.append((1 << int(bits)) - 1)
    return levels[0], levels[1], levels[2]


@dataclass
class _BundleArrays:
    """``write_bundle``'s inputs, checked: float32 numpy arrays (scales linear, (1, N, 3) when static)."""

    pos: np.ndarray
    rot: np.ndarray
    scl: np.ndarray
    opac: np.ndarray
    rgb: np.ndarray
    sh_rest: np.ndarray
    per_frame_scales: bool
    times: list


def _bundle_arrays(static: dict, frames: dict, times) -> _BundleArrays:
    """Check ``write_bundle``'s ``static``, ``frames`` and ``times`` (shapes, finite values, positive scales)."""
    if not isinstance(static, dict) or not isinstance(frames, dict):
        raise InputError("bundle", "expected 'static' and 'frames' dictionaries")
    if "positions" not in frames or "rotations" not in frames:
        raise InputError("frames", "expected per-frame 'positions' (T, N, 3) and 'rotations' (T, N, 4)")
    pos = as_array(frames["positions"], "positions")
    if pos.ndim != 3 or pos.shape[2] != 3 or pos.shape[0] < 1 or pos.shape[1] < 1:
        raise InputError("positions", f"expected shape (T, N, 3) with T, N >= 1, got {pos.shape}")
    t, n = pos.shape[:2]
    rot = as_array(frames["rotations"], "rotations")
    if rot.shape != (t, n, 4):
        raise InputError("rotations", f"expected shape ({t}, {n}, 4), got {rot.shape}")
    times = [float(x) for x in (times.tolist() if hasattr(times, "tolist") else times)]
    if len(times) != t:
        raise InputError("times", f"expected {t} frame times, got {len(times)}")
    opac = as_array(static.get("opacities"), "opacities").reshape(-1) if "opacities" in static else None
    if opac is None or opac.shape != (n,):
        raise InputError("opacities", f"expected {n} static opacities in [0, 1]")
    if "sh" in static:
        sh = as_array(static["sh"], "sh")
        if sh.ndim == 2:
            sh = sh[:, None, :]
        if sh.ndim != 3 or sh.shape[0] != n or sh.shape[2] != 3 or sh.shape[1] not in (1, 4, 9, 16, 25):
            raise InputError("sh", f"expected ({n}, K, 3) SH coefficients, got {sh.shape}")
        rgb = np.clip(sh0_to_rgb(sh[:, 0, :]), 0.0, 1.0)
        sh_rest = sh[:, 1:, :]
    elif "colors" in static:
        rgb = as_array(static["colors"], "colors")
        if rgb.shape != (n, 3):
            raise InputError("colors", f"expected ({n}, 3) RGB colours, got {rgb.shape}")
        rgb = np.clip(rgb, 0.0, 1.0)
        sh_rest = np.zeros((n, 0, 3), np.float32)
    else:
        raise InputError("static", "expected static 'colors' (N, 3) or 'sh' (N, K, 3)")
    per_frame_scales = "scales" in frames and frames["scales"] is not None
    if per_frame_scales:
        scl = as_array(frames["scales"], "scales")
        if scl.shape != (t, n, 3):
            raise InputError("scales", f"expected per-frame scales ({t}, {n}, 3), got {scl.shape}")
    else:
        if "scales" not in static:
            raise InputError("scales", "expected static 'scales' (N, 3) or per-frame 'scales' (T, N, 3)")
        scl = as_array(static["scales"], "scales")
        if scl.shape != (n, 3):
            raise InputError("scales", f"expected static scales ({n}, 3), got {scl.shape}")
        scl = scl[None]
    for name, arr in (("positions", pos), ("rotations", rot), ("scales", scl), ("opacities", opac), ("colors", rgb),
                      ("sh", sh_rest)):
        if not np.all(np.isfinite(arr)):
            raise InputError(name, "contains NaN or infinite values")
    if np.any(scl <= 0):
        raise InputError("scales", "linear scales must be positive")
    return _BundleArrays(pos, rot, scl, opac, rgb, sh_rest, per_frame_scales, times)


def read_bundle(path) -> dict:
    """Read a 4D bundle: ``{"static": {colors, opacities, [sh_rest], [scales]}, "frames": {positions, rotations,
    [scales]}, "times", "meta", "header"}`` as float32 numpy arrays (scales linear, quaternions wxyz, w >= 0)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError("bundle", f"cannot read {path}: {e.strerror}") from None
    if len(raw) < 12 or raw[:4] != BUNDLE_MAGIC:
        raise InputError("bundle", f"{os.path.basename(path)} is not a CharacterShot 4D bundle (bad magic)")
    version, hlen = struct.unpack("<II", raw[4:12])
    if version != BUNDLE_VERSION:
        raise InputError("bundle", f"unsupported bundle version {version} (this reader knows {BUNDLE_VERSION})")
    try:
        header = json.loads(raw[12:12 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError("bundle", "the bundle header is not valid JSON") from None
    base = 12 + hlen
    n, t = int(header["count"]), int(header["frames"])
    blocks = {b["name"]: b for b in header["blocks"]}

    def block(name):
        b = blocks[name]
        chunk = raw[base + b["offset"]: base + b["offset"] + b["length"]]
        if len(chunk) != b["length"]:
            raise InputError("bundle", f"the bundle is truncated (block {name!r})")
        data = gzip.decompress(chunk)
        if len(data) != b["raw_length"]:
            raise InputError("bundle", f"block {name!r} has {len(data)} bytes, expected {b['raw_length']}")
        return b, data

    _, rgba = block("rgba")
    rgba = np.frombuffer(rgba, np.uint8).reshape(n, 4)
    static = {"colors": rgba[:, :3].astype(np.float32) / 255.0, "opacities": rgba[:, 3].astype(np.float32) / 255.0}
    if "sh_rest" in blocks:
        b, data = block("sh_rest")
        static["sh_rest"] = np.frombuffer(data, "<f2").reshape(b["shape"]).astype(np.float32)
    out_frames = {}
    for name, key in (("positions", "positions"), ("rotations", "rotations"), ("log_scales", "scales")):
        b, data = block(name)
        tt, nn, cc = b["shape"]
        q = _decode_u16_delta_planes(data, tt, nn, cc)
        vals = _dequantise_u16(q, np.asarray(b["min"]), np.asarray(b["max"]), int(b.get("levels", 65535)))
        if name == "log_scales":
            vals = np.exp(vals).astype(np.float32)
            if not b.get("per_frame", False):
                static["scales"] = vals[0]
                continue
        out_frames[key] = vals
    return {"static": static, "frames": out_frames, "times": header["times"], "meta": header.get("meta", {}),
            "header": header}


def bundle_parts(frames, dynamic: bool):
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


def write_model_bundle(model, path, times, rig_dict: dict | None = None, rig_source: str = "") -> dict:
    """Bake ``model`` at ``times`` (None: a static model) into a 4D bundle at ``path`` (atomic), with the cameras
    ``rig_dict`` (a ``CameraRig.to_dict()``) in its metadata. Returns ``write_bundle``'s report."""
    _, frames = baked_frames(model, times)
    static, dyn = bundle_parts(frames, model.is_dynamic)
    return write_bundle(path, static, dyn, times if times is not None else [0.0],
                        meta=bundle_meta(model, rig_dict, rig_source))

"""Export formats: the standard 3DGS (INRIA) ``.ply`` and a compact 4D bundle for the web widget.

INRIA ``.ply`` (spec GAUSSIANS §4.1), binary little-endian, one ``vertex`` element of float32 properties in the order
``x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3``: ``f_rest`` is channel-major (all red
coefficients, then green, then blue), ``opacity`` is a logit, ``scale_*`` are log-scales and ``rot_*`` a wxyz
quaternion. Every viewer reads this layout by property name. Written with numpy (no plyfile needed).

The 4D bundle (``.cs4d``) is documented byte by byte in ``docs/4d_bundle_format.md``: a JSON header, static
attributes once (RGBA8 colour + opacity, optional SH rest, static log-scales) and per-frame positions, rotations and
(optionally) log-scales quantised to 16 bits, delta-coded between frames, split into byte planes and gzip-compressed.

Every writer is atomic: it writes a temporary file next to the target and renames it, so a failure leaves nothing
half-written.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import tempfile

import numpy as np
import torch

from ..errors import InputError

SH_C0 = 0.28209479177387814
BUNDLE_MAGIC = b"CS4D"
BUNDLE_VERSION = 1


# ------------------------------------------------------------------------------------------------ helpers
def _np(x, name: str, dtype=np.float32) -> np.ndarray:
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


def _logit(p):
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- PLY
def _ply_arrays(means, quats, scales, opacities, sh, activated):
    m = _np(means, "means")
    if m.ndim != 2 or m.shape[1] != 3:
        raise InputError("means", f"expected shape (N, 3), got {m.shape}")
    n = m.shape[0]
    if n == 0:
        raise InputError("means", "the Gaussian set is empty; there is nothing to export")
    q = _np(quats, "quats")
    s = _np(scales, "scales")
    o = _np(opacities, "opacities").reshape(-1)
    c = _np(sh, "sh")
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
        o = _logit(o)
    return m, q, s, o, c


def ply_bytes(means, quats, scales, opacities, sh, activated: bool = False) -> bytes:
    """The INRIA 3DGS ``.ply`` bytes.

    ``scales`` are log-scales and ``opacities`` logits unless ``activated=True`` (linear scales, opacities in
    [0, 1]). ``sh`` is (N, K, 3) SH coefficients (K = 1, 4, 9, 16 or 25) or (N, 3) DC only; use ``rgb_to_sh0`` for
    plain colours. ``quats`` are wxyz.
    """
    m, q, s, o, c = _ply_arrays(means, quats, scales, opacities, sh, activated)
    n, k = m.shape[0], c.shape[1]
    rest = c[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # channel-major
    cols = [m, np.zeros((n, 3), np.float32), c[:, 0, :], rest, o[:, None], s, q]
    data = np.ascontiguousarray(np.concatenate(cols, axis=1).astype("<f4"))
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert data.shape[1] == len(names)
    header = "ply\nformat binary_little_endian 1.0\n"
    header += f"element vertex {n}\n"
    header += "".join(f"property float {p}\n" for p in names)
    header += "end_header\n"
    return header.encode("ascii") + data.tobytes()


def write_ply(path, means, quats, scales, opacities, sh, activated: bool = False) -> str:
    """Write an INRIA 3DGS ``.ply`` atomically (see ``ply_bytes``). Returns the path."""
    return atomic_write_bytes(path, ply_bytes(means, quats, scales, opacities, sh, activated))


_PLY_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
              "char": "i1", "int8": "i1", "ushort": "u2", "uint16": "u2", "short": "i2", "int16": "i2",
              "uint": "u4", "uint32": "u4", "int": "i4", "int32": "i4"}


def read_ply(path) -> dict:
    """Read an INRIA-layout 3DGS ``.ply`` (binary little-endian; extra properties and elements are skipped).

    Returns numpy arrays: ``means`` (N, 3), ``quats`` (N, 4) wxyz, ``scales`` (N, 3) **log**, ``opacities`` (N,)
    **logit**, ``sh`` (N, K, 3), and ``sh_degree``.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError("ply", f"cannot read {path}: {e.strerror}") from None
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply") or end < 0:
        raise InputError("ply", f"{os.path.basename(path)} is not a PLY file (no 'ply' ... 'end_header' header)")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    body = raw[end + len(b"end_header\n"):]
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in lines[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property":
            if not elements:
                raise InputError("ply", "property before any element in the PLY header")
            if parts[1] == "list":
                raise InputError("ply", f"list property '{parts[-1]}' is not supported in a Gaussian PLY")
            if parts[1] not in _PLY_TYPES:
                raise InputError("ply", f"unknown PLY property type {parts[1]!r}")
            elements[-1][2].append((parts[2], "<" + _PLY_TYPES[parts[1]]))
    if fmt != "binary_little_endian":
        raise InputError("ply", f"expected a binary_little_endian PLY, got format {fmt!r}")
    offset = 0
    vertex = None
    for name, count, props in elements:
        dtype = np.dtype(props)
        size = dtype.itemsize * count
        if len(body) < offset + size:
            raise InputError("ply", f"{os.path.basename(path)} is truncated: element '{name}' needs {size} bytes")
        if name == "vertex":
            vertex = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
        offset += size
    if vertex is None:
        raise InputError("ply", "no 'vertex' element in the PLY")
    names = vertex.dtype.names
    need = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [p for p in need if p not in names]
    if missing:
        raise InputError("ply", f"not a 3DGS PLY: missing properties {', '.join(missing)}")
    col = lambda p: vertex[p].astype(np.float32)  # noqa: E731
    n_rest = sum(1 for p in names if p.startswith("f_rest_"))
    k = 1 + n_rest // 3
    if n_rest % 3 or k not in (1, 4, 9, 16, 25):
        raise InputError("ply", f"unexpected number of f_rest properties: {n_rest}")
    n = vertex.shape[0]
    sh = np.zeros((n, k, 3), np.float32)
    sh[:, 0, :] = np.stack([col(f"f_dc_{i}") for i in range(3)], 1)
    if k > 1:
        rest = np.stack([col(f"f_rest_{i}") for i in range(n_rest)], 1).reshape(n, 3, k - 1)
        sh[:, 1:, :] = rest.transpose(0, 2, 1)
    return {
        "means": np.stack([col("x"), col("y"), col("z")], 1),
        "quats": np.stack([col(f"rot_{i}") for i in range(4)], 1),
        "scales": np.stack([col(f"scale_{i}") for i in range(3)], 1),
        "opacities": col("opacity"),
        "sh": sh,
        "sh_degree": int(round(k ** 0.5)) - 1,
    }


# ------------------------------------------------------------------------------------------ 4D bundle
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


def _normalise_quats(q: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    q = q / np.where(norm > 0, norm, 1.0)
    q = np.where(norm > 0, q, np.array([1.0, 0.0, 0.0, 0.0], np.float32))
    return np.where(q[..., :1] < 0, -q, q).astype(np.float32)  # w >= 0 (q and -q are the same rotation)


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
    if not isinstance(static, dict) or not isinstance(frames, dict):
        raise InputError("bundle", "expected 'static' and 'frames' dictionaries")
    if "positions" not in frames or "rotations" not in frames:
        raise InputError("frames", "expected per-frame 'positions' (T, N, 3) and 'rotations' (T, N, 4)")
    pos = _np(frames["positions"], "positions")
    if pos.ndim != 3 or pos.shape[2] != 3 or pos.shape[0] < 1 or pos.shape[1] < 1:
        raise InputError("positions", f"expected shape (T, N, 3) with T, N >= 1, got {pos.shape}")
    t, n = pos.shape[:2]
    rot = _np(frames["rotations"], "rotations")
    if rot.shape != (t, n, 4):
        raise InputError("rotations", f"expected shape ({t}, {n}, 4), got {rot.shape}")
    times = [float(x) for x in (times.tolist() if hasattr(times, "tolist") else times)]
    if len(times) != t:
        raise InputError("times", f"expected {t} frame times, got {len(times)}")
    opac = _np(static.get("opacities"), "opacities").reshape(-1) if "opacities" in static else None
    if opac is None or opac.shape != (n,):
        raise InputError("opacities", f"expected {n} static opacities in [0, 1]")
    if "sh" in static:
        sh = _np(static["sh"], "sh")
        if sh.ndim == 2:
            sh = sh[:, None, :]
        if sh.ndim != 3 or sh.shape[0] != n or sh.shape[2] != 3 or sh.shape[1] not in (1, 4, 9, 16, 25):
            raise InputError("sh", f"expected ({n}, K, 3) SH coefficients, got {sh.shape}")
        rgb = np.clip(sh0_to_rgb(sh[:, 0, :]), 0.0, 1.0)
        sh_rest = sh[:, 1:, :]
    elif "colors" in static:
        rgb = _np(static["colors"], "colors")
        if rgb.shape != (n, 3):
            raise InputError("colors", f"expected ({n}, 3) RGB colours, got {rgb.shape}")
        rgb = np.clip(rgb, 0.0, 1.0)
        sh_rest = np.zeros((n, 0, 3), np.float32)
    else:
        raise InputError("static", "expected static 'colors' (N, 3) or 'sh' (N, K, 3)")
    per_frame_scales = "scales" in frames and frames["scales"] is not None
    if per_frame_scales:
        scl = _np(frames["scales"], "scales")
        if scl.shape != (t, n, 3):
            raise InputError("scales", f"expected per-frame scales ({t}, {n}, 3), got {scl.shape}")
    else:
        if "scales" not in static:
            raise InputError("scales", "expected static 'scales' (N, 3) or per-frame 'scales' (T, N, 3)")
        scl = _np(static["scales"], "scales")
        if scl.shape != (n, 3):
            raise InputError("scales", f"expected static scales ({n}, 3), got {scl.shape}")
        scl = scl[None]
    for name, arr in (("positions", pos), ("rotations", rot), ("scales", scl), ("opacities", opac), ("colors", rgb),
                      ("sh", sh_rest)):
        if not np.all(np.isfinite(arr)):
            raise InputError(name, "contains NaN or infinite values")
    if np.any(scl <= 0):
        raise InputError("scales", "linear scales must be positive")

    levels = {}
    for name, bits in (("position_bits", position_bits), ("rotation_bits", rotation_bits), ("scale_bits", scale_bits)):
        if not isinstance(bits, (int, np.integer)) or not 8 <= int(bits) <= 16:
            raise InputError(name, f"expected an integer number of bits from 8 to 16, got {bits!r}")
        levels[name] = (1 << int(bits)) - 1
    lp, lr, lsc = levels["position_bits"], levels["rotation_bits"], levels["scale_bits"]

    blocks: list[dict] = []
    payload = bytearray()

    def add(name: str, raw: bytes, **info):
        comp = gzip.compress(raw, compresslevel=level, mtime=0)
        blocks.append({"name": name, "offset": len(payload), "length": len(comp), "raw_length": len(raw), **info})
        payload.extend(comp)

    # static colour + opacity
    rgba = np.empty((n, 4), np.uint8)
    rgba[:, :3] = np.round(rgb * 255.0).astype(np.uint8)
    rgba[:, 3] = np.round(np.clip(opac, 0.0, 1.0) * 255.0).astype(np.uint8)
    add("rgba", rgba.tobytes(), encoding="u8", shape=[n, 4])
    if sh_rest.shape[1] > 0:
        add("sh_rest", sh_rest.astype("<f2").tobytes(), encoding="f16", shape=[n, sh_rest.shape[1], 3])

    # positions
    p_lo, p_hi = pos.reshape(-1, 3).min(0).astype(np.float64), pos.reshape(-1, 3).max(0).astype(np.float64)
    q_pos = _quantise_u16(pos, p_lo, p_hi, lp)
    add("positions", _encode_u16_delta_planes(q_pos), encoding="u16-delta-planes", shape=[t, n, 3],
        min=p_lo.tolist(), max=p_hi.tolist(), levels=lp)
    # rotations: unit quaternions with w >= 0, components mapped from [-1, 1]
    rq = _normalise_quats(rot)
    r_lo, r_hi = np.full(4, -1.0), np.full(4, 1.0)
    q_rot = _quantise_u16(rq, r_lo, r_hi, lr)
    add("rotations", _encode_u16_delta_planes(q_rot), encoding="u16-delta-planes", shape=[t, n, 4],
        min=r_lo.tolist(), max=r_hi.tolist(), levels=lr)
    # log-scales
    ls = np.log(scl)
    s_lo, s_hi = ls.reshape(-1, 3).min(0).astype(np.float64), ls.reshape(-1, 3).max(0).astype(np.float64)
    q_scl = _quantise_u16(ls, s_lo, s_hi, lsc)
    add("log_scales", _encode_u16_delta_planes(q_scl), encoding="u16-delta-planes", shape=list(q_scl.shape),
        min=s_lo.tolist(), max=s_hi.tolist(), levels=lsc, per_frame=bool(per_frame_scales))

    header = {
        "format": "charactershot-4d-bundle",
        "version": BUNDLE_VERSION,
        "count": n,
        "frames": t,
        "times": times,
        "sh_degree": int(round((1 + sh_rest.shape[1]) ** 0.5)) - 1,
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
    pos_err_frames = np.abs(_dequantise_u16(q_pos, p_lo, p_hi, lp) - pos).reshape(t, -1).max(1)
    pos_err = float(pos_err_frames.max())
    rot_err = float(np.abs(_dequantise_u16(q_rot, r_lo, r_hi, lr) - rq).max())
    scl_err = float(np.abs(np.exp(_dequantise_u16(q_scl, s_lo, s_hi, lsc).astype(np.float64)) / scl - 1.0).max())
    col_err = float(np.abs(rgba[:, :3] / 255.0 - rgb).max())
    return {
        "path": os.fspath(path), "bytes": len(data), "count": n, "frames": t, "extent": extent,
        "position_max_error": pos_err, "position_rel_error": pos_err / extent if extent > 0 else 0.0,
        "position_max_error_per_frame": [float(x) for x in pos_err_frames],
        "rotation_max_error": rot_err, "scale_max_rel_error": scl_err, "color_max_error": col_err,
    }


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

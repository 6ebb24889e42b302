"""The standard 3DGS (INRIA) ``.ply`` and SuperSplat's rule for a ``.ply`` sequence.

INRIA ``.ply`` (spec GAUSSIANS §4.1), binary little-endian, one ``vertex`` element of float32 properties in the order
``x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3``: ``f_rest`` is channel-major (all red
coefficients, then green, then blue), ``opacity`` is a logit, ``scale_*`` are log-scales and ``rot_*`` a wxyz
quaternion. Every viewer reads this layout by property name. Written with numpy (no plyfile needed); atomic.

PLY sequence: ``{prefix}frame_00001.ply``, ``frame_00002.ply``...: SuperSplat imports files dropped together as
an animation when every name matches ``(.*?)(\\d+)(\\.compressed)?\\.ply`` with the same prefix, and orders them
by that number (``is_supersplat_sequence`` is that rule).
"""

from __future__ import annotations

import os
import re

import numpy as np

from ...errors import InputError
from .common import atomic_write_bytes, gaussian_arrays

_SEQUENCE_RULE = re.compile(r"(.*?)(\d+)(?:\.compressed)?\.ply$")


def ply_bytes(means, quats, scales, opacities, sh, activated: bool = False) -> bytes:
    """The INRIA 3DGS ``.ply`` bytes.

    ``scales`` are log-scales and ``opacities`` logits unless ``activated=True`` (linear scales, opacities in
    [0, 1]). ``sh`` is (N, K, 3) SH coefficients (K = 1, 4, 9, 16 or 25) or (N, 3) DC only; use ``rgb_to_sh0`` for
    plain colours. ``quats`` are wxyz.
    """
    m, q, s, o, c = gaussian_arrays(means, quats, scales, opacities, sh, activated)
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

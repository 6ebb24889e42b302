"""INRIA .ply writer/reader (checked with plyfile) and the compact 4D bundle."""

from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pytest

from charactershot_core.errors import InputError
from charactershot_core.gaussians.formats import (SH_C0, ply_bytes, read_bundle, read_ply, rgb_to_sh0, write_bundle,
                                                 write_ply)


def _gaussians(n=300, k=16, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        scales=(rng.normal(size=(n, 3)) - 4).astype(np.float32),
        opacities=rng.normal(size=n).astype(np.float32),
        sh=rng.normal(size=(n, k, 3)).astype(np.float32),
    )


def test_ply_round_trip_and_plyfile_reads_inria_properties(tmp_path):
    from plyfile import PlyData

    g = _gaussians()
    path = tmp_path / "frame_00000.ply"
    write_ply(path, g["means"], g["quats"], g["scales"], g["opacities"], g["sh"])
    back = read_ply(path)
    for key in ("means", "quats", "scales", "opacities", "sh"):
        np.testing.assert_array_equal(back[key], g[key])
    assert back["sh_degree"] == 3

    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    v = ply["vertex"]
    names = [p.name for p in v.properties]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert names == expected
    assert all(p.val_dtype in ("f4", "float32") for p in v.properties)
    assert v.count == 300
    np.testing.assert_array_equal(v["x"], g["means"][:, 0])
    np.testing.assert_array_equal(v["rot_0"], g["quats"][:, 0])  # w first
    np.testing.assert_array_equal(v["opacity"], g["opacities"])
    np.testing.assert_array_equal(v["scale_2"], g["scales"][:, 2])
    np.testing.assert_array_equal(v["nx"], 0)
    # f_rest is channel-major: 15 red coefficients, then 15 green, then 15 blue
    np.testing.assert_array_equal(v["f_rest_0"], g["sh"][:, 1, 0])
    np.testing.assert_array_equal(v["f_rest_14"], g["sh"][:, 15, 0])
    np.testing.assert_array_equal(v["f_rest_15"], g["sh"][:, 1, 1])
    np.testing.assert_array_equal(v["f_rest_44"], g["sh"][:, 15, 2])


def test_ply_activated_values_and_degree_zero(tmp_path):
    rng = np.random.default_rng(1)
    n = 50
    rgb = rng.random((n, 3)).astype(np.float32)
    scales = rng.random((n, 3)).astype(np.float32) * 0.05 + 0.001
    opac = rng.random(n).astype(np.float32) * 0.9 + 0.05
    path = tmp_path / "a.ply"
    write_ply(path, rng.normal(size=(n, 3)), rng.normal(size=(n, 4)), scales, opac, rgb_to_sh0(rgb), activated=True)
    back = read_ply(path)
    assert back["sh"].shape == (n, 1, 3) and back["sh_degree"] == 0
    np.testing.assert_allclose(0.5 + SH_C0 * back["sh"][:, 0], rgb, atol=1e-6)
    np.testing.assert_allclose(np.exp(back["scales"]), scales, rtol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-back["opacities"])), opac, atol=1e-6)
    from plyfile import PlyData

    assert not any(p.name.startswith("f_rest") for p in PlyData.read(str(path))["vertex"].properties)


def test_ply_bad_inputs_write_nothing(tmp_path):
    g = _gaussians(10)
    target = tmp_path / "out.ply"
    bad = [
        (dict(g, means=g["means"][:, :2]), "means"),
        (dict(g, quats=g["quats"][:5]), "quats"),
        (dict(g, sh=g["sh"][:, :5]), "sh"),
        (dict(g, opacities=np.full(10, np.nan, np.float32)), "opacities"),
        ({k: v[:0] for k, v in g.items()}, "means"),
    ]
    for kwargs, name in bad:
        with pytest.raises(InputError) as e:
            write_ply(target, **kwargs)
        assert e.value.input_name == name
    assert os.listdir(tmp_path) == []  # no partial or temporary file left
    # an existing file survives a failed overwrite untouched
    write_ply(target, **g)
    before = target.read_bytes()
    with pytest.raises(InputError):
        write_ply(target, **dict(g, scales=np.full((10, 3), np.inf, np.float32)))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["out.ply"]


def test_read_ply_rejects_non_gaussian_files(tmp_path):
    p = tmp_path / "x.ply"
    p.write_bytes(b"not a ply")
    with pytest.raises(InputError, match="not a PLY"):
        read_ply(p)
    p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nend_header\n")
    with pytest.raises(InputError, match="binary_little_endian"):
        read_ply(p)
    data = ply_bytes(**_gaussians(4, k=1))
    p.write_bytes(data[:-10])
    with pytest.raises(InputError, match="truncated"):
        read_ply(p)


def _motion(n=400, t=25, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 3)) * np.array([0.3, 0.2, 0.5]) + np.array([0, 0, 0.9])
    times = np.arange(t) / (t - 1)
    phase = rng.random(n) * 6.28
    pos = base[None] + 0.05 * np.sin(2 * np.pi * times[:, None, None] + phase[None, :, None])
    ang = 0.5 * np.sin(2 * np.pi * times)[:, None] + phase[None] * 0.1
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    rot = np.concatenate([np.cos(ang / 2)[..., None], np.sin(ang / 2)[..., None] * axis[None]], -1)
    rot *= rng.random((1, n, 1)) * 3 + 0.5  # unnormalised on purpose
    return pos.astype(np.float32), rot.astype(np.float32), times


def test_bundle_round_trip_within_quantisation_tolerance(tmp_path):
    pos, rot, times = _motion()
    n = pos.shape[1]
    rng = np.random.default_rng(3)
    colors = rng.random((n, 3)).astype(np.float32)
    opac = rng.random(n).astype(np.float32)
    scales = np.exp(rng.normal(-4, 0.5, size=(n, 3))).astype(np.float32)
    path = tmp_path / "anim.cs4d"
    report = write_bundle(path, {"colors": colors, "opacities": opac, "scales": scales},
                          {"positions": pos, "rotations": rot}, times, {"source": "test", "fps": 24})
    back = read_bundle(path)
    extent = float((pos.reshape(-1, 3).max(0) - pos.reshape(-1, 3).min(0)).max())
    assert report["extent"] == pytest.approx(extent, rel=1e-6)
    # per-frame position error well under 1e-3 of the scene extent (default 14-bit quantisation: <= 3.1e-5)
    err = np.abs(back["frames"]["positions"] - pos).max(axis=(1, 2))
    assert err.shape == (25,) and np.all(err < 1e-3 * extent) and np.all(err <= 0.5 / 16383 * extent * 1.001)
    assert report["position_max_error"] == pytest.approx(err.max(), rel=1e-3, abs=1e-9)
    assert report["position_max_error_per_frame"] == pytest.approx(list(err), rel=1e-3, abs=1e-9)
    assert report["position_rel_error"] < 1e-3
    # rotations: unit, w >= 0, the same rotation (q ~ -q)
    qn = rot / np.linalg.norm(rot, axis=-1, keepdims=True)
    qb = back["frames"]["rotations"]
    qn = np.where(qn[..., :1] < 0, -qn, qn)
    assert np.all(qb[..., 0] >= 0)
    assert np.abs(qb - qn).max() <= 1.0 / 1023 + 1e-6  # half a 10-bit step over [-1, 1]
    assert report["rotation_max_error"] == pytest.approx(np.abs(qb - qn).max(), abs=1e-6)
    np.testing.assert_allclose(back["static"]["scales"], scales, rtol=1e-3)  # 12-bit log-scales
    np.testing.assert_allclose(back["static"]["colors"], colors, atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(back["static"]["opacities"], opac, atol=0.5 / 255 + 1e-6)
    assert back["times"] == pytest.approx(list(times))
    assert back["meta"] == {"source": "test", "fps": 24}
    assert "scales" not in back["frames"]
    assert report["bytes"] == os.path.getsize(path)
    # delta coding + byte planes pay off on smooth motion: smaller than gzip of the absolute quantised frames
    blk = {b["name"]: b for b in back["header"]["blocks"]}["positions"]
    lo, hi = np.array(blk["min"]), np.array(blk["max"])
    q_abs = np.round((pos - lo) / (hi - lo) * blk["levels"]).astype("<u2")
    assert blk["length"] < 0.8 * len(gzip.compress(q_abs.tobytes(), 6))


def test_bundle_precision_is_configurable(tmp_path):
    pos, rot, times = _motion(n=200, t=6)
    static = {"colors": np.zeros((200, 3)), "opacities": np.ones(200), "scales": np.full((200, 3), 0.01)}
    sizes, errors = [], []
    for bits in (16, 12, 8):
        rep = write_bundle(tmp_path / f"b{bits}.cs4d", static, {"positions": pos, "rotations": rot}, times,
                           position_bits=bits, rotation_bits=bits)
        back = read_bundle(tmp_path / f"b{bits}.cs4d")
        err = np.abs(back["frames"]["positions"] - pos).max()
        assert err <= rep["extent"] * 0.5 / ((1 << bits) - 1) * 1.001
        assert rep["position_max_error"] == pytest.approx(err, rel=1e-3, abs=1e-9)
        sizes.append(rep["bytes"])
        errors.append(err)
    assert sizes[0] > sizes[1] > sizes[2] and errors[0] < errors[1] < errors[2]
    with pytest.raises(InputError) as e:
        write_bundle(tmp_path / "x.cs4d", static, {"positions": pos, "rotations": rot}, times, rotation_bits=20)
    assert e.value.input_name == "rotation_bits"


def test_bundle_per_frame_scales_and_sh(tmp_path):
    pos, rot, times = _motion(n=50, t=5)
    rng = np.random.default_rng(4)
    sh = rng.normal(size=(50, 4, 3)).astype(np.float32) * 0.3
    scales = np.exp(rng.normal(-4, 0.3, size=(5, 50, 3))).astype(np.float32)
    path = tmp_path / "b.cs4d"
    write_bundle(path, {"sh": sh, "opacities": np.full(50, 0.7, np.float32)},
                 {"positions": pos, "rotations": rot, "scales": scales}, times)
    back = read_bundle(path)
    np.testing.assert_allclose(back["frames"]["scales"], scales, rtol=1e-3)
    np.testing.assert_allclose(back["static"]["colors"], np.clip(0.5 + SH_C0 * sh[:, 0], 0, 1), atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(back["static"]["sh_rest"], sh[:, 1:], atol=1e-3)
    assert back["header"]["sh_degree"] == 1


def test_bundle_layout_is_as_documented(tmp_path):
    """Decode one block by hand, following docs/4d_bundle_format.md (what a JavaScript decoder does)."""
    pos, rot, times = _motion(n=20, t=3)
    path = tmp_path / "c.cs4d"
    write_bundle(path, {"colors": np.full((20, 3), 0.5, np.float32), "opacities": np.ones(20, np.float32),
                        "scales": np.full((20, 3), 0.01, np.float32)}, {"positions": pos, "rotations": rot}, times)
    raw = path.read_bytes()
    assert raw[:4] == b"CS4D"
    version, hlen = struct.unpack("<II", raw[4:12])
    assert version == 1 and (12 + hlen) % 4 == 0
    header = json.loads(raw[12:12 + hlen])
    assert header["format"] == "charactershot-4d-bundle" and header["count"] == 20 and header["frames"] == 3
    blk = {b["name"]: b for b in header["blocks"]}["positions"]
    assert blk["encoding"] == "u16-delta-planes" and blk["shape"] == [3, 20, 3]
    data = gzip.decompress(raw[12 + hlen + blk["offset"]: 12 + hlen + blk["offset"] + blk["length"]])
    planes = np.frombuffer(data, np.uint8).reshape(3, 2, 60)
    acc = np.zeros(60, np.uint32)
    lo, hi = np.array(blk["min"]), np.array(blk["max"])
    for t in range(3):
        acc = (acc + (planes[t, 0].astype(np.uint32) | (planes[t, 1].astype(np.uint32) << 8))) & 0xFFFF
        value = lo + acc.reshape(20, 3) / blk["levels"] * (hi - lo)
        assert np.abs(value - pos[t]).max() < 1e-4


def test_bundle_bad_inputs(tmp_path):
    pos, rot, times = _motion(n=10, t=4)
    static = {"colors": np.zeros((10, 3)), "opacities": np.ones(10), "scales": np.full((10, 3), 0.01)}
    path = tmp_path / "bad.cs4d"
    cases = [
        (static, {"positions": pos}, times, "frames"),
        (static, {"positions": pos, "rotations": rot[:, :5]}, times, "rotations"),
        (static, {"positions": pos, "rotations": rot}, times[:3], "times"),
        ({k: v for k, v in static.items() if k != "scales"}, {"positions": pos, "rotations": rot}, times, "scales"),
        (dict(static, opacities=np.ones(3)), {"positions": pos, "rotations": rot}, times, "opacities"),
        (static, {"positions": np.where(pos > 1, np.nan, pos), "rotations": rot}, times, "positions"),
        (static, {"positions": pos[:, :0], "rotations": rot[:, :0]}, times, "positions"),
    ]
    for st, fr, tm, name in cases:
        with pytest.raises(InputError) as e:
            write_bundle(path, st, fr, tm)
        assert e.value.input_name == name
    assert not os.listdir(tmp_path)
    path.write_bytes(b"XXXX" + bytes(20))
    with pytest.raises(InputError, match="not a CharacterShot 4D bundle"):
        read_bundle(path)
    write_bundle(path, static, {"positions": pos, "rotations": rot}, times)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(InputError, match="truncated"):
        read_bundle(path)

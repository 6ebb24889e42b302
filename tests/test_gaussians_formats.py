"""4D exports other viewers open (charactershot_core/gaussians/formats/), read back by third-party code:
PlayCanvas' splat-transform (npm ``@playcanvas/splat-transform``) for ``.spz`` and ``.ply``, gsplat.js (npm
``gsplat``) for ``.splatv``, and the one-file HTML in headless Chromium from ``file://`` with the network off.

The npm packages are installed by scripts/setup.sh into .cache/node (pinned versions, no network at test time);
without them these tests fail with the command to install them, unless CHARSHOT_SKIP_NODE_READERS=1.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from charactershot_core.errors import InputError
from charactershot_core.gaussians import formats as F
from charactershot_core.gaussians.synthetic import SyntheticModel

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / ".cache" / "node" / "node_modules"
SPLAT_TRANSFORM = NODE_DIR / "@playcanvas" / "splat-transform" / "bin" / "cli.mjs"
GSPLAT = NODE_DIR / "gsplat" / "dist" / "index.es.js"
NODE = shutil.which("node")
from charactershot_core.gaussians.model import SH_C0  # noqa: E402


def _need(path: Path):
    if NODE and path.exists():
        return
    if os.environ.get("CHARSHOT_SKIP_NODE_READERS") == "1":
        pytest.skip("third-party node readers skipped (CHARSHOT_SKIP_NODE_READERS=1)")
    pytest.fail(f"{path.relative_to(ROOT)} (or node) is missing: run scripts/setup.sh (it installs the pinned npm "
                f"readers into .cache/node), or set CHARSHOT_SKIP_NODE_READERS=1", pytrace=False)


class MovingModel:
    """A small 4D model with known motion, exposing what the exporters use (``baked(t)``, ``num_gaussians``,
    ``sh_degree``, ``is_dynamic``, ``config``): every Gaussian swings on its own phase and turns about z."""

    def __init__(self, n=300, k=4, frames=25, seed=0, amplitude=0.1):
        g = torch.Generator().manual_seed(seed)
        self.n = n
        self.means = torch.randn(n, 3, generator=g) * 0.4
        self.log_scales = torch.randn(n, 3, generator=g) * 0.3 - 4.0
        q = torch.randn(n, 4, generator=g)
        self.quats = q / q.norm(dim=1, keepdim=True)
        self.opacities = torch.randn(n, generator=g) * 1.5
        self.sh0 = torch.rand(n, 1, 3, generator=g) * 3.0 - 1.5
        self.shN = (torch.rand(n, k - 1, 3, generator=g) - 0.5) * 0.6
        self.phase = torch.rand(n, generator=g) * 6.28
        self.amplitude = amplitude
        self.config = {"times": [i / (frames - 1) for i in range(frames)], "rasterize_mode": "classic"}
        self.sh_degree = int(round(math.sqrt(k))) - 1
        self.is_dynamic = True
        self.num_gaussians = n

    @property
    def times(self):
        return self.config["times"]

    def baked(self, t=None):
        t = 0.0 if t is None else float(t)
        a = self.amplitude
        d = torch.stack([a * torch.sin(2 * t + self.phase), 0.5 * a * t * t * torch.ones(self.n),
                         0.2 * a * torch.cos(3 * t + self.phase)], 1)
        half = 0.25 * t
        w1, z1 = math.cos(half), math.sin(half)  # rotation about z by 0.5 t radians, applied on the left
        w2, x2, y2, z2 = self.quats.unbind(1)
        q = torch.stack([w1 * w2 - z1 * z2, w1 * x2 - z1 * y2, w1 * y2 + z1 * x2, w1 * z2 + z1 * w2], 1)
        return {"means": self.means + d, "scales": self.log_scales.clone(), "quats": q,
                "opacities": self.opacities.clone(), "sh0": self.sh0.clone(), "shN": self.shN.clone()}


def _splat_transform_csv(src: Path, tmp: Path) -> dict:
    """Read ``src`` with splat-transform (it converts to CSV with the INRIA property names)."""
    out = tmp / (src.name + ".csv")
    r = subprocess.run([NODE, str(SPLAT_TRANSFORM), "-w", str(src), str(out)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out) as f:
        names = f.readline().strip().split(",")
    data = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)
    return {n: data[:, i] for i, n in enumerate(names)}


def _check_against_model(cols: dict, baked: dict, pos_tol: float, col_tol: float, rest_tol: float, scale_tol: float,
                         quat_tol: float, alpha_tol: float):
    n = baked["means"].shape[0]
    assert cols["x"].shape[0] == n
    pos = np.stack([cols["x"], cols["y"], cols["z"]], 1)
    assert np.abs(pos - baked["means"].numpy()).max() <= pos_tol
    dc = np.stack([cols[f"f_dc_{i}"] for i in range(3)], 1)
    # colours compared as the RGB a viewer shows (0.5 + C0 dc), the quantity the formats quantise
    assert np.abs(SH_C0 * (dc - baked["sh0"][:, 0].numpy())).max() <= col_tol
    k1 = baked["shN"].shape[1]
    if k1:
        rest = np.stack([cols[f"f_rest_{i}"] for i in range(3 * k1)], 1).reshape(n, 3, k1).transpose(0, 2, 1)
        assert np.abs(rest - baked["shN"].numpy()).max() <= rest_tol
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))
    assert np.abs(sig(cols["opacity"]) - sig(baked["opacities"].numpy())).max() <= alpha_tol
    scl = np.stack([cols[f"scale_{i}"] for i in range(3)], 1)
    assert np.abs(scl - baked["scales"].numpy()).max() <= scale_tol
    q = np.stack([cols[f"rot_{i}"] for i in range(4)], 1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert (1.0 - np.abs((q * baked["quats"].numpy()).sum(1))).max() <= quat_tol  # q and -q: the same rotation


# -------------------------------------------------------------------------------------------- the choice
def test_parse_formats_names_and_errors():
    assert F.parse_formats(None) == ["ply", "bundle"]
    assert F.parse_formats("SPZ, .ply,cs4d") == ["ply", "spz", "bundle"]
    assert F.parse_formats(["html", "splatv"]) == ["splatv", "html"]
    with pytest.raises(InputError, match=r"formats: unknown format 'gltf'"):
        F.parse_formats("ply,gltf")
    with pytest.raises(InputError, match="formats: no format chosen"):
        F.parse_formats(" , ")


def test_ply_sequence_names_follow_supersplat_rule(tmp_path):
    m = MovingModel(n=50, k=1, frames=12)
    files, _ = F.export_formats(m, str(tmp_path), m.times, ["ply"], prefix="hero_00007_")
    names = [os.path.basename(f) for f in files]
    assert names[0] == "hero_00007_frame_00001.ply" and len(names) == 12
    assert F.is_supersplat_sequence(names)
    # SuperSplat orders the frames by the trailing number: the same order as the frame times
    key = [int(F.ply._SEQUENCE_RULE.match(n.lower()).group(2)) for n in names]
    assert key == sorted(key) == list(range(1, 13))
    # two sets dropped together, or a bundle among them, are not one sequence
    assert not F.is_supersplat_sequence(names + ["hero_00008_frame_00001.ply"])
    assert not F.is_supersplat_sequence(names + ["hero_00007_bundle.cs4d"])


# --------------------------------------------------------------------------------- .spz and .ply, read by splat-transform
def test_spz_and_ply_read_by_splat_transform(tmp_path):
    _need(SPLAT_TRANSFORM)
    m = MovingModel(n=300, k=4, frames=25)
    out = tmp_path / "out"
    files, summary = F.export_formats(m, str(out), m.times, ["ply", "spz"], prefix="c_")
    assert summary["spz"]["files"] == summary["ply"]["files"] == 25
    assert summary["spz"]["bytes"] * 3 < summary["ply"]["bytes"]  # spz is the compact one
    for fi in (0, 12, 24):
        baked = m.baked(m.times[fi])
        spz = _splat_transform_csv(out / f"c_frame_{fi + 1:05d}.spz", tmp_path)
        # spz: 12 fractional bits (half a step 1.2e-4), colour bytes of 0.15 dc (half a step of RGB: 0.5/255/0.15 C0),
        # alpha bytes, log-scale sixteenths, 9-bit smallest-three rotations, SH bytes bucketed to 8/128
        _check_against_model(spz, baked, pos_tol=0.5 / 4096 + 1e-6, col_tol=0.5 / 255 / 0.15 * SH_C0 + 1e-5,
                             rest_tol=4.5 / 128 + 1e-6, scale_tol=1 / 32 + 1e-5, quat_tol=2e-5, alpha_tol=0.5 / 255 + 1e-6)
        ply = _splat_transform_csv(out / f"c_frame_{fi + 1:05d}.ply", tmp_path)
        _check_against_model(ply, baked, pos_tol=1e-6, col_tol=1e-6, rest_tol=1e-6, scale_tol=1e-6, quat_tol=1e-6,
                             alpha_tol=1e-6)
    # our own reader agrees with splat-transform on the spz positions (same file, two decoders)
    mine = F.read_spz(out / "c_frame_00013.spz")
    st = _splat_transform_csv(out / "c_frame_00013.spz", tmp_path)
    assert mine["version"] == F.SPZ_VERSION == 3
    assert np.allclose(mine["means"], np.stack([st["x"], st["y"], st["z"]], 1), atol=1e-7)


def test_spz_fractional_bits_shrink_for_large_scenes(tmp_path):
    m = MovingModel(n=40, k=1, frames=2)
    m.means = m.means * 4000.0  # beyond the 2048 the default 12 fractional bits reach
    path = tmp_path / "big.spz"
    b = m.baked(0.0)
    F.write_spz(path, b["means"], b["quats"], b["scales"], b["opacities"], b["sh0"])
    r = F.read_spz(path)
    assert r["fractional_bits"] < 12
    assert np.abs(r["means"] - b["means"].numpy()).max() <= 0.5 / (1 << r["fractional_bits"]) + 1e-3


# ----------------------------------------------------------------------------------------- .splatv via gsplat.js
def _gsplat_read(path: Path) -> dict:
    r = subprocess.run([NODE, str(ROOT / "tests" / "readers" / "gsplat_splatv.mjs"), str(GSPLAT), str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.mark.parametrize("windows", [1, 4])
def test_splatv_read_by_gsplat_js_matches_the_model(tmp_path, windows):
    _need(GSPLAT)
    from charactershot_core import cameras as cam

    m = MovingModel(n=300, k=1, frames=25, amplitude=0.3)
    rig = cam.orbit_rig(num_views=4, radius=3.0, width=64, height=48)
    files, summary = F.export_formats(m, str(tmp_path), m.times, ["splatv"], prefix="c_", rig=rig,
                                      splatv_windows=windows)
    out = _gsplat_read(Path(files[0]))
    total = 300 * windows
    rows = -(-total // 1024)
    assert out["objects"] == 1 and out["width"] == 4096 and out["height"] == rows
    # gsplat.js counts whole texture rows (1024 Gaussians each): ours first (one copy per window), then zero padding
    assert out["vertexCount"] == 1024 * rows
    gs = out["gaussians"]
    assert all(g["rgba"] == [0, 0, 0, 0] and g["scale"] == [0, 0, 0] for g in gs[total:])
    gs = gs[:total]
    assert all(g["padding"] == [0, 0] for g in gs)
    # gsplat.js puts its camera where the file's first camera is (INRIA cameras.json: camera centre)
    assert np.allclose(out["camera"], rig.c2w_cv[0][:3, 3], atol=1e-5)
    arr = lambda key: np.array([g[key] for g in gs], np.float64)
    pos, motion, rot, omega, trbf = arr("position"), arr("motion"), arr("rotation"), arr("omega"), arr("trbf")
    baked0 = m.baked(0.5)
    rgba = arr("rgba").reshape(windows, 300, 4)
    for k in range(windows):  # every copy carries the Gaussian's colour and opacity
        assert np.abs(rgba[k, :, :3] / 255 - np.clip(0.5 + SH_C0 * baked0["sh0"][:, 0].numpy(), 0, 1)).max() <= 0.5 / 255 + 1e-6
        assert np.abs(rgba[k, :, 3] / 255 - torch.sigmoid(baked0["opacities"]).numpy()).max() <= 0.5 / 255 + 1e-6
    assert np.allclose(arr("scale"), np.tile(np.exp(baked0["scales"].numpy()), (windows, 1)), rtol=1e-3)
    size = summary["splatv"]["fit"]["size"]
    errs = []
    for t in m.times:
        # splaTV's vertex shader: dt = t - centre; p = p0 + m1 dt + m2 dt^2 + m3 dt^3; q = normalise(q0 + w dt);
        # opacity x exp(-(dt / width)^2), skipped below 0.02
        dt = t - trbf[:, :1]
        p = pos + motion[:, 0:3] * dt + motion[:, 3:6] * dt ** 2 + motion[:, 6:9] * dt ** 3
        g = np.exp(-(dt[:, 0] / trbf[:, 1]) ** 2)
        g = np.where(g < 0.02, 0.0, g).reshape(windows, 300)
        cover = g.sum(0)
        assert cover.min() > 0.99 and cover.max() < 1.13  # the copies together keep the Gaussian's opacity
        blend = (g[..., None] * p.reshape(windows, 300, 3)).sum(0) / cover[:, None]
        b = m.baked(t)
        errs.append(np.linalg.norm(blend - b["means"].numpy(), axis=1) / size)
        q = (rot + omega * dt).reshape(windows, 300, 4)
        q /= np.linalg.norm(q, axis=-1, keepdims=True)
        ang = np.degrees(2 * np.arccos(np.clip(np.abs((q * b["quats"].numpy()).sum(-1)), 0, 1)))
        assert ((g * ang).sum(0) / cover).max() < 1.0
    errs = np.array(errs)
    # the figures the export reports are the ones a reader sees
    fit = summary["splatv"]["fit"]
    assert fit["windows"] == windows
    assert fit["position_max_rel"] == pytest.approx(errs.max(), rel=0.02, abs=2e-5)
    assert fit["position_mean_rel"] == pytest.approx(errs.mean(), rel=0.02, abs=2e-5)
    assert f"{windows} time window(s)" in F.summary_text(summary)
    assert errs.max() < 0.002  # the swing over [0, 1] is nearly cubic: the reader sees the model within 0.2 %


def test_splatv_windows_follow_what_one_cubic_cannot(tmp_path):
    class FastSwing(MovingModel):
        def baked(self, t=None):  # two full swings over the clip: far from one cubic
            b = super().baked(t)
            b["means"][:, 2] += self.amplitude * torch.sin(4 * math.pi * (0.0 if t is None else t) + self.phase)
            return b

    m = FastSwing(n=200, k=1, frames=25, amplitude=0.3)
    fits = {}
    for w in (1, 5):
        _, s = F.export_formats(m, str(tmp_path / f"w{w}"), m.times, ["splatv"], splatv_windows=w)
        fits[w] = s["splatv"]["fit"]
    assert fits[1]["gaussians_over_1pct"] > 0.9  # said, not hidden
    assert fits[5]["position_mean_rel"] < fits[1]["position_mean_rel"] / 3
    with pytest.raises(InputError, match="splatv_windows: expected a whole number of time windows from 1 to 12"):
        F.export_formats(m, str(tmp_path / "bad"), m.times, ["splatv"], splatv_windows=13)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_motion_fit_reports_what_a_cubic_cannot_follow():
    times = np.linspace(0, 1, 25)
    n = 200
    rng = np.random.default_rng(0)
    base = rng.normal(size=(n, 3))
    c = rng.normal(size=(3, n, 3)) * 0.05
    dt = times - 0.5
    cubic = base[None] + dt[:, None, None] * c[0] + dt[:, None, None] ** 2 * c[1] + dt[:, None, None] ** 3 * c[2]
    rot = np.zeros((25, n, 4))
    rot[..., 0] = 1.0
    fit = F.fit_motion(times, cubic, rot)
    assert fit["report"]["position_max_rel"] < 1e-3  # exact up to the half-float storage
    assert fit["report"]["gaussians_over_1pct"] == 0.0
    # half of the Gaussians jump halfway through the clip: the report says so instead of hiding it
    jump = cubic.copy()
    jump[13:, : n // 2, 0] += 0.5
    rep = F.fit_motion(times, jump, rot)["report"]
    assert rep["gaussians_over_1pct"] == pytest.approx(0.5, abs=0.01)
    assert rep["position_max_rel"] > 0.01


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_leave_no_files(tmp_path, monkeypatch):
    m = MovingModel(n=30, k=1, frames=3)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="formats: unknown format 'obj'"):
        F.export_formats(m, str(out), m.times, "ply,obj")
    monkeypatch.setattr(F.export, "SPZ_MAX_POINTS", 29)
    with pytest.raises(InputError, match=r"formats: spz: 30 Gaussians are more than \.spz readers accept \(29\)"):
        F.export_formats(m, str(out), m.times, "ply,spz")
    monkeypatch.setattr(F.export, "SPLATV_MAX_GAUSSIANS", 10)
    with pytest.raises(InputError, match=r"formats: splatv: 30 Gaussians x 1 time window\(s\) are more than a \.splatv player"):
        F.export_formats(m, str(out), m.times, ["splatv"])
    empty = MovingModel(n=30, k=1, frames=3)
    empty.num_gaussians = 0
    with pytest.raises(InputError, match="gaussians: the model has no Gaussians"):
        F.export_formats(empty, str(out), m.times, ["ply"])
    # a failure in the middle of a set (the html step) leaves none of the set, not even the finished .ply files
    monkeypatch.undo()
    monkeypatch.setattr(F.export, "html_bytes", lambda bundle: (_ for _ in ()).throw(InputError("html", "boom")))
    with pytest.raises(InputError, match="html: boom"):
        F.export_formats(m, str(out), m.times, ["ply", "spz", "html"])
    assert not out.exists() or not any(out.iterdir())


def test_cli_export_writes_each_format(tmp_path, capsys):
    from charactershot_core.__main__ import main
    from charactershot_core.gaussians.model import make_gaussians

    g = torch.Generator().manual_seed(0)
    pts = torch.randn(120, 3, generator=g) * 0.3
    model = make_gaussians(pts, torch.rand(120, 3, generator=g), 0.02, 0, [0.0, 0.5, 1.0], None)
    weights = tmp_path / "gaussians.safetensors"
    model.save(str(weights))
    out = tmp_path / "exp"
    rc = main(["export", "--weights", str(weights), "--out", str(out), "--formats", "ply,spz,splatv,html,bundle"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    # a static model: one file per format
    assert names == ["bundle.cs4d", "gaussians.ply", "gaussians.spz", "motion.splatv", "viewer.html"]
    err = capsys.readouterr().err
    assert "spz: 1 file(s)" in err and "cubic motion fit error" in err
    # a fitted-style model with the trajectory table (the default motion model): per-frame files move with it
    moving = make_gaussians(pts, torch.rand(120, 3, generator=g), 0.02, 0, [0.0, 0.5, 1.0], None, motion="table")
    with torch.no_grad():
        moving.splats["traj_means"][:, :, 0] += torch.tensor([0.0, 0.1, 0.3])
    mw = tmp_path / "moving.safetensors"
    moving.save(str(mw))
    out2 = tmp_path / "exp2"
    assert main(["export", "--weights", str(mw), "--out", str(out2), "--formats", "ply,spz,splatv"]) == 0
    assert sorted(p.name for p in out2.iterdir()) == sorted(
        [f"frame_0000{i}.{e}" for e in ("ply", "spz") for i in (1, 2, 3)] + ["motion.splatv"])
    from charactershot_core.gaussians.formats import read_ply

    for i, dx in enumerate((0.0, 0.1, 0.3)):
        ref = moving.baked(moving.times[i])["means"].numpy()
        assert np.allclose(ref[:, 0], pts[:, 0].numpy() + dx, atol=1e-5)
        assert np.allclose(read_ply(out2 / f"frame_0000{i + 1}.ply")["means"], ref, atol=1e-6)
        assert np.allclose(F.read_spz(out2 / f"frame_0000{i + 1}.spz")["means"], ref, atol=0.5 / 4096 + 1e-6)
    capsys.readouterr()
    assert main(["export", "--weights", str(weights), "--out", str(tmp_path / "x"), "--formats", "usd"]) == 1
    assert "--formats: unknown format 'usd'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------ through ComfyUI
def test_save_4d_node_writes_the_chosen_formats(comfy):
    from charactershot_core.gaussians.model import make_gaussians
    from tests.comfy_host import WorkflowError

    g = torch.Generator().manual_seed(1)
    pts = torch.randn(150, 3, generator=g) * 0.3
    model = make_gaussians(pts, torch.rand(150, 3, generator=g), 0.02, 0, [0.0], None)
    model.save(str(comfy.input_dir / "formats_model.safetensors"))

    def prompt(prefix, **flags):
        return {"1": {"class_type": "CharacterShotLoad4DGaussians", "inputs": {"file": "formats_model.safetensors"}},
                "2": {"class_type": "CharacterShotSave4DGaussians",
                      "inputs": {"gaussians": ["1", 0], "filename_prefix": prefix, "times": "", "save_ply": True,
                                 "save_bundle": False, "save_weights": False, **flags}}}

    hist = comfy.run(prompt("charactershot/fmt", save_spz=True, save_splatv=True, save_html=True), timeout=300)
    out = hist["outputs"]["2"]
    names = sorted(f["filename"] for f in out["charshot_4d"])
    stem = names[0].split("_gaussians")[0]
    assert names == sorted(f"{stem}_{n}" for n in ("gaussians.ply", "gaussians.spz", "motion.splatv", "viewer.html"))
    assert all(f["subfolder"] == "charactershot" and f["type"] == "output" for f in out["charshot_4d"])
    text = out["text"][0]
    assert "spz: 1 file(s)" in text and "cubic motion fit error" in text
    html = comfy.view(f"{stem}_viewer.html", "charactershot", "output")
    assert html.startswith(b"<!DOCTYPE html>") and b"id=\"charshot-bundle\"" in html
    # a prefix that leaves the output folder is refused and writes nothing
    before = sorted(p.relative_to(comfy.output_dir.parent) for p in comfy.output_dir.parent.rglob("*") if p.is_file())
    with pytest.raises(WorkflowError, match="filename_prefix"):
        comfy.run(prompt("../outside/fmt", save_spz=True), timeout=120)
    after = sorted(p.relative_to(comfy.output_dir.parent) for p in comfy.output_dir.parent.rglob("*") if p.is_file())
    assert [p for p in after if p not in before and "fmt" in str(p)] == []


# ------------------------------------------------------------------------ the one-file HTML in Chromium, offline
def test_one_file_html_plays_from_disk_with_the_network_off(tmp_path):
    from tests.browser import CHROMIUM, INSTALL_HINT, Chromium

    if not CHROMIUM:
        if os.environ.get("CHARSHOT_SKIP_BROWSER") == "1":
            pytest.skip("browser tests skipped (CHARSHOT_SKIP_BROWSER=1)")
        pytest.fail(f"{INSTALL_HINT}; or set CHARSHOT_SKIP_BROWSER=1 to skip the browser tests", pytrace=False)
    from charactershot_core.cameras import official_rig

    m = SyntheticModel("wave", 3000, 5)
    files, summary = F.export_formats(m, str(tmp_path), m.times, ["html"], prefix="wave_", rig=official_rig())
    assert [os.path.basename(f) for f in files] == ["wave_viewer.html"]
    text = Path(files[0]).read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # nothing to fetch: viewer, worker and data inline
    b = Chromium("about:blank", width=640, height=560)
    try:
        page = b.page
        page.call("Network.enable")
        page.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1,
                  uploadThroughput=-1)
        page.call("Page.navigate", url=Path(files[0]).as_uri())
        page.wait_for("window.charshotLoaded === true", timeout=90)
        V = "window.charshotViewer"
        capture = f"""(async () => {{ const v = {V};
            for (let i = 0; i < 400; i++) {{ if (v.displayedFrame === v.wantFrame && !v.inflight && v.sortedViewId === v.viewId) break;
              await new Promise(r => setTimeout(r, 25)); }}
            const c = v.capture(); let s = ''; const u8 = c.data;
            for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
            return {{w: c.width, h: c.height, data: btoa(s)}}; }})()"""

        def grab():
            import base64

            r = page.eval(capture)
            return np.frombuffer(base64.b64decode(r["data"]), np.uint8).reshape(r["h"], r["w"], 4)[..., :3]

        info = page.eval(f"({{count: {V}.scene.count, frames: {V}.scene.frames, msg: {V}.message, "
                         f"cams: {V}.cameras().views.length}})")
        assert info["count"] == 3000 and info["frames"] == 5 and not info["msg"], info
        assert info["cams"] == 21  # the rig travelled inside the page (snap-to-camera works offline too)
        page.eval(f"""(() => {{ {V}.pause(); const s = {V}.ui.slider; s.value = '0';
            s.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()""")
        page.wait_for(f"{V}.displayedFrame === 0", timeout=20)
        first = grab()
        page.eval(f"""(() => {{ const s = {V}.ui.slider; s.value = '2';
            s.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()""")
        page.wait_for(f"{V}.displayedFrame === 2", timeout=20)
        mid = grab()
        drawn = (np.abs(first.astype(int) - 255).max(-1) > 24).mean()
        assert 0.01 < drawn < 0.8, f"fraction of non-background pixels {drawn:.3f}"
        changed = (np.abs(first.astype(int) - mid.astype(int)).max(-1) > 40).mean()
        assert changed > 0.003, f"only {changed:.4f} of the pixels changed between frame 1 and frame 3"
        assert page.eval(f"{V}.ui.label.textContent") == "3/5"
        assert not [c for c in page.console if c.startswith("EXCEPTION")], page.console
        art = ROOT / "tests" / "artifacts"
        art.mkdir(exist_ok=True)
        page.screenshot(art / "one_file_html.png")
    finally:
        b.close()


def test_splatv_drawn_by_gsplat_js_in_chromium_matches_render_4d(tmp_path):
    """gsplat.js's own Splatv player draws our file in Chromium at two times from a training camera (the file's
    first camera); each picture is compared with the pack's render of the model at that time from that camera."""
    _need(GSPLAT)
    import functools
    import http.server
    import socketserver
    import threading

    from PIL import Image

    from charactershot_core.cameras import official_rig
    from charactershot_core.gaussians.raster.render import rasterize
    from tests.browser import CHROMIUM, INSTALL_HINT, Chromium

    if not CHROMIUM:
        if os.environ.get("CHARSHOT_SKIP_BROWSER") == "1":
            pytest.skip("browser tests skipped (CHARSHOT_SKIP_BROWSER=1)")
        pytest.fail(f"{INSTALL_HINT}; or set CHARSHOT_SKIP_BROWSER=1 to skip the browser tests", pytrace=False)
    m = SyntheticModel("wave", 4000, 25)
    w, h = 360, 240
    rig = official_rig().select([0]).resized(w, h)
    site = tmp_path / "site"
    F.export_formats(m, str(site), m.times, ["splatv"], prefix="wave_", rig=rig)
    shutil.copy(ROOT / "tests" / "readers" / "gsplat_splatv_page.html", site / "page.html")
    (site / "gsplat").symlink_to(GSPLAT.parent, target_is_directory=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    art = ROOT / "tests" / "artifacts"
    art.mkdir(exist_ok=True)
    shots = []
    try:
        for t in (0.1, 0.5):
            url = (f"http://127.0.0.1:{server.server_address[1]}/page.html?file=wave_motion.splatv&t={t}&w={w}&h={h}"
                   f"&fx={rig.fx[0]}&fy={rig.fy[0]}")
            b = Chromium(url, width=800, height=600)
            try:
                b.page.wait_for("window.framesDrawn > 30", timeout=90)  # the depth order comes from a worker
                path = art / f"splatv_gsplat_t{t}.png"
                b.page.screenshot(path, {"x": 0, "y": 0, "width": w, "height": h})
            finally:
                b.close()
            got = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
            bk = m.baked(t)
            ref, _, _ = rasterize(bk["means"], bk["quats"], torch.exp(bk["scales"]), torch.sigmoid(bk["opacities"]),
                                  (bk["sh0"][:, 0] * SH_C0 + 0.5).clamp(0, 1), rig.viewmats(), rig.Ks(), w, h,
                                  backend="torch", backgrounds=torch.ones(1, 3))
            ref = ref[0].clamp(0, 1).numpy()
            Image.fromarray((ref * 255).round().astype(np.uint8)).save(art / f"splatv_render4d_t{t}.png")
            psnr = 10 * np.log10(1.0 / max(float(((ref - got) ** 2).mean()), 1e-12))
            drawn = (np.abs(got - 1).max(-1) > 0.1).mean()
            print(f"t={t}: PSNR {psnr:.2f} dB against the model's render; drawn {drawn:.3f}")
            assert drawn > 0.03 and psnr > 26.0, (psnr, drawn)
            shots.append((got, ref))
    finally:
        server.shutdown()
        server.server_close()
    # the arm is somewhere else at the two times: gsplat.js plays the motion, as much as the model moves
    moved = lambda a, b: (np.abs(a - b).max(-1) > 0.15).mean()
    assert moved(shots[0][1], shots[1][1]) > 0.005
    assert moved(shots[0][0], shots[1][0]) > 0.5 * moved(shots[0][1], shots[1][1])

"""The headless 4D commands on tiny folders: fit4d (static and video layouts), render, export."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from charactershot_core.__main__ import main
from charactershot_core.cameras import orbit_rig
from charactershot_core.gaussians.fitting.data import write_png

KEYS = ["heldout.psnr", "heldout.ssim", "heldout.psnr_fg", "heldout.ssim_fg", "train.psnr", "iterations", "seconds",
        "gaussians", "backend"]
FAST = ["--backend", "torch", "--points", "800", "--batch-views", "2", "--sh-degree", "0"]


@pytest.fixture(scope="module")
def character():
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = orbit_rig(num_views=6, width=48, height=32, square_size=32)
    ch = SyntheticCharacter(motion="walk", seed=2, n_gaussians=1000)
    frames = ch.render_views(rig, [0.0, 0.25, 0.5, 0.75, 1.0], backend="torch")  # (6, 5, 32, 48, 3)
    return rig, frames


def test_fit4d_static_folder_writes_metrics_and_heldout_pngs(tmp_path, character, capsys):
    rig, frames = character
    src = tmp_path / "views"
    for k in range(6):
        write_png(str(src / f"view{k}.png"), frames[k, 2])
    rig.save(str(tmp_path / "cameras.json"))
    out, met = tmp_path / "out", tmp_path / "m" / "metrics.json"
    rc = main(["fit4d", "--frames", str(src), "--cameras", str(tmp_path / "cameras.json"), "--out", str(out),
               "--metrics", str(met), "--holdout", "1,4", "--iterations", "15", "--seed", "3", "--quiet", *FAST])
    assert rc == 0
    m = json.loads(met.read_text())
    for k in KEYS:
        assert k in m, k
    assert m["iterations"] == 15 and m["backend"] == "torch" and m["gaussians"] > 0
    assert m["heldout"]["psnr"] == m["heldout.psnr"]  # nested sections too
    assert 5 < m["heldout.psnr"] < 60 and 0 < m["heldout.ssim"] <= 1 and m["heldout.psnr_fg"] < m["heldout.psnr"]
    assert m["dynamic"] is False  # one frame per view: no deformation field
    for k in (1, 4):
        png = out / "heldout" / f"view{k}.png"
        assert png.is_file()
    # the saved held-out renders are what was scored: re-scoring them gives the same PSNR (8-bit rounding aside)
    from charactershot_core.gaussians.evaluation.metrics import psnr

    saved = np.stack([np.asarray(_read(out / "heldout" / f"view{k}.png")) for k in (1, 4)]).astype(np.float32) / 255
    gt = np.stack([np.asarray(_read(src / f"view{k}.png")) for k in (1, 4)]).astype(np.float32) / 255
    assert psnr(torch.from_numpy(saved), torch.from_numpy(gt)) == pytest.approx(m["heldout.psnr"], abs=0.5)
    assert (out / "gaussians.safetensors").is_file()
    assert "heldout.psnr" in capsys.readouterr().out


def _read(path):
    import cv2

    return cv2.imread(str(path))[..., ::-1]


def _write_video(tmp_path, rig, frames):
    """The character's 6 views x 5 frames in the saved layout (tmp/frames) and its cameras (tmp/cameras.json)."""
    src = tmp_path / "frames"
    for k in range(6):
        for f in range(5):
            write_png(str(src / f"view{k:02d}" / f"frame_{f + 1:05d}.png"), frames[k, f])
    rig.save(str(tmp_path / "cameras.json"))
    return src


def test_fit4d_video_layout_render_and_export(tmp_path, character, capsys):
    rig, frames = character
    src = _write_video(tmp_path, rig, frames)
    out = tmp_path / "out"
    rc = main(["fit4d", "--frames", str(src), "--cameras", str(tmp_path / "cameras.json"), "--out", str(out),
               "--holdout", "2", "--holdout-times", "1,3", "--iterations", "12", "--quiet", *FAST])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in KEYS + ["heldout_intermediate.psnr", "heldout_intermediate.ssim_fg", "train_intermediate.psnr"]:
        assert k in m, k
    assert m["dynamic"] is True and m["times_train"] == [0.0, 0.5, 1.0]
    # metrics that see motion: per-frame box scores at the training and the held-out times, the motion ratio over
    # all 5 frames of the held-out view
    h, hi = m["heldout"], m["heldout_intermediate"]
    assert h["frames"] == [0, 2, 4] and hi["frames"] == [1, 3] and len(h["box_psnr_per_frame"]) == 3
    assert min(h["box_psnr_per_frame"]) == pytest.approx(h["box_psnr_worst"], abs=1e-3)
    assert h["box_psnr_worst_frame"] in (0, 2, 4) and 0 < h["box_ssim_worst"] <= h["box_ssim"] <= 1
    assert m["heldout.box_psnr"] == h["box_psnr"] and "train_intermediate.box_psnr" in m
    assert m["motion"]["views"] == "held-out" and m["motion"]["frames"] == [0, 1, 2, 3, 4]
    assert m["motion.ratio"] >= 0 and m["motion"]["gt"] > 0
    assert "motion ratio (held-out views, 5 frames)" in capsys.readouterr().out
    # held-out view 2 at the 3 training frames (0, 2, 4) and at the 2 intermediate frames (1, 3)
    got = sorted(os.listdir(out / "heldout" / "view2"))
    assert got == [f"frame_{i:05d}.png" for i in (1, 2, 3, 4, 5)]

    # render: the training times from an orbit of 2 views
    rout = tmp_path / "render"
    assert main(["render", "--weights", str(out / "gaussians.safetensors"), "--out", str(rout), "--orbit", "2",
                 "--width", "48", "--height", "32", "--backend", "torch", "--times", "0,0.5"]) == 0
    assert sorted(os.listdir(rout)) == ["view0", "view1"]
    assert sorted(os.listdir(rout / "view1")) == ["frame_00001.png", "frame_00002.png"]

    # export: a ply per training time + the bundle; the ply files are INRIA layout
    from plyfile import PlyData

    from charactershot_core.gaussians import formats as export

    eout = tmp_path / "export"
    assert main(["export", "--weights", str(out / "gaussians.safetensors"), "--out", str(eout)]) == 0
    names = sorted(os.listdir(eout))
    assert names == ["bundle.cs4d", "frame_00001.ply", "frame_00002.ply", "frame_00003.ply"]
    ply = PlyData.read(str(eout / "frame_00002.ply"))
    props = [p.name for p in ply["vertex"].properties]
    assert props[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert props[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert len(ply["vertex"]) == m["gaussians"]
    b = export.read_bundle(str(eout / "bundle.cs4d"))
    assert b is not None


def test_fit4d_bad_arguments_are_clear_errors(tmp_path, character, capsys):
    rig, frames = character
    src = tmp_path / "views"
    for k in range(6):
        write_png(str(src / f"view{k}.png"), frames[k, 0])
    rig.select([0, 1, 2, 3]).save(str(tmp_path / "four.json"))
    rig.save(str(tmp_path / "six.json"))
    base = ["fit4d", "--frames", str(src), "--out", str(tmp_path / "o"), "--iterations", "2", *FAST]
    assert main(base + ["--cameras", str(tmp_path / "four.json")]) == 1
    assert "4 cameras" in capsys.readouterr().err
    assert main(base + ["--cameras", str(tmp_path / "six.json"), "--holdout", "9"]) == 1
    assert "holdout: view 9 does not exist" in capsys.readouterr().err
    assert main(base + ["--cameras", str(tmp_path / "six.json"), "--holdout", "0,1,2,3,4"]) == 1
    assert "at least 2 training views" in capsys.readouterr().err
    assert main(base + ["--cameras", str(tmp_path / "six.json"), "--seconds", "0.001"]) == 1
    assert "seconds" in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.json").exists()  # nothing written for a failed run


def test_fit4d_video_without_heldout_views_reports_motion_on_training_views(tmp_path, character):
    rig, frames = character
    src = _write_video(tmp_path, rig, frames)
    out = tmp_path / "out"
    assert main(["fit4d", "--frames", str(src), "--cameras", str(tmp_path / "cameras.json"), "--out", str(out),
                 "--iterations", "8", "--quiet", *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["heldout.psnr"] is None and m["train"]["frames"] == [0, 1, 2, 3, 4]
    assert m["motion"]["views"] == "training" and m["motion"]["ratio"] is not None


def test_demo_rejects_an_unknown_motion_before_any_work(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--motion", "dance", "--backend", "torch"]) == 1
    err = capsys.readouterr().err
    assert "motion" in err and "walk" in err and "turn" in err
    assert not (tmp_path / "d" / "multiview").exists()

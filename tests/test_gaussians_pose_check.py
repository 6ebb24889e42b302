"""The camera refinement's check at the static stage's end: corrections that only absorb the model's own error on
consistent views are dropped and frozen; a real misalignment keeps them (tiny sizes, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from charactershot_core.cameras import orbit_rig
from charactershot_core.gaussians.fitting.camera_refine import PoseRefine
from charactershot_core.gaussians.fitting.data import MultiViewVideo
from charactershot_core.gaussians.fitting.fit import FitConfig, fit


def test_image_shift_measures_each_views_correction_in_pixels_and_freeze_drops_it():
    rig = orbit_rig(num_views=4, width=64, height=48, square_size=48)
    vm, ks = rig.viewmats().float(), rig.Ks().float()
    pts = torch.randn(300, 3) * 0.2
    ref = PoseRefine(4, scale=1.0, dof="image")
    assert torch.equal(ref.image_shift(vm, ks, pts), torch.zeros(4))
    with torch.no_grad():  # a pan of view 1 by one pixel's angle (and the opposite on view 3: the mean stays zero)
        pan = 1.0 / float(ks[1, 0, 0])
        ref.delta[1, 1] = pan
        ref.delta[3, 1] = -pan
    shift = ref.image_shift(vm, ks, pts)
    assert shift[1] == pytest.approx(1.0, rel=0.05) and shift[3] == pytest.approx(1.0, rel=0.05)
    assert float(shift[0]) < 1e-4 and float(shift[2]) < 1e-4
    assert not ref.frozen
    ref.freeze()
    assert ref.frozen and torch.equal(ref(vm, [0, 1, 2, 3]), vm)
    assert float(ref.image_shift(vm, ks, pts).max()) == 0.0


@pytest.fixture(scope="module")
def idle_views():
    """8 views x 2 frames of the synthetic 'idle' character at 64x48: consistent views, and the same views with
    two of them drawn 1.5 px to the side (a view off the rig)."""
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = orbit_rig(num_views=8, width=64, height=48, square_size=48)
    times = [0.0, 1.0]
    clean = torch.from_numpy(SyntheticCharacter(motion="idle", seed=1, n_gaussians=1500).render_views(
        rig, times, backend="torch"))
    off = clean.clone()
    for k, dx in ((2, 2), (5, -2)):  # whole pixels: a shift with white coming in from the border
        off[k] = torch.roll(clean[k], dx, dims=-2)
        if dx > 0:
            off[k, :, :, :dx] = 1.0
        else:
            off[k, :, :, dx:] = 1.0
    return MultiViewVideo(clean, rig, times), MultiViewVideo(off, rig, times)


def _cfg(**kw):
    return FitConfig(iterations=40, batch_views=2, init_points=1500, backend="torch", seed=0, densify=False,
                     background_estimate=False, pose_refine=True, **kw)


def test_consistent_views_drop_the_camera_refinement_a_misaligned_view_keeps_it(idle_views):
    clean, off = idle_views
    # consistent views: what the static stage learned is below the threshold -> reset to the rig and frozen
    res = fit(clean, _cfg(pose_keep=0.5 / 64))
    check = res.pose_check
    assert check["kept"] is False and check["iteration"] == 9  # when the static stage ends (20 % of 40)
    assert check["shift_px_mean"] < 0.5
    pose = res.view_corrections.pose
    assert pose.frozen and float(pose.delta.abs().max()) == 0.0
    # two views drawn 2 px off the rig: their corrections are well above what the model's error gives -> kept
    res_off = fit(off, _cfg(pose_keep=0.5 / 64, lr_pose=2e-3))
    assert res_off.pose_check["kept"] is True
    assert res_off.pose_check["shift_px_mean"] > check["shift_px_mean"]
    assert float(res_off.view_corrections.pose.delta.detach().abs().max()) > 0.0
    # 0 keeps every correction (no check); without camera refinement there is nothing to check
    assert fit(clean, _cfg(pose_keep=0.0)).pose_check["kept"] is True
    no_pose = fit(clean, FitConfig(iterations=10, init_points=500, backend="torch", densify=False, pose_refine=False))
    assert no_pose.pose_check == {}


def test_summary_says_whether_the_camera_refinement_was_kept():
    from charactershot_core.gaussians.evaluation.metrics import summary_text

    dropped = summary_text({"pose_check": {"iteration": 104, "shift_px_mean": 0.0583, "shift_px_max": 0.17,
                                           "limit_px": 0.18, "kept": False}})
    assert "camera refinement: dropped, the views agree with the rig" in dropped and "0.06 px" in dropped
    kept = summary_text({"pose_check": {"iteration": 104, "shift_px_mean": 0.66, "limit_px": 0.18, "kept": True}})
    assert "camera refinement: kept" in kept and "0.66 px" in kept
    assert "camera refinement" not in summary_text({"pose_check": {}})


def test_cli_pose_keep_reaches_the_fit_and_metrics_record_the_check(tmp_path):
    import json

    from charactershot_core.__main__ import main
    from charactershot_core.gaussians.fitting.data import write_png
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = orbit_rig(num_views=6, width=48, height=32, square_size=32)
    frames = SyntheticCharacter(motion="walk", seed=2, n_gaussians=800).render_views(rig, [0.5], backend="torch")
    for k in range(6):
        write_png(str(tmp_path / "views" / f"view{k}.png"), frames[k, 0])
    rig.save(str(tmp_path / "cameras.json"))
    base = ["fit4d", "--frames", str(tmp_path / "views"), "--cameras", str(tmp_path / "cameras.json"),
            "--iterations", "10", "--backend", "torch", "--points", "600", "--quiet", "--pose-refine"]
    assert main(base + ["--out", str(tmp_path / "a"), "--pose-keep", "0"]) == 0
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["config"]["pose_keep"] == 0.0 and m["pose_check"]["kept"] is True
    assert main(base + ["--out", str(tmp_path / "b"), "--pose-keep", "1"]) == 0  # a whole image: nothing is that far off
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m["config"]["pose_keep"] == 1.0 and m["pose_check"]["kept"] is False
    assert m["pose_check"]["limit_px"] == 48.0 and m["pose_check"]["iteration"] == 3

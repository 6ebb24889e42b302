"""Metrics that see motion, checked on hand-made images: clip boxes, per-frame box PSNR / SSIM, the motion ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from charactershot_core.errors import InputError
from charactershot_core.gaussians.evaluation.metrics import (FG_PAD, clip_boxes, clip_scores, frame_change,
                                                             frame_scores, motion_scores, moving_psnr, score,
                                                             summary_text)


def _square_clip(positions, size=8, h=32, w=40, value=0.2):
    """(1, T, H, W, 3) white frames with a dark square whose top-left corner is at ``positions[t]``."""
    x = np.ones((1, len(positions), h, w, 3))
    for t, (y, xx) in enumerate(positions):
        x[0, t, y:y + size, xx:xx + size] = value
    return x


def test_clip_box_is_the_dilated_union_of_the_foreground_over_frames():
    gt = _square_clip([(10, 5), (10, 9), (12, 14)])  # the square moves right and down
    y0, y1, x0, x1 = clip_boxes(gt)[0]
    assert (y0, y1, x0, x1) == (10 - FG_PAD, 12 + 8 + FG_PAD, 5 - FG_PAD, 14 + 8 + FG_PAD)
    # a second view, all white: scored on the whole image; a tiny foreground: the box grows to the SSIM window
    two = np.concatenate([gt, np.ones_like(gt)], 0)
    assert clip_boxes(two)[1] == (0, 32, 0, 40)
    dot = np.ones((1, 2, 32, 40, 3))
    dot[0, 0, 0, 0] = 0.0
    b = clip_boxes(dot)[0]
    assert b[1] - b[0] >= 11 and b[3] - b[2] >= 11 and b[0] == 0 and b[2] == 0


def test_per_frame_box_psnr_and_ssim_known_values():
    # ground truth: uniform grey (all foreground, so the box is the whole 24x24 image); frame 0 is off by 0.1
    # (MSE 0.01: 20 dB), frame 1 by 0.01 (40 dB), frame 2 is exact (inf)
    gt = np.full((1, 3, 24, 24, 3), 0.5)
    pred = gt.copy()
    pred[0, 0] += 0.1
    pred[0, 1] += 0.01
    s = clip_scores(pred[:, :2], gt[:, :2], frames=[4, 7])
    assert s["box_psnr_per_frame"] == pytest.approx([20.0, 40.0], abs=1e-3)
    assert s["box_psnr"] == pytest.approx(30.0, abs=1e-6)
    assert s["box_psnr_worst"] == pytest.approx(20.0, abs=1e-6) and s["box_psnr_worst_frame"] == 4
    assert s["frames"] == [4, 7]
    # SSIM of two uniform images: only the luminance term, (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
    c1 = 0.01 ** 2
    expect0 = (2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1)
    expect1 = (2 * 0.5 * 0.51 + c1) / (0.25 + 0.51 ** 2 + c1)
    assert s["box_ssim_per_frame"] == pytest.approx([expect0, expect1], abs=1e-5)
    assert s["box_ssim_worst"] == pytest.approx(expect0, abs=1e-9) and s["box_ssim_worst_frame"] == 4
    assert clip_scores(pred[:, 2:], gt[:, 2:])["box_psnr"] == math.inf
    # two views: each frame's value is the mean over the views
    two_p = np.concatenate([pred[:, :2], gt[:, :2]], 0)
    two_g = np.concatenate([gt[:, :2], gt[:, :2]], 0)
    assert clip_scores(two_p, two_g)["box_ssim_per_frame"][0] == pytest.approx((expect0 + 1) / 2, abs=1e-5)


def test_box_psnr_counts_a_ghost_outside_the_frames_own_foreground():
    # the square moves from left to right; a "ghost" prediction keeps it at the left in the last frame too
    gt = _square_clip([(10, 4), (10, 28)])
    ghost = _square_clip([(10, 4), (10, 4)])
    box = clip_boxes(gt)[0]
    s = clip_scores(ghost, gt)
    # last frame: 2 squares of 64 px wrong by 0.8 in the clip box
    n = (box[1] - box[0]) * (box[3] - box[2])
    mse = 2 * 64 * 0.8 ** 2 / n
    assert s["box_psnr_per_frame"][1] == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)
    assert s["box_psnr_per_frame"][0] == math.inf and s["box_psnr_worst_frame"] == 1
    # the last frame's own box (score's psnr_fg) cannot tell the ghost from an empty frame; the clip box can
    empty = ghost.copy()
    empty[0, 1] = 1.0
    assert score(ghost[0, 1:], gt[0, 1:])["psnr_fg"] == pytest.approx(score(empty[0, 1:], gt[0, 1:])["psnr_fg"])
    assert clip_scores(empty, gt)["box_psnr_per_frame"][1] > s["box_psnr_per_frame"][1] + 2.0
    # PSNR where the ground truth moves: both squares' pixels (128 of them); frame 0 exact, frame 1 all wrong by 0.8
    mv = moving_psnr(ghost, gt)
    assert mv["moving_psnr"] == pytest.approx(10 * math.log10(1 / (128 * 0.64 / 256)), abs=1e-6)
    assert mv["moving_fraction"] == pytest.approx(128 / n)
    assert moving_psnr(gt, gt)["moving_psnr"] == math.inf and moving_psnr(gt[:, :1], gt[:, :1])["moving_psnr"] is None


def test_motion_ratio_static_vs_moving():
    gt = _square_clip([(10, 4), (10, 10), (10, 16), (10, 22)])
    static = np.repeat(gt[:, :1], 4, axis=1)
    same = motion_scores(gt, gt)
    assert same["ratio"] == pytest.approx(1.0) and same["ratio_first"] == pytest.approx(1.0)
    still = motion_scores(static, gt)
    assert still["ratio"] == 0.0 and still["ratio_first"] == 0.0 and still["fit"] == 0.0
    # the change itself, by hand: each step uncovers 6x8 px and covers 6x8 px, each by 0.8, in the clip box
    box = clip_boxes(gt)[0]
    n = (box[1] - box[0]) * (box[3] - box[2]) * 3
    step = 255 * (2 * 6 * 8 * 3 * 0.8) / n
    assert frame_change(gt, [box]) == pytest.approx(step)
    assert same["gt"] == pytest.approx(step, abs=1e-4)
    # half the motion (the square stops half-way): a ratio strictly between 0 and 1
    half = _square_clip([(10, 4), (10, 10), (10, 10), (10, 10)])
    assert 0.0 < motion_scores(half, gt)["ratio"] < 1.0
    # flicker: a frame-to-frame ratio above 1 although the square never goes anywhere on average
    flicker = _square_clip([(10, 4), (10, 22), (10, 4), (10, 22)])
    f = motion_scores(flicker, gt)
    assert f["ratio"] > 1.0 and f["ratio"] > f["ratio_first"]
    # a ground truth that does not move has no ratio
    assert motion_scores(static, static)["ratio"] is None


def test_clip_metrics_reject_bad_shapes():
    gt = _square_clip([(10, 4), (10, 10)])
    with pytest.raises(InputError, match="prediction"):
        clip_scores(gt[0], gt[0])
    with pytest.raises(InputError, match="prediction"):
        motion_scores(gt[:, :1, :16], gt[:, :1])
    with pytest.raises(InputError, match="frames"):
        motion_scores(gt[:, :1], gt[:, :1])
    with pytest.raises(InputError, match="frames"):
        clip_scores(gt, gt, frames=[0])


def test_summary_text_names_the_motion_ratio_and_the_worst_frame():
    gt = _square_clip([(10, 4), (10, 10), (10, 16)])
    pred = gt.copy()
    pred[0, 2, 10:18, 16:24] = 0.4
    m = {"heldout": {"psnr": 30.0, "ssim": 0.99, **clip_scores(pred, gt)},
         "motion": {**motion_scores(pred, gt), "views": "held-out", "frames": [0, 1, 2]}}
    text = summary_text(m)
    assert "held-out views" in text and "worst (frame 2)" in text and "motion ratio (held-out views, 3 frames)" in text


def test_training_report_of_a_tiny_fit():
    """What the Fit node reports without held-out views: spread views and frames, box scores, the motion ratio."""
    from charactershot_core.cameras import orbit_rig
    from charactershot_core.gaussians.fitting.data import MultiViewVideo
    from charactershot_core.gaussians.fitting.fit import FitConfig, fit
    from charactershot_core.gaussians.evaluation.report import report_text, spread, training_report
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    assert spread(25, 9) == [0, 3, 6, 9, 12, 15, 18, 21, 24] and spread(3, 9) == [0, 1, 2] and spread(7, 4) == [0, 2, 4, 6]
    rig = orbit_rig(num_views=6, width=40, height=28, square_size=28)
    times = [0.0, 0.5, 1.0]
    video = MultiViewVideo(SyntheticCharacter("walk", seed=0, n_gaussians=600).render_views(rig, times, backend="torch"),
                           rig, times)
    res = fit(video, FitConfig(iterations=3, backend="torch", init_points=300, densify=False))
    rep = training_report(res.model, video, "torch", max_views=3, max_frames=3)
    assert rep["views"] == [0, 2, 5] and rep["frames"] == [0, 1, 2]
    assert len(rep["box_psnr_per_frame"]) == 3 and rep["box_psnr_worst"] <= rep["box_psnr"]
    assert rep["motion"]["gt"] > 0 and rep["motion"]["ratio"] >= 0
    text = report_text(rep, "fit: 3 iterations")
    assert text.startswith("fit: 3 iterations\ntraining views [0, 2, 5] (no held-out ground truth here)")
    assert "motion ratio" in text
    assert 0.0 <= rep["coverage_worst"] <= rep["coverage"] <= 1.0 and rep["tight_psnr_worst"] <= rep["tight_psnr"]
    assert "frame by frame (each frame's own box)" in text and "moving parts drawn" in text


def _figure_clip(arm_down_frames, t=5, views=2, h=64, w=64, draw_arm=True):
    """A body (a dark 20x12 block) with an arm (a 4x16 red bar) that is raised beside the head in every frame except
    ``arm_down_frames``, where it hangs beside the body; ``draw_arm=False`` leaves the arm out where it hangs down."""
    clip = np.ones((views, t, h, w, 3))
    for v in range(views):
        for f in range(t):
            clip[v, f, 20:60, 26:38] = (0.2, 0.2, 0.4)  # body
            down = f in arm_down_frames
            if down and not draw_arm:
                continue
            if down:
                clip[v, f, 24:52, 40:44] = (0.9, 0.1, 0.1)
            else:
                clip[v, f, 4:20, 40:44] = (0.9, 0.1, 0.1)
    return clip


def test_frame_scores_fail_a_missing_limb_that_the_clip_box_hides():
    gt = _figure_clip({0, 4})
    perfect = frame_scores(gt, gt)
    assert perfect["coverage_worst"] == 1.0 and perfect["moving_coverage_worst"] == 1.0
    assert perfect["tight_psnr"] == math.inf
    # the fit draws the body everywhere and the arm only where it is raised: the hanging arm is missing in 0 and 4
    missing = _figure_clip({0, 4}, draw_arm=False)
    s = clip_scores(missing, gt)
    arm, body = 28 * 4, 40 * 12
    assert s["coverage_per_frame"][0] == pytest.approx(body / (body + arm), abs=1e-4)  # per-frame lists: 4 digits
    assert s["coverage_worst"] == pytest.approx(body / (body + arm)) and s["coverage_worst_frame"] in (0, 4)
    assert s["coverage_per_frame"][2] == 1.0
    # moving pixels of frame 0 against the middle frame 2: the hanging arm (missing: wrong) and the raised arm's
    # place (16x4, white in both: right) -> 64 of 112 + 64 drawn
    assert s["moving_coverage_per_frame"][0] == pytest.approx(64 / 176, abs=1e-4)
    assert s["moving_coverage_per_frame"][2] is None  # the middle frame has nothing that moves against itself
    assert s["moving_coverage_worst"] == pytest.approx(64 / 176)
    # the frame's own tight box is smaller than the clip's box: its PSNR drops further than the clip-box PSNR
    assert s["tight_psnr_worst"] < s["box_psnr_worst"]
    assert s["tight_psnr_worst_frame"] in (0, 4)
    assert s["tight_psnr_worst_view"] <= s["tight_psnr_worst"]
    # a ghost (the arm left raised in frames 0 and 4) also fails the moving coverage
    ghost = _figure_clip(set())
    g = frame_scores(ghost, gt)
    assert g["moving_coverage_worst"] == 0.0 and g["coverage_worst"] < 1.0
    # drawn slightly off (within 48/255) still counts as drawn; further off does not
    near = gt.copy()
    near[..., 0] = np.clip(near[..., 0] - 40 / 255, 0, 1)
    assert frame_scores(near, gt)["coverage_worst"] == 1.0
    far = gt.copy()
    far[..., 0] = np.clip(far[..., 0] - 60 / 255, 0, 1)
    assert frame_scores(far, gt)["coverage_worst"] < 0.5


def test_frame_scores_appear_in_the_summary_text():
    gt = _figure_clip({0, 4})
    missing = _figure_clip({0, 4}, draw_arm=False)
    text = summary_text({"heldout": {"psnr": 30.0, "ssim": 0.99, **clip_scores(missing, gt)}})
    assert "tight-box PSNR" in text and "moving parts drawn 36.4 % mean, 36.4 % worst (frame 0)" in text


def test_uint8_ground_truth_scores_like_its_float_copy():
    """The fit's scoring passes the video's uint8 pixels as they are (no float copy of a full-size clip): every
    metric gives what the float32 copy of the same pixels gives, and SSIM batches of any length agree."""
    from charactershot_core.gaussians.evaluation.metrics import frame_scores, score, ssim

    rng = np.random.default_rng(3)
    gt8 = torch.from_numpy(rng.integers(0, 256, (2, 3, 24, 30, 3), dtype=np.uint8))
    gt8[..., :6, :, :] = 255  # some background
    gtf = gt8.float() / 255.0
    pred = (gtf + 0.04 * torch.from_numpy(rng.standard_normal(gtf.shape)).float()).clamp(0, 1)
    for fn in (score, clip_scores, frame_scores):
        a = fn(pred.reshape(-1, 24, 30, 3), gt8.reshape(-1, 24, 30, 3)) if fn is score else fn(pred, gt8)
        b = fn(pred.reshape(-1, 24, 30, 3), gtf.reshape(-1, 24, 30, 3)) if fn is score else fn(pred, gtf)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-9), (fn.__name__, k)
    flat_p, flat_g = pred.reshape(-1, 24, 30, 3), gtf.reshape(-1, 24, 30, 3)
    per = [ssim(flat_p[i], flat_g[i]) for i in range(flat_p.shape[0])]  # 6 images: more than one SSIM batch
    assert ssim(flat_p, flat_g) == pytest.approx(float(np.mean(per)), abs=1e-12)

"""A fit robust to views like a video model's: appearance correction, camera refinement, robust penalties, the
background estimated from the border, and the fit with them (tiny sizes, CPU, seconds)."""

from __future__ import annotations

import json

import pytest
import torch

from charactershot_core.cameras import orbit_rig
from charactershot_core.errors import InputError
from charactershot_core.gaussians.fitting.appearance import ViewAppearance
from charactershot_core.gaussians.fitting.background import border_background, whiten, whiten_video
from charactershot_core.gaussians.fitting.camera_refine import PoseRefine, se3_exp
from charactershot_core.gaussians.fitting.data import MultiViewVideo
from charactershot_core.gaussians.synthetic.degrade import degrade
from charactershot_core.gaussians.fitting.fit import FitConfig, fit
from charactershot_core.gaussians.raster.views import render_views
from charactershot_core.gaussians.fitting.robust import ViewCorrections, photometric, pixel_penalty


# ------------------------------------------------------------------------------------------------ appearance
def test_appearance_is_identity_at_start_and_its_regulariser_zero():
    app = ViewAppearance(4, 3)
    img = torch.rand(2, 8, 10, 3)
    assert torch.equal(app(img, [1, 3], 2), img)
    assert float(app.regulariser().detach()) == 0.0


def test_appearance_learns_each_views_affine_colour_and_gain():
    torch.manual_seed(0)
    v, t = 3, 2
    true_a = torch.eye(3) + 0.05 * torch.randn(v, 3, 3)
    true_a -= true_a.mean(0) - torch.eye(3)  # centred, as the module is (its gauge)
    true_b = 0.02 * torch.randn(v, 3)
    true_b -= true_b.mean(0)
    gain = torch.tensor([[1.05, 0.97], [0.95, 1.0], [1.0, 1.03]])
    gain = gain / gain.log().mean(0).exp()  # centred over the views (the module's gauge)
    app = ViewAppearance(v, t)
    opt = torch.optim.Adam(app.parameters(), lr=1e-2)
    imgs = torch.rand(16, 6, 6, 3) * 0.8 + 0.1
    for _ in range(600):
        loss = 0.0
        for k in range(v):
            for f in range(t):
                target = 1 + true_b[k] - gain[k, f] * torch.einsum("ij,nhwj->nhwi", true_a[k], 1 - imgs)
                loss = loss + (app(imgs, [k] * 16, f) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for f in range(t):  # what the views show is gain x matrix (the module keeps a view's level in its matrix)
        a, b, g = app.transforms([0, 1, 2], f)
        assert torch.allclose(a * g[:, None, None], true_a * gain[:, f, None, None], atol=0.01)
        assert torch.allclose(b, true_b, atol=0.01)


def test_appearance_white_renders_as_the_views_background_without_a_clamp():
    """No clamp: a view whose background is above white in a channel still penalises a bright floater there."""
    app = ViewAppearance(2, 1)
    with torch.no_grad():
        app.offset[0] = torch.tensor([0.05, -0.03, 0.0])
        app.offset[1] = -app.offset[0]
    white = app(torch.ones(1, 2, 2, 3), [0], 0)[0, 0, 0]
    assert torch.allclose(white, torch.tensor([1.05, 0.97, 1.0]))
    light = app(torch.full((1, 1, 1, 3), 0.98), [0], 0)[0, 0, 0]
    assert (light < white).all()  # a light floater stays distinguishable from the background


def test_appearance_gauge_a_shift_common_to_every_view_changes_nothing():
    app = ViewAppearance(3, 2)
    with torch.no_grad():
        app.matrix.normal_(0, 0.05)
        app.offset.normal_(0, 0.02)
        app.log_gain.normal_(0, 0.02)
    img = torch.rand(3, 5, 5, 3)
    before = app(img, [0, 1, 2], 1)
    with torch.no_grad():
        app.matrix += 0.1
        app.offset -= 0.05
        app.log_gain += 0.2
    assert torch.allclose(app(img, [0, 1, 2], 1), before, atol=1e-6)


# ------------------------------------------------------------------------------------------- camera refinement
def test_se3_exp_is_the_matrix_exponential_and_smooth_at_zero():
    torch.manual_seed(1)
    xi = torch.randn(5, 6) * torch.tensor([0.3, 0.3, 0.3, 1, 1, 1])
    xi[0] = 0.0
    xi[1, :3] = 1e-5
    from charactershot_core.gaussians.fitting.camera_refine import _skew

    hat = torch.zeros(5, 4, 4)
    hat[:, :3, :3] = _skew(xi[:, :3])
    hat[:, :3, 3] = xi[:, 3:]
    assert torch.allclose(se3_exp(xi), torch.linalg.matrix_exp(hat), atol=1e-5)
    z = torch.zeros(1, 6, requires_grad=True)
    se3_exp(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def _project(vm, pts, f=100.0):
    cam = pts @ vm[:, :3, :3].transpose(1, 2) + vm[:, None, :3, 3]
    return f * cam[..., :2] / cam[..., 2:]


def test_pose_refine_recovers_a_cameras_offset_against_the_rig():
    torch.manual_seed(2)
    rig = orbit_rig(num_views=4, width=64, height=48, square_size=48)
    vm = rig.viewmats().float()
    pts = torch.randn(200, 3) * 0.3
    true = torch.zeros(4, 6)
    true[1] = torch.tensor([0.01, -0.008, 0.012, 0.02, -0.01, 0.015])
    true[2] = torch.tensor([-0.006, 0.01, 0.0, -0.01, 0.02, 0.0])
    true -= true.mean(0)  # the module's gauge: the rig as a whole stays
    target = _project(se3_exp(true) @ vm, pts)
    ref = PoseRefine(4, scale=1.0)
    assert torch.equal(ref(vm, [0, 1, 2, 3]), vm)
    opt = torch.optim.Adam(ref.parameters(), lr=2e-3)
    for _ in range(500):
        loss = (_project(ref(vm, [0, 1, 2, 3]), pts) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 1e-3
    assert torch.allclose(ref.twists(), true, atol=2e-3)


def test_pose_refine_image_mode_is_pan_tilt_roll_dolly_and_a_scene_translation_is_no_correction():
    rig = orbit_rig(num_views=6, width=64, height=48, square_size=48)
    vm = rig.viewmats().float()
    centre = torch.zeros(3)
    ref = PoseRefine(6, scale=2.0, dof="image", viewmats=vm, centre=centre)
    assert ref.delta.shape == (6, 4)
    with torch.no_grad():
        ref.delta.normal_(0, 0.01)
    tw = ref.twists()
    assert torch.equal(tw[:, 3:5], torch.zeros(6, 2))  # no sideways translation: pan and tilt do that
    assert torch.allclose(tw[:, 5], ref._centred()[:, 3] * 2.0)  # the dolly, in units of the scene's size
    # the pan/tilt pattern a translation d of the whole scene makes is the gauge: projected out to nothing
    d = torch.tensor([0.03, -0.01, 0.02])
    r = vm[:, :3, :3]
    z = vm[:, 2, 3]
    with torch.no_grad():
        ref.delta.zero_()
        ref.delta[:, 0] = -(r[:, 1] @ d) / z
        ref.delta[:, 1] = (r[:, 0] @ d) / z
    assert float(ref.twists().abs().max()) < 1e-6
    with pytest.raises(InputError, match="pose_dof"):
        PoseRefine(6, dof="affine")
    assert FitConfig().pose_refine and FitConfig().pose_dof == "image"  # the default fit refines in the image plane


def test_pose_refine_recovers_a_views_shift_roll_and_zoom_in_rendered_images():
    """The refinement converges where it matters: the true Gaussians, views drawn a pixel or so off the rig (shifted,
    rolled, zoomed, as degrade's misalignment does), only the corrections learned: the views align."""
    from charactershot_core.gaussians.raster.render import rasterize
    from charactershot_core.gaussians.synthetic import SyntheticCharacter
    from charactershot_core.gaussians.synthetic.degrade import _warp

    torch.manual_seed(0)
    rig = orbit_rig(num_views=4, width=48, height=40, square_size=40)
    vm, ks = rig.viewmats().float(), rig.Ks().float()
    g = SyntheticCharacter(motion="idle", seed=1, n_gaussians=600).gaussians_at(0.5)

    def render(viewmats):
        return rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"], viewmats, ks, 48, 40,
                         backend="torch", backgrounds=torch.ones(4, 3))[0]

    with torch.no_grad():
        clean = render(vm)
    offs = [(0.9, -0.6, 0.8, 1.01), (-0.8, 0.4, -0.6, 0.99), (0.0, 0.9, 0.0, 1.0), (-0.1, -0.7, -0.2, 1.0)]
    target = torch.cat([_warp(clean[k:k + 1], *offs[k]) for k in range(4)])
    ref = PoseRefine(4, scale=float(vm[:, 2, 3].mean()), dof="image")
    opt = torch.optim.Adam(ref.parameters(), lr=2e-3, eps=1e-15)
    off = float((clean - target).abs().mean())
    for _ in range(30):
        loss = (render(ref(vm, list(range(4)))) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.6 * off, (float(loss), off)


# ------------------------------------------------------------------------------------------- robust penalties
def test_penalties_l1_charbonnier_and_a_bounded_tail_for_the_largest_residuals():
    torch.manual_seed(3)
    gt = torch.rand(2, 16, 16, 3)
    pred = gt + 0.01 * torch.randn_like(gt)
    assert torch.allclose(pixel_penalty(pred, gt, "l1"), (pred - gt).abs().mean())
    assert abs(float(pixel_penalty(pred, gt, "charbonnier")) - float((pred - gt).abs().mean())) < 2e-3
    # a detail one view invents: a few pixels far off. Under L1 their pull grows with the residual; trimmed, it is
    # bounded by twice the 90th percentile of the image's residuals
    bad = pred.clone()
    bad[0, :2, :2] = 1.0 - gt[0, :2, :2]
    far = bad.clone()
    far[0, :2, :2] = (bad[0, :2, :2] * 50).clamp(-10, 10)
    l1_gap = float(pixel_penalty(far, gt, "l1") - pixel_penalty(bad, gt, "l1"))
    tr_gap = float(pixel_penalty(far, gt, "trimmed") - pixel_penalty(bad, gt, "trimmed"))
    assert l1_gap > 0.05 and abs(tr_gap) < 0.1 * l1_gap
    with pytest.raises(InputError, match="robust_loss"):
        pixel_penalty(pred, gt, "huber?")
    assert float(photometric(gt, gt, 0.2, "trimmed")) < 1e-6


# ------------------------------------------------------------------------------------------------ background
def test_border_background_and_whiten_bring_a_drifted_background_back_to_white():
    img = torch.ones(2, 30, 40, 3)
    img[:, 8:22, 12:28] = torch.tensor([0.4, 0.5, 0.6])
    tint = torch.tensor([[0.92, 0.95, 0.88], [1.0, 1.0, 1.0]])
    seen = img * tint[:, None, None, :]
    bg, ok = border_background(seen)
    assert ok.all() and torch.allclose(bg, tint, atol=1e-6)
    out = whiten(seen)
    assert torch.allclose(out, img, atol=1e-5)
    assert torch.equal(whiten(img), img)  # a white background stays exactly as it was


def test_whiten_leaves_a_real_backdrop_or_a_busy_border_alone():
    dark = torch.full((1, 20, 20, 3), 0.3)
    busy = torch.rand(1, 20, 20, 3, generator=torch.Generator().manual_seed(0))
    for img in (dark, busy):
        _, ok = border_background(img)
        assert not ok.any()
        assert torch.equal(whiten(img), img)
    with pytest.raises(InputError, match="frames"):
        border_background(torch.ones(4, 4))


# ------------------------------------------------------------------------------------------------------ fit
@pytest.fixture(scope="module")
def degraded_video():
    """8 views x 3 frames of the synthetic 'wave' at 64x48, clean and degraded at strength 1."""
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = orbit_rig(num_views=8, width=64, height=48, square_size=48)
    times = [0.0, 0.5, 1.0]
    clean = torch.from_numpy(SyntheticCharacter(motion="wave", seed=1, n_gaussians=1500).render_views(
        rig, times, backend="torch"))
    return MultiViewVideo(clean, rig, times), MultiViewVideo(degrade(clean, 1.0, seed=3), rig, times)


def test_whiten_video_restores_the_degraded_views_background(degraded_video):
    clean, bad = degraded_video
    white = whiten_video(bad)
    corner = white.frames[:, :, :3, :3]
    assert float((bad.frames[:, :, :3, :3] - 1).abs().max()) > 0.03  # the degradation moved the background
    assert float((corner - 1).abs().max()) < 1e-4
    assert whiten_video(clean) is clean


def test_fit_with_every_option_learns_corrections_but_renders_and_keeps_none(degraded_video):
    _, bad = degraded_video
    common = dict(iterations=30, batch_views=2, init_points=1500, backend="torch", seed=0, densify=False)
    cfg = FitConfig(background_estimate=True, appearance=True, pose_refine=True, robust_loss="trimmed", **common)
    res = fit(bad, cfg)
    plain = fit(bad, FitConfig(**common))
    # the corrections are not part of the model: the same tensors as a plain fit's, nothing else exported
    assert set(res.model.state_tensors()) == set(plain.model.state_tensors())
    # views whose background drifted still give a model on white: its renders' corners are white
    out = render_views(res.model, bad.rig, bad.times, "torch")
    assert float((out[:, :, :2, :2] - 1).abs().max()) < 0.02
    assert res.config["appearance"] and res.config["pose_refine"] and res.config["robust_loss"] == "trimmed"


def test_view_corrections_off_are_the_identity_and_a_bad_penalty_is_named():
    cfg = FitConfig(appearance=False, pose_refine=False)  # every option off (camera refinement is on by default)
    corr = ViewCorrections(cfg, 4, 2, 1.0, "cpu")
    vm = torch.eye(4).expand(4, 4, 4).clone()
    img = torch.rand(2, 8, 8, 3)
    assert corr.opt is None and torch.equal(corr.viewmats(vm, [0, 2]), vm[[0, 2]])
    assert corr.corrected(img, [0, 2], 1) is img
    cfg.robust_loss = "nope"
    with pytest.raises(InputError, match="robust_loss"):
        ViewCorrections(cfg, 4, 2, 1.0, "cpu")


def test_cli_flags_reach_the_fit_and_are_recorded(tmp_path):
    from charactershot_core.__main__ import main
    from charactershot_core.gaussians.fitting.data import write_png
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = orbit_rig(num_views=6, width=48, height=32, square_size=32)
    frames = SyntheticCharacter(motion="walk", seed=2, n_gaussians=800).render_views(rig, [0.5], backend="torch")
    tinted = degrade(torch.from_numpy(frames), 1.0, seed=1, effects=("colour",))
    for k in range(6):
        write_png(str(tmp_path / "views" / f"view{k}.png"), tinted[k, 0])
    rig.save(str(tmp_path / "cameras.json"))
    base = ["fit4d", "--frames", str(tmp_path / "views"), "--cameras", str(tmp_path / "cameras.json"),
            "--iterations", "6", "--backend", "torch", "--points", "600", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "a"), "--background-estimate", "--appearance", "--pose-refine",
                        "--robust-loss", "charbonnier"]) == 0
    cfg = json.loads((tmp_path / "a" / "metrics.json").read_text())["config"]
    assert cfg["background_estimate"] and cfg["appearance"] and cfg["pose_refine"]
    assert cfg["robust_loss"] == "charbonnier"
    assert cfg["colour_field"] == "on"  # auto: the tinted views' backgrounds drifted off white
    assert main(base + ["--out", str(tmp_path / "b"), "--no-background-estimate", "--no-appearance",
                        "--colour-field", "off"]) == 0
    cfg = json.loads((tmp_path / "b" / "metrics.json").read_text())["config"]
    assert not cfg["background_estimate"] and not cfg["appearance"] and cfg["colour_field"] == "off"
    with pytest.raises(SystemExit):
        main(base + ["--out", str(tmp_path / "c"), "--robust-loss", "median"])


def test_whiten_video_from_uint8_equals_whiten_image_by_image_and_skips_white_videos():
    """The uint8 path (border pixels only, a table per image) gives bit for bit what ``whiten`` of each float image
    rounded to uint8 gives: drifted views are whitened, a white view and a dark (unusable) border stay; a video
    whose backgrounds are all white comes back as the same object."""
    from charactershot_core.cameras import orbit_rig
    from charactershot_core.gaussians.fitting.background import whiten, whiten_video
    from charactershot_core.gaussians.fitting.data import MultiViewVideo, to_float, to_uint8

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 4, 40, 50, 3), dtype=torch.uint8, generator=gen)
    drift = torch.tensor([240, 235, 250], dtype=torch.uint8)
    x[:, :, :8], x[:, :, -8:], x[:, :, :, :8], x[:, :, :, -8:] = drift, drift, drift, drift
    x[1] = 255
    x[1, :, 10:20, 10:20] = 7  # a view on pure white
    x[2, 1] = 0  # a dark frame: its border is not a drifted white
    rig = orbit_rig(num_views=3, width=50, height=40, square_size=40)
    video = MultiViewVideo(x, rig, [0.0, 1 / 3, 2 / 3, 1.0])
    want = torch.stack([to_uint8(whiten(to_float(x[k]))) for k in range(3)])
    got = whiten_video(video).pixels
    assert torch.equal(got, want)
    assert not torch.equal(got[0], x[0]) and torch.equal(got[1], x[1]) and torch.equal(got[2, 1], x[2, 1])
    white = MultiViewVideo(x[1:2].expand(2, -1, -1, -1, -1).clone(), rig.select([0, 1]), video.times)
    assert whiten_video(white) is white


def test_camera_refinement_warm_up_raises_its_learning_rate_during_the_static_stage_only():
    cfg = FitConfig(pose_refine=True, appearance=True, lr_pose=2e-4, pose_warmup=4.0, coarse_fraction=0.2)
    corr = ViewCorrections(cfg, 4, 2, 1.0, "cpu")
    lrs = []
    for p in (0.0, 0.1, 0.2, 0.7):
        corr.set_lrs(p)
        lrs.append(corr.opt.param_groups[-1]["lr"])
    assert lrs == pytest.approx([8e-4, 5e-4, 2e-4, 2e-4])
    assert corr.opt.param_groups[0]["lr"] == cfg.lr_appearance  # the appearance's rate is left alone
    off = ViewCorrections(FitConfig(pose_refine=True), 4, 2, 1.0, "cpu")
    off.set_lrs(0.0)
    assert off.opt.param_groups[-1]["lr"] == pytest.approx(2e-4)  # pose_warmup 1 (the default): unchanged
    off.set_lrs(1.0)
    assert off.opt.param_groups[-1]["lr"] == pytest.approx(2e-4)  # pose_lr_final 1 (the default): constant after
    late = ViewCorrections(FitConfig(pose_refine=True, pose_lr_final=0.1, coarse_fraction=0.2), 4, 2, 1.0, "cpu")
    got = []
    for p in (0.2, 0.6, 1.0):
        late.set_lrs(p)
        got.append(late.opt.param_groups[-1]["lr"])
    assert got == pytest.approx([2e-4, 1.1e-4, 2e-5])  # linear from the static stage's end to a tenth at the end


def test_white_balanced_marks_the_images_whose_background_shows_their_colour():
    """background.white_balanced: a drifted background below white is seen (its colour divided out); a white border,
    one that saturated at white, or a busy border is not."""
    from charactershot_core.gaussians.fitting.background import white_balanced

    px = torch.full((3, 2, 24, 32, 3), 255, dtype=torch.uint8)
    px[:, :, 8:16, 12:20] = 60  # a character
    px[0, :, :4] = 229  # view 0: a drifted white (0.9) where the border is (top rows; the median decides)
    px[0, :, :, :4] = 229
    px[0, :, -4:] = 229
    px[0, :, :, -4:] = 229
    px[2, 1] = (torch.rand(24, 32, 3) * 255).to(torch.uint8)  # view 2, frame 1: a busy backdrop
    rig = orbit_rig(3, width=32, height=24)
    got = white_balanced(MultiViewVideo(px, rig, [0.0, 1.0]))
    assert got.tolist() == [[True, True], [False, False], [False, False]]


def test_saturated_colour_learns_a_brighter_views_gain_and_keeps_the_anchors():
    """appearance.SaturatedColour: an image drawn brighter than the truth and clipped at white (gain k, offset o,
    k + o > 1) is matched by the learned gain and offset, its background predicted white; anchored images pass
    through untouched; with nothing to anchor to (or nothing to correct) the fit's corrections leave it out."""
    from charactershot_core.gaussians.fitting.appearance import SaturatedColour

    torch.manual_seed(0)
    anchors = torch.tensor([[True, False], [False, True]])
    sat = SaturatedColour(anchors)
    imgs = torch.ones(8, 6, 6, 3)
    imgs[:, 1:5, 1:5] = torch.rand(8, 4, 4, 3) * 0.8 + 0.1  # a character on white
    k, o = torch.tensor([1.06, 1.03, 1.08]), torch.tensor([0.01, -0.01, 0.0])
    target = (imgs * k + o).clamp(max=1.0)  # the degraded view: brighter, its background clipped at white
    opt = torch.optim.Adam(sat.parameters(), lr=1e-2)
    for _ in range(400):
        loss = (sat(imgs, [0] * 8, 1) - target).abs().mean() + (sat(imgs, [1] * 8, 0) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for view, frame in ((0, 1), (1, 0)):
        out = sat(imgs, [view] * 8, frame)
        assert (out - target).abs().max() < 0.01
        assert torch.equal(out[:, 0, 0], torch.ones(8, 3))  # the background stays white
    assert torch.equal(sat(imgs[:2], [0, 1], 0)[0], imgs[0]) and torch.equal(sat(imgs[:2], [1, 0], 1)[0], imgs[0])
    assert sat.log_gain.grad is not None and float(sat.log_gain[0, 0].abs().max()) == 0.0  # anchors never move
    cfg = FitConfig(pose_refine=False, saturated_colour=True)
    assert ViewCorrections(cfg, 2, 2, 1.0, "cpu", anchors=anchors).saturated is not None
    for none in (torch.zeros(2, 2, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool), None):
        corr = ViewCorrections(cfg, 2, 2, 1.0, "cpu", anchors=none)
        assert corr.saturated is None and corr.opt is None


def test_colour_field_matches_a_views_smooth_drift_keeps_white_and_the_consensus():
    """appearance.ViewColourField: a view whose character is drawn with a smooth colour drift across the picture
    (and a flicker) is matched by its learned field, the background (alpha 0) stays exactly white, and a drift every
    view shares is not absorbed (the gauge: the mean over the views is zero, the Gaussians keep the consensus)."""
    from charactershot_core.gaussians.fitting.appearance import ViewColourField

    torch.manual_seed(0)
    v, h, w = 4, 24, 36
    img = torch.ones(v, h, w, 3)
    alpha = torch.zeros(v, h, w, 1)
    img[:, 4:20, 6:30] = torch.rand(v, 16, 24, 3) * 0.6 + 0.2
    alpha[:, 4:20, 6:30] = 1.0
    xs = torch.linspace(-1, 1, w)
    drift = torch.stack([0.08 * xs, -0.05 * xs, 0.03 * xs], -1)[None].expand(h, w, 3)  # left-right colour ramp
    sign = torch.tensor([1.0, -1.0, 0.5, -0.5])  # opposite drifts: their mean over the views is zero
    drifted = img * torch.exp(sign[:, None, None, None] * drift * alpha)
    target = torch.where(alpha > 0, drifted * 1.03, img)  # + a flicker of 3 % that every view shares
    inside = alpha[..., 0] > 0
    fieldm = ViewColourField(v, 2, w, h, cells=6)
    opt = torch.optim.Adam(fieldm.parameters(), lr=2e-2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.99)
    before = float((img - drifted)[inside].abs().mean())
    for _ in range(400):
        loss = (fieldm(img, list(range(v)), 1, alpha) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    out = fieldm(img, list(range(v)), 1, alpha)
    assert torch.equal(out[alpha[..., 0] == 0], img[alpha[..., 0] == 0])  # the background untouched
    # the per-view drifts are matched; the flicker every view shares at this frame is the consensus, kept
    assert float((out - drifted)[inside].abs().mean()) < 0.3 * before  # absorbing the 3 % would give > before
    assert float(fieldm.regulariser()) > 0


def test_colour_field_auto_is_on_for_drifted_backgrounds_only(degraded_video):
    """FitConfig.colour_field "auto" (the default): on when the background estimate whitened some view (generated
    views), off for a clean render with white backgrounds; "on"/"off" force it; anything else is named."""
    clean, bad = degraded_video
    common = dict(iterations=2, batch_views=2, init_points=600, backend="torch", seed=0, densify=False,
                  pose_refine=False, flow_init=False)
    assert fit(bad, FitConfig(**common)).config["colour_field"] == "on"
    assert fit(clean, FitConfig(**common)).config["colour_field"] == "off"
    assert fit(clean, FitConfig(colour_field="on", **common)).config["colour_field"] == "on"
    assert fit(bad, FitConfig(colour_field="off", **common)).config["colour_field"] == "off"
    with pytest.raises(InputError, match="colour_field"):
        fit(clean, FitConfig(colour_field="sometimes", **common))

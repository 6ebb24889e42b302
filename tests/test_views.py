"""Views from one image: SV3D_p's orbit mapped onto CharacterShot rigs (charactershot_core.views).

The mapping is proved without SV3D weights: the synthetic character is rendered at 576x576 from the cameras SV3D_p
uses for the angles we ask for, the frames are laid onto the canvas, static Gaussians are fitted with the official
rig's cameras, and held-out views must agree. A wrong azimuth direction or spacing makes the same check fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charactershot_core import views as vw
from charactershot_core.cameras import CameraRig, official_rig, orbit_rig
from charactershot_core.errors import InputError

HELD_OUT = [3, 10, 17]
FIT_W, FIT_H = 90, 60
#: mean held-out PSNR (dB, on the character's box) above which the fitted views "agree" with the SV3D frames
AGREE_DB = 31.0
CHARACTER_CENTER = np.array([0.0, 0.0, 0.9])      # SV3D centres the object of its input image
SV3D_DISTANCE = (1.9 / 0.85) / 2 / np.tan(np.radians(vw.SV3D_FOV_DEG / 2))  # character fills ~85 % of the frame


# ------------------------------------------------------------------------------------------------------ angles
def test_official_rig_angles_are_k_360_over_21_counterclockwise_from_view0():
    rig = official_rig()
    a = vw.orbit_conditioning_angles(rig)
    assert a.frame_views == list(range(21))
    # the template's own angles (360/21 = 17.14 deg; the shipped matrices are off by up to 0.07 deg)
    np.testing.assert_allclose(a.azimuths, [k * 360 / 21 for k in range(21)], atol=0.1)
    np.testing.assert_allclose(a.elevations, 0.0, atol=1e-3)
    np.testing.assert_allclose(a.center, [0, 0, 0.7], atol=1e-4)
    # core's SV3D_Conditioning: 18 deg steps, frame 20 = 360 = frame 0 again
    core = vw.core_sv3d_azimuths(21)
    assert core[1] == 18.0 and core[20] == 360.0


def test_official_order_puts_the_input_view_last_like_stabilitys_script():
    a = vw.orbit_conditioning_angles(official_rig(), "sv3d_official")
    assert a.frame_views == [*range(1, 21), 0]
    # simple_video_sample.py: linspace(0, 360, 22)[1:] % 360, relative to the last one
    want = np.linspace(0, 360, 22)[1:] % 360
    np.testing.assert_allclose(a.azimuths, want, atol=0.1)
    assert a.view_frames[0] == 20 and a.view_frames[5] == 4


def test_custom_orbits_clockwise_elevated_and_rotated_start():
    cw = vw.orbit_conditioning_angles(orbit_rig(num_views=8, clockwise=True))
    np.testing.assert_allclose(cw.azimuths, [(-45 * k) % 360 for k in range(8)], atol=1e-6)
    up = vw.orbit_conditioning_angles(orbit_rig(num_views=6, elevation_deg=20.0, start_azimuth_deg=30.0))
    np.testing.assert_allclose(up.azimuths, [60 * k for k in range(6)], atol=1e-6)  # relative to view 0
    np.testing.assert_allclose(up.elevations, 20.0, atol=1e-6)


def test_non_orbit_rigs_are_rejected_with_a_clear_message():
    rig = official_rig()
    # one camera looking away from the character
    m = rig.c2w_gl.copy()
    m[4, :3, :3] = m[4, :3, :3] @ np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    with pytest.raises(InputError, match=r"cameras: not an orbit: views \[4\]"):
        vw.orbit_conditioning_angles(CameraRig(m, rig.fx, rig.fy, rig.cx, rig.cy, rig.width, rig.height))
    # cameras at different distances
    m = rig.c2w_gl.copy()
    m[7, :3, 3] = (m[7, :3, 3] - [0, 0, 0.7]) * 1.5 + [0, 0, 0.7]
    with pytest.raises(InputError, match="camera distances"):
        vw.orbit_conditioning_angles(CameraRig(m, rig.fx, rig.fy, rig.cx, rig.cy, rig.width, rig.height))
    # a rolled camera
    m = rig.c2w_gl.copy()
    c, s = np.cos(0.3), np.sin(0.3)
    m[2, :3, :3] = m[2, :3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    with pytest.raises(InputError, match="rolled"):
        vw.orbit_conditioning_angles(CameraRig(m, rig.fx, rig.fy, rig.cx, rig.cy, rig.width, rig.height))
    # two views at one azimuth, mixed focal lengths, a single camera
    m = np.concatenate([rig.c2w_gl, rig.c2w_gl[:1]])
    with pytest.raises(InputError, match="share an azimuth"):
        vw.orbit_conditioning_angles(CameraRig(m, 600.0, 600.0, 360, 240, 720, 480))
    fx = rig.fx.copy()
    fx[3] *= 1.2
    with pytest.raises(InputError, match="focal lengths"):
        vw.orbit_conditioning_angles(CameraRig(rig.c2w_gl, fx, rig.fy, rig.cx, rig.cy, rig.width, rig.height))
    with pytest.raises(InputError, match="at least 2"):
        vw.orbit_conditioning_angles(rig.select([0]))
    with pytest.raises(InputError, match="frame_order"):
        vw.orbit_conditioning_angles(rig, "backwards")


# ------------------------------------------------------------------------------------------------- the canvas
def _blob_frames(n=21, size=64):
    """n white square frames with a dark box that moves across: distinct, easy to track."""
    f = np.full((n, size, size, 3), 255, np.uint8)
    for j in range(n):
        f[j, 20:44, 24 + j % 8:34 + j % 8] = (10 * j, 50, 200)
    return f


def test_views_from_orbit_reorders_to_rig_order_with_one_shared_transform():
    rig = official_rig()
    frames = _blob_frames()
    res = vw.views_from_orbit(frames, rig, "sv3d_official")
    assert res.images.shape == (21, 480, 720, 3) and res.masks.shape == (21, 480, 720)
    # frame j is view j+1: view 0 comes from the last frame (its box colour says which frame it was)
    for k in (0, 1, 5, 20):
        j = (k - 1) % 21
        ys, xs = np.nonzero(res.masks[k] > 0.5)
        px = res.images[k][ys[len(ys) // 2], xs[len(xs) // 2]].astype(int)
        assert abs(px[0] - 10 * j) <= 3, (k, j, px)
    # one square for all frames: every frame's box moves by the same scale and offset
    x0, y0, side = res.square
    scale = 480 / side
    for k in range(21):
        j = (k - 1) % 21
        ys, xs = np.nonzero(res.masks[k] > 0.5)
        assert abs(xs.min() - (120 + (24 + j % 8 - x0) * scale)) <= 2
        assert abs(ys.min() - (20 - y0) * scale) <= 2
    # white outside the central square
    assert res.images[:, :, :118].min() == 255 and res.images[:, :, 602:].min() == 255


def test_input_image_replaces_view0_after_the_conditionings_centre_crop():
    rig = official_rig()
    frames = _blob_frames()
    picture = np.full((64, 96, 3), 255, np.uint8)          # wider than square: SV3D saw its centre 64x64
    picture[20:44, 16 + 24:16 + 34] = (0, 200, 0)           # same box as frame 0, in the centre crop
    res = vw.views_from_orbit(frames, rig, "rig", input_image=picture)
    ys, xs = np.nonzero(res.masks[0] > 0.5)
    assert tuple(res.images[0][ys[len(ys) // 2], xs[len(xs) // 2]]) == (0, 200, 0)
    ys1, xs1 = np.nonzero(res.masks[8] > 0.5)               # frame 8 has the box where frame 0 has it
    assert abs(xs.min() - xs1.min()) <= 1 and abs(ys.min() - ys1.min()) <= 1
    assert any("centre-cropped" in w for w in res.warnings)


def test_views_from_orbit_bad_input():
    rig = official_rig()
    with pytest.raises(InputError, match=r"sv3d_frames: expected 21 frames, one per view of the 21-camera rig, got 8"):
        vw.views_from_orbit(_blob_frames(8), rig)
    mixed = list(_blob_frames(20)) + [np.full((72, 72, 3), 255, np.uint8)]
    with pytest.raises(InputError, match=r"sv3d_frames: views of mixed sizes \(64x64, 72x72\)"):
        vw.views_from_orbit(mixed, rig)
    with pytest.raises(InputError, match="frame_order"):
        vw.views_from_orbit(_blob_frames(), rig, "reverse")
    with pytest.raises(InputError, match="no character found"):
        vw.views_from_orbit(np.full((21, 64, 64, 3), 255, np.uint8), rig)


# ------------------------------------------------------------------------------ the mapping, proved by fitting
@pytest.fixture(scope="module")
def character():
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    # mid-wave: the raised right arm makes the character clearly asymmetric, so a mirrored orbit cannot fit
    return SyntheticCharacter("wave", seed=0, n_gaussians=1500)


def _sv3d_frames(character, azimuths, elevations, size=vw.SV3D_SIZE) -> np.ndarray:
    """What SV3D_p would produce for these angles, with the synthetic character as the object: renders at 576x576
    from SV3D's cameras (33.8 deg FoV, the object centred) as uint8."""
    cams = vw.sv3d_cameras(azimuths, elevations, CHARACTER_CENTER, SV3D_DISTANCE, size=size)
    frames = character.render_views(cams, [0.5], backend="torch")[:, 0]
    return np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def orbit_frames(character):
    a = vw.orbit_conditioning_angles(official_rig(), "rig")
    return _sv3d_frames(character, a.azimuths, a.elevations)


def heldout_agreement(views: np.ndarray) -> list[float]:
    """Fit static Gaussians to the canvas views (all but HELD_OUT) with the official rig's cameras and return the
    PSNR of each held-out view (fitted render vs the mapped SV3D frame, on the character's box)."""
    from charactershot_core.gaussians.fitting.data import MultiViewVideo
    from charactershot_core.gaussians.fitting.fit import FitConfig, fit
    from charactershot_core.gaussians.raster.views import render_views
    from charactershot_core.gaussians.evaluation.metrics import fg_box, psnr

    x = torch.from_numpy(views).float().div(255).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(FIT_H, FIT_W), mode="area").permute(0, 2, 3, 1)
    rig = official_rig().resized(FIT_W, FIT_H)
    train = [k for k in range(len(rig)) if k not in HELD_OUT]
    cfg = FitConfig(iterations=80, batch_views=3, init_points=2000, backend="torch", seed=0, densify=False)
    model = fit(MultiViewVideo(x[train], rig.select(train), [0.5]), cfg).model
    pred = render_views(model, rig.select(HELD_OUT), None, "torch")[:, 0]
    return [psnr(pred[i], x[k], fg_box(x[k])) for i, k in enumerate(HELD_OUT)]


def test_sv3d_orbit_on_the_official_rig_gives_consistent_views(orbit_frames):
    assert orbit_frames.shape == (21, 576, 576, 3)
    views = vw.views_from_orbit(orbit_frames, official_rig(), "rig").images
    ps = heldout_agreement(views)
    print(f"\norbit mapping: held-out views {HELD_OUT} PSNR {np.round(ps, 2).tolist()} dB, "
          f"mean {np.mean(ps):.2f} dB (agree above {AGREE_DB} dB)")
    assert np.mean(ps) > AGREE_DB, ps


def test_sv3d_official_order_maps_back_to_the_same_views(character, orbit_frames):
    a = vw.orbit_conditioning_angles(official_rig(), "sv3d_official")
    # frames in Stability's order are the rig-order frames rolled by one: the same renders, no new ones needed
    official = orbit_frames[a.frame_views]
    np.testing.assert_array_equal(vw.views_from_orbit(official, official_rig(), "sv3d_official").images,
                                  vw.views_from_orbit(orbit_frames, official_rig(), "rig").images)


@pytest.mark.parametrize("mistake", ["reversed_direction", "core_360_over_20", "control_right_angles_at_288"])
def test_a_wrong_azimuth_direction_or_spacing_fails_the_check(character, orbit_frames, mistake):
    a = vw.orbit_conditioning_angles(official_rig(), "rig")
    if mistake == "reversed_direction":
        # azimuth -k*360/21 is view (21-k) of the same orbit: the good renders, reordered
        frames = orbit_frames[[(-k) % 21 for k in range(21)]]
    else:
        # core SV3D_Conditioning's 0, 18, ..., 360 degrees, rendered at 288 and enlarged to 576 to save time; the
        # control "control_right_angles_at_288" renders the right angles the same way and must still agree
        azimuths = vw.core_sv3d_azimuths(21) if mistake == "core_360_over_20" else a.azimuths
        small = _sv3d_frames(character, azimuths, a.elevations, size=288)
        frames = np.repeat(np.repeat(small, 2, axis=1), 2, axis=2)
    views = vw.views_from_orbit(frames, official_rig(), "rig").images
    ps = heldout_agreement(views)
    print(f"\n{mistake}: held-out views {HELD_OUT} PSNR {np.round(ps, 2).tolist()} dB, mean {np.mean(ps):.2f} dB")
    if mistake == "control_right_angles_at_288":
        assert np.mean(ps) > AGREE_DB, ps
    else:
        assert np.mean(ps) < AGREE_DB, ps

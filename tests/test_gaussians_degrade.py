"""Views like a video model's (charactershot_core.gaussians.synthetic.degrade): seeded, and each effect does what it says."""

import numpy as np
import pytest
import torch

from charactershot_core.errors import InputError
from charactershot_core.gaussians.synthetic.degrade import _warp, degrade


def _clip(v=3, t=4, h=32, w=48):
    x = torch.ones(v, t, h, w, 3)
    x[:, :, 10:22, 18:30] = torch.tensor([0.2, 0.4, 0.6])  # a character block on white
    return x


def test_strength_zero_is_the_clip_and_a_seed_repeats():
    x = _clip()
    assert torch.equal(degrade(x, 0.0), x)
    a, b, c = degrade(x, 1.0, seed=3), degrade(x, 1.0, seed=3), degrade(x, 1.0, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    # uint8 input is read as 0..255
    assert torch.allclose(degrade((x * 255).round().to(torch.uint8), 0.0), x, atol=1 / 255)


def test_each_effect_alone():
    x = _clip()
    col = degrade(x, 2.0, effects=("colour",))
    # per view: one affine colour for all frames and pixels; the background is no longer pure white in some view
    for k in range(x.shape[0]):
        assert torch.allclose(col[k, 0], col[k, 1])
    assert (col[:, :, 0, 0] < 0.999).any()
    fl = degrade(x, 2.0, effects=("flicker",))
    # flicker: a brightness factor per view and frame
    ratios = fl[:, :, 15, 20, 0] / x[:, :, 15, 20, 0]
    assert ratios.std() > 1e-3
    assert torch.allclose(fl[:, :, 15, 20] / x[:, :, 15, 20], ratios[..., None].expand(-1, -1, 3), atol=1e-5)
    det = degrade(x, 2.0, effects=("detail",))
    # detail: only the character changes, differently in each view
    assert torch.equal(det[:, :, 0:8], x[:, :, 0:8])
    assert not torch.allclose(det[0, 0, 10:22, 18:30], det[1, 0, 10:22, 18:30])
    mis = degrade(x, 2.0, effects=("misalign",))
    # misalignment: the block moves as a whole, the same in every frame of a view
    assert torch.allclose(mis[:, 0], mis[:, 1])
    assert not torch.allclose(mis, x)


def test_warp_moves_by_the_given_pixels():
    x = torch.ones(1, 40, 40, 3)
    x[0, 10:20, 10:20] = 0.0
    y = _warp(x, 3.0, -2.0, 0.0, 1.0)
    ys, xs = torch.nonzero(y[0, :, :, 0] < 0.5, as_tuple=True)
    assert float(xs.float().mean()) == pytest.approx(14.5 + 3.0, abs=0.05)
    assert float(ys.float().mean()) == pytest.approx(14.5 - 2.0, abs=0.05)
    assert y[0, 0, 39, 0] == 1.0  # white comes in where nothing maps


def test_bad_input_is_named():
    with pytest.raises(InputError, match="clip"):
        degrade(np.ones((4, 4, 3)), 1.0)
    with pytest.raises(InputError, match="effects"):
        degrade(_clip(), 1.0, effects=("blur",))
    with pytest.raises(InputError, match="strength"):
        degrade(_clip(), -1.0)


def test_misplaced_is_where_the_misalignment_draws_a_point():
    """degrade.misplaced (the benchmark's readout of the camera corrections) agrees with the warp degrade applies."""
    from charactershot_core.gaussians.synthetic.degrade import misplaced

    h, w, v = 40, 60, 4
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    spots = [(17.0, 12.0), (44.0, 30.0)]
    x = torch.ones(v, 2, h, w, 3)
    for f, (px, py) in enumerate(spots):
        ink = torch.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * 2.0 ** 2))
        x[:, f] = (1 - 0.8 * ink)[..., None]
    out = degrade(x, 3.0, seed=2, effects=("misalign",))
    where = misplaced(np.array([spots] * v), w, h, 3.0, seed=2)
    moved = 0.0
    for k in range(v):
        for f in range(2):
            ink = 1 - out[k, f, ..., 0]
            c = torch.stack([(ink * xx).sum(), (ink * yy).sum()]) / ink.sum()
            assert torch.allclose(c, torch.tensor(where[k, f], dtype=torch.float32), atol=0.05)
            moved = max(moved, float(np.hypot(*(where[k, f] - np.array(spots[f])))))
    assert moved > 1.0  # the check is not trivial: the views moved the spots by more than a pixel


def test_misaligned_rig_draws_every_point_where_the_warp_puts_it():
    """degrade.misaligned_rig: cameras off the rig that project each point exactly where the misalignment's warp
    (degrade.misplaced, same strength and seed) draws it, with no resampling; strength 0 is the rig itself."""
    from charactershot_core.cameras import official_rig
    from charactershot_core.gaussians.synthetic.degrade import misaligned_rig, misplaced

    rig = official_rig().scaled(0.25).select(range(6))
    pts = np.random.default_rng(0).normal(0, 0.3, (50, 3)) + rig.centers.mean(0)  # around the orbit's centre
    on_rig, _ = rig.project(pts)
    off = misaligned_rig(rig, 2.0, seed=5)
    moved, _ = off.project(pts)
    assert np.abs(moved - misplaced(on_rig, rig.width, rig.height, 2.0, seed=5)).max() < 1e-6
    assert np.linalg.norm(moved - on_rig, axis=-1).mean() > 0.5  # it does move them
    # the camera centres stay where the rig puts them (a roll, a zoom and a principal point, no translation)
    assert np.allclose(off.centers, rig.centers, atol=1e-9)
    same, _ = misaligned_rig(rig, 0.0).project(pts)
    assert np.allclose(same, on_rig, atol=1e-9)
    with pytest.raises(InputError, match="strength"):
        misaligned_rig(rig, -1.0)

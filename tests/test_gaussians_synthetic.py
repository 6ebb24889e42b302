"""The procedural synthetic character: geometry, motions, and rendering on the official rig."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charactershot_core.cameras import official_rig
from charactershot_core.errors import InputError
from charactershot_core.gaussians import _torch_raster as tr
from charactershot_core.gaussians.synthetic import MOTIONS, SyntheticCharacter, quat_mul, rotmat_to_quat


def test_quaternion_helpers_agree_with_the_rasteriser_convention():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    m = tr.quat_to_rotmat(torch.as_tensor(q)).numpy()
    q2 = rotmat_to_quat(m)
    q = np.where(q[:, :1] < 0, -q, q)
    np.testing.assert_allclose(q2, q, atol=1e-9)
    # the Hamilton product composes rotations like matrix products
    a, b = q[:25], q[25:]
    ab = tr.quat_to_rotmat(torch.as_tensor(quat_mul(a, b))).numpy()
    np.testing.assert_allclose(ab, m[:25] @ m[25:], atol=1e-9)


@pytest.mark.parametrize("motion", MOTIONS)
def test_character_size_ground_and_motion(motion):
    ch = SyntheticCharacter(motion, seed=1, n_gaussians=3000)
    assert len(ch) == 3000
    g0 = ch.gaussians_at(0.0)
    for key, shape in (("means", (3000, 3)), ("quats", (3000, 4)), ("scales", (3000, 3)), ("opacities", (3000,)),
                       ("colors", (3000, 3))):
        assert g0[key].shape == shape and g0[key].dtype == torch.float32
    z = g0["means"][:, 2]
    assert -0.01 < float(z.min()) < 0.03 and 1.72 < float(z.max()) < 1.85  # stands on z = 0, about 1.8 m tall
    assert abs(float(g0["means"][:, 0].mean())) < 0.02 and abs(float(g0["means"][:, 1].mean())) < 0.03
    moved = 0.0
    for t in (0.25, 0.5, 0.75):
        g = ch.gaussians_at(t)
        moved = max(moved, float((g["means"] - g0["means"]).norm(dim=1).max()))
        assert float(g["means"][:, 2].min()) > -0.03  # never sinks into the floor
        assert float(g["means"][:, 2].max()) < 2.0  # stays inside the official frame
        assert torch.equal(g["scales"], g0["scales"]) and torch.equal(g["colors"], g0["colors"])
        assert torch.allclose(g["quats"].norm(dim=1), torch.ones(3000), atol=1e-5)
    assert moved > 0.05  # it really moves (the idle motion least of all)


def test_rigid_parts_keep_their_shape():
    ch = SyntheticCharacter("walk", seed=0, n_gaussians=2000)
    a, b = ch.gaussians_at(0.1)["means"].double(), ch.gaussians_at(0.6)["means"].double()
    bone = torch.as_tensor(ch._bone)
    for k in torch.unique(bone).tolist():
        sel = bone == k
        da = torch.cdist(a[sel], a[sel])
        db = torch.cdist(b[sel], b[sel])
        assert torch.allclose(da, db, atol=1e-5)


def test_seeded_and_textured():
    a = SyntheticCharacter("wave", seed=3, n_gaussians=1500).gaussians_at(0.4)
    b = SyntheticCharacter("wave", seed=3, n_gaussians=1500).gaussians_at(0.4)
    c = SyntheticCharacter("wave", seed=4, n_gaussians=1500).gaussians_at(0.4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["means"], c["means"])
    # several distinct materials (shirt, trousers, skin, hair, shoes...)
    q = torch.round(a["colors"] * 4)
    assert len(torch.unique(q, dim=0)) >= 6


def test_renders_centred_on_the_official_rig():
    ch = SyntheticCharacter("idle", seed=0, n_gaussians=6000)
    rig = official_rig()
    views = ch.render_views(rig.select([0, 5, 13]), [0.0], scale=0.125, backend="torch")
    assert views.shape == (3, 1, 60, 90, 3) and views.dtype == np.float32
    assert views.min() >= 0 and views.max() <= 1
    for v in range(3):
        img = views[v, 0]
        assert np.all(img[:, :20] == 1.0) and np.all(img[:, -20:] == 1.0)  # white background at the sides
        fg = img.min(-1) < 0.97
        ys, xs = np.nonzero(fg)
        assert fg.sum() > 150
        # horizontally centred on the canvas, feet and head inside the frame, about 72% of its height
        assert abs((xs.min() + xs.max() + 1) / 2 - 45) < 4
        assert ys.min() >= 1 and ys.max() <= 58
        assert 0.62 < (ys.max() - ys.min() + 1) / 60 < 0.8
    # on the full canvas this is the size of the official example's character (rows 28..375 of 480)
    full = rig.scaled(0.125)
    uv, _ = full.project(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.78]]))
    assert 44 < uv[0, 0, 1] < 48 and 2 < uv[0, 1, 1] < 6


def test_bad_arguments():
    with pytest.raises(InputError) as e:
        SyntheticCharacter("dance")
    assert e.value.input_name == "motion"
    with pytest.raises(InputError) as e:
        SyntheticCharacter("walk", n_gaussians=10)
    assert e.value.input_name == "n_gaussians"
    ch = SyntheticCharacter("walk", n_gaussians=500)
    with pytest.raises(InputError):
        ch.gaussians_at(float("nan"))
    with pytest.raises(InputError) as e:
        ch.render_views(official_rig(), [], scale=0.1)
    assert e.value.input_name == "times"

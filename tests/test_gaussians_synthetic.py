"""The procedural synthetic character: geometry, motions, and rendering on the official rig."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from charactershot_core.cameras import official_rig
from charactershot_core.errors import InputError
from charactershot_core.gaussians.synthetic import MOTIONS, SyntheticCharacter


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


def _bone(ch, name, t):
    from charactershot_core.gaussians.synthetic.character import _BONE_INDEX

    rot, pos = ch.bone_transforms(t)
    return rot[_BONE_INDEX[name]], pos[_BONE_INDEX[name]]


def test_walk_cycle_crosses_the_legs_and_swings_the_arms():
    ch = SyntheticCharacter("walk", seed=0, n_gaussians=500)
    # the character faces -y: the foot with the smaller y is in front; each foot is in front once per cycle
    front = []
    for t in (0.25, 0.75):
        ry_, ly_ = _bone(ch, "r_foot", t)[1][1], _bone(ch, "l_foot", t)[1][1]
        assert abs(ry_ - ly_) > 0.3  # a real stride, not a shuffle
        front.append("r" if ry_ < ly_ else "l")
        # the arms swing against the legs: the hand on the side of the front foot is behind
        r_hand, l_hand = _bone(ch, "r_forearm", t)[1][1], _bone(ch, "l_forearm", t)[1][1]
        assert (r_hand > l_hand) == (ry_ < ly_) and abs(r_hand - l_hand) > 0.1
    assert front == ["r", "l"]
    # the feet of the rendered Gaussians move between frames too
    g0, g1 = ch.gaussians_at(0.25), ch.gaussians_at(0.75)
    feet = torch.as_tensor(np.isin(ch._bone, [9, 12]))
    assert float((g0["means"][feet] - g1["means"][feet]).norm(dim=1).mean()) > 0.2


def test_turn_turns_the_whole_body():
    from charactershot_core.gaussians.synthetic import TURN_DEGREES

    ch = SyntheticCharacter("turn", seed=0, n_gaussians=500)

    def facing(t):  # the pelvis's forward direction (-y at rest), in the ground plane
        d = _bone(ch, "pelvis", t)[0] @ np.array([0.0, -1.0, 0.0])
        return math.degrees(math.atan2(d[0], -d[1]))  # 0 = facing -y, +90 = facing +x (its left)

    angles = [facing(t) for t in np.linspace(0, 1, 9)]
    assert angles[0] == pytest.approx(0.0, abs=1e-9) and angles[-1] == pytest.approx(TURN_DEGREES, abs=1e-6)
    assert all(b >= a - 1e-9 for a, b in zip(angles, angles[1:]))  # one way round
    # every part turns with it: the chest badge and the face point away from view 0 at the end
    head0, head1 = _bone(ch, "neck", 0.0)[0], _bone(ch, "neck", 1.0)[0]
    f0, f1 = head0 @ np.array([0.0, -1.0, 0.0]), head1 @ np.array([0.0, -1.0, 0.0])
    assert math.degrees(math.acos(np.clip(f0 @ f1, -1, 1))) > 90
    # it turns on the spot and keeps its feet on the ground
    for t in (0.0, 0.3, 0.7, 1.0):
        m = ch.gaussians_at(t)["means"]
        assert abs(float(m[:, 0].mean())) < 0.05 and abs(float(m[:, 1].mean())) < 0.05
        assert float(m[:, 2].min()) < 0.03


@pytest.mark.parametrize("motion", ["walk", "turn"])
def test_new_motions_are_deterministic_for_a_seed(motion):
    rig = official_rig().select([0, 7])
    a = SyntheticCharacter(motion, seed=5, n_gaussians=800).render_views(rig, [0.0, 0.5], scale=0.0625, backend="torch")
    b = SyntheticCharacter(motion, seed=5, n_gaussians=800).render_views(rig, [0.0, 0.5], scale=0.0625, backend="torch")
    c = SyntheticCharacter(motion, seed=6, n_gaussians=800).render_views(rig, [0.0, 0.5], scale=0.0625, backend="torch")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a[:, 0] - a[:, 1]).max() > 0.3  # the two frames differ: it moves

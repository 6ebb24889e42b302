"""evaluation.align: held-out cameras registered to a frozen fit before scoring (the protocol for fits that refine
their cameras)."""

import numpy as np
import pytest
import torch

from charactershot_core.cameras import official_rig
from charactershot_core.errors import InputError
from charactershot_core.gaussians.evaluation.align import align_cameras
from charactershot_core.gaussians.evaluation.metrics import clip_scores
from charactershot_core.gaussians.model.gaussians4d import Gaussians4D
from charactershot_core.gaussians.raster.views import render_views
from charactershot_core.gaussians.synthetic import SyntheticCharacter
from charactershot_core.gaussians.synthetic.degrade import misaligned_rig


def _exact_model(character, t):
    g = character.gaussians_at(t)
    op = g["opacities"].clamp(1e-4, 1 - 1e-4)
    sh0 = ((g["colors"] - 0.5) / 0.28209479177387814)[:, None]
    return Gaussians4D(g["means"], g["scales"].log(), g["quats"], torch.log(op / (1 - op)), sh0, None,
                       {"sh_degree": 0, "times": [t], "motion": None})


def test_a_picture_off_the_rig_is_registered_and_a_wrong_picture_is_not_fixed():
    torch.manual_seed(0)
    character = SyntheticCharacter("wave", seed=0, n_gaussians=3000)
    rig = official_rig().scaled(0.25).select([3, 10, 17])
    model = _exact_model(character, 0.5)
    off = misaligned_rig(rig, 2.0, seed=1)  # each view drawn ~1.5 px off the rig
    truth = torch.as_tensor(character.render_views(off, [0.5], backend="torch"))
    before = clip_scores(render_views(model, rig, [0.5], "torch"), truth)["tight_psnr"]
    aligned, shifts = align_cameras(model, rig, [0.5], truth, steps=60)
    after = clip_scores(render_views(model, aligned, [0.5], "torch"), truth)["tight_psnr"]
    assert after > before + 8 and after > 32, (before, after)
    assert shifts.shape == (3,) and (shifts > 0.3).all() and (shifts < 5).all()
    # a character with an arm moved (another time) stays wrong after the alignment: it registers, it does not redraw
    other = torch.as_tensor(character.render_views(rig, [0.0], backend="torch"))
    wrong = clip_scores(render_views(model, align_cameras(model, rig, [0.0], other, steps=30)[0], [0.0], "torch"),
                        other)
    assert wrong["coverage_worst"] < 0.95
    # no steps: the rig's own cameras
    same, none = align_cameras(model, rig, [0.5], truth, steps=0)
    assert np.allclose(same.c2w_gl, rig.c2w_gl, atol=1e-5) and np.allclose(none, 0)


def test_bad_truth_is_named():
    character = SyntheticCharacter("wave", seed=0, n_gaussians=500)
    rig = official_rig().scaled(0.1).select([0, 1])
    with pytest.raises(InputError, match="truth"):
        align_cameras(_exact_model(character, 0.5), rig, [0.5], np.ones((3, 1, rig.height, rig.width, 3)))

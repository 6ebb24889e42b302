"""The one rotation module (``gaussians/rotations.py``): wxyz quaternions, Hamilton products, matrices; numpy and
torch inputs give the same numbers; the rasteriser and the model use it."""

from __future__ import annotations

import math

import numpy as np
import torch

from charactershot_core.gaussians.raster import _torch_raster as tr
from charactershot_core.gaussians.rotations import (canonical, normalise, quat_mul, quat_to_rotmat, rotmat_to_quat, rx,
                                                    ry, rz)


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


def test_numpy_and_torch_inputs_give_the_same_numbers():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    np.testing.assert_array_equal(quat_mul(ta, tb).numpy(), quat_mul(a, b))
    np.testing.assert_allclose(normalise(ta).numpy(), normalise(a), rtol=1e-15, atol=0)
    np.testing.assert_allclose(quat_to_rotmat(ta).numpy(), quat_to_rotmat(a), rtol=0, atol=1e-15)
    m = quat_to_rotmat(a)
    q = rotmat_to_quat(torch.as_tensor(m))
    assert q.dtype == torch.float32 and q.shape == (40, 4)
    np.testing.assert_allclose(q.numpy(), rotmat_to_quat(m).astype(np.float32))
    assert tr.quat_to_rotmat is quat_to_rotmat  # the rasteriser has no copy of its own


def test_axis_rotations_and_canonical_form():
    np.testing.assert_allclose(rz(math.pi / 2) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(rx(math.pi / 2) @ [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(ry(math.pi / 2) @ [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], atol=1e-15)
    q = rotmat_to_quat(rz(0.3) @ ry(-1.1) @ rx(2.0))
    np.testing.assert_allclose(quat_to_rotmat(q), rz(0.3) @ ry(-1.1) @ rx(2.0), atol=1e-12)
    c = canonical(np.array([[-2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-0.5, 0.5, 0.5, 0.5]]))
    assert c.dtype == np.float32
    np.testing.assert_allclose(c, [[1, 0, 0, 0], [1, 0, 0, 0], [0.5, -0.5, -0.5, -0.5]], atol=1e-7)

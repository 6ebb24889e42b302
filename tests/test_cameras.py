"""Camera rigs: conventions, the official template, Plücker rays, view groups, JSON I/O."""

import json
import math

import numpy as np
import pytest
import torch

from charactershot_core import cameras as cam
from charactershot_core.errors import InputError


@pytest.fixture(scope="module")
def rig():
    return cam.official_rig()


def test_template_intrinsics_and_layout(rig):
    assert len(rig) == 21 and (rig.width, rig.height) == (720, 480)
    f = 240 / math.tan(math.radians(39.6) / 2)
    assert np.allclose(rig.fx, f, atol=0.05) and np.allclose(rig.fy, rig.fx)
    assert np.allclose(rig.cx, 360) and np.allclose(rig.cy, 240)
    assert rig.times is not None and len(rig.times) == 25 and rig.times[-1] == 1.0
    # radius 3.5 around the z axis, height 0.7, elevation 0
    c = rig.centers
    assert np.allclose(np.linalg.norm(c[:, :2], axis=1), 3.5, atol=0.01)
    assert np.allclose(c[:, 2], 0.7, atol=1e-6)
    assert np.allclose(rig.forwards[:, 2], 0, atol=1e-6)
    # view k at azimuth k*360/21, counter-clockwise seen from +z, view 0 on -y looking +y
    az = np.degrees(np.arctan2(c[:, 0], -c[:, 1])) % 360
    assert np.allclose(az, np.arange(21) * 360 / 21, atol=0.2)
    assert np.allclose(rig.forwards[0], [0, 1, 0], atol=1e-6)


def test_every_template_camera_looks_at_the_character_axis(rig):
    c, f = rig.centers, rig.forwards
    # closest approach of the optical axis to the z axis is ~0
    t = -(c[:, 0] * f[:, 0] + c[:, 1] * f[:, 1]) / (f[:, 0] ** 2 + f[:, 1] ** 2)
    closest = c[:, :2] + t[:, None] * f[:, :2]
    assert np.abs(closest).max() < 0.01
    # and a point on the axis at the look-at height projects to the principal point
    px, z = rig.project(np.array([[0.0, 0.0, 0.7]]))
    assert np.all(z > 0)
    assert np.abs(px[:, 0, 0] - 360).max() < 2.0 and np.abs(px[:, 0, 1] - 240).max() < 0.5


def test_custom_orbit_defaults_match_the_template(rig):
    o = cam.orbit_rig()
    assert np.abs(o.c2w_gl - rig.c2w_gl).max() < 0.01  # the template's positions are rounded to 2 decimals
    assert np.allclose(o.fx, rig.fx)
    cw = cam.orbit_rig(num_views=4, clockwise=True)
    assert cw.centers[1, 0] < 0  # clockwise: view 1 is to the left of view 0 seen from above


def test_gl_to_cv_conversion(rig):
    cv = rig.c2w_cv
    # OpenCV camera looks down +z, y down: the GL forward (-z) equals the CV +z axis, GL up equals CV -y
    assert np.allclose(cv[:, :3, 2], -rig.c2w_gl[:, :3, 2])
    assert np.allclose(cv[:, :3, 1], -rig.c2w_gl[:, :3, 1])
    vm = rig.viewmats()
    assert vm.shape == (21, 4, 4) and vm.dtype == torch.float32
    assert torch.allclose(vm.double() @ torch.as_tensor(cv), torch.eye(4, dtype=torch.float64).expand(21, 4, 4), atol=1e-5)
    # the head of a 1.8 m character is above the centre of the image (smaller v) in every view
    px, _ = rig.project(np.array([[0.0, 0.0, 1.7]]))
    assert np.all(px[:, 0, 1] < 240)


def test_rays_unit_and_moment_orthogonal(rig):
    pm = rig.plucker([0, 5], dtype=torch.float64)
    assert pm.shape == (2, 6, 480, 720)
    m, d = pm[:, :3], pm[:, 3:]
    assert torch.allclose(d.norm(dim=1), torch.ones(2, 480, 720, dtype=torch.float64), atol=1e-12)
    assert (m * d).sum(dim=1).abs().max() < 1e-12
    # the moment encodes the camera centre: o x d with o the centre
    o = torch.as_tensor(rig.centers[[0, 5]])[:, :, None, None].expand_as(d)
    assert torch.allclose(torch.cross(o, d, dim=1), m, atol=1e-12)


def test_point_projects_to_the_same_pixel_through_viewmats_and_rays(rig):
    rng = np.random.default_rng(0)
    pts = rng.uniform([-0.4, -0.4, 0.1], [0.4, 0.4, 1.6], size=(20, 3))
    vm, K = rig.viewmats(dtype=torch.float64), rig.Ks(dtype=torch.float64)
    for v in (0, 3, 11):
        hom = torch.cat([torch.as_tensor(pts), torch.ones(20, 1, dtype=torch.float64)], 1)
        camp = (vm[v] @ hom.T).T[:, :3]
        uvw = (K[v] @ camp.T).T
        uv = uvw[:, :2] / uvw[:, 2:]
        px, _ = rig.project(pts)
        assert np.allclose(uv.numpy(), px[v], atol=1e-9)
        o, d = rig.rays(v, dtype=torch.float64)
        for (u, vv), p in zip(uv.numpy(), pts):
            j, i = int(np.floor(vv)), int(np.floor(u))
            assert 0 <= j < 480 and 0 <= i < 720
            # the ray through that pixel centre passes within half a pixel's footprint of the point
            ray_o, ray_d = o[j, i].numpy(), d[j, i].numpy()
            dist = np.linalg.norm(np.cross(p - ray_o, ray_d))
            depth = np.dot(p - ray_o, ray_d)
            assert dist <= depth * 0.71 / rig.fx[v] + 1e-9


def test_relative_rays_put_view0_at_identity(rig):
    o, d = rig.rays(0, dtype=torch.float64, relative_to=0)
    assert torch.allclose(o, torch.zeros_like(o), atol=1e-9)
    assert torch.allclose(d[240, 360], torch.tensor([0.5 / 666.6667, 0.5 / 666.6667, 1.0], dtype=torch.float64),
                          atol=1e-6)


def test_view_groups():
    assert cam.view_groups(21) == cam.OFFICIAL_VIEW_GROUPS
    for v in (2, 5, 8, 13, 17, 30):
        groups = cam.view_groups(v)
        covered = {i for g in groups for i in g}
        assert covered == set(range(v)), v
        for g in groups:
            assert g[0] == 0 and len(g) == min(5, v) and len(set(g)) == len(g)
    with pytest.raises(InputError, match="views"):
        cam.view_groups(0)


def test_json_roundtrip_and_scaling(tmp_path, rig):
    p = tmp_path / "rig.json"
    rig.save(str(p))
    back = cam.CameraRig.load(str(p))
    assert np.allclose(back.c2w_gl, rig.c2w_gl) and np.allclose(back.fx, rig.fx) and back.times == rig.times
    q = rig.scaled(0.25)
    assert (q.width, q.height) == (180, 120) and np.allclose(q.fx, rig.fx / 4) and np.allclose(q.cx, 90) and np.allclose(q.cy, 60)
    px, _ = rig.project(np.array([[0.1, 0.2, 1.0]]))
    qx, _ = q.project(np.array([[0.1, 0.2, 1.0]]))
    assert np.allclose(qx, px / 4)
    sub = rig.select([0, 3, 10])
    assert sub.names == ["view00", "view03", "view10"]


def test_bad_rigs_are_named(tmp_path):
    with pytest.raises(InputError, match="radius"):
        cam.orbit_rig(radius=0)
    with pytest.raises(InputError, match="elevation"):
        cam.orbit_rig(elevation_deg=95)
    with pytest.raises(InputError, match="num_views"):
        cam.orbit_rig(num_views=0)
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        cam.CameraRig.load(str(p))
    p.write_text(json.dumps({"views": [{"transform_matrix": [[1, 0, 0]]}], "camera_angle_x": 0.7}))
    with pytest.raises(InputError, match="4x4"):
        cam.CameraRig.load(str(p))
    p.write_text(json.dumps({"views": [{"transform_matrix": np.eye(4).tolist()}]}))
    with pytest.raises(InputError, match="intrinsics"):
        cam.CameraRig.load(str(p))
    with pytest.raises(InputError, match="views"):
        cam.official_rig().select([21])


def test_preview_image(rig):
    img = cam.rig_preview(rig)
    assert img.shape == (384, 384, 3) and img.dtype == np.uint8
    assert (img.reshape(-1, 3) == [255, 120, 80]).all(axis=1).any()

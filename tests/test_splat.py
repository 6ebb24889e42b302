"""Core ComfyUI's SPLAT type, both ways (charactershot_core/gaussians/formats/splat_type.py, nodes/splat.py).

ComfyUI 0.3.75 has neither core's SPLAT class nor its splat nodes, so the checks of "what core's nodes read" use
``core_item`` / ``core_ply_bytes`` below: a re-implementation, written from core's documented conventions (the SPLAT
class docstring and the 3DGS .ply layout its Create 3D File writes), of how core reads a SPLAT item and stores it.
It is not a copy of core's code.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# every import of the package's modules is here
from charactershot_core.errors import InputError
from charactershot_core.gaussians.formats import splat_type as st
from charactershot_core.gaussians.raster._torch_raster import eval_sh
from charactershot_core.gaussians.cli import export_all
from charactershot_core.gaussians.fitting.data import MultiViewVideo
from charactershot_core.gaussians.formats import read_ply
from charactershot_core.gaussians.fitting.fit import FitConfig, initialize
from charactershot_core.gaussians.raster.views import render_views
from charactershot_core.gaussians.model import Gaussians4D, make_gaussians
from charactershot_core.gaussians.synthetic import SyntheticCharacter, SyntheticModel

C0 = 0.28209479177387814
TURN = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # z up -> y down: +90 degrees about X


# --------------------------------------------------------------------------- test-side readers (conventions)
def inria_frame(path) -> dict:
    """A 3DGS .ply read with plain numpy and the INRIA conventions applied: exp of the log-scales, sigmoid of the
    opacity logits, normalised wxyz rotations, SH (N, K, 3) from f_dc + the channel-major f_rest."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    assert lines[1] == "format binary_little_endian 1.0"
    n = int(next(ln.split()[2] for ln in lines if ln.startswith("element vertex")))
    names = [ln.split()[2] for ln in lines if ln.startswith("property float")]
    v = np.frombuffer(raw, dtype=[(p, "<f4") for p in names], count=n, offset=end)
    col = lambda *ps: np.stack([v[p].astype(np.float64) for p in ps], 1)  # noqa: E731
    rest = [p for p in names if p.startswith("f_rest_")]
    k = 1 + len(rest) // 3
    sh = np.zeros((n, k, 3))
    sh[:, 0] = col("f_dc_0", "f_dc_1", "f_dc_2")
    if rest:
        sh[:, 1:] = col(*rest).reshape(n, 3, k - 1).transpose(0, 2, 1)
    rot = col("rot_0", "rot_1", "rot_2", "rot_3")
    return {"positions": col("x", "y", "z"), "scales": np.exp(col("scale_0", "scale_1", "scale_2")),
            "rotations": rot / np.linalg.norm(rot, axis=1, keepdims=True),
            "opacities": 1.0 / (1.0 + np.exp(-v["opacity"].astype(np.float64))), "sh": sh}


def core_item(splat, i: int) -> dict:
    """How core's splat nodes read batch item ``i``: cut to ``counts[i]`` (or N when counts is None), opacities
    (n, 1) -> (n,), base colour = 0.5 + C0 * the DC term."""
    n = int(splat.counts[i]) if splat.counts is not None else splat.positions.shape[1]
    out = {k: getattr(splat, k)[i, :n].double().numpy() for k in ("positions", "scales", "rotations", "sh")}
    out["opacities"] = splat.opacities[i, :n].double().numpy().reshape(n)
    out["rgb"] = 0.5 + C0 * out["sh"][:, 0, :]
    return out


def core_ply_bytes(item: dict) -> bytes:
    """A .ply in the layout core documents for its splat export (standard 3DGS: log-scale, logit opacity, wxyz
    rot_0..3, f_rest channel-major)."""
    n, k = item["positions"].shape[0], item["sh"].shape[1]
    op = np.clip(item["opacities"], 1e-6, 1 - 1e-6)
    cols = [item["positions"], np.zeros((n, 3)), item["sh"][:, 0], item["sh"][:, 1:].transpose(0, 2, 1).reshape(n, -1),
            np.log(op / (1 - op))[:, None], np.log(item["scales"]), item["rotations"]]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{j}" for j in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    head = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
    head += "".join(f"property float {p}\n" for p in names) + "end_header\n"
    return head.encode() + np.concatenate(cols, 1).astype("<f4").tobytes()


def covariances(scales, rotations) -> np.ndarray:
    q = rotations / np.linalg.norm(rotations, axis=1, keepdims=True)
    w, x, y, z = q.T
    r = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                  2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                  2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1).reshape(-1, 3, 3)
    return (r * scales[:, None, :] ** 2) @ r.transpose(0, 2, 1)


def colours(sh, dirs) -> np.ndarray:
    degree = round(math.sqrt(sh.shape[1])) - 1
    return eval_sh(degree, torch.from_numpy(dirs), torch.from_numpy(sh)).numpy()


# ------------------------------------------------------------------------------------------------ models
def table_model(n=300, frames=4, sh_degree=2, seed=0) -> Gaussians4D:
    """Random anisotropic Gaussians with SH colours and real trajectories (every frame differs)."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 0.8])
    m = make_gaussians(pts, torch.rand(n, 3, generator=g), 0.02, sh_degree, [i / (frames - 1) for i in range(frames)],
                       None, motion="table")
    with torch.no_grad():
        s = m.splats
        s["scales"].add_(torch.randn(n, 3, generator=g) * 0.5)
        s["quats"].copy_(torch.randn(n, 4, generator=g))
        s["opacities"].copy_(torch.randn(n, generator=g) * 2)
        s["shN"].copy_(torch.randn(s["shN"].shape, generator=g) * 0.2)
        s["traj_means"].copy_(torch.randn(s["traj_means"].shape, generator=g) * 0.05)
        s["traj_quats"].add_(torch.randn(s["traj_quats"].shape, generator=g) * 0.2)
    return m


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = table_model()
    out = tmp_path_factory.mktemp("splat_ply")
    files = export_all(model, str(out), model.times, formats=["ply"])
    assert [p.rsplit("_", 1)[-1] for p in sorted(files)] == [f"{i:05d}.ply" for i in range(1, 5)]
    return model, [inria_frame(p) for p in sorted(files)]


# ----------------------------------------------------------------------- 4D -> SPLAT against the .ply export
def test_layout_dtype_and_value_ranges_are_core_conventions(exported):
    model, _ = exported
    s = st.gaussians_to_splat(model)
    assert isinstance(s, st.SplatBatch)
    n = model.num_gaussians
    assert tuple(s.positions.shape) == (4, n, 3) and tuple(s.scales.shape) == (4, n, 3)
    assert tuple(s.rotations.shape) == (4, n, 4) and tuple(s.opacities.shape) == (4, n, 1)
    assert tuple(s.sh.shape) == (4, n, 9, 3)  # degree 2: K = 9, DC at index 0
    assert s.counts is None  # every frame has the same Gaussians
    for t in s._comfy_cache_tensors()[:5]:
        assert t.dtype == torch.float32 and t.device.type == "cpu"
    assert bool((s.scales > 0).all()) and bool((s.opacities >= 0).all()) and bool((s.opacities <= 1).all())
    assert torch.allclose(s.rotations.norm(dim=-1), torch.ones(4, n), atol=1e-6)


def test_z_up_frames_equal_the_ply_frames_read_with_inria_conventions(exported):
    model, plys = exported
    s = st.gaussians_to_splat(model, axes=st.Z_UP)
    for i, ply in enumerate(plys):
        item = core_item(s, i)
        np.testing.assert_allclose(item["positions"], ply["positions"], atol=1e-6)
        np.testing.assert_allclose(item["scales"], ply["scales"], rtol=1e-5)
        np.testing.assert_allclose(item["rotations"], ply["rotations"], atol=1e-6)  # wxyz, same sign
        np.testing.assert_allclose(item["opacities"], ply["opacities"], atol=1e-6)
        np.testing.assert_allclose(item["sh"], ply["sh"], atol=1e-6)
        np.testing.assert_allclose(item["rgb"], 0.5 + C0 * ply["sh"][:, 0], atol=1e-6)
    # the frames move: a frame-by-frame comparison compares different things
    assert np.abs(plys[0]["positions"] - plys[3]["positions"]).max() > 0.01


def test_y_down_frames_are_the_ply_frames_turned_upright(exported):
    model, plys = exported
    s = st.gaussians_to_splat(model)  # default: core's y-down axes
    dirs = np.random.default_rng(0).normal(size=(plys[0]["positions"].shape[0], 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for i, ply in enumerate(plys):
        item = core_item(s, i)
        # our up (+z) is core's image-down axis' opposite (-y); our -y (the side the character faces) is -z
        np.testing.assert_allclose(item["positions"][:, 1], -ply["positions"][:, 2], atol=1e-6)
        np.testing.assert_allclose(item["positions"][:, 2], ply["positions"][:, 1], atol=1e-6)
        np.testing.assert_allclose(item["positions"], ply["positions"] @ TURN.T, atol=1e-6)
        # the same ellipsoids, turned: covariance' = R cov R^T; sizes and opacities unchanged
        np.testing.assert_allclose(covariances(item["scales"], item["rotations"]),
                                   TURN @ covariances(ply["scales"], ply["rotations"]) @ TURN.T, atol=1e-7)
        np.testing.assert_allclose(item["scales"], ply["scales"], rtol=1e-5)
        np.testing.assert_allclose(item["opacities"], ply["opacities"], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(item["rotations"], axis=1), 1.0, atol=1e-6)
        # the view-dependent colour turns with the splat: seen from R d it is what the .ply shows from d
        np.testing.assert_allclose(colours(item["sh"], dirs @ TURN.T), colours(ply["sh"], dirs), atol=2e-5)
        np.testing.assert_allclose(item["sh"][:, 0], ply["sh"][:, 0], atol=1e-7)  # DC: the base colour


def test_core_style_ply_of_a_z_up_item_is_our_ply(exported, tmp_path):
    model, plys = exported
    s = st.gaussians_to_splat(model, frames="3", axes=st.Z_UP)
    path = tmp_path / "core.ply"
    path.write_bytes(core_ply_bytes(core_item(s, 0)))
    ours = read_ply(path)  # our reader takes what core's layout writes
    again = inria_frame(path)
    for key in ("positions", "scales", "rotations", "opacities", "sh"):
        np.testing.assert_allclose(again[key], plys[2][key], atol=2e-6, rtol=1e-5)
    assert ours["sh_degree"] == 2


def test_frame_selection_picks_frames_by_number(exported):
    model, plys = exported
    s = st.gaussians_to_splat(model, frames="4, 2-3", axes=st.Z_UP)
    assert s.batch_size == 3
    for item, k in zip(range(3), (3, 1, 2)):
        np.testing.assert_allclose(core_item(s, item)["positions"], plys[k]["positions"], atol=1e-6)
    for bad, what in (("0", "outside 1 to 4"), ("5", "outside 1 to 4"), ("3-2", "outside"), ("x", "frame numbers")):
        with pytest.raises(InputError, match=f"frames: .*{what}"):
            st.gaussians_to_splat(model, frames=bad)
    with pytest.raises(InputError, match="axes: expected one of"):
        st.gaussians_to_splat(model, axes="sideways")


def test_static_model_is_one_item():
    static = make_gaussians(torch.randn(50, 3), torch.rand(50, 3), 0.05, 0, [0.0], None, motion=None)
    s = st.gaussians_to_splat(static)
    assert s.batch_size == 1 and s.counts is None and tuple(s.sh.shape) == (1, 50, 1, 3)
    with pytest.raises(InputError, match="frames: frame 2 is outside 1 to 1"):
        st.gaussians_to_splat(static, frames="2")


def test_hexplane_model_frames_are_its_baked_frames():
    field = {"resolution": [4, 4, 4, 3], "features": 4, "multires": [1], "width": 8}
    m = make_gaussians(torch.randn(30, 3), torch.rand(30, 3), 0.05, 1, [0.0, 0.5, 1.0], field, motion="hexplane")
    with torch.no_grad():
        for p in m.deformation.parameters():
            p.normal_(0, 1.0)  # a field that moves the Gaussians
    s = st.gaussians_to_splat(m, axes=st.Z_UP)
    assert s.batch_size == 3
    for i, t in enumerate(m.times):
        b = m.baked(t)
        np.testing.assert_allclose(core_item(s, i)["positions"], b["means"].numpy(), atol=1e-6)
        np.testing.assert_allclose(core_item(s, i)["scales"], np.exp(b["scales"].numpy()), rtol=1e-5)
    assert np.abs(core_item(s, 0)["positions"] - core_item(s, 2)["positions"]).max() > 1e-4


def test_items_of_different_lengths_carry_counts_and_zero_padding():
    a = table_model(n=40, frames=2, sh_degree=1, seed=1)
    b = make_gaussians(torch.randn(25, 3), torch.rand(25, 3), 0.05, 0, [0.0], None, motion=None)
    ia, ib = st.frame_item(a, 0.0), st.frame_item(b)
    s = st.SplatBatch.from_items([ia, ib])
    assert s.counts is not None and s.counts.dtype == torch.int64 and s.counts.tolist() == [40, 25]
    assert tuple(s.positions.shape) == (2, 40, 3) and tuple(s.sh.shape) == (2, 40, 4, 3)  # SH padded to degree 1
    assert float(s.positions[1, 25:].abs().max()) == 0.0 and float(s.sh[1, :, 1:].abs().max()) == 0.0
    got = core_item(s, 1)
    assert got["positions"].shape == (25, 3)
    np.testing.assert_allclose(got["positions"], ib["positions"].numpy(), atol=0)
    np.testing.assert_allclose(got["sh"][:, :1], ib["sh"].numpy(), atol=0)
    np.testing.assert_allclose(core_item(s, 0)["opacities"], ia["opacities"].numpy(), atol=0)
    # and the item read back as Gaussians is the short one, not its padding
    assert st.splat_to_gaussians(s, 1, st.Z_UP).num_gaussians == 25


# ------------------------------------------------------------------------------------- SPLAT -> Gaussians
def random_splat(b=2, n=60, k=9, seed=0) -> st.SplatBatch:
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(b, n, 4, generator=g), dim=-1)
    return st.SplatBatch(torch.randn(b, n, 3, generator=g), torch.rand(b, n, 3, generator=g) * 0.1 + 1e-3, q,
                         torch.rand(b, n, 1, generator=g) * 0.98 + 0.01, torch.randn(b, n, k, 3, generator=g) * 0.3,
                         torch.tensor([n, n - 17]))


@pytest.mark.parametrize("axes", st.AXES)
def test_round_trip_splat_to_gaussians_to_splat(axes):
    s = random_splat()
    model = st.splat_to_gaussians(s, item=1, axes=axes)
    assert not model.is_dynamic and model.num_gaussians == 43 and model.sh_degree == 2
    back = st.gaussians_to_splat(model, axes=axes)
    want, got = core_item(s, 1), core_item(back, 0)
    assert back.counts is None and back.batch_size == 1
    np.testing.assert_allclose(got["positions"], want["positions"], atol=1e-6)
    np.testing.assert_allclose(got["scales"], want["scales"], rtol=1e-5)
    np.testing.assert_allclose(got["rotations"], want["rotations"], atol=1e-6)
    np.testing.assert_allclose(got["opacities"], want["opacities"], atol=1e-6)
    np.testing.assert_allclose(got["sh"], want["sh"], atol=1e-5)


def test_round_trip_gaussians_to_splat_to_gaussians(exported):
    model, _ = exported
    s = st.gaussians_to_splat(model, frames="2")
    static = st.splat_to_gaussians(s)
    want, got = model.baked(model.times[1]), static.baked()
    for key, tol in (("means", 1e-6), ("scales", 1e-5), ("quats", 1e-6), ("opacities", 1e-4), ("sh0", 1e-6),
                     ("shN", 1e-5)):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), atol=tol, err_msg=key)


def test_sh_degree_of_the_result_can_be_cut_or_padded():
    s = random_splat(k=16)
    assert st.splat_to_gaussians(s, sh_degree=1).sh_degree == 1
    assert st.splat_to_gaussians(s, sh_degree=3).sh_degree == 3
    low = random_splat(k=1)
    model = st.splat_to_gaussians(low, sh_degree=2)
    assert model.sh_degree == 2 and float(model.splats["shN"].detach().abs().max()) == 0.0


def test_bad_splats_are_clear_errors():
    with pytest.raises(InputError, match="splat: expected a SPLAT"):
        st.splat_to_gaussians({"positions": 1})
    s = random_splat()
    with pytest.raises(InputError, match="splat: item 3 does not exist: the SPLAT holds 2 item"):
        st.splat_to_gaussians(s, item=2)
    bad = random_splat()
    bad.scales = bad.scales[:, :, :2]
    with pytest.raises(InputError, match=r"splat: expected scales of shape \(2, 60, 3\)"):
        st.splat_to_gaussians(bad)
    bad = random_splat()
    bad.opacities = bad.opacities * 3  # logits, not opacities
    with pytest.raises(InputError, match=r"opacities of item 1 must lie in \[0, 1\]"):
        st.splat_to_gaussians(bad)
    bad = random_splat()
    bad.sh = bad.sh[:, :, :5]
    with pytest.raises(InputError, match=r"\(degree \+ 1\)\^2 SH coefficients"):
        st.splat_to_gaussians(bad)
    bad = random_splat()
    bad.positions[0, 3, 1] = float("nan")
    with pytest.raises(InputError, match="positions of item 1 contain NaN"):
        st.splat_to_gaussians(bad)
    bad = random_splat()
    bad.counts = torch.tensor([60, 61])
    with pytest.raises(InputError, match="initial_splat: expected counts of 2 lengths in 0..60"):
        st.splat_to_gaussians(bad, name="initial_splat")


# --------------------------------------------------------------------------------------- fit initialisation
def test_fit_starts_from_a_splat_of_the_character():
    """Starting from the true character (as a y-down SPLAT of the middle frame) renders the views far better than
    the visual hull does before any optimisation: the Gaussians are used, in the right place and orientation."""
    from charactershot_core.cameras import orbit_rig

    rig = orbit_rig(num_views=6, width=64, height=48, square_size=48)
    times = [0.0, 0.5, 1.0]
    video = MultiViewVideo(torch.from_numpy(SyntheticCharacter("wave", seed=1, n_gaussians=1200)
                                            .render_views(rig, times, backend="torch")), rig, times)
    truth = SyntheticModel("wave", n_gaussians=1200, frames=3, seed=1)
    splat = st.gaussians_to_splat(truth, frames="2")  # the middle frame, core's axes
    cfg = FitConfig(iterations=1, init_points=1000, backend="torch", seed=0, densify=False, sh_degree=1)
    hull = initialize(video, cfg)
    start = initialize(video, cfg, st.splat_to_gaussians(splat))
    assert start.num_gaussians == 1000 and start.motion == "table" and start.sh_degree == 1  # capped, fit's motion
    assert float(start.splats["traj_means"].detach().abs().max()) == 0.0  # identity trajectories

    def err(model):
        img = render_views(model, rig, [0.5], "torch")[:, 0]
        return float((img - video.frames[:, 1]).abs().mean())

    e_hull, e_start = err(hull), err(start)
    print(f"mean abs error at the middle frame: hull {e_hull:.4f}, from the splat {e_start:.4f}")
    assert e_start < 0.5 * e_hull, (e_hull, e_start)
    # the same splat in the wrong axes lands elsewhere: the axes matter
    wrong = initialize(video, cfg, st.splat_to_gaussians(splat, axes=st.Z_UP))
    assert err(wrong) > 2 * e_start


# ------------------------------------------------------------------------------------------- real host
RIG = {"class_type": "CharacterShotCameraRig",
       "inputs": {"preset": "custom_orbit", "num_views": 6, "radius": 3.5, "elevation": 0.0, "look_at_height": 0.7,
                  "fov": 39.6, "start_azimuth": 0.0, "direction": "counterclockwise", "width": 64, "height": 48}}
SYNTH = {"class_type": "CharacterShotSyntheticCharacter",
         "inputs": {"motion": "wave", "num_frames": 3, "scale": 1.0, "seed": 0, "num_gaussians": 800,
                    "cameras": ["1", 0], "backend": "torch"}}


def _fit(source, iterations, initial_gaussians, **extra):
    inputs = {"multiview": list(source), "iterations": iterations, "seconds": 0.0, "scale": 1.0, "sh_degree": 0,
              "batch_views": 2, "initial_gaussians": initial_gaussians, "neighbour_weight": 1.0, "densify": False,
              "backend": "torch", "seed": 0, "preview_every": 0, **extra}
    return {"class_type": "CharacterShotFit4DGaussians", "inputs": inputs}


def _save(source, prefix):
    return {"class_type": "CharacterShotSave4DGaussians",
            "inputs": {"gaussians": list(source), "filename_prefix": prefix, "times": "", "save_ply": True,
                       "save_bundle": False, "save_weights": False}}


@pytest.mark.e2e
def test_splat_nodes_in_a_real_workflow(comfy, tmp_path):
    # the socket type is the string newer core declares for io.Splat
    info = comfy.object_info()
    to_splat, from_splat = info["CharacterShot4DGaussiansToSplat"], info["CharacterShotSplatTo4DGaussians"]
    assert to_splat["output"] == ["SPLAT"]
    assert from_splat["input"]["required"]["splat"][0] == "SPLAT"
    assert info["CharacterShotFit4DGaussians"]["input"]["optional"]["initial_splat"][0] == "SPLAT"
    assert to_splat["input"]["optional"]["axes"][1].get("advanced") is True

    # fit -> frames as a SPLAT -> (a) back to Gaussians and saved, (b) the start of a second fit
    prompt = {"1": RIG, "2": SYNTH, "3": _fit(("2", 0), 6, 600),
              "4": {"class_type": "CharacterShot4DGaussiansToSplat",
                    "inputs": {"gaussians": ["3", 0], "frames": "2"}},
              "5": {"class_type": "CharacterShotSplatTo4DGaussians", "inputs": {"splat": ["4", 0], "item": 1}},
              "6": _save(("5", 0), "charactershot/splat_back"),
              "7": _save(("3", 0), "charactershot/splat_src"),
              "8": _fit(("2", 0), 2, 500, initial_splat=["4", 0]),
              "9": _save(("8", 0), "charactershot/splat_fit2"),
              "10": {"class_type": "CharacterShotPreview4D",
                     "inputs": {"gaussians": ["5", 0], "times": "", "turntable_frames": 1}}}
    hist = comfy.run(prompt, timeout=300)
    out = hist["outputs"]
    assert "1 frame(s) x 600 Gaussians, SH degree 0" in "".join(out["4"]["text"])
    assert "600 Gaussians, SH degree 0, from item 1" in "".join(out["5"]["text"])
    assert "500 Gaussians" in "".join(out["8"]["text"])  # the second fit started from the splat (capped)
    # the single splat previews like any static model: a one-frame bundle and a turntable image with the character
    assert out["10"]["charshot_preview"][0]["filename"].endswith(".cs4d")
    turn = out["10"]["charshot_turntable"][0]
    img = np.asarray(Image.open(io.BytesIO(comfy.view(turn["filename"], turn["subfolder"], "temp"))).convert("RGB"))
    assert img.min() < 200 and (img.reshape(-1, 3) == 255).all(1).mean() > 0.3  # a character on white

    def ply(node, suffix):
        name = next(f["filename"] for f in out[node]["charshot_4d"] if f["filename"].endswith(suffix))
        path = tmp_path / name
        path.write_bytes(comfy.view(name, "charactershot", "output"))
        return inria_frame(path)

    back, src = ply("6", "_gaussians.ply"), ply("7", "_frame_00002.ply")
    assert ply("9", "_frame_00002.ply")["positions"].shape == (500, 3)
    for key in ("positions", "scales", "rotations", "opacities", "sh"):
        np.testing.assert_allclose(back[key], src[key], atol=1e-5, rtol=1e-4, err_msg=key)

    # a bad selection is a clear error naming the input
    from tests.comfy_host import WorkflowError

    bad = {"1": RIG, "2": SYNTH, "3": _fit(("2", 0), 1, 300),
           "4": {"class_type": "CharacterShot4DGaussiansToSplat", "inputs": {"gaussians": ["3", 0], "frames": "9"}},
           "5": {"class_type": "CharacterShotSplatTo4DGaussians", "inputs": {"splat": ["4", 0]}},
           "6": _save(("5", 0), "charactershot/splat_bad")}
    with pytest.raises(WorkflowError, match="frames: frame 9 is outside 1 to 3"):
        comfy.run(bad, timeout=300)

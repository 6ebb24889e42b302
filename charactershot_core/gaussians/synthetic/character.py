"""A procedural, articulated, textured synthetic character as ground-truth 3D Gaussians at any time t in [0, 1].

The character is about 1.8 m tall, stands on z = 0 centred on the z axis and faces -y (towards view 0 of the
official rig), like the official template's character. Its body is a skeleton of 15 bones (pelvis, spine, neck,
head, arms, legs) with ellipsoidal body parts whose surfaces carry flat Gaussians; the texture is procedural (striped
shirt, checked trousers, skin, face with eyes and mouth, hair, belt, shoes). Every Gaussian is rigidly attached to
one bone, so the motions move it by forward kinematics: positions and rotations change with t, scales, colours and
opacities do not. Motions over t in [0, 1]:

* ``idle``: breathing and a slow look around (small);
* ``wave`` (the demo's default): the right arm rises to the side, waves from the elbow and comes down again;
* ``walk``: one walk cycle in place: the legs swing past each other (each foot in front once) and the arms swing
  against them;
* ``jump``: crouch, jump with the arms forward, land and crouch;
* ``turn``: the whole body turns by ``TURN_DEGREES`` (135 degrees) to its left about the vertical axis, stepping
  round on the spot (each foot lifts once), the head leading the turn.

    char = SyntheticCharacter("wave", seed=0, n_gaussians=20000)
    g = char.gaussians_at(0.5)                       # dict of torch tensors: means, quats, scales, opacities, colors
    views = char.render_views(official_rig(), [i / 24 for i in range(25)], scale=0.25)   # (V, T, H, W, 3) white bg
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import InputError
from ..rotations import quat_mul, rotmat_to_quat, rx, ry, rz

MOTIONS = ("idle", "wave", "walk", "jump", "turn")
DEFAULT_MOTION = "wave"  # the demo's arm raise
TURN_DEGREES = 135.0  # how far the "turn" motion turns the whole body about the vertical axis


# ------------------------------------------------------------------------------------------- skeleton
# name, parent, rest joint position (world, metres; the character faces -y, its right side is at -x)
_BONES = [
    ("pelvis", None, (0.0, 0.0, 0.95)),
    ("spine", "pelvis", (0.0, 0.0, 1.0)),
    ("neck", "spine", (0.0, 0.0, 1.47)),
    ("r_upper_arm", "spine", (-0.2, 0.0, 1.42)),
    ("r_forearm", "r_upper_arm", (-0.22, 0.0, 1.14)),
    ("l_upper_arm", "spine", (0.2, 0.0, 1.42)),
    ("l_forearm", "l_upper_arm", (0.22, 0.0, 1.14)),
    ("r_thigh", "pelvis", (-0.1, 0.0, 0.9)),
    ("r_shin", "r_thigh", (-0.1, 0.0, 0.49)),
    ("r_foot", "r_shin", (-0.1, 0.0, 0.09)),
    ("l_thigh", "pelvis", (0.1, 0.0, 0.9)),
    ("l_shin", "l_thigh", (0.1, 0.0, 0.49)),
    ("l_foot", "l_shin", (0.1, 0.0, 0.09)),
]
_BONE_INDEX = {b[0]: i for i, b in enumerate(_BONES)}

# body parts: name, bone, centre, half-axes (in the rest pose, world-aligned), material
_PARTS = [
    ("torso", "spine", (0.0, 0.0, 1.2), (0.17, 0.105, 0.27), "shirt"),
    ("hips", "pelvis", (0.0, 0.0, 0.93), (0.165, 0.11, 0.11), "trousers"),
    ("neck", "neck", (0.0, 0.0, 1.51), (0.05, 0.05, 0.06), "skin"),
    ("head", "neck", (0.0, -0.005, 1.665), (0.09, 0.1, 0.118), "head"),
    ("r_upper_arm", "r_upper_arm", (-0.21, 0.0, 1.28), (0.048, 0.048, 0.16), "shirt"),
    ("r_forearm", "r_forearm", (-0.225, 0.0, 1.0), (0.04, 0.04, 0.15), "skin"),
    ("r_hand", "r_forearm", (-0.23, 0.0, 0.8), (0.03, 0.045, 0.06), "skin"),
    ("l_upper_arm", "l_upper_arm", (0.21, 0.0, 1.28), (0.048, 0.048, 0.16), "shirt"),
    ("l_forearm", "l_forearm", (0.225, 0.0, 1.0), (0.04, 0.04, 0.15), "skin"),
    ("l_hand", "l_forearm", (0.23, 0.0, 0.8), (0.03, 0.045, 0.06), "skin"),
    ("r_thigh", "r_thigh", (-0.1, 0.0, 0.69), (0.075, 0.075, 0.23), "trousers"),
    ("r_shin", "r_shin", (-0.1, 0.0, 0.29), (0.058, 0.058, 0.22), "trousers"),
    ("r_foot", "r_foot", (-0.1, -0.05, 0.045), (0.05, 0.12, 0.045), "shoe"),
    ("l_thigh", "l_thigh", (0.1, 0.0, 0.69), (0.075, 0.075, 0.23), "trousers"),
    ("l_shin", "l_shin", (0.1, 0.0, 0.29), (0.058, 0.058, 0.22), "trousers"),
    ("l_foot", "l_foot", (0.1, -0.05, 0.045), (0.05, 0.12, 0.045), "shoe"),
]


def _ellipsoid_area(a, b, c):
    p = 1.6075  # Knud Thomsen's approximation
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def _texture(material: str, p: np.ndarray, n: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Procedural colours (M, 3) in [0, 1] for rest-pose surface points ``p`` with outward normals ``n``."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    if material == "shirt":
        base = np.array([0.13, 0.45, 0.72])
        stripe = (np.sin(z * 2 * math.pi / 0.06) > 0.55)[:, None]
        col = np.where(stripe, np.array([0.93, 0.93, 0.88]), base)
        # a yellow star-like badge on the chest (front)
        badge = (np.hypot(x - 0.07, z - 1.33) < 0.035) & (y < 0)
        col[badge] = (0.98, 0.8, 0.1)
    elif material == "trousers":
        check = ((np.floor(x / 0.05) + np.floor(z / 0.05)) % 2 == 0)[:, None]
        col = np.where(check, np.array([0.2, 0.22, 0.36]), np.array([0.28, 0.3, 0.46]))
        belt = (z > 0.975) & (z < 1.02)
        col[belt] = (0.42, 0.25, 0.1)
    elif material == "skin":
        col = np.tile(np.array([0.93, 0.72, 0.58]), (p.shape[0], 1))
    elif material == "shoe":
        col = np.where((z < 0.025)[:, None], np.array([0.95, 0.95, 0.95]), np.array([0.75, 0.12, 0.1]))
    elif material == "head":
        col = np.tile(np.array([0.93, 0.72, 0.58]), (p.shape[0], 1))
        hair = (n[:, 2] > 0.25) | ((n[:, 1] > 0.2) & (z > 1.6)) | ((np.abs(n[:, 0]) > 0.75) & (z > 1.66))
        col[hair] = (0.3, 0.18, 0.08)
        front = y < -0.05
        eyes = front & (np.abs(z - 1.685) < 0.016) & (np.abs(np.abs(x) - 0.035) < 0.016)
        col[eyes] = (0.05, 0.05, 0.1)
        mouth = front & (np.abs(z - 1.615) < 0.009) & (np.abs(x) < 0.03)
        col[mouth] = (0.75, 0.15, 0.2)
    else:  # pragma: no cover - internal table
        raise ValueError(material)
    col = col + rng.normal(0.0, 0.015, size=col.shape)
    return np.clip(col, 0.0, 1.0)


def _smooth(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class _Pose:
    root_offset: np.ndarray  # (3,) translation of the pelvis
    local: dict  # bone name -> 3x3 local rotation (applied at the bone's joint, in the parent's frame)


def _pose(motion: str, t: float) -> _Pose:
    d = math.radians
    w = 2 * math.pi * t
    loc: dict = {}
    off = np.zeros(3)
    if motion == "idle":
        loc["spine"] = rx(d(2.5) * math.sin(w)) @ rz(d(4) * math.sin(w))
        loc["neck"] = rz(d(12) * math.sin(w)) @ rx(d(4) * math.sin(2 * w))
        loc["r_upper_arm"] = ry(d(6 + 3 * math.sin(w)))
        loc["l_upper_arm"] = ry(-d(6 + 3 * math.sin(w)))
        loc["r_forearm"] = rx(-d(8))
        loc["l_forearm"] = rx(-d(8))
        off[2] = -0.006 * (1 - math.cos(w))
    elif motion == "wave":
        raise_ = _smooth(t / 0.2) * _smooth((1.0 - t) / 0.2)  # raise, wave, lower
        # upper arm out to the side just above horizontal, forearm up, waving side to side about the elbow
        loc["r_upper_arm"] = ry(d(100) * raise_ + d(6) * (1 - raise_))
        loc["r_forearm"] = ry(raise_ * (d(75) + d(25) * math.sin(2 * w * 2))) @ rx(-d(10))
        loc["l_upper_arm"] = ry(-d(7))
        loc["l_forearm"] = rx(-d(10))
        loc["neck"] = rz(-d(10) * raise_)
        loc["spine"] = ry(d(4) * raise_)
    elif motion == "walk":
        s = math.sin(w)
        loc["r_thigh"] = rx(-d(28) * s)
        loc["l_thigh"] = rx(d(28) * s)
        loc["r_shin"] = rx(d(45) * max(0.0, -math.sin(w + 0.6)))
        loc["l_shin"] = rx(d(45) * max(0.0, math.sin(w + 0.6)))
        loc["r_foot"] = rx(-d(10) * s)
        loc["l_foot"] = rx(d(10) * s)
        loc["r_upper_arm"] = rx(d(24) * s) @ ry(d(6))
        loc["l_upper_arm"] = rx(-d(24) * s) @ ry(-d(6))
        loc["r_forearm"] = rx(-d(15) - d(10) * max(0.0, -s))
        loc["l_forearm"] = rx(-d(15) - d(10) * max(0.0, s))
        loc["spine"] = rz(d(6) * s)
        loc["pelvis"] = rz(-d(5) * s)
    elif motion == "jump":
        crouch = max(_bump(t, 0.05, 0.3), _bump(t, 0.78, 1.0))  # 0..1
        air = math.sin(math.pi * (t - 0.3) / 0.48) if 0.3 < t < 0.78 else 0.0
        knee = d(70) * crouch
        loc["r_thigh"] = rx(-knee)
        loc["l_thigh"] = rx(-knee)
        loc["r_shin"] = rx(2 * knee)
        loc["l_shin"] = rx(2 * knee)
        loc["r_foot"] = rx(-knee)
        loc["l_foot"] = rx(-knee)
        loc["spine"] = rx(-d(20) * crouch)
        arms = d(75) * air + d(25) * crouch  # arms swing forward (kept inside the official frame)
        loc["r_upper_arm"] = ry(d(12) * air) @ rx(-arms)
        loc["l_upper_arm"] = ry(-d(12) * air) @ rx(-arms)
        loc["r_forearm"] = rx(-d(20))
        loc["l_forearm"] = rx(-d(20))
        off[2] = -(0.41 + 0.4) * (1 - math.cos(knee)) + 0.14 * air
    elif motion == "turn":
        # the pelvis (the skeleton's root) turns about the vertical axis, eased in and out; the character faces -y
        # and turns to its left, i.e. counter-clockwise seen from above (+z)
        turn = d(TURN_DEGREES) * _smooth(t)
        lead = d(15) * _bump(t, 0.0, 0.8)  # the head turns first
        loc["pelvis"] = rz(turn)
        loc["neck"] = rz(lead)
        step_l, step_r = _bump(t, 0.1, 0.5), _bump(t, 0.45, 0.85)
        loc["l_thigh"] = rx(-d(30) * step_l)
        loc["l_shin"] = rx(d(55) * step_l)
        loc["r_thigh"] = rx(-d(30) * step_r)
        loc["r_shin"] = rx(d(55) * step_r)
        loc["r_upper_arm"] = ry(d(10) + d(8) * _bump(t, 0.1, 0.9))
        loc["l_upper_arm"] = ry(-d(10) - d(8) * _bump(t, 0.1, 0.9))
        loc["r_forearm"] = rx(-d(12))
        loc["l_forearm"] = rx(-d(12))
    else:
        raise InputError("motion", f"expected one of {', '.join(MOTIONS)}, got {motion!r}")
    return _Pose(off, loc)


def _bump(t, a, b):
    """0 outside [a, b], a smooth 0 -> 1 -> 0 bump inside."""
    if t <= a or t >= b:
        return 0.0
    return math.sin(math.pi * (t - a) / (b - a)) ** 2


class SyntheticCharacter:
    """Procedural articulated character; see the module docstring."""

    def __init__(self, motion: str = DEFAULT_MOTION, seed: int = 0, n_gaussians: int = 20000, opacity: float = 0.95):
        if motion not in MOTIONS:
            raise InputError("motion", f"expected one of {', '.join(MOTIONS)}, got {motion!r}")
        n_gaussians = int(n_gaussians)
        if n_gaussians < len(_PARTS) * 8:
            raise InputError("n_gaussians", f"expected at least {len(_PARTS) * 8} Gaussians, got {n_gaussians}")
        if not 0.0 < opacity <= 1.0:
            raise InputError("opacity", f"expected an opacity in (0, 1], got {opacity}")
        self.motion, self.seed, self.n_gaussians = motion, int(seed), n_gaussians
        rng = np.random.default_rng(self.seed)
        areas = np.array([_ellipsoid_area(*p[3]) for p in _PARTS])
        counts = np.maximum(8, np.floor(areas / areas.sum() * n_gaussians).astype(int))
        counts[np.argmax(counts)] += n_gaussians - counts.sum()
        pts, normals, bone, cols, tang_scale, rots = [], [], [], [], [], []
        for (name, bone_name, centre, axes, material), cnt, area in zip(_PARTS, counts, areas):
            axes_a = np.asarray(axes)
            u = _fibonacci_sphere(cnt, rng)  # even coverage
            p = u * axes_a + np.asarray(centre)
            nrm = u / axes_a
            nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
            pts.append(p)
            normals.append(nrm)
            bone.append(np.full(cnt, _BONE_INDEX[bone_name]))
            cols.append(_texture(material, p, nrm, rng))
            # local spacing of the surface samples (area per sample), to size the splats so they overlap
            # (Fibonacci points are even on the sphere; the ellipsoid stretches them by up to the axis ratio)
            spacing = math.sqrt(area / cnt)
            tang_scale.append(np.full(cnt, 0.6 * spacing))
            rots.append(_frame_from_normal(nrm))
        self._rest_means = np.concatenate(pts)
        self._normals = np.concatenate(normals)
        self._bone = np.concatenate(bone)
        self.colors = np.concatenate(cols).astype(np.float32)
        ts = np.concatenate(tang_scale)
        self.scales = np.stack([ts, ts, 0.25 * ts], 1).astype(np.float32)
        self._rest_quats = rotmat_to_quat(np.concatenate(rots))
        self.opacities = np.full(self._rest_means.shape[0], opacity, np.float32)
        self._joint_rest = np.array([b[2] for b in _BONES], dtype=np.float64)

    def __len__(self):
        return self._rest_means.shape[0]

    # ----------------------------------------------------------------------------------------- kinematics
    def bone_transforms(self, t: float):
        """World rotation (B, 3, 3) and joint position (B, 3) of every bone at time ``t``."""
        t = float(t)
        if not math.isfinite(t):
            raise InputError("time", f"expected a finite time in [0, 1], got {t}")
        pose = _pose(self.motion, min(1.0, max(0.0, t)))
        rot = np.zeros((len(_BONES), 3, 3))
        pos = np.zeros((len(_BONES), 3))
        for i, (name, parent, rest) in enumerate(_BONES):
            local = pose.local.get(name, np.eye(3))
            if parent is None:
                rot[i] = local
                pos[i] = np.asarray(rest) + pose.root_offset
            else:
                j = _BONE_INDEX[parent]
                rot[i] = rot[j] @ local
                pos[i] = pos[j] + rot[j] @ (np.asarray(rest) - self._joint_rest[j])
        if self.motion == "walk":  # keep the lower foot on the ground (walking in place)
            ankles = [_BONE_INDEX["r_foot"], _BONE_INDEX["l_foot"]]
            pos[:, 2] += self._joint_rest[ankles[0], 2] - pos[ankles, 2].min()
        return rot, pos

    def gaussians_at(self, t: float, device=None, dtype=torch.float32) -> dict:
        """Ground-truth Gaussians at time ``t``: ``means`` (N, 3), ``quats`` (N, 4) wxyz, ``scales`` (N, 3) linear,
        ``opacities`` (N,) in [0, 1], ``colors`` (N, 3) RGB in [0, 1], as torch tensors."""
        rot, pos = self.bone_transforms(t)
        b = self._bone
        rel = self._rest_means - self._joint_rest[b]
        means = np.einsum("nij,nj->ni", rot[b], rel) + pos[b]
        quats = quat_mul(rotmat_to_quat(rot)[b], self._rest_quats)
        out = {"means": means, "quats": quats, "scales": self.scales, "opacities": self.opacities,
               "colors": self.colors}
        return {k: torch.as_tensor(np.asarray(v), dtype=dtype, device=device) for k, v in out.items()}

    def render_views(self, rig, times, scale: float = 1.0, backend: str = "auto", device=None) -> np.ndarray:
        """Render every camera of ``rig`` (scaled by ``scale``) at every time -> (V, T, H, W, 3) float32 in [0, 1]
        on a white background. ``device`` defaults to the GPU when CUDA is available and ``backend`` is not
        ``"torch"``."""
        from ..raster.render import rasterize

        if device is None:
            device = "cuda" if backend != "torch" and torch.cuda.is_available() else "cpu"

        times = [float(x) for x in (times.tolist() if hasattr(times, "tolist") else times)]
        if not times:
            raise InputError("times", "expected at least one frame time")
        if scale != 1.0:
            rig = rig.scaled(scale)
        vm, ks = rig.viewmats(device=device), rig.Ks(device=device)
        bg = torch.ones(len(rig), 3, device=device)
        out = np.zeros((len(rig), len(times), rig.height, rig.width, 3), np.float32)
        with torch.no_grad():
            for k, t in enumerate(times):
                g = self.gaussians_at(t, device=device)
                img, _, _ = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"], vm, ks,
                                      rig.width, rig.height, backend=backend, backgrounds=bg)
                out[:, k] = img.clamp(0, 1).cpu().numpy()
        return out


class SyntheticModel:
    """The synthetic character's exact Gaussians behind the interface the exporters read (``times``, ``baked(t)``,
    ``sh_degree``, ``is_dynamic``, ``num_gaussians``, ``config``): exports of a known motion, without a fit."""

    def __init__(self, motion: str = "wave", n_gaussians: int = 3000, frames: int = 5, seed: int = 0):
        if frames < 2:
            raise InputError("frames", f"expected at least 2 frames, got {frames}")
        self.character = SyntheticCharacter(motion, seed=seed, n_gaussians=n_gaussians)
        self.config = {"times": [i / (frames - 1) for i in range(frames)], "rasterize_mode": "classic"}
        self.sh_degree, self.is_dynamic, self.num_gaussians = 0, True, n_gaussians

    @property
    def times(self) -> list:
        return self.config["times"]

    def baked(self, t=None) -> dict:
        """Pre-activation parameters at time ``t`` (as ``Gaussians4D.baked``)."""
        from ..model import rgb_to_sh0

        g = self.character.gaussians_at(0.0 if t is None else float(t))
        o = g["opacities"].clamp(1e-4, 1 - 1e-4)
        return {"means": g["means"], "scales": torch.log(g["scales"]), "quats": g["quats"],
                "opacities": torch.log(o / (1 - o)), "sh0": rgb_to_sh0(g["colors"])[:, None],
                "shN": torch.zeros(g["means"].shape[0], 0, 3)}


def _fibonacci_sphere(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` nearly evenly spread unit vectors (a randomly rotated Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = math.pi * (1 + 5 ** 0.5) * i
    v = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return v @ q.T


def _frame_from_normal(n: np.ndarray) -> np.ndarray:
    """Rotation matrices whose third column is the normal ``n`` (N, 3)."""
    helper = np.where(np.abs(n[:, 2:3]) < 0.9, np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
    t1 = np.cross(helper, n)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(n, t1)
    return np.stack([t1, t2, n], axis=2)

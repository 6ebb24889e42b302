"""Camera rigs: the official 21-view orbit, custom orbits, conventions, Plücker ray maps and view groups.

Conventions
-----------
* World: Z up, the character stands on z = 0 around the z axis (the official template, spec §C.2).
* ``c2w_gl``: camera-to-world 4x4 in the Blender/OpenGL convention of the official template (camera x right,
  y up, looks down -z). ``c2w_cv`` is the OpenCV convention (x right, y down, looks down +z) that gsplat uses:
  ``c2w_cv = c2w_gl @ diag(1, -1, -1, 1)``; ``viewmats = inverse(c2w_cv)`` (world-to-camera).
* Intrinsics are pinhole, in pixels of the canvas (``width`` x ``height``), pixel centres at ``u + 0.5``:
  a 3D point in camera coordinates (x, y, z) lands at ``u = fx x / z + cx``, ``v = fy y / z + cy`` where (u, v) are
  continuous pixel coordinates whose pixel ``j`` covers ``[j, j + 1)``.
* The official square render (FoV 39.6° over 480x480) pasted centred on the 720x480 canvas gives
  ``fx = fy = 240 / tan(19.8°) ≈ 666.7``, ``cx = 360``, ``cy = 240``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from .errors import InputError

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])

#: view groups of the official 4D CLI (``inference/cli_demo_4d.py``), view 0 first in every group
OFFICIAL_VIEW_GROUPS = [[0, 1, 6, 11, 16], [0, 2, 7, 12, 17], [0, 3, 8, 13, 18], [0, 4, 9, 14, 19], [0, 5, 10, 15, 20]]

_DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
OFFICIAL_TEMPLATE_PATH = os.path.join(_DATA_DIR, "cam_template_21.json")

OFFICIAL_FOV_DEG = math.degrees(0.6911111611634243)  # 39.6°, a 50 mm lens on a 36 mm sensor
OFFICIAL_RADIUS = 3.5
OFFICIAL_HEIGHT = 0.7
CANVAS_W, CANVAS_H, SQUARE = 720, 480, 480


def _host(arr: np.ndarray, dtype) -> np.ndarray:
    """float64 camera maths -> the array torch wraps: already float32 when the tensor is float32 (no float64 tensor
    is made on the way, which devices without float64 such as mps cannot hold)."""
    return arr.astype(np.float32) if dtype == torch.float32 else arr


@dataclass
class CameraRig:
    """A set of pinhole cameras on one canvas size.

    ``c2w_gl`` is (V, 4, 4) float64; ``fx, fy, cx, cy`` are (V,) float64 in canvas pixels.
    ``times`` are the frame times in [0, 1] the rig is used with (the official template: i/24), or ``None``.
    """

    c2w_gl: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    width: int
    height: int
    names: list[str] = field(default_factory=list)
    times: list[float] | None = None
    square_size: int | None = None  # side of the square render the FoV refers to (official: 480)

    def __post_init__(self):
        c2w = np.asarray(self.c2w_gl, dtype=np.float64)
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or c2w.shape[0] < 1:
            raise InputError("cameras", f"expected camera-to-world matrices of shape (V, 4, 4) with V >= 1, got {c2w.shape}")
        if not np.all(np.isfinite(c2w)):
            raise InputError("cameras", "camera matrices contain NaN or infinity")
        self.c2w_gl = c2w
        v = c2w.shape[0]
        for name in ("fx", "fy", "cx", "cy"):
            arr = np.broadcast_to(np.asarray(getattr(self, name), dtype=np.float64), (v,)).copy()
            if not np.all(np.isfinite(arr)):
                raise InputError("cameras", f"{name} must be finite")
            setattr(self, name, arr)
        if np.any(self.fx <= 0) or np.any(self.fy <= 0):
            raise InputError("cameras", "focal lengths fx, fy must be positive")
        self.width, self.height = int(self.width), int(self.height)
        if self.width < 1 or self.height < 1:
            raise InputError("cameras", f"canvas size must be positive, got {self.width}x{self.height}")
        if not self.names:
            self.names = [f"view{k:02d}" for k in range(v)]
        if len(self.names) != v:
            raise InputError("cameras", f"{len(self.names)} names for {v} cameras")
        if self.times is not None:
            self.times = [float(t) for t in self.times]

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self.c2w_gl.shape[0]

    @property
    def num_views(self) -> int:
        return len(self)

    @property
    def c2w_cv(self) -> np.ndarray:
        return self.c2w_gl @ GL_TO_CV

    @property
    def centers(self) -> np.ndarray:
        """(V, 3) camera centres in world coordinates."""
        return self.c2w_gl[:, :3, 3].copy()

    @property
    def forwards(self) -> np.ndarray:
        """(V, 3) unit viewing directions (the optical axis) in world coordinates."""
        f = -self.c2w_gl[:, :3, 2]
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    def K(self) -> np.ndarray:
        """(V, 3, 3) intrinsics matrices (float64)."""
        k = np.zeros((len(self), 3, 3))
        k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = self.fx, self.fy, self.cx, self.cy, 1.0
        return k

    def w2c_cv(self) -> np.ndarray:
        """(V, 4, 4) world-to-camera matrices, OpenCV convention (float64)."""
        return np.linalg.inv(self.c2w_cv)

    def viewmats(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """(V, 4, 4) world-to-camera matrices as gsplat's ``viewmats`` expects them."""
        return torch.as_tensor(_host(self.w2c_cv(), dtype), dtype=dtype, device=device)

    def Ks(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """(V, 3, 3) intrinsics as gsplat's ``Ks`` expects them."""
        return torch.as_tensor(_host(self.K(), dtype), dtype=dtype, device=device)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (N, 3) into every camera: returns pixels (V, N, 2) and depths (V, N)."""
        pts = np.asarray(points, dtype=np.float64)
        hom = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1)
        cam = np.einsum("vij,nj->vni", self.w2c_cv(), hom)[..., :3]
        z = cam[..., 2]
        u = self.fx[:, None] * cam[..., 0] / z + self.cx[:, None]
        v = self.fy[:, None] * cam[..., 1] / z + self.cy[:, None]
        return np.stack([u, v], axis=-1), z

    # ------------------------------------------------------------ derivations
    def select(self, indices: Sequence[int]) -> "CameraRig":
        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < len(self):
                raise InputError("views", f"view index {i} is out of range for a rig of {len(self)} cameras")
        return CameraRig(self.c2w_gl[idx], self.fx[idx], self.fy[idx], self.cx[idx], self.cy[idx], self.width,
                         self.height, [self.names[i] for i in idx], self.times, self.square_size)

    def resized(self, width: int, height: int) -> "CameraRig":
        """The same cameras on a canvas resized to ``width`` x ``height`` (intrinsics scaled per axis)."""
        if width < 1 or height < 1:
            raise InputError("size", f"expected a positive size, got {width}x{height}")
        sx, sy = width / self.width, height / self.height
        sq = None if self.square_size is None else self.square_size * min(sx, sy)
        return CameraRig(self.c2w_gl, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height,
                         list(self.names), self.times, None if sq is None else int(round(sq)))

    def scaled(self, factor: float) -> "CameraRig":
        """The same cameras at ``factor`` times the canvas resolution (e.g. 0.25 for 180x120)."""
        if not factor > 0:
            raise InputError("scale", f"expected a positive resolution factor, got {factor}")
        return self.resized(max(1, int(round(self.width * factor))), max(1, int(round(self.height * factor))))

    # ------------------------------------------------------------------- rays
    def rays(self, view: int, device=None, dtype=torch.float32, relative_to: int | None = None):
        """World-space rays through every pixel centre of ``view``: origins (H, W, 3) and unit directions (H, W, 3).

        ``relative_to=k`` expresses them in the camera frame of view ``k`` (OpenCV axes) instead of the world.
        """
        c2w = self.c2w_cv[view]
        if relative_to is not None:
            c2w = np.linalg.inv(self.c2w_cv[relative_to]) @ c2w
        j, i = torch.meshgrid(torch.arange(self.height, dtype=torch.float64), torch.arange(self.width, dtype=torch.float64),
                              indexing="ij")
        d_cam = torch.stack([(i + 0.5 - self.cx[view]) / self.fx[view], (j + 0.5 - self.cy[view]) / self.fy[view],
                             torch.ones_like(i)], dim=-1)
        rot = torch.as_tensor(c2w[:3, :3])
        d = d_cam @ rot.T
        d = d / d.norm(dim=-1, keepdim=True)
        o = torch.as_tensor(c2w[:3, 3]).expand_as(d)
        return o.to(device=device, dtype=dtype), d.to(device=device, dtype=dtype)

    def plucker(self, views: Iterable[int] | None = None, device=None, dtype=torch.float32,
                relative_to: int | None = None) -> torch.Tensor:
        """Plücker ray maps (V, 6, H, W): channels 0-2 the moment ``o x d``, channels 3-5 the unit direction ``d``.

        Rays go through pixel centres, in world coordinates (Z up) unless ``relative_to`` names a view whose
        OpenCV camera frame is used instead. Computed in float64, returned as ``dtype``.
        """
        views = range(len(self)) if views is None else list(views)
        maps = []
        for v in views:
            o, d = self.rays(v, dtype=torch.float64, relative_to=relative_to)
            m = torch.cross(o, d, dim=-1)
            maps.append(torch.cat([m, d], dim=-1).permute(2, 0, 1))
        return torch.stack(maps).to(device=device, dtype=dtype)

    # --------------------------------------------------------------------- IO
    def to_dict(self) -> dict:
        """The official template's JSON layout, plus explicit per-view intrinsics (``fl_x, fl_y, cx, cy``)."""
        out: dict = {
            "convention": "Blender/OpenGL camera-to-world matrices (x right, y up, camera looks down -z), world z up",
            "canvas_width": self.width,
            "canvas_height": self.height,
        }
        if self.square_size:
            out["image_size_of_square_render"] = int(self.square_size)
            # camera_angle_x as the official template defines it (FoV over the square render) when uniform
            if np.allclose(self.fx, self.fx[0]):
                out["camera_angle_x"] = 2.0 * math.atan(self.square_size / 2.0 / self.fx[0])
        if self.times is not None:
            out["times"] = list(self.times)
        out["views"] = [
            {"name": n, "transform_matrix": self.c2w_gl[k].tolist(), "fl_x": float(self.fx[k]), "fl_y": float(self.fy[k]),
             "cx": float(self.cx[k]), "cy": float(self.cy[k])}
            for k, n in enumerate(self.names)
        ]
        return out

    @classmethod
    def from_dict(cls, data: dict, source: str = "cameras") -> "CameraRig":
        """Read the official template layout (``camera_angle_x`` + ``views[].transform_matrix``), the D-NeRF/Blender
        ``frames`` layout, or our own (with per-view ``fl_x``, ``fl_y``, ``cx``, ``cy``)."""
        if not isinstance(data, dict):
            raise InputError(source, "expected a JSON object with a 'views' (or 'frames') list")
        views = data.get("views", data.get("frames"))
        if not isinstance(views, list) or not views:
            raise InputError(source, "expected a non-empty 'views' (or 'frames') list of cameras")
        w = int(data.get("canvas_width", data.get("w", CANVAS_W)))
        h = int(data.get("canvas_height", data.get("h", CANVAS_H)))
        square = data.get("image_size_of_square_render")
        c2w, fx, fy, cx, cy, names = [], [], [], [], [], []
        for k, v in enumerate(views):
            try:
                m = np.asarray(v["transform_matrix"], dtype=np.float64)
            except (KeyError, TypeError, ValueError):
                raise InputError(source, f"view {k}: expected a 4x4 'transform_matrix'") from None
            if m.shape != (4, 4):
                raise InputError(source, f"view {k}: expected a 4x4 'transform_matrix', got shape {m.shape}")
            c2w.append(m)
            names.append(str(v.get("name", v.get("file_path", f"view{k:02d}"))))
            if "fl_x" in v or "fl_x" in data:
                fx.append(float(v.get("fl_x", data.get("fl_x"))))
                fy.append(float(v.get("fl_y", data.get("fl_y", v.get("fl_x", data.get("fl_x"))))))
                cx.append(float(v.get("cx", data.get("cx", w / 2))))
                cy.append(float(v.get("cy", data.get("cy", h / 2))))
            else:
                angle = v.get("camera_angle_x", data.get("camera_angle_x"))
                if angle is None:
                    raise InputError(source, f"view {k}: no intrinsics (expected 'camera_angle_x' or 'fl_x')")
                angle = float(angle)
                if not 0 < angle < math.pi:
                    raise InputError(source, f"camera_angle_x must be in (0, pi) radians, got {angle}")
                side = float(square) if square else float(min(w, h))
                f = side / 2.0 / math.tan(angle / 2.0)
                fx.append(f)
                fy.append(f)
                cx.append(w / 2.0)
                cy.append(h / 2.0)
        times = data.get("times")
        return cls(np.stack(c2w), np.array(fx), np.array(fy), np.array(cx), np.array(cy), w, h, names,
                   times, int(square) if square else None)

    def save(self, path: str) -> None:
        """Write the rig as JSON, atomically (a temporary file renamed into place)."""
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "CameraRig":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise InputError("cameras", f"file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise InputError("cameras", f"{path} is not valid JSON ({e})") from None
        return cls.from_dict(data, source=f"cameras ({os.path.basename(path)})")


# ---------------------------------------------------------------------- rigs
def closest_point_to_lines(origins: np.ndarray, directions: np.ndarray) -> np.ndarray | None:
    """The least-squares point closest to the lines ``origin + t * direction`` (unit directions), or None when the
    lines do not pin one down (all parallel)."""
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for o, d in zip(np.asarray(origins, dtype=np.float64), np.asarray(directions, dtype=np.float64)):
        p = np.eye(3) - np.outer(d, d)
        a += p
        b += p @ o
    if np.linalg.matrix_rank(a) < 3:
        return None
    return np.linalg.solve(a, b)


def look_at_c2w_gl(position: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Blender/OpenGL camera-to-world matrix of a camera at ``position`` looking at ``target``."""
    position, target, up = (np.asarray(a, dtype=np.float64) for a in (position, target, up))
    f = target - position
    n = np.linalg.norm(f)
    if n < 1e-9:
        raise InputError("cameras", "camera position and look-at target coincide")
    f = f / n
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-9:  # looking straight up or down: pick any right vector
        r = np.cross(f, np.array([0.0, 1.0, 0.0]))
    r = r / np.linalg.norm(r)
    u = np.cross(r, f)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = r, u, -f, position
    return m


def orbit_rig(num_views: int = 21, radius: float = OFFICIAL_RADIUS, elevation_deg: float = 0.0,
              look_at_height: float = OFFICIAL_HEIGHT, fov_deg: float = OFFICIAL_FOV_DEG, start_azimuth_deg: float = 0.0,
              clockwise: bool = False, width: int = CANVAS_W, height: int = CANVAS_H,
              square_size: int | None = SQUARE, times: Sequence[float] | None = None) -> CameraRig:
    """An orbit around the z axis, all cameras looking at (0, 0, ``look_at_height``).

    Azimuth 0 is the official view 0: the camera on the -y side looking towards +y. Views advance by 360/V degrees,
    counter-clockwise seen from above (the official order) unless ``clockwise``. ``radius`` is the distance to the
    look-at point; ``elevation_deg`` lifts the cameras above it. ``fov_deg`` is the field of view across
    ``square_size`` pixels (the official 39.6° over the 480x480 square), or across the shorter canvas side if
    ``square_size`` is None.
    """
    checks = [
        ("num_views", 1 <= num_views <= 360, f"between 1 and 360, got {num_views}"),
        ("radius", radius > 0 and math.isfinite(radius), f"a positive distance, got {radius}"),
        ("elevation", -89.0 <= elevation_deg <= 89.0, f"between -89 and 89 degrees, got {elevation_deg}"),
        ("fov", 1.0 <= fov_deg <= 170.0, f"between 1 and 170 degrees, got {fov_deg}"),
        ("look_at_height", math.isfinite(look_at_height), "a finite number"),
        ("width", 8 <= width <= 8192, f"between 8 and 8192 pixels, got {width}"),
        ("height", 8 <= height <= 8192, f"between 8 and 8192 pixels, got {height}"),
    ]
    for name, ok, msg in checks:
        if not ok:
            raise InputError(name, f"expected {msg}")
    side = square_size if square_size else min(width, height)
    f = side / 2.0 / math.tan(math.radians(fov_deg) / 2.0)
    target = np.array([0.0, 0.0, look_at_height])
    sign = -1.0 if clockwise else 1.0
    e = math.radians(elevation_deg)
    mats = []
    for k in range(num_views):
        a = math.radians(start_azimuth_deg + sign * k * 360.0 / num_views)
        pos = target + radius * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])
        mats.append(look_at_c2w_gl(pos, target))
    return CameraRig(np.stack(mats), f, f, width / 2.0, height / 2.0, width, height, None, times,
                     int(square_size) if square_size else None)


def official_rig() -> CameraRig:
    """The official 21-view template (``4D_optimization/cam_template``), as shipped with the pack."""
    return CameraRig.load(OFFICIAL_TEMPLATE_PATH)


# ---------------------------------------------------------------- view groups
def view_groups(num_views: int, group_size: int = 5) -> list[list[int]]:
    """Split views into groups that each start with view 0 and spread the others around the orbit.

    For 21 views in groups of 5 this is exactly the official grouping (``OFFICIAL_VIEW_GROUPS``): with
    ``n = ceil((V - 1) / (G - 1))`` groups, group ``g`` holds view 0 and views ``1 + g + n*j``. When ``V - 1`` is not
    a multiple of ``G - 1``, short groups are filled up with views of earlier groups (closest to evenly spaced), so
    every group has ``G`` views; each view is generated by the first group that lists it.
    """
    if num_views < 1:
        raise InputError("views", f"expected at least 1 view, got {num_views}")
    if group_size < 2:
        raise InputError("group_size", f"expected at least 2 views per group, got {group_size}")
    if num_views <= group_size:
        return [list(range(num_views))]
    others = num_views - 1
    n = math.ceil(others / (group_size - 1))
    groups = []
    for g in range(n):
        grp = [0] + [1 + g + n * j for j in range(group_size - 1) if 1 + g + n * j < num_views]
        if len(grp) < group_size:
            need = group_size - len(grp)
            used = set(grp)
            # evenly spaced positions on the orbit, filled with the nearest unused view index
            for step in range(1, need + 1):
                want = (grp[-1] + step * (num_views / (need + 1))) % num_views
                cand = sorted((v for v in range(1, num_views) if v not in used),
                              key=lambda v: min(abs(v - want), num_views - abs(v - want)))
                grp.append(cand[0])
                used.add(cand[0])
        groups.append(grp)
    return groups


# ------------------------------------------------------------------- preview
def rig_preview(rig: CameraRig, size: int = 384, highlight: Sequence[int] = (0,)) -> np.ndarray:
    """A top-down drawing of the rig (cameras as numbered wedges around the character axis): (size, size, 3) uint8."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (32, 32, 36))
    d = ImageDraw.Draw(img)
    c = rig.centers
    extent = max(float(np.abs(c[:, :2]).max()), 1e-3) * 1.25
    scale = (size / 2 - 12) / extent

    def to_px(x, y):
        return size / 2 + x * scale, size / 2 - y * scale

    # grid and the character's axis
    for r in (0.25, 0.5, 0.75, 1.0):
        rr = r * extent * scale
        d.ellipse([size / 2 - rr, size / 2 - rr, size / 2 + rr, size / 2 + rr], outline=(60, 60, 68))
    d.line([to_px(-extent, 0), to_px(extent, 0)], fill=(90, 50, 50))
    d.line([to_px(0, -extent), to_px(0, extent)], fill=(50, 90, 50))
    d.ellipse([size / 2 - 5, size / 2 - 5, size / 2 + 5, size / 2 + 5], fill=(240, 200, 80))
    fwd = rig.forwards
    half = math.atan(rig.width / 2.0 / float(rig.fx.mean()))
    for k in range(len(rig)):
        x, y = c[k, 0], c[k, 1]
        f2 = fwd[k, :2]
        if np.linalg.norm(f2) < 1e-6:
            f2 = np.array([0.0, 1.0])
        f2 = f2 / np.linalg.norm(f2)
        length = extent * 0.12
        pts = [to_px(x, y)]
        for s in (-1, 1):
            ca, sa = math.cos(s * half), math.sin(s * half)
            dx, dy = f2[0] * ca - f2[1] * sa, f2[0] * sa + f2[1] * ca
            pts.append(to_px(x + dx * length, y + dy * length))
        col = (255, 120, 80) if k in highlight else (120, 170, 255)
        d.polygon(pts, outline=col, fill=tuple(v // 3 for v in col))
        tx, ty = to_px(x - f2[0] * extent * 0.08, y - f2[1] * extent * 0.08)
        d.text((tx - 6, ty - 6), str(k), fill=(230, 230, 230))
    d.text((6, 4), f"{len(rig)} cameras  {rig.width}x{rig.height}  top view (+y up)", fill=(200, 200, 200))
    return np.asarray(img, dtype=np.uint8)

"""Views from one image: an SV3D orbit laid onto a CharacterShot camera rig.

CharacterShot's released code needs 21 ready-made views of the character; the paper made them with a fine-tuned SV3D
that was never released. Stock SV3D_p (Stability AI, ``scripts/sampling/simple_video_sample.py``) generates a
21-frame orbit at 576x576 around the object of one image. This module maps any orbit rig onto SV3D_p's camera
conditioning, and SV3D's square frames back onto the rig's canvas (evidence and conventions: ``docs/views.md``).

SV3D_p's conventions, as the sampling script codes them:

* ``azimuths_deg = linspace(0, 360, 22)[1:] % 360`` = k*360/21 for k = 1..20, then 0; they are made relative to the
  last frame's azimuth (``(a - azimuths_deg[-1]) % 360``), so the **last frame is the input view** (azimuth 0), and
  the script overwrites that frame with the input image after decoding.
* ``polars_rad = deg2rad(90 - elevation)``: elevation in degrees above the object's centre (positive = from above).
* Azimuth grows **counter-clockwise seen from above** (the repository's own trajectory plot puts the camera at
  ``(cos e cos a, cos e sin a, sin e)`` with z up; the project page's ground-truth orbits and SV3D_p's outputs
  beside them turn the same way: the camera moves to its right as the azimuth grows).
* Frames are 576x576; Stability gives the field of view as 33.8 degrees.

Our rigs (``cameras.orbit_rig``, the official template) use the same sense: view k at azimuth k*360/21
counter-clockwise seen from above, view 0 in front of the character. So SV3D's relative azimuth of a rig view is
its azimuth minus view 0's, measured counter-clockwise, and the input image is view 0.

ComfyUI core's ``SV3D_Conditioning`` spaces its azimuths by 360/(n-1) from 0, so frame 20 repeats frame 0 and no
frame but the first lies on the official 21-view rig; :func:`orbit_conditioning_angles` gives the rig's own angles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import canvas as cv
from .cameras import CameraRig, closest_point_to_lines, look_at_c2w_gl
from .errors import InputError

SV3D_SIZE = 576
SV3D_FOV_DEG = 33.8

#: frame orders of the SV3D video. "rig": frame k is view k (the input view first, like core's SV3D_Conditioning);
#: "sv3d_official": frame j is view (j + 1) mod V, the input view last, as Stability's sampling script orders them.
FRAME_ORDERS = ("rig", "sv3d_official")

# tolerances of the orbit check
_AXIS_TOL = 0.02      # distance of an optical axis from the orbit centre, relative to the camera distance
_DIST_TOL = 0.02      # spread of the camera distances, relative
_ROLL_TOL = 0.02      # z component of a camera's right vector (no roll: the horizon stays level)
_FOCAL_TOL = 0.01     # spread of the focal lengths, relative
_MAX_ELEVATION = 80.0


@dataclass
class OrbitAngles:
    """SV3D_p camera angles of every frame, and which rig view each frame is.

    ``azimuths`` (degrees in [0, 360)) are relative to view 0 and grow counter-clockwise seen from above;
    ``elevations`` are degrees above the orbit centre; ``frame_views[j]`` is the rig view of frame j.
    """

    azimuths: list[float]
    elevations: list[float]
    frame_views: list[int]
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    distance: float = 1.0

    def __len__(self) -> int:
        return len(self.frame_views)

    @property
    def view_frames(self) -> list[int]:
        """``view_frames[k]``: the frame that holds rig view k."""
        inv = [0] * len(self.frame_views)
        for j, k in enumerate(self.frame_views):
            inv[k] = j
        return inv


def frame_views(num_views: int, order: str = "rig") -> list[int]:
    """The rig view of every SV3D frame for ``order`` (see ``FRAME_ORDERS``)."""
    if order not in FRAME_ORDERS:
        raise InputError("frame_order", f"expected one of {list(FRAME_ORDERS)}, got {order!r}")
    if num_views < 1:
        raise InputError("cameras", f"expected at least 1 view, got {num_views}")
    if order == "rig":
        return list(range(num_views))
    return [(j + 1) % num_views for j in range(num_views)]




def _orbit_center(rig: CameraRig) -> np.ndarray:
    """The point closest to the optical axes (least squares), refitted without the cameras that clearly miss it so
    that one stray camera is named instead of dragging the centre away from the others."""
    c, d = rig.centers, rig.forwards
    keep = np.ones(len(c), dtype=bool)
    center = None
    for _ in range(3):
        p = closest_point_to_lines(c[keep], d[keep]) if keep.sum() >= 2 else None
        if p is None:
            break
        center = p
        rel = c - center
        off = np.linalg.norm(np.cross(d, -rel), axis=1) / np.maximum(np.linalg.norm(rel, axis=1), 1e-9)
        new = off <= max(_AXIS_TOL, 3.0 * float(np.median(off)))
        if new.sum() < 2 or np.array_equal(new, keep):
            break
        keep = new
    if center is None:
        raise InputError("cameras", "the cameras' optical axes do not meet: expected an orbit of cameras looking "
                                    "at one point on the character's axis")
    return center


def orbit_conditioning_angles(rig: CameraRig, order: str = "rig") -> OrbitAngles:
    """SV3D_p azimuths/elevations that make SV3D's frames land on the views of ``rig`` (an orbit).

    Raises ``InputError("cameras", ...)`` when ``rig`` is not an orbit SV3D can follow: cameras that do not all look
    at one point, at different distances from it, rolled, with different focal lengths, looking (nearly) straight
    down or up, or two views at the same azimuth.
    """
    if not isinstance(rig, CameraRig):
        raise InputError("cameras", f"expected a CHARSHOT_CAMERAS rig, got {type(rig).__name__}")
    v = len(rig)
    if v < 2:
        raise InputError("cameras", f"expected an orbit of at least 2 cameras, got {v}")
    views = frame_views(v, order)
    center = _orbit_center(rig)
    c, d = rig.centers, rig.forwards
    rel = c - center
    dist = np.linalg.norm(rel, axis=1)
    if np.any(dist < 1e-6):
        raise InputError("cameras", "a camera sits on the point the cameras look at; expected an orbit around it")
    # every optical axis passes through the centre
    off_axis = np.linalg.norm(np.cross(d, -rel), axis=1) / dist
    bad = np.flatnonzero(off_axis > _AXIS_TOL)
    if bad.size:
        raise InputError("cameras", f"not an orbit: views {bad.tolist()[:8]} do not look at the common centre "
                                    f"({np.round(center, 3).tolist()}); SV3D needs every camera aimed at the "
                                    "character, e.g. CharacterShot Camera Rig with official_21_views or custom_orbit")
    spread = (dist.max() - dist.min()) / dist.mean()
    if spread > _DIST_TOL:
        raise InputError("cameras", f"not an orbit: camera distances to the centre range from {dist.min():.3f} to "
                                    f"{dist.max():.3f}; SV3D keeps one distance for all frames")
    roll = np.abs(rig.c2w_gl[:, 2, 0])
    bad = np.flatnonzero(roll > _ROLL_TOL)
    if bad.size:
        raise InputError("cameras", f"not an orbit: views {bad.tolist()[:8]} are rolled (the horizon is tilted); "
                                    "SV3D's cameras keep the world's up direction")
    f = np.concatenate([rig.fx, rig.fy])
    if (f.max() - f.min()) / f.mean() > _FOCAL_TOL:
        raise InputError("cameras", f"the views have different focal lengths ({f.min():.1f} to {f.max():.1f} px); "
                                    "SV3D renders every frame with one field of view")
    elev = np.degrees(np.arcsin(np.clip(rel[:, 2] / dist, -1.0, 1.0)))
    if np.any(np.abs(elev) > _MAX_ELEVATION):
        raise InputError("cameras", f"elevations must stay within +-{_MAX_ELEVATION:g} degrees for an orbit, got "
                                    f"{elev.min():.1f} to {elev.max():.1f}")
    az = np.degrees(np.arctan2(rel[:, 1], rel[:, 0]))  # counter-clockwise seen from above (z up)
    rel_az = np.mod(az - az[0], 360.0)
    rel_az = np.where(rel_az > 360.0 - 1e-6, 0.0, rel_az)
    ordered = np.sort(rel_az)
    gaps = np.diff(np.concatenate([ordered, [ordered[0] + 360.0]]))
    if np.any(gaps < 0.5):
        raise InputError("cameras", "two views share an azimuth; SV3D's orbit visits each azimuth once")
    # 1e-4 degrees is far below what SV3D's embedding resolves; rounding keeps -0.0000038 from showing as such
    return OrbitAngles(azimuths=[round(float(rel_az[k]), 4) + 0.0 for k in views],
                       elevations=[round(float(elev[k]), 4) + 0.0 for k in views],
                       frame_views=views, center=center, distance=float(dist.mean()))


def core_sv3d_azimuths(num_frames: int) -> list[float]:
    """What ComfyUI core's ``SV3D_Conditioning`` asks for: 0, 360/(n-1), ..., 360 (frame n-1 repeats frame 0)."""
    step = 360.0 / (max(num_frames, 2) - 1)
    return [k * step for k in range(num_frames)]


def sv3d_cameras(azimuths: Sequence[float], elevations: Sequence[float], center, distance: float,
                 azimuth0_deg: float = 0.0, fov_deg: float = SV3D_FOV_DEG, size: int = SV3D_SIZE) -> CameraRig:
    """The cameras SV3D_p renders from for the given angles: square ``size`` frames with ``fov_deg``, looking at
    ``center`` from ``distance``; azimuths relative to the input view (at ``azimuth0_deg`` in our rig convention:
    0 = in front of the character, on the -y side), counter-clockwise seen from above. For checks and benchmarks
    (what SV3D would see of a known scene)."""
    if len(azimuths) != len(elevations):
        raise InputError("elevations", f"expected one elevation per azimuth ({len(azimuths)}), got {len(elevations)}")
    center = np.asarray(center, dtype=np.float64)
    mats = []
    for a_rel, e in zip(azimuths, elevations):
        a = math.radians(azimuth0_deg + a_rel)
        el = math.radians(e)
        pos = center + distance * np.array([math.cos(el) * math.sin(a), -math.cos(el) * math.cos(a), math.sin(el)])
        mats.append(look_at_c2w_gl(pos, center))
    f = size / 2.0 / math.tan(math.radians(fov_deg) / 2.0)
    return CameraRig(np.stack(mats), f, f, size / 2.0, size / 2.0, size, size, None, None, size)


def _stack_views(frames, name: str) -> np.ndarray:
    """A (N, H, W, C) uint8 array from an array or a sequence of (H, W, C) views, with a clear error for views of
    mixed sizes."""
    if isinstance(frames, np.ndarray):
        arr = frames
    else:
        items = [np.asarray(f) for f in frames]
        if not items:
            raise InputError(name, "no frames; expected the SV3D video (one frame per view)")
        shapes = sorted({tuple(a.shape) for a in items})
        if len(shapes) > 1:
            sizes = ", ".join(f"{s[1]}x{s[0]}" if len(s) >= 2 else str(s) for s in shapes)
            raise InputError(name, f"views of mixed sizes ({sizes}); expected every frame of the orbit at one size, "
                                   "as SV3D writes them (576x576)")
        arr = np.stack(items)
    if arr.ndim != 4:
        raise InputError(name, f"expected frames shaped (N, H, W, C), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(name, f"expected uint8 pixels, got {arr.dtype}")
    return arr


def center_crop_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop (H, W, C) uint8 to the aspect of ``width`` x ``height`` and resize: what core's SV3D conditioning
    does to its ``init_image`` (``common_upscale(..., "center")``), so the input lines up with SV3D's frames."""
    from .opencv import cv2

    h, w = image.shape[:2]
    target = width / height
    if w / h > target:
        nw = max(1, int(round(h * target)))
        x0 = (w - nw) // 2
        image = image[:, x0:x0 + nw]
    elif w / h < target:
        nh = max(1, int(round(w / target)))
        y0 = (h - nh) // 2
        image = image[y0:y0 + nh]
    if image.shape[:2] == (height, width):
        return image
    interp = cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interp)


@dataclass
class ViewsResult:
    images: np.ndarray       # (V, H, W, 3) uint8 on the rig's canvas, in rig order
    masks: np.ndarray        # (V, H, W) float32, 1 = character
    warnings: list[str]
    square: tuple            # the shared square (x0, y0, side) in SV3D frame pixels


def views_from_orbit(frames, rig: CameraRig, order: str = "rig", input_image: np.ndarray | None = None,
                     fill: float = cv.TEMPLATE_FILL, anchor: str = "template", name: str = "sv3d_frames",
                     progress=None) -> ViewsResult:
    """SV3D's square frames onto the rig's canvas, in rig order, with ONE transform for all frames.

    ``frames``: the SV3D video, (N, S, S, C) uint8 (or a sequence of views), N = the rig's view count, frame order
    ``order`` (see ``FRAME_ORDERS``). ``input_image`` (optional, (H, W, C) uint8): the picture SV3D was conditioned
    on; it replaces view 0 after the same centre crop and resize core's SV3D conditioning applies. The character's
    box over all frames sets one square (its longer side = ``fill`` of the square, placed by ``anchor``), cut from
    every frame, resized to the rig's square and pasted centred on the white canvas: the views keep their relative
    scale and height, as views rendered by one rig do.
    """
    arr = _stack_views(frames, name)
    v = len(rig)
    if arr.shape[0] != v:
        raise InputError(name, f"expected {v} frames, one per view of the {v}-camera rig, got {arr.shape[0]}; "
                               "generate the orbit with CharacterShot Orbit Conditioning on the same rig")
    if arr.shape[-1] not in (1, 3, 4):
        raise InputError(name, f"expected 1, 3 or 4 channels, got {arr.shape[-1]}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    rgb = arr[..., :3]
    views = frame_views(v, order)
    by_view = np.empty_like(rgb)
    for j, k in enumerate(views):
        by_view[k] = rgb[j]
    warnings: list[str] = []
    if input_image is not None:
        img = np.asarray(input_image)
        if img.ndim != 3 or img.shape[-1] not in (1, 3, 4) or img.dtype != np.uint8:
            raise InputError("input_image", f"expected one (H, W, C) uint8 image, got {img.shape} {img.dtype}")
        if img.shape[-1] == 4:
            a = img[..., 3:4].astype(np.float32) / 255.0
            img = np.clip(np.round(img[..., :3] * a + 255.0 * (1 - a)), 0, 255).astype(np.uint8)
        elif img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        h, w = img.shape[:2]
        if abs(w / h - rgb.shape[2] / rgb.shape[1]) > 0.01:
            warnings.append(f"input_image: {w}x{h} was centre-cropped to the frames' aspect "
                            f"({rgb.shape[2]}x{rgb.shape[1]}), as SV3D's conditioning did")
        by_view[0] = center_crop_resize(img, rgb.shape[2], rgb.shape[1])
    sq_out = rig.square_size or min(rig.width, rig.height)
    res = cv.prepare_character(by_view, None, width=rig.width, height=rig.height, square=sq_out, fill=fill,
                               anchor=anchor, box_mode="shared", keep_prepared=False, images_name=name,
                               progress=progress)
    fg = [cv.character_mask(by_view[i])[0] for i in range(v)]
    box = cv.union_box([cv.mask_box(m) for m in fg])
    return ViewsResult(res.images, res.masks, warnings + list(res.warnings), cv.square_around(box, fill, anchor))

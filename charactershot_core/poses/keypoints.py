"""Whole-body 2D keypoints and ComfyUI's de-facto ``POSE_KEYPOINT`` type.

``POSE_KEYPOINT`` (comfyui_controlnet_aux's DWPose / OpenPose preprocessors) is a list with one dict per frame::

    {"people": [{"pose_keypoints_2d": [x, y, c] * 18,          # OpenPose COCO-18 body order
                 "face_keypoints_2d": [x, y, c] * 68 (or 70),
                 "hand_left_keypoints_2d": [x, y, c] * 21,
                 "hand_right_keypoints_2d": [x, y, c] * 21}, ...],
     "canvas_width": W, "canvas_height": H}

A missing keypoint is ``[0, 0, 0]``; a missing part may be ``null``. controlnet_aux writes coordinates normalised to
[0, 1] by the canvas size and c = 1 for every detected point; other tools write pixel coordinates or real scores.

Coordinates: ``coords="auto"`` reads them as pixels when any detected coordinate in the whole sequence exceeds 2.0
(normalised coordinates stay within about [0, 1], a little beyond for points just outside the frame; pixel
coordinates of a real frame are far larger), else as normalised. "normalized" / "pixels" force one reading. Pixel
coordinates need ``canvas_width`` / ``canvas_height``.

Body order (OpenPose COCO-18): 0 nose, 1 neck, 2 right shoulder, 3 right elbow, 4 right wrist, 5 left shoulder,
6 left elbow, 7 left wrist, 8 right hip, 9 right knee, 10 right ankle, 11 left hip, 12 left knee, 13 left ankle,
14 right eye, 15 left eye, 16 right ear, 17 left ear. BODY_25 bodies (25 points, OpenPose's default model) are
converted to this order (mid-hip and feet dropped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

N_BODY = 18
N_FACE = 68  # DWPose / COCO-WholeBody face; OpenPose's 70-point face adds two pupils, which DWPose never draws
N_HAND = 21

# BODY_25 index of each COCO-18 point
BODY25_TO_COCO18 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]

COORDS = ("auto", "normalized", "pixels")
MISSING = ("error", "repeat_previous")


@dataclass
class Pose:
    """One person in one frame. Arrays are (N, 3): x, y normalised to the canvas (x / width, y / height) and
    confidence in [0, 1]; a missing point has confidence 0."""

    body: np.ndarray                       # (18, 3)
    face: np.ndarray                       # (68, 3)
    left_hand: np.ndarray                  # (21, 3)
    right_hand: np.ndarray                 # (21, 3)
    width: int                             # the canvas the coordinates are normalised to
    height: int

    def copy(self) -> "Pose":
        return Pose(self.body.copy(), self.face.copy(), self.left_hand.copy(), self.right_hand.copy(), self.width,
                    self.height)

    def parts(self) -> list[np.ndarray]:
        return [self.body, self.face, self.left_hand, self.right_hand]

    def area(self) -> float:
        """Area in pixels of the box around the detected keypoints (all parts)."""
        pts = np.concatenate([p[p[:, 2] > 0, :2] for p in self.parts()], axis=0)
        if len(pts) < 2:
            return 0.0
        span = pts.max(0) - pts.min(0)
        return float(span[0] * self.width * span[1] * self.height)

    def n_detected(self) -> int:
        return int(sum((p[:, 2] > 0).sum() for p in self.parts()))

    def map_xy(self, scale, offset) -> "Pose":
        """x' = x * scale + offset on detected points of every part (missing points stay missing)."""
        out = self.copy()
        for part in out.parts():
            ok = part[:, 2] > 0
            part[ok, :2] = part[ok, :2] * np.asarray(scale, np.float64) + np.asarray(offset, np.float64)
        return out

    @staticmethod
    def empty(width: int, height: int) -> "Pose":
        z = np.zeros
        return Pose(z((N_BODY, 3)), z((N_FACE, 3)), z((N_HAND, 3)), z((N_HAND, 3)), int(width), int(height))


@dataclass
class PoseSequence:
    poses: list[Pose]
    warnings: list[str] = field(default_factory=list)
    pixel_coords: bool = False             # how the coordinates were read


def _points(values, n: int, what: str, name: str, frame: int) -> np.ndarray:
    if values is None:
        return np.zeros((n, 3))
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(name, f"frame {frame}: {what} must be a list of numbers [x, y, c, ...]") from None
    if arr.size == 0:
        return np.zeros((n, 3))
    if arr.size % 3:
        raise InputError(name, f"frame {frame}: {what} has {arr.size} numbers; expected triples [x, y, c]")
    pts = arr.reshape(-1, 3)
    if not np.isfinite(pts).all():
        raise InputError(name, f"frame {frame}: {what} contains NaN or infinite values")
    if what == "pose_keypoints_2d":
        if len(pts) == 25:
            pts = pts[BODY25_TO_COCO18]
        elif len(pts) != N_BODY:
            raise InputError(name, f"frame {frame}: pose_keypoints_2d has {len(pts)} points; expected 18 "
                                   "(OpenPose COCO-18, as DWPose gives) or 25 (BODY_25)")
    elif what == "face_keypoints_2d":
        if len(pts) not in (68, 70):
            raise InputError(name, f"frame {frame}: face_keypoints_2d has {len(pts)} points; expected 68 or 70")
        pts = pts[:N_FACE]
    elif len(pts) != N_HAND:
        raise InputError(name, f"frame {frame}: {what} has {len(pts)} points; expected 21")
    pts = pts.copy()
    pts[:, 2] = np.clip(pts[:, 2], 0.0, 1.0)
    pts[pts[:, 2] <= 0] = 0.0
    return pts


def _as_frames(data, name: str) -> list:
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as e:
            raise InputError(name, f"not valid POSE_KEYPOINT JSON: {e}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)):
        raise InputError(name, f"expected POSE_KEYPOINT: a list of frames {{'people': [...], 'canvas_width', "
                               f"'canvas_height'}}, got {type(data).__name__}")
    if len(data) == 0:
        raise InputError(name, "the keypoint sequence is empty; expected at least 1 frame")
    for i, fr in enumerate(data):
        if not isinstance(fr, dict) or not isinstance(fr.get("people", []), (list, tuple)):
            raise InputError(name, f"frame {i}: expected a dict with a 'people' list, got {type(fr).__name__}")
    return list(data)


def parse_pose_keypoints(data, *, name: str = "pose_keypoint", coords: str = "auto",
                         missing: str = "error", canvas_size: tuple[int, int] | None = None) -> PoseSequence:
    """POSE_KEYPOINT (list of frame dicts, one dict, or its JSON text) -> one :class:`Pose` per frame.

    Several people in a frame: the largest (area of the box around its keypoints) is used and a warning says so.
    No person in a frame: ``missing="error"`` raises an InputError naming the frame; ``"repeat_previous"`` carries the
    previous frame's pose (leading empty frames take the first detected pose) and warns.
    ``canvas_size`` (width, height) is used where a frame has no canvas_width / canvas_height.
    """
    if coords not in COORDS:
        raise InputError("coordinates", f"expected one of {list(COORDS)}, got {coords!r}")
    if missing not in MISSING:
        raise InputError("missing_person", f"expected one of {list(MISSING)}, got {missing!r}")
    frames = _as_frames(data, name)
    warnings: list[str] = []

    raw: list[list[tuple[list[np.ndarray], int, int]]] = []
    max_coord = 0.0
    for i, fr in enumerate(frames):
        w = fr.get("canvas_width", canvas_size[0] if canvas_size else None)
        h = fr.get("canvas_height", canvas_size[1] if canvas_size else None)
        people = []
        for p in fr.get("people", []) or []:
            if not isinstance(p, dict):
                raise InputError(name, f"frame {i}: each person must be a dict of keypoint lists")
            parts = [_points(p.get("pose_keypoints_2d"), N_BODY, "pose_keypoints_2d", name, i),
                     _points(p.get("face_keypoints_2d"), N_FACE, "face_keypoints_2d", name, i),
                     _points(p.get("hand_left_keypoints_2d"), N_HAND, "hand_left_keypoints_2d", name, i),
                     _points(p.get("hand_right_keypoints_2d"), N_HAND, "hand_right_keypoints_2d", name, i)]
            if sum(int((q[:, 2] > 0).sum()) for q in parts) == 0:
                continue  # a person with no detected point is no person
            for q in parts:
                det = q[q[:, 2] > 0, :2]
                if det.size:
                    max_coord = max(max_coord, float(np.abs(det).max()))
            people.append(parts)
        raw.append((people, w, h))

    pixels = coords == "pixels" or (coords == "auto" and max_coord > 2.0)

    poses: list[Pose | None] = []
    for i, (people, w, h) in enumerate(raw):
        for key, v in (("canvas_width", w), ("canvas_height", h)):
            if v is not None and (not isinstance(v, (int, float)) or v <= 0):
                raise InputError(name, f"frame {i}: {key} must be a positive number, got {v!r}")
        if (w is None or h is None) and (pixels or people):
            if pixels:
                raise InputError(name, f"frame {i}: pixel coordinates need canvas_width and canvas_height")
        w = int(w) if w is not None else 1
        h = int(h) if h is not None else 1
        cands = []
        for parts in people:
            if pixels:
                for q in parts:
                    ok = q[:, 2] > 0
                    q[ok, 0] /= w
                    q[ok, 1] /= h
            cands.append(Pose(*parts, width=w, height=h))
        if not cands:
            poses.append(None)
            continue
        if len(cands) > 1:
            areas = [c.area() for c in cands]
            k = int(np.argmax(areas))
            warnings.append(f"{name}: frame {i} has {len(cands)} people; using the largest (person {k}, box area "
                            f"{areas[k]:.0f} px²)")
            cands = [cands[k]]
        poses.append(cands[0])

    empty = [i for i, p in enumerate(poses) if p is None]
    if empty:
        if missing == "error" or len(empty) == len(poses):
            which = "every frame" if len(empty) == len(poses) else f"frame {empty[0]}" + (
                f" (and {len(empty) - 1} more: {empty[1:6]}{'…' if len(empty) > 6 else ''})" if len(empty) > 1 else "")
            raise InputError(name, f"no person detected in {which}; expected one person per frame"
                             + ("" if len(empty) == len(poses) else
                                " (or set missing_person to repeat_previous to carry the previous frame's pose)"))
        first = next(p for p in poses if p is not None)
        prev = first
        for i in range(len(poses)):
            if poses[i] is None:
                poses[i] = prev.copy()
            prev = poses[i]
        warnings.append(f"{name}: no person in frames {empty[:10]}{'…' if len(empty) > 10 else ''}; the previous "
                        "frame's pose was repeated there")
    return PoseSequence([p for p in poses if p is not None], warnings, pixels)


def to_pose_keypoint(poses: list[Pose]) -> list[dict]:
    """Poses -> POSE_KEYPOINT frames (normalised coordinates), for tests and round trips."""
    out = []
    for p in poses:
        def flat(a):
            return [float(v) for v in a.reshape(-1)]
        out.append({"people": [{"pose_keypoints_2d": flat(p.body), "face_keypoints_2d": flat(p.face),
                                "hand_left_keypoints_2d": flat(p.left_hand),
                                "hand_right_keypoints_2d": flat(p.right_hand)}],
                    "canvas_width": int(p.width), "canvas_height": int(p.height)})
    return out

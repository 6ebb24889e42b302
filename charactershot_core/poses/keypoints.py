"""Whole-body 2D keypoints and ComfyUI's de-facto ``POSE_KEYPOINT`` type.

``POSE_KEYPOINT`` (comfyui_controlnet_aux's DWPose / OpenPose preprocessors, core ComfyUI's SDPose Keypoint
Extractor) is a list with one dict per frame::

    {"people": [{"pose_keypoints_2d": [x, y, c] * 18,          # OpenPose COCO-18 body order
                 "face_keypoints_2d": [x, y, c] * 68 (or 70),
                 "hand_left_keypoints_2d": [x, y, c] * 21,
                 "hand_right_keypoints_2d": [x, y, c] * 21,
                 "foot_keypoints_2d": [x, y, c] * 6}, ...],    # SDPose only; accepted and not drawn
     "canvas_width": W, "canvas_height": H}

Writers differ (docs/poses.md has the details and sources):

* controlnet_aux: coordinates normalised to [0, 1] by the canvas, c = 1.0 for every kept point (it keeps points
  scored >= 0.3), a missing point ``[0, 0, 0]``, a missing part ``null``; faces of 70 points (68 + the two eyes).
* SDPose (``comfy_extras/nodes_sdpose.py``): pixel coordinates, the model's real scores (heatmap maxima, which may
  be <= 0 or above 1), a point the model did not place written as ``[-1, -1, score]`` (its score kept, sometimes
  positive), faces of 70 points (68 landmarks, then the right and left eye copied from the body), and 6 foot points.
* OpenPose: pixel coordinates, real scores, ``[0, 0, 0]`` for missing, 70-point faces (68 + the two pupils).

A point is **missing** when its score is <= 0, below ``min_score``, or it carries the not-found mark (a coordinate
equal to -1, as DWPose and SDPose write). Missing points become ``[0, 0, 0]`` and are never drawn or fitted.
``min_score`` defaults to 0.3, DWPose's own threshold.

Coordinates: ``coords="auto"`` reads them as pixels when any detected coordinate in the whole sequence exceeds 2.0
(normalised coordinates stay within about [0, 1], a little beyond for points just outside the frame; a pose read
as pixels whose every point lies within 2 px of the corner of a canvas of hundreds of pixels is not a pose), else
as normalised. "normalized" / "pixels" force one reading. Pixel coordinates need ``canvas_width`` /
``canvas_height``.

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
N_FEET = 6  # SDPose's foot_keypoints_2d (COCO-WholeBody feet: big toe, small toe, heel, left foot then right)
FACE_LENGTHS = (68, 70)

# DWPose's visibility threshold: its detector marks every point scored below 0.3 as not found
# (IDEA-Research/DWPose annotator/dwpose/__init__.py ``un_visible = subset < 0.3``) and comfyui_controlnet_aux keeps
# points with ``score >= 0.3`` (src/custom_controlnet_aux/dwpose/wholebody.py ``format_result``); core ComfyUI's
# SDPose Draw Keypoints uses ``score_threshold`` 0.3 by default.
DEFAULT_MIN_SCORE = 0.3
NOT_FOUND = -1.0  # the coordinate DWPose and SDPose write for a point the model did not place

# BODY_25 index of each COCO-18 point
BODY25_TO_COCO18 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]

COORDS = ("auto", "normalized", "pixels")
PIXEL_EVIDENCE = 2.0  # coords="auto": pixels when any detected coordinate exceeds this
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
    n_low_score: int = 0                   # points dropped because 0 < score < min_score
    n_not_found: int = 0                   # points dropped for the -1 mark although their score was > 0
    has_feet: bool = False                 # SDPose's foot_keypoints_2d was present (accepted, not drawn)


class _Counts:
    def __init__(self):
        self.low = 0
        self.not_found = 0
        self.feet = False


def _points(values, n: int, what: str, name: str, frame: int, min_score: float = 0.0,
            counts: _Counts | None = None) -> np.ndarray:
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
                                   "(OpenPose COCO-18, as DWPose and SDPose give) or 25 (BODY_25)")
    elif what == "face_keypoints_2d":
        if len(pts) not in FACE_LENGTHS:
            raise InputError(name, f"frame {frame}: face_keypoints_2d has {len(pts)} points; expected 68 (DWPose) "
                                   "or 70 (68 landmarks + 2 eye points, as OpenPose, controlnet_aux and SDPose "
                                   "write)")
        pts = pts[:N_FACE]  # the two extra points are eyes (pupils in OpenPose); the 68-point drawing skips them
    elif what == "foot_keypoints_2d":
        if len(pts) != N_FEET:
            raise InputError(name, f"frame {frame}: foot_keypoints_2d has {len(pts)} points; expected 6 "
                                   "(SDPose: big toe, small toe, heel of the left then the right foot)")
    elif len(pts) != N_HAND:
        raise InputError(name, f"frame {frame}: {what} has {len(pts)} points; expected 21")
    pts = pts.copy()
    score = pts[:, 2].copy()
    not_found = (pts[:, 0] == NOT_FOUND) | (pts[:, 1] == NOT_FOUND)
    low = (score > 0) & (score < min_score)
    missing = not_found | (score <= 0) | low
    if counts is not None and what != "foot_keypoints_2d":
        counts.low += int((low & ~not_found).sum())
        counts.not_found += int((not_found & (score > 0)).sum())
    pts[:, 2] = np.clip(score, 0.0, 1.0)
    pts[missing] = 0.0
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
                         missing: str = "error", canvas_size: tuple[int, int] | None = None,
                         min_score: float = DEFAULT_MIN_SCORE) -> PoseSequence:
    """POSE_KEYPOINT (list of frame dicts, one dict, or its JSON text) -> one :class:`Pose` per frame.

    Points scored below ``min_score`` (and points marked -1, and points scored <= 0) are missing: ``[0, 0, 0]``.
    SDPose's ``foot_keypoints_2d`` is checked (6 triples) and not kept: the official drawing draws no feet.

    Several people in a frame: the largest (area of the box around its keypoints) is used and a warning says so.
    No person in a frame: ``missing="error"`` raises an InputError naming the frame; ``"repeat_previous"`` carries the
    previous frame's pose (leading empty frames take the first detected pose) and warns.
    ``canvas_size`` (width, height) is used where a frame has no canvas_width / canvas_height.
    """
    min_score = _check_options(coords, missing, min_score)
    frames = _as_frames(data, name)
    warnings: list[str] = []
    counts = _Counts()
    raw, max_coord = _read_people(frames, name, canvas_size, min_score, counts)
    pixels = coords == "pixels" or (coords == "auto" and max_coord > PIXEL_EVIDENCE)
    poses, far_off = _frame_poses(raw, pixels, name, warnings)
    _fill_empty_frames(poses, missing, name, min_score, counts, warnings)
    if far_off is not None:
        warnings.append(f"{name}: frame {far_off} has keypoints more than a whole canvas outside the frame (read as "
                        f"pixels on {raw[far_off][1]}x{raw[far_off][2]}); check canvas_width / canvas_height, or "
                        "set coordinates to normalized")
    return PoseSequence([p for p in poses if p is not None], warnings, pixels, counts.low, counts.not_found,
                        counts.feet)


def _check_options(coords: str, missing: str, min_score) -> float:
    """Check the choices; returns ``min_score`` as a float in [0, 1]."""
    if coords not in COORDS:
        raise InputError("coordinates", f"expected one of {list(COORDS)}, got {coords!r}")
    if missing not in MISSING:
        raise InputError("missing_person", f"expected one of {list(MISSING)}, got {missing!r}")
    try:
        min_score = float(min_score)
    except (TypeError, ValueError):
        raise InputError("min_score", f"expected a number from 0 to 1, got {min_score!r}") from None
    if not 0.0 <= min_score <= 1.0:
        raise InputError("min_score", f"expected a number from 0 to 1, got {min_score}")
    return min_score


def _read_people(frames: list, name: str, canvas_size, min_score: float, counts: _Counts):
    """Per frame: (people, canvas width, canvas height), each person the checked parts (body, face, hands) as
    read; people with no detected point are dropped. Also the largest detected coordinate (pixels or not)."""
    raw: list[tuple[list[list[np.ndarray]], int, int]] = []
    max_coord = 0.0
    for i, fr in enumerate(frames):
        w = fr.get("canvas_width", canvas_size[0] if canvas_size else None)
        h = fr.get("canvas_height", canvas_size[1] if canvas_size else None)
        people = []
        for p in fr.get("people", []) or []:
            if not isinstance(p, dict):
                raise InputError(name, f"frame {i}: each person must be a dict of keypoint lists")
            parts = [_points(p.get(key), n, key, name, i, min_score, counts) for key, n in
                     (("pose_keypoints_2d", N_BODY), ("face_keypoints_2d", N_FACE),
                      ("hand_left_keypoints_2d", N_HAND), ("hand_right_keypoints_2d", N_HAND))]
            if p.get("foot_keypoints_2d") is not None:  # validated, then left out (see parse_pose_keypoints)
                _points(p["foot_keypoints_2d"], N_FEET, "foot_keypoints_2d", name, i, min_score, counts)
                counts.feet = True
            if sum(int((q[:, 2] > 0).sum()) for q in parts) == 0:
                continue  # a person with no detected point is no person
            for q in parts:
                det = q[q[:, 2] > 0, :2]
                if det.size:
                    max_coord = max(max_coord, float(np.abs(det).max()))
            people.append(parts)
        raw.append((people, w, h))
    return raw, max_coord


def _frame_poses(raw: list, pixels: bool, name: str, warnings: list[str]) -> tuple[list, int | None]:
    """One pose per frame (None where nobody is): coordinates normalised when read as pixels, the largest person
    kept. Also the first frame with a point more than a whole canvas outside it (a likely wrong canvas size)."""
    poses: list[Pose | None] = []
    far_off: int | None = None
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
        if pixels and far_off is None and any(
                ((q[q[:, 2] > 0, :2] < -1.0) | (q[q[:, 2] > 0, :2] > 2.0)).any() for parts in people for q in parts):
            far_off = i  # a point more than a whole canvas outside the frame: the canvas size is likely wrong
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
    return poses, far_off


def _fill_empty_frames(poses: list, missing: str, name: str, min_score: float, counts: _Counts,
                       warnings: list[str]) -> None:
    """Frames with nobody (None in ``poses``): an error naming them (``missing="error"``, or no person at all),
    else the previous frame's pose repeated there, in place, with a warning."""
    empty = [i for i, p in enumerate(poses) if p is None]
    if not empty:
        return
    if missing == "error" or len(empty) == len(poses):
        which = "every frame" if len(empty) == len(poses) else f"frame {empty[0]}" + (
            f" (and {len(empty) - 1} more: {empty[1:6]}{'…' if len(empty) > 6 else ''})" if len(empty) > 1 else "")
        hint = []
        if counts.low:
            hint.append(f"{counts.low} point(s) scored below min_score {min_score:g} were left out")
        if counts.not_found:
            hint.append(f"{counts.not_found} point(s) are marked -1 (not found)")
        raise InputError(name, f"no person detected in {which}; expected one person per frame"
                         + ("" if len(empty) == len(poses) else
                            " (or set missing_person to repeat_previous to carry the previous frame's pose)")
                         + (f" [{'; '.join(hint)}]" if hint else ""))
    prev = next(p for p in poses if p is not None)
    for i in range(len(poses)):
        if poses[i] is None:
            poses[i] = prev.copy()
        prev = poses[i]
    warnings.append(f"{name}: no person in frames {empty[:10]}{'…' if len(empty) > 10 else ''}; the previous "
                    "frame's pose was repeated there")


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

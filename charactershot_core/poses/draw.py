"""Pose drawing exactly as the official CharacterShot DWPose code draws (``inference/dwpose/util.py``, spec §A.2).

The rules, reproduced here from their description (our code):

* The drawing happens on a black canvas scaled so that min(H, W) = ``ref_size`` (2160), i.e. 4.5x for 720x480, and
  is resized back to (W, H) at the end with OpenCV's default bilinear ``cv2.resize``.
* The drawing is done on an OpenCV **BGR** canvas with the OpenPose colour table written as RGB triples, and the
  result is converted BGR -> RGB at the end. So every colour in the final RGB image has red and blue swapped
  relative to the table: the neck - right shoulder limb (table colour (255, 0, 0)) comes out blue, the neck - nose
  limb (table (0, 0, 255)) red. This is what the official pose PNGs look like, and what the model was trained on.
* Body: the first 17 of the 19 OpenPose limbs are drawn (the two ear - shoulder limbs are not), each as a filled
  ellipse polygon (``cv2.ellipse2Poly``, half-axes (length/2, 4), angle in whole degrees, 1-degree steps) in
  colour ``int(c * conf_a * conf_b)``, skipped when either end has confidence < 0.3. Then the whole canvas is
  multiplied by 0.6 and truncated to uint8 (limbs dimmed). Then every body point with confidence > 0.3 gets a
  filled circle of radius 4 in colour ``int(c * conf)``.
* Hands: the 20 edges are lines of thickness 2 in the HSV rainbow colour ``hsv(edge / 20, 1, 1) * int(s_a * s_b *
  255)``; the 21 points are filled circles of radius 4 in BGR (0, 0, int(s * 255)), i.e. red in the final image.
* Face: the 68 points are filled circles of radius 3 in grey ``int(s * 255)``.
* Hands and face have no confidence threshold; a point is skipped when its pixel coordinate is not > 0.01 (that is
  how DWPose's missing points at (0, 0) are left out). We also skip points with confidence 0 (a missing point in
  POSE_KEYPOINT), which the official code would otherwise draw in black at their moved position after retargeting.
* The official detector leaves out the 6 foot points (``foot = candidate[:, 18:24]`` is commented out), so feet are
  never drawn. Points below ``min_score``, and points marked -1 (not found), were made missing (confidence 0) by
  the parser (``keypoints.py``), so they are never drawn either.
"""

from __future__ import annotations

import math

import numpy as np

from ..opencv import cv2
from .keypoints import Pose

REF_SIZE = 2160
STICK_WIDTH = 4
BODY_THRESHOLD = 0.3
LIMB_DIM = 0.6
JOINT_RADIUS = 4
HAND_RADIUS = 4
HAND_THICKNESS = 2
FACE_RADIUS = 3
EPS = 0.01

# OpenPose limbs as (from, to) COCO-18 indices; only the first 17 are drawn
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17)]
N_DRAWN_LIMBS = 17

# The OpenPose colour table as written in the official code (used on a BGR canvas: channel 0 ends up as blue)
COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]

HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]


def final_rgb(table_color) -> tuple[int, int, int]:
    """The RGB colour a table colour has in the final image (the BGR canvas is converted to RGB)."""
    c = tuple(int(v) for v in table_color)
    return c[2], c[1], c[0]


def _hsv_rainbow(h: float) -> np.ndarray:
    """HSV (h, 1, 1) -> RGB floats in [0, 1] (the same formula as matplotlib.colors.hsv_to_rgb)."""
    i = int(math.floor(h * 6.0))
    f = h * 6.0 - i
    q, t = 1.0 - f, f
    i %= 6
    return np.array([(1.0, t, 0.0), (q, 1.0, 0.0), (0.0, 1.0, t), (0.0, q, 1.0), (t, 0.0, 1.0), (1.0, 0.0, q)][i])


def hand_edge_color(edge: int, score: float = 1.0) -> np.ndarray:
    """Canvas (BGR-canvas) colour of hand edge ``edge`` as the official code computes it (floats)."""
    return _hsv_rainbow(edge / float(len(HAND_EDGES))) * int(score * 255)


def _scaled(c, f: float) -> tuple[int, int, int]:
    return tuple(int(v * f) for v in c)


# (v * 0.6).astype(uint8) for every uint8 v, evaluated in float64 exactly as the official code does, as a table
_DIM_TABLE = (np.arange(256, dtype=np.float64) * LIMB_DIM).astype(np.uint8)


def dim_limbs(canvas: np.ndarray) -> np.ndarray:
    """canvas * 0.6 truncated to uint8 (the official limb dimming), via a lookup table: identical values, and
    fast on the 3240x2160 drawing canvas."""
    return cv2.LUT(canvas, _DIM_TABLE)


def draw_body(canvas: np.ndarray, body: np.ndarray) -> np.ndarray:
    h, w = canvas.shape[:2]
    for i in range(N_DRAWN_LIMBS):
        a, b = LIMBS[i]
        ca, cb = body[a, 2], body[b, 2]
        if ca < BODY_THRESHOLD or cb < BODY_THRESHOLD:
            continue
        xa, ya = body[a, 0] * float(w), body[a, 1] * float(h)
        xb, yb = body[b, 0] * float(w), body[b, 1] * float(h)
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        center = (int((xa + xb) / 2.0), int((ya + yb) / 2.0))
        poly = cv2.ellipse2Poly(center, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, _scaled(COLORS[i], ca * cb))
    canvas = dim_limbs(canvas)
    for i in range(N_BODY_POINTS):
        conf = body[i, 2]
        if conf <= BODY_THRESHOLD:
            continue
        cv2.circle(canvas, (int(body[i, 0] * w), int(body[i, 1] * h)), JOINT_RADIUS, _scaled(COLORS[i], conf),
                   thickness=-1)
    return canvas


N_BODY_POINTS = 18


def draw_hand(canvas: np.ndarray, hand: np.ndarray) -> np.ndarray:
    h, w = canvas.shape[:2]
    px = [(int(x * w), int(y * h)) for x, y in hand[:, :2]]
    for ie, (a, b) in enumerate(HAND_EDGES):
        if hand[a, 2] <= 0 or hand[b, 2] <= 0:
            continue
        (x1, y1), (x2, y2) = px[a], px[b]
        if x1 > EPS and y1 > EPS and x2 > EPS and y2 > EPS:
            color = hand_edge_color(ie, hand[a, 2] * hand[b, 2])
            cv2.line(canvas, (x1, y1), (x2, y2), tuple(float(v) for v in color), thickness=HAND_THICKNESS)
    for i, (x, y) in enumerate(px):
        if hand[i, 2] <= 0:
            continue
        if x > EPS and y > EPS:
            cv2.circle(canvas, (x, y), HAND_RADIUS, (0, 0, int(hand[i, 2] * 255)), thickness=-1)
    return canvas


def draw_face(canvas: np.ndarray, face: np.ndarray) -> np.ndarray:
    h, w = canvas.shape[:2]
    for x, y, s in face:
        if s <= 0:
            continue
        xi, yi = int(x * w), int(y * h)
        g = int(s * 255)
        if xi > EPS and yi > EPS:
            cv2.circle(canvas, (xi, yi), FACE_RADIUS, (g, g, g), thickness=-1)
    return canvas


def draw_pose(pose: Pose | None, width: int, height: int, *, ref_size: int = REF_SIZE, body: bool = True,
              hands: bool = True, face: bool = True) -> np.ndarray:
    """Draw one pose (normalised coordinates) on a black width x height canvas; returns (H, W, 3) uint8 RGB."""
    sz = min(height, width)
    sr = ref_size / sz if sz != ref_size else 1
    canvas = np.zeros((int(height * sr), int(width * sr), 3), np.uint8)
    if pose is not None:
        if body:
            canvas = draw_body(canvas, pose.body)
        else:  # the dimming still applies in the official order; an empty canvas stays black
            canvas = dim_limbs(canvas)
        if hands:
            canvas = draw_hand(canvas, pose.left_hand)
            canvas = draw_hand(canvas, pose.right_hand)
        if face:
            canvas = draw_face(canvas, pose.face)
    out = cv2.resize(canvas, (width, height)) if canvas.shape[:2] != (height, width) else canvas
    return np.ascontiguousarray(out[..., ::-1])


def draw_sequence(poses, width: int, height: int, progress=None, **kw) -> np.ndarray:
    """Draw every pose; (N, H, W, 3) uint8 RGB. ``progress()`` is called after each frame (interrupt checks)."""
    out = np.empty((len(poses), height, width, 3), np.uint8)
    for i, p in enumerate(poses):
        out[i] = draw_pose(p, width, height, **kw)
        if progress is not None:
            progress()
    return out

"""Retargeting a driving pose sequence onto the reference character, and resampling it to the model's frame count.

Retargeting follows the official ``get_video_pose`` (``inference/utils.py``; spec §A.2), in normalised coordinates:

* the reference keypoints used are body points [0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17] (nose, neck,
  shoulders, hips, knees, ankles, eyes, ears: no elbows or wrists, which move the most) that the reference detects;
* a least-squares line (``np.polyfit``, degree 1) maps every driving frame's y to the reference's y over all those
  points of all frames: ``y_ref ≈ ay * y + by``;
* the x scale is the same pixel scale, corrected for the two canvases' aspect ratios:
  ``ax = ay / (fh / fw / H * W)`` (driving canvas fw x fh, reference canvas W x H);
* the x offset is the mean residual ``bx = mean(x_ref - ax * x)``;
* body, face and hands of every frame are mapped with (ax, ay), (bx, by).

One difference, on purpose: the official code fits on every frame whose detector returned exactly one person and
on all chosen points of those frames whatever their score. We fit on the points detected (confidence > 0.3) in
both the reference and the frame, so a missing driving point at (0, 0) cannot pull the line.

Resampling: the model needs 4k + 1 frames (25 by default; training used only 25). ``resample_indices`` picks
source frames ("first": the first N like the official CLI, "nearest": evenly spread over the whole sequence);
``resample_poses`` can also interpolate keypoints linearly between neighbouring frames ("linear").
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .keypoints import Pose

REF_KEYPOINTS = [0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
FIT_THRESHOLD = 0.3
RESAMPLE_MODES = ("first", "nearest", "linear")


def fit_retarget(reference: Pose, driving: list[Pose], *, reference_name: str = "reference_pose",
                 driving_name: str = "driving_pose") -> tuple[np.ndarray, np.ndarray]:
    """The official linear rescale: returns (a, b) with a = (ax, ay), b = (bx, by) so that ref ≈ a * drv + b."""
    if not driving:
        raise InputError(driving_name, "the driving sequence is empty; expected at least 1 frame")
    ids = [i for i in REF_KEYPOINTS if reference.body[i, 2] > FIT_THRESHOLD]
    if len(ids) < 2:
        raise InputError(reference_name, f"only {len(ids)} of the torso/leg/face keypoints {REF_KEYPOINTS} are "
                                         "detected in the reference pose; expected at least 2 to fit the "
                                         "retargeting (or turn retarget off)")
    ref = reference.body[ids, :2]
    xs, ys, rx, ry = [], [], [], []
    for p in driving:
        ok = p.body[ids, 2] > FIT_THRESHOLD
        xs.append(p.body[ids, 0][ok])
        ys.append(p.body[ids, 1][ok])
        rx.append(ref[ok, 0])
        ry.append(ref[ok, 1])
    xs, ys, rx, ry = (np.concatenate(v) for v in (xs, ys, rx, ry))
    if len(ys) < 2 or np.ptp(ys) < 1e-6:
        raise InputError(driving_name, "the driving poses share fewer than 2 distinct detected torso/leg/face "
                                       "keypoints with the reference; expected a visible body to retarget (or turn "
                                       "retarget off)")
    ay, by = np.polyfit(ys, ry, 1)
    fw, fh = driving[0].width, driving[0].height
    w, h = reference.width, reference.height
    ax = ay / (fh / fw / h * w)
    bx = float(np.mean(rx - xs * ax))
    return np.array([ax, ay], np.float64), np.array([bx, by], np.float64)


def retarget(reference: Pose, driving: list[Pose], **kw) -> tuple[list[Pose], np.ndarray, np.ndarray]:
    """Map every driving pose onto the reference (see the module doc). Returns (poses, a, b); the poses take the
    reference's canvas size."""
    a, b = fit_retarget(reference, driving, **kw)
    out = []
    for p in driving:
        q = p.map_xy(a, b)
        q.width, q.height = reference.width, reference.height
        out.append(q)
    return out, a, b


def fit_into_canvas(pose: Pose, width: int, height: int) -> Pose:
    """Re-express a pose drawn on its own canvas (pose.width x pose.height) on a width x height canvas, keeping the
    aspect ratio: the source canvas is scaled to fit and centred (the same letterboxing as padding it and resizing)."""
    if pose.width * height == pose.height * width:
        q = pose.copy()
    else:
        s = min(width / pose.width, height / pose.height)
        scale = np.array([s * pose.width / width, s * pose.height / height])
        offset = (1.0 - scale) / 2.0
        q = pose.map_xy(scale, offset)
    q.width, q.height = int(width), int(height)
    return q


def check_frame_count(num_frames: int, name: str = "num_frames") -> int:
    n = int(num_frames)
    if n < 1 or (n - 1) % 4:
        lo = max(1, (n - 1) // 4 * 4 + 1)
        raise InputError(name, f"expected 4k+1 frames (1, 5, 9, ..., 25, ...; the model was trained on 25), got "
                               f"{num_frames}; nearest valid: {lo} or {lo + 4}")
    return n


def resample_indices(n_source: int, num_frames: int, mode: str = "nearest", *, name: str = "frames",
                     count_name: str = "num_frames") -> np.ndarray:
    """Indices of the source frames that make a num_frames-long sequence.

    "first": the first num_frames frames (the official CLI); an error when there are fewer.
    "nearest": num_frames instants evenly spread from the first to the last source frame, each taking the nearest
    source frame (a single source frame is repeated).
    """
    n = check_frame_count(num_frames, count_name)
    if n_source < 1:
        raise InputError(name, "the sequence is empty; expected at least 1 frame")
    if mode == "first":
        if n_source < n:
            raise InputError(name, f"has {n_source} frames but 'first' resampling needs at least {n} "
                                   f"({count_name}); use 'nearest' or 'linear' to stretch it")
        return np.arange(n)
    if mode not in RESAMPLE_MODES:
        raise InputError("resample", f"expected one of {list(RESAMPLE_MODES)}, got {mode!r}")
    if n == 1 or n_source == 1:
        return np.zeros(n, dtype=int)
    t = np.arange(n) * (n_source - 1) / (n - 1)
    return np.floor(t + 0.5).astype(int).clip(0, n_source - 1)


def _lerp_part(a: np.ndarray, b: np.ndarray, f: float) -> np.ndarray:
    out = a.copy()
    both = (a[:, 2] > 0) & (b[:, 2] > 0)
    out[both] = a[both] * (1.0 - f) + b[both] * f
    only_b = (a[:, 2] <= 0) & (b[:, 2] > 0)
    if f >= 0.5:  # a point seen on one side only appears at the nearer frame
        out[only_b] = b[only_b]
        only_a = (a[:, 2] > 0) & (b[:, 2] <= 0)
        out[only_a] = 0.0
    return out


def resample_poses(poses: list[Pose], num_frames: int, mode: str = "nearest", *, name: str = "driving_pose",
                   count_name: str = "num_frames") -> list[Pose]:
    """Resample a pose sequence to num_frames (4k+1). "linear" interpolates x, y and confidence of points detected
    in both neighbouring frames; a point seen in only one of them comes from the nearer frame."""
    if mode != "linear":
        return [poses[i].copy() for i in resample_indices(len(poses), num_frames, mode, name=name,
                                                          count_name=count_name)]
    n = check_frame_count(num_frames, count_name)
    if not poses:
        raise InputError(name, "the sequence is empty; expected at least 1 frame")
    if len(poses) == 1 or n == 1:
        return [poses[0].copy() for _ in range(n)]
    out = []
    for j in range(n):
        t = j * (len(poses) - 1) / (n - 1)
        i0 = min(int(np.floor(t)), len(poses) - 2)
        f = t - i0
        a, b = poses[i0], poses[i0 + 1]
        parts = [_lerp_part(pa, pb, f) for pa, pb in zip(a.parts(), b.parts())]
        out.append(Pose(*parts, width=a.width, height=a.height))
    return out

"""Views like a video model's: degrade a consistent multi-view video the way generated views differ from a render.

A video diffusion model's views of one character are not a consistent render: each view has its own colour and
exposure, sits a little off the camera rig, flickers from frame to frame and invents details that other views do not
share. :func:`degrade` applies those four effects, seeded and deterministic, to a clean clip ``(V, T, H, W, 3)`` in
[0, 1] (white background), at a ``strength`` where 1 is the middle setting:

* ``colour``: per view, a gain per channel ``1 + N(0, 0.03 s)``, an exposure ``exp(N(0, 0.06 s))`` and an offset per
  channel ``N(0, 0.015 s)``, on the whole image (the background is no longer pure white);
* ``misalign``: per view, a similarity transform against the rig: shift ``N(0, 0.6 s)`` px per axis, rotation
  ``N(0, 0.4 s)`` degrees and scale ``1 + N(0, 0.005 s)`` about the image centre, the same for all frames;
* ``flicker``: per view and frame, a brightness factor ``1 + N(0, 0.02 s)``;
* ``detail``: per view, a smooth random colour field (a 4x6 grid of ``N(0, 0.06 s)`` per channel, upsampled
  bicubically) multiplied into the character only (pixels darker than the white background), so details disagree
  between views.

``strength=0`` returns the clip unchanged. Used by ``benchmarks/bench_degraded.py``.

The ``misalign`` effect resamples each image (bilinear), and at a sub-pixel shift that averages neighbouring pixels:
a blur no camera produces (at 180x120 the warped views differ from views drawn exactly off the rig by 25 dB over the
character). Where the clip can be drawn anew, :func:`misaligned_rig` gives the cameras that draw every point where
the warp would put it (shift, roll and zoom as the camera's principal point, roll and focal length): views that sit
off the rig and are as sharp as the rig's own; the benchmark renders its misalignment that way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ...cameras import GL_TO_CV, CameraRig
from ...errors import InputError

EFFECTS = ("colour", "misalign", "flicker", "detail")


def _as_clip(clip) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(clip) if not isinstance(clip, torch.Tensor) else clip)
    if x.dim() != 5 or x.shape[-1] != 3:
        raise InputError("clip", f"expected a clip of shape (views, frames, H, W, 3), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return x.float()


def _warp(img: torch.Tensor, dx: float, dy: float, angle_deg: float, scale: float) -> torch.Tensor:
    """Images (T, H, W, 3) moved by a similarity about the centre (pixels, degrees); white where nothing maps."""
    t, h, w, _ = img.shape
    a = math.radians(angle_deg)
    c, s = math.cos(a) / scale, math.sin(a) / scale
    # grid_sample's normalised coordinates: x in [-1, 1] over W, y over H; the inverse map output -> input
    theta = torch.tensor([[c, -s * h / w, -2.0 * dx / w], [s * w / h, c, -2.0 * dy / h]], dtype=torch.float32)
    grid = F.affine_grid(theta.expand(t, 2, 3), (t, 3, h, w), align_corners=False)
    x = img.permute(0, 3, 1, 2) - 1.0  # white -> 0, so the padding is white
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
    return out.permute(0, 2, 3, 1)


def _draws(v: int, t: int, s: float, seed: int) -> dict:
    """Every random number of :func:`degrade` for ``v`` views of ``t`` frames at strength ``s``, drawn whatever the
    effects, so one effect's numbers do not depend on the others chosen."""
    rng = np.random.default_rng(seed)
    return {"gain": 1.0 + rng.normal(0, 0.03 * s, (v, 3)), "exposure": np.exp(rng.normal(0, 0.06 * s, v)),
            "offset": rng.normal(0, 0.015 * s, (v, 3)), "shift": rng.normal(0, 0.6 * s, (v, 2)),
            "angle": rng.normal(0, 0.4 * s, v), "zoom": 1.0 + rng.normal(0, 0.005 * s, v),
            "flicker": 1.0 + rng.normal(0, 0.02 * s, (v, t)), "detail": rng.normal(0, 0.06 * s, (v, 3, 4, 6))}


def misplaced(points_px: np.ndarray, width: int, height: int, strength: float = 1.0, seed: int = 0) -> np.ndarray:
    """Where :func:`degrade`'s misalignment (same ``strength`` and ``seed``) draws the image points ``points_px``
    (V, N, 2), pixel coordinates (x right, y down, 0 at the image's left/top edge) of each view -> (V, N, 2): the
    inverse of the similarity each view's image is resampled with, for scoring a fit's camera corrections."""
    pts = np.asarray(points_px, np.float64)
    v = pts.shape[0]
    d = _draws(v, 1, float(strength), seed)
    out = np.empty_like(pts)
    for k in range(v):
        a = math.radians(float(d["angle"][k]))
        c, s = math.cos(a) / float(d["zoom"][k]), math.sin(a) / float(d["zoom"][k])
        th = np.array([[c, -s * height / width], [s * width / height, c]])
        off = np.array([-2.0 * d["shift"][k, 0] / width, -2.0 * d["shift"][k, 1] / height])
        yn = np.stack([2 * pts[k, :, 0] / width - 1, 2 * pts[k, :, 1] / height - 1], -1)
        xn = np.linalg.solve(th, (yn - off).T).T
        out[k] = np.stack([(xn[:, 0] + 1) * width / 2, (xn[:, 1] + 1) * height / 2], -1)
    return out


def misaligned_rig(rig, strength: float = 1.0, seed: int = 0):
    """The cameras of ``rig`` (a ``CameraRig``) as :func:`degrade`'s misalignment (same ``strength`` and ``seed``,
    one draw per camera) moves their pictures: each view's similarity about the image centre becomes a roll of the
    camera about its axis, a focal length times the zoom and a moved principal point, so a point is drawn exactly
    where :func:`misplaced` says (for square pixels, ``fx == fy``; the rig's own cameras have them)."""
    if not strength >= 0:
        raise InputError("strength", f"expected a strength of 0 or more, got {strength}")
    v = len(rig)
    d = _draws(v, 1, float(strength), seed)
    centre = np.array([rig.width / 2.0, rig.height / 2.0])
    w2c, fx, fy = rig.w2c_cv().copy(), rig.fx * d["zoom"], rig.fy * d["zoom"]
    cx, cy = rig.cx.copy(), rig.cy.copy()
    for k in range(v):
        a = -math.radians(float(d["angle"][k]))
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        cx[k], cy[k] = centre + float(d["zoom"][k]) * rot @ (np.array([cx[k], cy[k]]) - centre + d["shift"][k])
        roll = np.eye(4)
        roll[:2, :2] = rot
        w2c[k] = roll @ w2c[k]
    return CameraRig(np.linalg.inv(w2c) @ np.linalg.inv(GL_TO_CV), fx, fy, cx, cy, rig.width, rig.height,
                     list(rig.names), rig.times, rig.square_size)


def degrade(clip, strength: float = 1.0, seed: int = 0, effects=EFFECTS) -> torch.Tensor:
    """The clip ``(V, T, H, W, 3)`` with the chosen ``effects`` at ``strength`` (module docstring), as float32 in
    [0, 1]. Deterministic for a seed."""
    x = _as_clip(clip).clone()
    if not strength >= 0:
        raise InputError("strength", f"expected a strength of 0 or more, got {strength}")
    unknown = [e for e in effects if e not in EFFECTS]
    if unknown:
        raise InputError("effects", f"expected some of {', '.join(EFFECTS)}, got {unknown}")
    if strength == 0:
        return x
    v, t, h, w, _ = x.shape
    d = _draws(v, t, float(strength), seed)
    gain, exposure, offset, shift, angle, zoom, flick, detail = (d[k] for k in (
        "gain", "exposure", "offset", "shift", "angle", "zoom", "flicker", "detail"))
    for k in range(v):
        img = x[k]
        if "misalign" in effects:
            img = _warp(img, float(shift[k, 0]), float(shift[k, 1]), float(angle[k]), float(zoom[k]))
        if "detail" in effects:
            field = F.interpolate(torch.tensor(detail[k], dtype=torch.float32)[None], size=(h, w), mode="bicubic",
                                  align_corners=False)[0].permute(1, 2, 0)  # (H, W, 3)
            character = (img.amin(-1, keepdim=True) < 0.97).float()
            img = img * (1.0 + field * character)
        if "colour" in effects:
            img = img * torch.tensor(gain[k] * exposure[k], dtype=torch.float32) + torch.tensor(offset[k],
                                                                                               dtype=torch.float32)
        if "flicker" in effects:
            img = img * torch.tensor(flick[k], dtype=torch.float32)[:, None, None, None]
        x[k] = img.clamp(0.0, 1.0)
    return x

"""Refinement of each training camera's pose against the rig (views that sit a little off it).

A video model's views are drawn for the official camera rig but do not sit on it exactly: each is shifted, rolled
and zoomed by a fraction of a pixel to a few pixels. :class:`PoseRefine` learns a small SE(3) correction per
training view, zero-initialised, with its own learning rate and a regulariser towards zero, applied to the
world-to-camera matrices on the camera side: ``viewmat' = exp(xi_v) @ viewmat``, with ``xi_v = (w, t)`` a rotation
(axis-angle, radians) and a translation in units of ``scale`` (the scene's size, so one learning rate fits every
scene). As gsplat's example trainer does with ``pose_opt``; the exponential map is the closed form (Rodrigues, with
Taylor series near zero, so it is smooth there and runs on every device).

The corrections are gauge-fixed like the appearance: their mean over the training views is subtracted, so the rig
as a whole stays where it is and the held-out cameras, which are not refined, still see the scene from the rig.
"""

from __future__ import annotations

import torch

from ...errors import InputError


def _skew(w: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(w[..., 0])
    return torch.stack([torch.stack([z, -w[..., 2], w[..., 1]], -1),
                        torch.stack([w[..., 2], z, -w[..., 0]], -1),
                        torch.stack([-w[..., 1], w[..., 0], z], -1)], -2)


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """(..., 6) twists ``(wx, wy, wz, tx, ty, tz)`` -> (..., 4, 4) rigid transforms (the exponential map of se(3))."""
    w, t = xi[..., :3], xi[..., 3:]
    th2 = w.square().sum(-1)
    small = th2 < 1e-6
    th2s = torch.where(small, torch.ones_like(th2), th2)
    ths = th2s.sqrt()
    a = torch.where(small, 1 - th2 / 6, torch.sin(ths) / ths)
    b = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(ths)) / th2s)
    c = torch.where(small, 1.0 / 6 - th2 / 120, (ths - torch.sin(ths)) / (th2s * ths))
    k = _skew(w)
    k2 = k @ k
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device).expand(k.shape)
    rot = eye + a[..., None, None] * k + b[..., None, None] * k2
    v = eye + b[..., None, None] * k + c[..., None, None] * k2
    top = torch.cat([rot, (v @ t[..., None])], -1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


class PoseRefine(torch.nn.Module):
    """A learned SE(3) correction per training view, applied to world-to-camera matrices."""

    def __init__(self, num_views: int, scale: float = 1.0, device=None):
        super().__init__()
        if num_views < 1:
            raise InputError("views", f"expected at least one view, got {num_views}")
        if not scale > 0:
            raise InputError("scale", f"expected a positive scene scale, got {scale}")
        self.scale = float(scale)
        self.delta = torch.nn.Parameter(torch.zeros(num_views, 6, device=device))

    def twists(self) -> torch.Tensor:
        """(V, 6) centred twists, the translation in world units."""
        d = self.delta - self.delta.mean(0, keepdim=True)
        return torch.cat([d[:, :3], d[:, 3:] * self.scale], -1)

    def forward(self, viewmats: torch.Tensor, views) -> torch.Tensor:
        """``viewmats`` (B, 4, 4) of ``views`` (indices into the training views) -> the refined (B, 4, 4)."""
        idx = torch.as_tensor(views, dtype=torch.long, device=self.delta.device)
        t = se3_exp(self.twists()[idx]).to(viewmats.dtype)
        return t @ viewmats

    def regulariser(self) -> torch.Tensor:
        d = self.delta - self.delta.mean(0, keepdim=True)
        return d.square().mean()

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

``dof="image"`` (the fit's default) learns only what moves a view's picture in its image plane: pan, tilt and roll
about the camera's centre and a dolly along its axis (4 numbers per view: the shift, roll and zoom a video model's
views are drawn off the rig by). The two sideways translations of the full rigid correction (``dof="rigid"``) move a
distant character's picture the same way pan and tilt do, so with them the problem has flat directions that Adam's
normalised steps random-walk along (parallax errors that no view constrains). In the image mode the gauge is also
exact: a translation of the whole scene is, to first order, a pan/tilt pattern over the views (``J_v d``, from each
camera's rotation and distance to the scene's centre); that component is projected out (least squares over the
training views), with the mean roll and dolly, so the scene cannot drift against the held-out cameras.
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


POSE_DOFS = ("image", "rigid")


class PoseRefine(torch.nn.Module):
    """A learned correction per training view, applied to world-to-camera matrices: ``dof="rigid"`` a full SE(3)
    twist, ``dof="image"`` pan, tilt, roll and dolly (module docstring). ``viewmats`` (V, 4, 4), the training
    cameras, and ``centre`` (3,), the scene's centre, fix the image mode's gauge exactly (without them: the mean)."""

    def __init__(self, num_views: int, scale: float = 1.0, device=None, dof: str = "rigid", viewmats=None,
                 centre=None):
        super().__init__()
        if num_views < 1:
            raise InputError("views", f"expected at least one view, got {num_views}")
        if not scale > 0:
            raise InputError("scale", f"expected a positive scene scale, got {scale}")
        if dof not in POSE_DOFS:
            raise InputError("pose_dof", f"expected one of {', '.join(POSE_DOFS)}, got {dof!r}")
        self.scale, self.dof = float(scale), dof
        self.delta = torch.nn.Parameter(torch.zeros(num_views, 6 if dof == "rigid" else 4, device=device))
        self.gauge = None
        if dof == "image" and viewmats is not None and centre is not None and num_views >= 3:
            self.gauge = _translation_gauge(torch.as_tensor(viewmats, dtype=torch.float32),
                                            torch.as_tensor(centre, dtype=torch.float32)).to(device)

    def _centred(self) -> torch.Tensor:
        d = self.delta - self.delta.mean(0, keepdim=True)
        if self.gauge is not None:  # pan/tilt: minus the pattern a translation of the whole scene makes
            pt = self.delta[:, :2].reshape(-1)
            d = torch.cat([(pt - self.gauge @ pt).reshape(-1, 2), d[:, 2:]], -1)
        return d

    def twists(self) -> torch.Tensor:
        """(V, 6) gauge-fixed twists, the translation in world units."""
        d = self._centred()
        if self.dof == "image":
            z = torch.zeros_like(d[:, :2])
            return torch.cat([d[:, :3], z, d[:, 3:] * self.scale], -1)
        return torch.cat([d[:, :3], d[:, 3:] * self.scale], -1)

    def forward(self, viewmats: torch.Tensor, views) -> torch.Tensor:
        """``viewmats`` (B, 4, 4) of ``views`` (indices into the training views) -> the refined (B, 4, 4)."""
        idx = torch.as_tensor(views, dtype=torch.long, device=self.delta.device)
        t = se3_exp(self.twists()[idx]).to(viewmats.dtype)
        return t @ viewmats

    def regulariser(self) -> torch.Tensor:
        return self._centred().square().mean()

    @torch.no_grad()
    def image_shift(self, viewmats: torch.Tensor, Ks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(V,) how far each training view's correction moves its picture: the mean distance in pixels, over
        ``points`` (N, 3, world) in front of the camera, between where the rig's camera (``viewmats`` (V, 4, 4),
        ``Ks`` (V, 3, 3), every training view in order) and the refined one draw them."""
        vm = viewmats.detach().float()
        ks = Ks.detach().float().to(vm.device)
        pts = points.detach().float().to(vm.device)
        refined = self(vm.to(self.delta.device), range(vm.shape[0])).to(vm.device)

        def project(v):
            cam = pts @ v[:, :3, :3].transpose(1, 2) + v[:, None, :3, 3]  # (V, N, 3)
            z = cam[..., 2].clamp_min(1e-6)
            uv = torch.stack([ks[:, None, 0, 0] * cam[..., 0] / z, ks[:, None, 1, 1] * cam[..., 1] / z], -1)
            return uv, cam[..., 2] > 1e-6

        a, front = project(vm)
        b, _ = project(refined)
        d = (a - b).norm(dim=-1) * front
        return d.sum(1) / front.sum(1).clamp_min(1)

    @torch.no_grad()
    def freeze(self) -> None:
        """Drop the corrections (back to the rig's cameras) and stop learning them."""
        self.delta.zero_()
        self.delta.requires_grad_(False)
        self.delta.grad = None

    @property
    def frozen(self) -> bool:
        return not self.delta.requires_grad


def _translation_gauge(viewmats: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(2V, 2V) projector onto the pan/tilt patterns ``J_v d`` a small translation ``d`` of the whole scene makes:
    in camera ``v`` the scene's centre at depth ``z_v`` moves by ``R_v d``, which a rotation ``w`` about the camera's
    centre matches (to first order, on the axis) when ``w_x = -(R_v d)_y / z_v`` and ``w_y = (R_v d)_x / z_v``."""
    r = viewmats[:, :3, :3]
    z = (r @ centre[:, None])[:, 2, 0] + viewmats[:, 2, 3]
    z = torch.where(z.abs() > 1e-6, z, torch.ones_like(z))
    j = torch.stack([-r[:, 1, :] / z[:, None], r[:, 0, :] / z[:, None]], 1).reshape(-1, 3)  # (2V, 3)
    return j @ torch.linalg.pinv(j)

"""A fit robust to views like a video model's: what the fitting loop calls (its hooks in ``fit.py`` are listed in
docs/4d.md, "Views like a video model's").

:class:`ViewCorrections` bundles the options of ``FitConfig`` for inconsistent views:

* ``colour_field``: a smooth colour field per view and a gain per view and frame on the character
  (``appearance.ViewColourField``), in the loss only; ``auto`` turns it on for views whose background drifted;
* ``appearance``: a per-view affine colour and per-view-and-frame gain (``appearance.ViewAppearance``) applied to
  the render inside the photometric loss only;
* ``pose_refine``: a per-view correction of the training cameras (``camera_refine.PoseRefine``): ``pose_dof``
  ``"image"`` (pan, tilt, roll, dolly; the gauge of a translation of the scene projected out) or ``"rigid"`` (SE(3));
* ``robust_loss``: the photometric loss's per-pixel penalty, ``"l1"`` (the default L1 + D-SSIM), ``"charbonnier"``
  (``sqrt(r^2 + eps^2)``) or ``"trimmed"`` (the residuals above each image's 90th percentile count with a
  Geman-McClure weight, so a detail that one view invents pulls less);

with their own Adam optimiser (learning rates ``lr_appearance`` and ``lr_pose``, regularisers
``appearance_reg`` and ``pose_reg`` towards identity). With every option off it is the identity and costs nothing.
"""

from __future__ import annotations

import torch

from ...errors import InputError
from . import losses
from .appearance import SaturatedColour, ViewAppearance, ViewColourField
from .camera_refine import PoseRefine

ROBUST_LOSSES = ("l1", "charbonnier", "trimmed")
# the FitConfig defaults of the options (fit.py's fields use these; the node's inputs too)
DEFAULTS = {"background_estimate": True, "appearance": False, "pose_refine": True, "robust_loss": "l1"}


def pixel_penalty(pred: torch.Tensor, gt: torch.Tensor, kind: str = "l1", eps: float = 1e-3,
                  quantile: float = 0.9) -> torch.Tensor:
    """Mean per-pixel penalty of the residual between (B, H, W, 3) images (``ROBUST_LOSSES``)."""
    r = pred - gt
    if kind == "l1":
        return r.abs().mean()
    if kind == "charbonnier":
        return (r.square() + eps * eps).sqrt().mean()
    if kind == "trimmed":
        a = r.abs().mean(-1)  # (B, H, W) per pixel
        flat = a.detach().reshape(a.shape[0], -1)
        k = max(1, int(round(quantile * flat.shape[1])))
        tau = flat.kthvalue(k, dim=1).values.clamp_min(1e-3)[:, None, None]
        # L1 below the threshold; above it the Geman-McClure-like tail tau * r^2 / (r^2 + tau^2) * 2, continuous
        # at r = tau and bounded by 2 tau, so a residual far above the others stops pulling
        tail = 2 * tau * a.square() / (a.square() + tau.square())
        return torch.where(a <= tau, a, tail).mean()
    raise InputError("robust_loss", f"expected one of {', '.join(ROBUST_LOSSES)}, got {kind!r}")


def photometric(pred: torch.Tensor, gt: torch.Tensor, lambda_dssim: float = 0.2, kind: str = "l1") -> torch.Tensor:
    """``losses.photometric_loss`` with the per-pixel penalty ``kind`` in place of L1."""
    if kind == "l1":
        return losses.photometric_loss(pred, gt, lambda_dssim)
    pen = pixel_penalty(pred, gt, kind)
    if lambda_dssim <= 0 or min(pred.shape[1], pred.shape[2]) < 11:
        return pen
    return (1 - lambda_dssim) * pen + lambda_dssim * (1 - losses.ssim_map(pred, gt).mean())


class ViewCorrections:
    """The robust-fit options of a ``FitConfig`` for ``num_views`` training views of ``num_frames`` frames."""

    def __init__(self, cfg, num_views: int, num_frames: int, scene_scale: float, device, viewmats=None,
                 centre=None, anchors=None, size=None):
        kind = getattr(cfg, "robust_loss", "l1")
        if kind not in ROBUST_LOSSES:
            raise InputError("robust_loss", f"expected one of {', '.join(ROBUST_LOSSES)}, got {kind!r}")
        self.cfg, self.kind = cfg, kind
        self.appearance = ViewAppearance(num_views, num_frames, device) if getattr(cfg, "appearance", False) else None
        self.colour_field = None
        if getattr(cfg, "colour_field", "off") in (True, "on") and size is not None:
            self.colour_field = ViewColourField(num_views, num_frames, int(size[0]), int(size[1]),
                                                int(getattr(cfg, "colour_field_cells", 8)), device)
        # images whose background saturated: a colour anchored to the white-balanced ones (none to anchor to: off)
        self.saturated = None
        if getattr(cfg, "saturated_colour", False) and anchors is not None and bool(torch.as_tensor(anchors).any()) \
                and not bool(torch.as_tensor(anchors).all()):
            self.saturated = SaturatedColour(anchors, device)
        self.pose = None
        if getattr(cfg, "pose_refine", False):
            vm = None if viewmats is None else torch.as_tensor(viewmats).detach().float().cpu()
            self.pose = PoseRefine(num_views, scene_scale, device, getattr(cfg, "pose_dof", "rigid"), vm, centre)
        groups = []
        if self.appearance is not None:
            groups.append({"params": list(self.appearance.parameters()), "lr": cfg.lr_appearance})
        if self.saturated is not None:
            groups.append({"params": list(self.saturated.parameters()), "lr": cfg.lr_appearance})
        if self.colour_field is not None:
            groups.append({"params": list(self.colour_field.parameters()), "lr": cfg.lr_appearance})
        if self.pose is not None:
            groups.append({"params": list(self.pose.parameters()), "lr": cfg.lr_pose})
        self.opt = torch.optim.Adam(groups, eps=1e-15) if groups else None

    def set_lrs(self, p: float) -> None:
        """The camera refinement's learning rate at progress ``p``: ``lr_pose`` x ``pose_warmup`` at the start,
        falling linearly to ``lr_pose`` at the end of the static stage (``coarse_fraction``), then linearly to
        ``lr_pose`` x ``pose_lr_final`` at the end of the fit (1: constant)."""
        if self.pose is None:
            return
        boost = float(getattr(self.cfg, "pose_warmup", 1.0))
        coarse = min(max(1e-6, float(getattr(self.cfg, "coarse_fraction", 0.2))), 1.0 - 1e-6)
        early = max(0.0, 1.0 - p / coarse)
        late = min(1.0, max(0.0, (p - coarse) / (1.0 - coarse)))
        final = float(getattr(self.cfg, "pose_lr_final", 1.0))
        self.opt.param_groups[-1]["lr"] = self.cfg.lr_pose * (1.0 + (boost - 1.0) * early) * (1.0 + (final - 1.0) * late)

    def parameters(self) -> list:
        return [p for g in (self.opt.param_groups if self.opt else []) for p in g["params"]]

    def viewmats(self, viewmats: torch.Tensor, views) -> torch.Tensor:
        """The training cameras ``views`` (indices) of the rig's ``viewmats`` (all views), refined when asked."""
        vm = viewmats[list(views)]
        return vm if self.pose is None else self.pose(vm, views)

    def corrected(self, img: torch.Tensor, views, frame: int, alpha: torch.Tensor | None = None) -> torch.Tensor:
        """The render as the views ``views`` show it at ``frame`` (the appearance correction), or the render.
        ``alpha``: the render's opacity (the colour field corrects the character only)."""
        if self.colour_field is not None and alpha is not None:
            img = self.colour_field(img, views, frame, alpha)
        if self.saturated is not None:
            img = self.saturated(img, views, frame)
        return img if self.appearance is None else self.appearance(img, views, frame)

    def loss(self, img: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Photometric loss of the (corrected) render + the corrections' regularisers."""
        out = photometric(img, gt, self.cfg.lambda_dssim, self.kind)
        if self.appearance is not None:
            out = out + self.cfg.appearance_reg * self.appearance.regulariser()
        if self.saturated is not None:
            out = out + self.cfg.appearance_reg * self.saturated.regulariser()
        if self.colour_field is not None:
            out = out + self.cfg.appearance_reg * self.colour_field.regulariser()
        if self.pose is not None:
            out = out + self.cfg.pose_reg * self.pose.regulariser()
        return out

    def step(self) -> None:
        if self.opt is not None:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

    def zero_grad(self) -> None:
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=True)


# one line per option for the node's tooltips and the CLI's help: what it trades (docs/4d.md, "Views like a video
# model's", has the measurements)
HELP_ROBUST = {
    "background_estimate": "Bring each view's background back to white (the median colour of its border) before "
                           "fitting, for generated views whose background drifted off white: free in speed, +0.3 dB held-out at the middle degradation strength; "
                           "white backgrounds are left as they are.",
    "appearance": "Learn a colour correction per view (affine) and a gain per view and frame, used in the loss only "
                  "(never rendered): about 2 % slower per iteration (8 ms of 0.4 s on a CPU); no gain measured on "
                  "the degraded demo (-0.2 dB at the middle strength with the other defaults), so off by default.",
    "pose_refine": "Learn a small correction per training camera against the rig (pan, tilt, roll, dolly), for views "
                   "drawn a pixel or so off it: free in speed; +5 dB held-out at the middle degradation strength; "
                   "where the views sit on the rig the corrections stay tiny and are dropped after the first stage "
                   "(no cost), so on by default.",
    "colour_field": "A smooth colour field per view and a gain per view and frame on the character, used in the "
                    "loss only (never rendered), so colour that drifts across generated views does not bend the "
                    "shapes: about 5 % slower per iteration on a CPU (up to 9 % at 720x480); +0.4 dB held-out at the middle degradation strength, "
                    "-0.3 dB on clean renders, so auto (the default) turns it on only when some view's background "
                    "drifted off white (generated views).",
    "robust_loss": "Per-pixel penalty of the photometric loss: l1 (L1 + D-SSIM), charbonnier, or trimmed (each "
                   "image's largest residuals pull less: details one view invents); same speed; trimmed cost 0.2 dB at the middle strength (with the other options on).",
}

"""Per-view appearance correction for views that do not agree on colour (a video model's views).

Each training view ``v`` gets an affine colour and each view and frame a gain, acting on the "ink" ``1 - c`` (how far
a pixel is from the white background): ``c' = (1 + b_v) - g_{v,f} A_v (1 - c)``, with a 3x3 matrix ``A_v``, an
offset ``b_v`` (the colour the view gives the white background) and a gain ``g_{v,f} = exp(l_{v,f})`` (exposure
flicker). A view whose colour is ``G c + o`` (per-channel gain and offset, then a flicker ``f``) is exactly
``(G 1 + o) f - f G (1 - c)``: ``b = (G 1 + o) f - 1``, ``g A = f G``. The corrections are identity-initialised,
learned with their own small learning rate and a regulariser towards identity, and applied to the RENDER only inside
the photometric loss: the Gaussians keep the colour the views agree on, and the corrections are never rendered or
exported. The result is not clamped: a clamp would make a dead zone where a bright floater on the background costs
nothing once a view's correction pushes it above white.

The corrections are gauge-fixed: the mean over the training views of every parameter is subtracted before use, so
the views' average appearance is the Gaussians' own; the gains are also centred over each view's frames, so a view's
overall level lives in its matrix alone (a colour shift common to all views cannot drift into the
corrections, and a held-out view sees the consensus colour).

This is the global (1x1x1) case of the per-image bilateral grids of Wang et al. (SIGGRAPH 2024) that gsplat's
example trainer offers, and the role its appearance embeddings play: enough for the per-view colour, exposure and
flicker of a generated multi-view video, with 12 parameters per view and one per view and frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import InputError


def centred_gains(log_gain: torch.Tensor) -> torch.Tensor:
    """(views, frames) log-gains centred over the views and over the frames: the gain is the flicker, so a view's
    overall level belongs to its other corrections and a colour common to all views stays the Gaussians'."""
    return log_gain - log_gain.mean(0, keepdim=True) - log_gain.mean(1, keepdim=True) + log_gain.mean()


class ViewAppearance(torch.nn.Module):
    """Affine colour per view (3x3 + offset) and log-gain per view and frame; identity at initialisation."""

    def __init__(self, num_views: int, num_frames: int = 1, device=None):
        super().__init__()
        if num_views < 1 or num_frames < 1:
            raise InputError("views", f"expected at least one view and frame, got {num_views} x {num_frames}")
        self.matrix = torch.nn.Parameter(torch.zeros(num_views, 3, 3, device=device))  # A - I
        self.offset = torch.nn.Parameter(torch.zeros(num_views, 3, device=device))
        self.log_gain = torch.nn.Parameter(torch.zeros(num_views, num_frames, device=device))

    def _centred(self):
        m = self.matrix - self.matrix.mean(0, keepdim=True)
        b = self.offset - self.offset.mean(0, keepdim=True)
        return m, b, centred_gains(self.log_gain)

    def transforms(self, views, frame: int):
        """``(A (B, 3, 3), b (B, 3), gain (B,))`` (module docstring) of the views (indices into the training views) at ``frame``."""
        idx = torch.as_tensor(views, dtype=torch.long, device=self.matrix.device)
        m, b, g = self._centred()
        eye = torch.eye(3, device=m.device, dtype=m.dtype)
        return eye + m[idx], b[idx], g[idx, int(frame)].exp()

    def forward(self, img: torch.Tensor, views, frame: int) -> torch.Tensor:
        """``img`` (B, H, W, 3) rendered from ``views`` at ``frame`` -> what those views would show (B, H, W, 3)."""
        a, b, g = self.transforms(views, frame)
        ink = torch.einsum("bij,bhwj->bhwi", a, 1.0 - img) * g[:, None, None, None]
        return (1.0 + b[:, None, None, :]) - ink

    def regulariser(self) -> torch.Tensor:
        """Mean squared distance of the (centred) corrections from identity."""
        m, b, g = self._centred()
        return m.square().mean() + b.square().mean() + g.square().mean()


class SaturatedColour(torch.nn.Module):
    """A colour correction for the images whose background saturated at white, anchored to those whose background
    showed its colour.

    A view drawn brighter than the truth (gain ``k`` and offset ``o`` per channel, ``k + o > 1``) has its background
    clipped to white, so the white balance (``background.whiten_video``) cannot see it and the character stays too
    light; averaged with the views it did correct, the consensus is biased. Here each such image (``anchors`` False)
    gets a gain and an offset per channel, ``c' = min(1, (1 + b) - g (1 - c))`` (the clip included: its background
    predicts white as its pixels show), identity-initialised and regularised towards identity; the white-balanced
    images (``anchors`` True) keep the identity and fix the colour, so there is no gauge to choose. Applied to the
    render inside the loss only, never rendered or exported."""

    def __init__(self, anchors: torch.Tensor, device=None):
        super().__init__()
        anchors = torch.as_tensor(anchors, dtype=torch.bool)
        if anchors.dim() != 2:
            raise InputError("anchors", f"expected a (views, frames) mask, got shape {tuple(anchors.shape)}")
        self.register_buffer("free", (~anchors).to(device))
        v, t = anchors.shape
        self.log_gain = torch.nn.Parameter(torch.zeros(v, t, 3, device=device))
        self.offset = torch.nn.Parameter(torch.zeros(v, t, 3, device=device))

    def forward(self, img: torch.Tensor, views, frame: int) -> torch.Tensor:
        idx = torch.as_tensor(views, dtype=torch.long, device=self.log_gain.device)
        free = self.free[idx, int(frame)]
        if not bool(free.any()):
            return img
        g = self.log_gain[idx, int(frame)].exp()[:, None, None, :]
        b = self.offset[idx, int(frame)][:, None, None, :]
        out = ((1.0 + b) - g * (1.0 - img)).clamp(max=1.0)
        return torch.where(free[:, None, None, None], out, img)

    def regulariser(self) -> torch.Tensor:
        m = self.free[..., None].float()
        return ((self.log_gain * m).square().sum() + (self.offset * m).square().sum()) / max(1.0, float(m.sum()) * 3)


class ViewColourField(torch.nn.Module):
    """A smooth colour field per training view and a gain per view and frame, for views whose colour drifts across
    the picture as well as as a whole (a video model's views: shading and details that differ between views).

    Per view a coarse grid of log-gains per channel (``cells`` along the image's long side), upsampled bilinearly to
    the picture, and per view and frame a log-gain (flicker); the render's colour is multiplied by
    ``exp((field + gain) * alpha)`` where ``alpha`` is the render's own opacity, so the white background stays white
    and only the character is corrected. Gauge-fixed as :class:`ViewAppearance`: the mean over the views of every
    cell (and of every gain) is subtracted, the gains are centred over the frames as well, so the Gaussians keep the
    colour the views agree on and a held-out view sees that consensus. Zero-initialised, regularised towards zero,
    applied inside the loss only. The spatial, diagonal case of the per-image bilateral grids of Wang et al.
    (SIGGRAPH 2024)."""

    def __init__(self, num_views: int, num_frames: int, width: int, height: int, cells: int = 8, device=None):
        super().__init__()
        if num_views < 1 or num_frames < 1 or cells < 1:
            raise InputError("views", f"expected at least one view, frame and cell, got {num_views} x {num_frames}"
                                      f" x {cells}")
        long = max(width, height)
        gw, gh = max(1, round(cells * width / long)), max(1, round(cells * height / long))
        self.field = torch.nn.Parameter(torch.zeros(num_views, 3, gh, gw, device=device))
        self.log_gain = torch.nn.Parameter(torch.zeros(num_views, num_frames, device=device))

    def _centred(self):
        return self.field - self.field.mean(0, keepdim=True), centred_gains(self.log_gain)

    def forward(self, img: torch.Tensor, views, frame: int, alpha: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(views, dtype=torch.long, device=self.field.device)
        f, g = self._centred()
        up = F.interpolate(f[idx], size=tuple(img.shape[1:3]), mode="bilinear", align_corners=False)
        log = up.permute(0, 2, 3, 1) + g[idx, int(frame)][:, None, None, None]
        a = alpha.detach().reshape(img.shape[0], img.shape[1], img.shape[2], 1).to(img.dtype)
        return img * torch.exp(log * a)

    def regulariser(self) -> torch.Tensor:
        f, g = self._centred()
        return f.square().mean() + g.square().mean()

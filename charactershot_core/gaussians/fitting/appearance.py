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

from ...errors import InputError


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
        # the gain is the flicker: centred over the frames too (a view's level is its matrix's), so A and g do not
        # trade a common factor
        lg = self.log_gain
        g = lg - lg.mean(0, keepdim=True) - lg.mean(1, keepdim=True) + lg.mean()
        return m, b, g

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

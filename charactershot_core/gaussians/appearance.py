"""Per-view appearance correction for views that do not agree on colour (a video model's views).

Each training view ``v`` gets an affine colour ``A_v c + b_v`` (a 3x3 matrix and an offset) and each view and
frame a gain ``exp(g_{v,f})`` (exposure flicker). They are identity-initialised, learned with their own small
learning rate and a regulariser towards identity, and applied to the RENDER only inside the photometric loss:
the Gaussians keep the colour the views agree on, and the corrections are never rendered or exported.

The corrections are gauge-fixed: the mean over the training views of every parameter is subtracted before use, so
the views' average appearance is the Gaussians' own (a colour shift common to all views cannot drift into the
corrections, and a held-out view sees the consensus colour).

This is the global (1x1x1) case of the per-image bilateral grids of Wang et al. (SIGGRAPH 2024) that gsplat's
example trainer offers, and the role its appearance embeddings play: enough for the per-view colour, exposure and
flicker of a generated multi-view video, with 12 parameters per view and one per view and frame.
"""

from __future__ import annotations

import torch

from ..errors import InputError


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
        g = self.log_gain - self.log_gain.mean(0, keepdim=True)
        return m, b, g

    def transforms(self, views, frame: int):
        """``(A (B, 3, 3), b (B, 3), gain (B,))`` of the views (indices into the training views) at ``frame``."""
        idx = torch.as_tensor(views, dtype=torch.long, device=self.matrix.device)
        m, b, g = self._centred()
        eye = torch.eye(3, device=m.device, dtype=m.dtype)
        return eye + m[idx], b[idx], g[idx, int(frame)].exp()

    def forward(self, img: torch.Tensor, views, frame: int) -> torch.Tensor:
        """``img`` (B, H, W, 3) rendered from ``views`` at ``frame`` -> what those views would show (B, H, W, 3),
        clamped to [0, 1] like the views themselves."""
        a, b, g = self.transforms(views, frame)
        out = torch.einsum("bij,bhwj->bhwi", a, img) + b[:, None, None, :]
        return (out * g[:, None, None, None]).clamp(0.0, 1.0)

    def regulariser(self) -> torch.Tensor:
        """Mean squared distance of the (centred) corrections from identity."""
        m, b, g = self._centred()
        return m.square().mean() + b.square().mean() + g.square().mean()

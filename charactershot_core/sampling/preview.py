"""Cheap previews of latents: a linear latent-to-RGB map fitted on the job's own reference view.

There is no published latent-to-RGB table for the CogVideoX VAE (and tiny test VAEs have other channel counts),
so the map is fitted by least squares between the reference view's latent (the posterior mean, scaled) and the
reference image averaged down to the latent grid.  It is fitted once per job and costs nothing per step.
"""

from __future__ import annotations

import numpy as np
import torch


def fit_latent_to_rgb(latent: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """latent (C, h, w), image (H, W, 3) uint8 -> (A (3, C), b (3,)) with ``rgb ≈ A @ z + b`` in [0, 1]."""
    c, h, w = latent.shape
    img = image.permute(2, 0, 1)[None].float() / 255.0
    small = torch.nn.functional.interpolate(img, size=(h, w), mode="area")[0]  # (3, h, w)
    z = latent.reshape(c, -1).T.double()
    z = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], dim=1)
    y = small.reshape(3, -1).T.double()
    sol = torch.linalg.lstsq(z, y, rcond=None).solution  # (C + 1, 3)
    return sol[:c].T.float(), sol[c].float()


def latents_to_rgb(latents: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(..., C, h, w) -> (..., h, w, 3) uint8 through the fitted map."""
    x = torch.einsum("kc,...chw->...hwk", a.to(latents.device, torch.float32), latents.float())
    x = x + b.to(x.device)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def preview_strip(x0: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: int = 4) -> np.ndarray:
    """A strip of every view of a group at its middle latent frame: x0 (1, V, F, C, h, w) -> (h·s, V·w·s, 3)."""
    f = x0.shape[2]
    frame = x0[0, :, min(f - 1, f // 2 + 1)]
    rgb = latents_to_rgb(frame, a, b)  # (V, h, w, 3)
    strip = np.concatenate(list(rgb), axis=1)
    return np.repeat(np.repeat(strip, scale, axis=0), scale, axis=1)

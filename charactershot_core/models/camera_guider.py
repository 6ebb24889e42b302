"""The camera guider: per-view 6-channel camera maps → one token per 2×2 latent patch (spec §A.6).

Seven convolutions with SiLU between them: three 3×3 stride-1 convolutions, three 3×3 stride-2 convolutions and a
final 2×2 stride-2 projection to ``out_dim`` channels, 16× spatial reduction in all.  The layers sit in a
``Sequential`` called ``layer`` so that the official keys ``layer.{0,2,4,6,8,10,12}.{weight,bias}`` load as they
are.  The output, flattened row-major, is added to every latent frame's video tokens before block 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CameraGuider(nn.Module):
    def __init__(self, out_dim: int = 3072, hidden: int = 16, in_channels: int = 6):
        super().__init__()
        if out_dim <= 0 or hidden <= 0 or in_channels <= 0:
            raise ValueError(f"CameraGuider sizes must be positive, got out_dim={out_dim}, hidden={hidden}, "
                             f"in_channels={in_channels}")
        self.out_dim = out_dim
        self.hidden = hidden
        self.in_channels = in_channels
        # (in, out, kernel, stride, padding) of each convolution, SiLU after all but the last.
        convs = [
            (in_channels, hidden, 3, 1, 1),
            (hidden, hidden, 3, 1, 1),
            (hidden, hidden, 3, 1, 1),
            (hidden, hidden, 3, 2, 1),
            (hidden, hidden, 3, 2, 1),
            (hidden, hidden, 3, 2, 1),
            (hidden, out_dim, 2, 2, 0),
        ]
        layers = []
        for i, (cin, cout, k, s, p) in enumerate(convs):
            layers.append(nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p))
            if i < len(convs) - 1:
                layers.append(nn.SiLU())
        self.layer = nn.Sequential(*layers)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He-normal weights (std = sqrt(2 / (k·k·C_in))) and zero biases, the training initialisation."""
        with torch.no_grad():
            for m in self.layer:
                if isinstance(m, nn.Conv2d):
                    fan_in = m.kernel_size[0] * m.kernel_size[1] * m.in_channels
                    m.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
                    m.bias.zero_()

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """(V, 6, H, W) → (V, out_dim, H/16, W/16).  H and W must be multiples of 16."""
        if maps.ndim != 4 or maps.shape[1] != self.in_channels:
            raise ValueError(f"camera maps: expected shape (V, {self.in_channels}, H, W), got {tuple(maps.shape)}")
        h, w = maps.shape[-2:]
        if h % 16 or w % 16:
            raise ValueError(f"camera maps: height and width must be multiples of 16, got {h}x{w}")
        w0 = self.layer[0].weight
        return self.layer(maps.to(device=w0.device, dtype=w0.dtype))

    @staticmethod
    def camera_tokens(guider_out: torch.Tensor) -> torch.Tensor:
        return camera_tokens(guider_out)


def camera_tokens(guider_out: torch.Tensor) -> torch.Tensor:
    """(V, D, h, w) guider output → (V, h·w, D) tokens in row-major (h·w_count + w) order."""
    if guider_out.ndim != 4:
        raise ValueError(f"guider output: expected shape (V, D, h, w), got {tuple(guider_out.shape)}")
    return guider_out.flatten(2).transpose(1, 2)

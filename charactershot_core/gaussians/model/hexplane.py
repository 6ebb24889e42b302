"""HexPlane (K-Planes) feature field over (x, y, z, t), as in 4DGaussians (spec CHARACTERSHOT §C.4, GAUSSIANS §2.2).

Six planes per resolution multiplier, in the order (x,y), (x,z), (x,t), (y,z), (y,t), (z,t). Each plane is a
``(1, C, res_b, res_a)`` grid sampled bilinearly (``align_corners=True``, border padding) at the point's two
coordinates; the six samples are multiplied (Hadamard) within one multiplier and the multipliers concatenated.

Differences from upstream, on purpose:

* ``bounds`` come from the scene (the initial Gaussians' box, padded), not a fixed cube.
* time t in [0, 1] is mapped onto the whole grid axis [-1, 1] (upstream feeds t directly and uses half of it).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import InputError

PLANE_AXES = list(itertools.combinations(range(4), 2))  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
TIME_PLANES = [i for i, (a, b) in enumerate(PLANE_AXES) if b == 3]  # 2, 4, 5
SPACE_PLANES = [i for i, (a, b) in enumerate(PLANE_AXES) if b != 3]  # 0, 1, 3


class HexPlane(nn.Module):
    def __init__(self, bounds, resolution=(64, 64, 64, 25), features: int = 32, multires=(1, 2)):
        super().__init__()
        b = torch.as_tensor(bounds, dtype=torch.float32).reshape(2, 3)
        if not bool(torch.isfinite(b).all()) or bool((b[1] <= b[0]).any()):
            raise InputError("bounds", f"expected a box (min < max on every axis), got {b.tolist()}")
        if len(resolution) != 4 or min(resolution) < 2:
            raise InputError("resolution", f"expected 4 grid sizes >= 2 for x, y, z, t, got {list(resolution)}")
        self.register_buffer("bounds", b)
        self.resolution = [int(r) for r in resolution]
        self.features = int(features)
        self.multires = [int(m) for m in multires]
        self.grids = nn.ModuleList()
        for m in self.multires:
            res = [r * m for r in self.resolution[:3]] + [self.resolution[3]]
            planes = nn.ParameterList()
            for a, bb in PLANE_AXES:
                p = torch.empty(1, self.features, res[bb], res[a])
                if bb == 3:
                    nn.init.ones_(p)
                else:
                    nn.init.uniform_(p, 0.1, 0.5)
                planes.append(nn.Parameter(p))
            self.grids.append(planes)

    @property
    def out_dim(self) -> int:
        return self.features * len(self.multires)

    def normalize(self, xyz: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points and (N,) or (N, 1) times in [0, 1] -> (N, 4) grid coordinates in [-1, 1]."""
        lo, hi = self.bounds[0], self.bounds[1]
        p = (xyz - lo) * (2.0 / (hi - lo)) - 1.0
        t = t.reshape(-1, 1).to(p) * 2.0 - 1.0
        if t.shape[0] == 1 and p.shape[0] != 1:
            t = t.expand(p.shape[0], 1)
        return torch.cat([p, t], dim=-1)

    def forward(self, xyz: torch.Tensor, t) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.tensor([float(t)], device=xyz.device)
        coords = self.normalize(xyz, t)
        n = coords.shape[0]
        outs = []
        for planes in self.grids:
            feat = None
            for (a, b), plane in zip(PLANE_AXES, planes):
                grid = coords[:, [a, b]].reshape(1, 1, n, 2)
                s = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)
                s = s.reshape(self.features, n).t()
                feat = s if feat is None else feat * s
            outs.append(feat)
        return torch.cat(outs, dim=-1)

    # --------------------------------------------------------------- regularisers (4DGaussians)
    @staticmethod
    def _smoothness(p: torch.Tensor) -> torch.Tensor:
        """Mean squared second difference along the plane's first axis (rows: y of (x,y), t of (x,t), ...); zero when
        the axis has fewer than 3 cells (a 2-frame video's time axis), where the mean of nothing would be NaN."""
        if p.shape[-2] < 3:
            return p.new_zeros(())
        d1 = p[..., 1:, :] - p[..., :-1, :]
        d2 = d1[..., 1:, :] - d1[..., :-1, :]
        return d2.square().mean()

    def space_smoothness(self) -> torch.Tensor:
        return sum(self._smoothness(planes[i]) for planes in self.grids for i in SPACE_PLANES)

    def time_smoothness(self) -> torch.Tensor:
        return sum(self._smoothness(planes[i]) for planes in self.grids for i in TIME_PLANES)

    def time_l1(self) -> torch.Tensor:
        return sum((1.0 - planes[i]).abs().mean() for planes in self.grids for i in TIME_PLANES)

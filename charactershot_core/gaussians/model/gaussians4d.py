"""Canonical 3D Gaussians plus a motion model: a per-Gaussian trajectory table (default) or a HexPlane field.

Parameters live in ``Gaussians4D.splats`` (a ``ParameterDict`` as gsplat's strategies expect):
``means`` (N,3), ``scales`` (N,3) log, ``quats`` (N,4) wxyz unnormalised, ``opacities`` (N,) logit,
``sh0`` (N,1,3) and ``shN`` (N,K-1,3) spherical-harmonic colour coefficients (K = (degree+1)^2).

Motion (``config["motion"]``):

* ``None``: a static scene (one frame per view); nothing is built, stored or evaluated for time.
* ``"table"`` (default for videos): an explicit trajectory per Gaussian, ``splats["traj_means"]`` (N,F,3) offsets
  added to the canonical centre and ``splats["traj_quats"]`` (N,F,4) wxyz rotations applied on the left of the
  canonical rotation, one row per training frame (``config["times"]``). Colour, opacity and scale persist over time
  (no Δscale). Between frames the rows are interpolated by a cubic Hermite (Catmull-Rom) spline over the frame times;
  outside the frame range the end rows hold. Because the rows are Gaussian parameters, densification clones and
  splits them with their Gaussian, and every frame owns its slot (no shared field has to discover the motion).
* ``"hexplane"`` (the paper's model): :class:`Deformation` maps (canonical centre, t) to Δposition, Δlog-scale and
  Δquaternion (added, then normalised) through a HexPlane and three small MLP heads. The last layer of each head
  starts at zero, so the fine stage starts exactly from the static solution (upstream uses Xavier everywhere).
"""

from __future__ import annotations

import json
import math

import torch
from torch import nn

from ...errors import CheckpointError, InputError
from ..rotations import normalise, quat_mul
from .hexplane import HexPlane

SH_C0 = 0.28209479177387814
FORMAT = "charactershot-4dgs"
FORMAT_VERSION = 1

DEFAULT_FIELD = {"resolution": [64, 64, 64, 25], "features": 16, "multires": [1, 2], "width": 64}
MOTIONS = ("table", "hexplane")
TABLE_KEYS = ("traj_means", "traj_quats")


def hermite_weights(times, t: float) -> list[tuple[int, float]]:
    """Rows and weights of the cubic Hermite (Catmull-Rom) spline through values at ``times`` evaluated at ``t``.

    Tangents are central differences over the (possibly uneven) frame times, one-sided at the ends; ``t`` outside
    [times[0], times[-1]] takes the end row. A frame time gives its own row with weight 1 (the gradient of a
    training frame reaches only its row)."""
    ts = [float(x) for x in times]
    n = len(ts)
    t = float(t)
    if n == 1 or t <= ts[0]:
        return [(0, 1.0)]
    if t >= ts[-1]:
        return [(n - 1, 1.0)]
    i = 0
    while i < n - 2 and t >= ts[i + 1]:
        i += 1
    for k in (i, i + 1):
        if abs(t - ts[k]) <= 1e-9:
            return [(k, 1.0)]
    h = ts[i + 1] - ts[i]
    s = (t - ts[i]) / h
    h00, h10 = 2 * s ** 3 - 3 * s ** 2 + 1, s ** 3 - 2 * s ** 2 + s
    h01, h11 = -2 * s ** 3 + 3 * s ** 2, s ** 3 - s ** 2
    w: dict = {}

    def add(k, v):
        w[k] = w.get(k, 0.0) + v

    add(i, h00)
    add(i + 1, h01)
    # tangent at i (scaled to the segment): central difference, one-sided at the first row
    a, b = max(0, i - 1), i + 1
    c = h10 * h / (ts[b] - ts[a])
    add(b, c)
    add(a, -c)
    a, b = i, min(n - 1, i + 2)
    c = h11 * h / (ts[b] - ts[a])
    add(b, c)
    add(a, -c)
    return [(k, v) for k, v in sorted(w.items()) if v != 0.0]


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


class Deformation(nn.Module):
    def __init__(self, bounds, resolution=(64, 64, 64, 25), features=32, multires=(1, 2), width=64):
        super().__init__()
        self.grid = HexPlane(bounds, resolution, features, multires)
        self.feature_out = nn.Linear(self.grid.out_dim, width)

        def head(k):
            return nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, k))

        self.pos = head(3)
        self.scale = head(3)
        self.rot = head(4)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for h in (self.pos, self.scale, self.rot):
            nn.init.zeros_(h[-1].weight)

    def forward(self, means, log_scales, quats, t):
        h = self.feature_out(self.grid(means, t))
        return means + self.pos(h), log_scales + self.scale(h), quats + self.rot(h)

    def mlp_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("grid.")]

    def grid_parameters(self):
        return list(self.grid.parameters())


class Gaussians4D(nn.Module):
    """Canonical Gaussians (+ deformation). ``config`` holds ``sh_degree``, ``field`` (or None), ``times``."""

    def __init__(self, means, log_scales, quats, opacity_logits, sh0, shN, config: dict, table: dict | None = None):
        super().__init__()
        n = means.shape[0]
        if n == 0:
            raise InputError("gaussians", "expected at least one Gaussian, got 0")
        sh_degree = int(config.get("sh_degree", 0))
        k = (sh_degree + 1) ** 2
        if shN is None:
            shN = torch.zeros(n, k - 1, 3)
        if shN.shape[1] != k - 1:
            raise InputError("gaussians", f"SH degree {sh_degree} needs {k - 1} higher coefficients, got {shN.shape[1]}")
        self.splats = nn.ParameterDict({
            "means": nn.Parameter(means.float().contiguous()),
            "scales": nn.Parameter(log_scales.float().contiguous()),
            "quats": nn.Parameter(quats.float().contiguous()),
            "opacities": nn.Parameter(opacity_logits.float().reshape(n).contiguous()),
            "sh0": nn.Parameter(sh0.float().reshape(n, 1, 3).contiguous()),
            "shN": nn.Parameter(shN.float().contiguous()),
        })
        motion = config.get("motion", "hexplane" if config.get("field") is not None else None)
        if motion not in (None,) + MOTIONS:
            raise InputError("motion", f"expected one of {', '.join(MOTIONS)}, got {motion!r}")
        self.config = {"sh_degree": sh_degree, "field": config.get("field"), "times": list(config.get("times") or [0.0]),
                       "rasterize_mode": config.get("rasterize_mode", "classic"),
                       "bounds": config.get("bounds"), "motion": motion}
        for k, v in config.items():  # extra entries (fit summary, training cameras) survive save/load
            self.config.setdefault(k, v)
        if motion == "table":
            nf = len(self.config["times"])
            if table is None:
                tm = torch.zeros(n, nf, 3)
                tq = torch.zeros(n, nf, 4)
                tq[..., 0] = 1.0
            else:
                tm, tq = table["traj_means"], table["traj_quats"]
            if tuple(tm.shape) != (n, nf, 3) or tuple(tq.shape) != (n, nf, 4):
                raise InputError("gaussians", f"a trajectory table for {n} Gaussians x {nf} frames needs shapes "
                                              f"({n}, {nf}, 3) and ({n}, {nf}, 4), got {tuple(tm.shape)} and "
                                              f"{tuple(tq.shape)}")
            self.splats["traj_means"] = nn.Parameter(tm.float().contiguous())
            self.splats["traj_quats"] = nn.Parameter(tq.float().contiguous())
        field = self.config["field"] if motion == "hexplane" else None
        if field is not None:
            if self.config["bounds"] is None:
                raise InputError("bounds", "a deformation field needs scene bounds")
            self.deformation = Deformation(self.config["bounds"], field["resolution"], field["features"],
                                           field["multires"], field["width"])
        else:
            self.deformation = None

    # ------------------------------------------------------------------ basics
    @property
    def num_gaussians(self) -> int:
        return self.splats["means"].shape[0]

    @property
    def sh_degree(self) -> int:
        return self.config["sh_degree"]

    @property
    def motion(self):
        return self.config.get("motion")

    @property
    def is_dynamic(self) -> bool:
        return self.deformation is not None or self.config.get("motion") == "table"

    def canonical_parameters(self) -> dict:
        """The Gaussian parameters without the trajectory table."""
        return {k: v for k, v in self.splats.items() if k not in TABLE_KEYS}

    def table_rows(self, t) -> list[tuple[int, float]]:
        return hermite_weights(self.config["times"], t)

    def table_at(self, t=None, frame: int | None = None, index=None):
        """(offsets (N,3), rotations (N,4) unnormalised) of the trajectory table at time ``t`` or row ``frame``."""
        tm, tq = self.splats["traj_means"], self.splats["traj_quats"]
        if index is not None:
            tm, tq = tm[index], tq[index]
        rows = [(int(frame), 1.0)] if frame is not None else self.table_rows(t)
        if len(rows) == 1:
            k = rows[0][0]
            return tm[:, k], tq[:, k]
        dm = sum(w * tm[:, k] for k, w in rows)
        dq = sum(w * tq[:, k] for k, w in rows)
        return dm, dq

    def frame_state(self, frame: int, index=None):
        """(means, log_scales, quats) at training frame ``frame`` of a table model (``index``: a subset)."""
        s = self.splats
        m, ls, q = s["means"], s["scales"], s["quats"]
        if index is not None:
            m, ls, q = m[index], ls[index], q[index]
        dm, dq = self.table_at(frame=frame, index=index)
        return m + dm, ls, quat_mul(normalise(dq), normalise(q))

    @property
    def times(self) -> list[float]:
        return self.config["times"]

    def deformed(self, t=None, means=None):
        """(means, log_scales, quats) at time ``t`` (canonical for static scenes or ``t=None``)."""
        s = self.splats
        m, ls, q = (s["means"] if means is None else means), s["scales"], s["quats"]
        if t is None:
            return m, ls, q
        if self.config.get("motion") == "table":
            dm, dq = self.table_at(t)
            return m + dm, ls, quat_mul(normalise(dq), normalise(q))
        if self.deformation is None:
            return m, ls, q
        return self.deformation(m, ls, q, t)

    def means_at(self, t) -> torch.Tensor:
        if t is None:
            return self.splats["means"]
        if self.config.get("motion") == "table":
            return self.splats["means"] + self.table_at(t)[0]
        if self.deformation is None:
            return self.splats["means"]
        return self.deformation(self.splats["means"], self.splats["scales"], self.splats["quats"], t)[0]

    def raster_inputs(self, t=None, deformed=None) -> dict:
        """Keyword arguments for ``render.rasterize`` at time ``t`` (activated values); ``deformed`` may pass the
        ``(means, log_scales, quats)`` of :meth:`deformed` already computed for that time."""
        m, ls, q = self.deformed(t) if deformed is None else deformed
        s = self.splats
        colors = torch.cat([s["sh0"], s["shN"]], dim=1)
        return {"means": m, "quats": q, "scales": torch.exp(ls), "opacities": torch.sigmoid(s["opacities"]),
                "colors": colors, "sh_degree": self.sh_degree}

    @torch.no_grad()
    def baked(self, t=None) -> dict:
        """Raw per-frame parameters at time ``t`` (log-scales, logit opacities, normalised wxyz) on the CPU."""
        m, ls, q = self.deformed(t)
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        s = self.splats
        return {"means": m.detach().cpu(), "scales": ls.detach().cpu(), "quats": q.detach().cpu(),
                "opacities": s["opacities"].detach().cpu(), "sh0": s["sh0"].detach().cpu(),
                "shN": s["shN"].detach().cpu()}

    def all_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())

    # ------------------------------------------------------------------ save / load
    def state_tensors(self) -> dict:
        out = {f"splats.{k}": v.detach().cpu().contiguous() for k, v in self.splats.items()}
        if self.deformation is not None:
            for k, v in self.deformation.state_dict().items():
                out[f"deformation.{k}"] = v.detach().cpu().contiguous()
        return out

    def save(self, path: str) -> None:
        """Write canonical Gaussians + deformation weights + config as safetensors, atomically."""
        import os

        from safetensors.torch import save_file

        meta = {"format": FORMAT, "version": str(FORMAT_VERSION), "config": json.dumps(self.config)}
        tmp = f"{path}.partial{os.getpid()}"
        try:
            save_file(self.state_tensors(), tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def from_tensors(cls, tensors: dict, config: dict, source: str = "weights") -> "Gaussians4D":
        try:
            table = None
            if config.get("motion") == "table":
                table = {k: tensors[f"splats.{k}"] for k in TABLE_KEYS}
            model = cls(tensors["splats.means"], tensors["splats.scales"], tensors["splats.quats"],
                        tensors["splats.opacities"], tensors["splats.sh0"], tensors["splats.shN"], config, table)
            if model.deformation is not None:
                sd = {k[len("deformation."):]: v for k, v in tensors.items() if k.startswith("deformation.")}
                model.deformation.load_state_dict(sd, strict=True)
        except KeyError as e:
            raise CheckpointError(f"{source}: missing tensor {e}") from None
        except RuntimeError as e:
            raise CheckpointError(f"{source}: deformation weights do not match the config ({e})") from None
        return model

    @classmethod
    def load(cls, path: str) -> "Gaussians4D":
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except FileNotFoundError:
            raise InputError("weights", f"file not found: {path}") from None
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a CharacterShot 4D Gaussians file (format {meta.get('format')!r})")
        return cls.from_tensors(tensors, json.loads(meta["config"]), source=path)

    def copy(self) -> "Gaussians4D":
        return Gaussians4D.from_tensors({k: v.clone() for k, v in self.state_tensors().items()},
                                        json.loads(json.dumps(self.config))).to(self.splats["means"].device)


def scene_bounds(means: torch.Tensor, pad: float = 0.15) -> list[list[float]]:
    """Axis-aligned box around the points, padded by ``pad`` of its size on each side."""
    lo = means.min(0).values
    hi = means.max(0).values
    size = (hi - lo).clamp_min(1e-3)
    lo, hi = lo - pad * size, hi + pad * size
    return [lo.tolist(), hi.tolist()]


def make_gaussians(points: torch.Tensor, colors: torch.Tensor, scale: float | torch.Tensor, sh_degree: int,
                   times: list[float], field: dict | None, opacity: float = 0.5, bounds=None,
                   motion: str | None = "auto") -> Gaussians4D:
    """Isotropic Gaussians at ``points`` (N,3) with RGB ``colors`` (N,3) and radius ``scale``. ``motion``: None
    (static), ``"table"`` (identity trajectories), ``"hexplane"`` (needs ``field``), or ``"auto"`` (HexPlane when a
    field is given, else static)."""
    n = points.shape[0]
    scale = torch.as_tensor(scale, dtype=torch.float32)
    if scale.ndim == 0:
        scale = scale.expand(n)
    log_scales = torch.log(scale.clamp_min(1e-6)).reshape(n, 1).expand(n, 3).clone()
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    logit = math.log(opacity / (1 - opacity))
    k = (sh_degree + 1) ** 2
    if motion == "auto":
        motion = "hexplane" if field is not None else None
    if motion != "hexplane":
        field = None
    config = {"sh_degree": sh_degree, "field": field, "times": list(times), "motion": motion,
              "bounds": bounds if bounds is not None else (scene_bounds(points) if field is not None else None)}
    return Gaussians4D(points.float(), log_scales, quats, torch.full((n,), logit), rgb_to_sh0(colors.float())[:, None],
                       torch.zeros(n, k - 1, 3), config)


def numpy_params(model: Gaussians4D, t=None) -> dict:
    return {k: v.numpy() for k, v in model.baked(t).items()}


__all__ = ["Gaussians4D", "Deformation", "make_gaussians", "scene_bounds", "rgb_to_sh0", "sh0_to_rgb", "SH_C0",
           "DEFAULT_FIELD", "numpy_params", "MOTIONS", "TABLE_KEYS", "hermite_weights"]

"""ComfyUI core's ``SPLAT`` type, both ways: 4D Gaussians -> a batch of render-ready splats (one item per frame), and
a splat (for example from core's "Get Splat" loader) -> static Gaussians (a single-frame model, or the starting point
of a fit).

Core's layout (``comfy_api.latest._util.geometry_types.SPLAT`` in newer ComfyUI), mirrored by :class:`SplatBatch`:
a batch of B items, zero-padded to a common N,

* ``positions`` (B, N, 3) world-space centres;
* ``scales`` (B, N, 3) **linear** standard deviations (not log);
* ``rotations`` (B, N, 4) **wxyz** unit quaternions;
* ``opacities`` (B, N, 1) in [0, 1] (after the sigmoid, not logits);
* ``sh`` (B, N, K, 3) spherical-harmonic colour coefficients, K = (degree + 1)^2, the DC term at index 0
  (RGB = 0.5 + C0 * DC), the higher coefficients in the 3DGS basis order (the order of an INRIA ``.ply``'s
  ``f_rest`` after its channel-major block is transposed back);
* ``counts`` (B,) int64 real lengths when items differ in length, else ``None``.

CPU float32 tensors. Core reads a ``.ply`` without flipping any axis and renders splats with +Y pointing down the
image, as in most 3DGS captures; our world is z-up (``cameras.py``), so by default (``axes=Y_DOWN``) the frames are
turned by +90 degrees about X ((x, y, z) -> (x, -z, y)): the character stands upright in core's Render Splat and
faces its default camera. ``axes=Z_UP`` keeps our world axes, the exact values of our ``.ply`` frames. Turning a
splat also turns its view-dependent colour: the SH bands are rotated with the same rotation.

No ComfyUI import here: the node in ``nodes/splat.py`` builds core's own class where the host has one.
"""

from __future__ import annotations

import math
import re

import torch

# every import from the rest of the package is here
from ...errors import InputError
from ..raster._torch_raster import sh_basis
from ..model import Gaussians4D
from ..rotations import quat_mul

Y_DOWN = "y down (3DGS, core splat nodes)"
Z_UP = "z up (CharacterShot .ply files)"
AXES = (Y_DOWN, Z_UP)

# our world (z up) -> core's splat frame (y down): +90 degrees about X
_TURN = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
_TURN_Q = torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0])
_MAX_SH_DEGREE = 4


class SplatBatch:
    """A batch of render-ready Gaussian splats with the fields, shapes and conventions of core's ``SPLAT`` (see the
    module docstring); core's nodes read any object with these attributes."""

    def __init__(self, positions: torch.Tensor, scales: torch.Tensor, rotations: torch.Tensor,
                 opacities: torch.Tensor, sh: torch.Tensor, counts: torch.Tensor | None = None):
        self.positions = positions
        self.scales = scales
        self.rotations = rotations
        self.opacities = opacities
        self.sh = sh
        self.counts = counts

    def _comfy_cache_tensors(self):  # core's caches size a SPLAT by these tensors
        return self.positions, self.scales, self.rotations, self.opacities, self.sh, self.counts

    @property
    def batch_size(self) -> int:
        return int(self.positions.shape[0])

    @property
    def sh_degree(self) -> int:
        return round(math.sqrt(self.sh.shape[2])) - 1

    def length(self, i: int) -> int:
        return int(self.counts[i]) if self.counts is not None else int(self.positions.shape[1])

    def item(self, i: int) -> dict:
        """Item ``i`` cut to its real length: ``positions``, ``scales``, ``rotations`` (n, 4), ``opacities`` (n,),
        ``sh`` (n, K, 3)."""
        n = self.length(i)
        return {"positions": self.positions[i, :n], "scales": self.scales[i, :n], "rotations": self.rotations[i, :n],
                "opacities": self.opacities[i, :n].reshape(n), "sh": self.sh[i, :n]}

    def fields(self) -> tuple:
        """The constructor's arguments, for building another class with the same layout (core's own)."""
        return self.positions, self.scales, self.rotations, self.opacities, self.sh, self.counts

    @classmethod
    def from_items(cls, items: list[dict]) -> SplatBatch:
        """Stack items (dicts as :meth:`item` returns) into a batch, zero-padded, with ``counts`` when lengths
        differ."""
        if not items:
            raise InputError("splat", "expected at least one item, got none")
        k = max(int(it["sh"].shape[1]) for it in items)
        lengths = [int(it["positions"].shape[0]) for it in items]
        n, b = max(lengths), len(items)
        pos, scl = torch.zeros(b, n, 3), torch.zeros(b, n, 3)
        rot, opa, sh = torch.zeros(b, n, 4), torch.zeros(b, n, 1), torch.zeros(b, n, k, 3)
        for i, (it, m) in enumerate(zip(items, lengths)):
            pos[i, :m] = it["positions"].float().cpu()
            scl[i, :m] = it["scales"].float().cpu()
            rot[i, :m] = it["rotations"].float().cpu()
            opa[i, :m, 0] = it["opacities"].float().cpu().reshape(m)
            sh[i, :m, : it["sh"].shape[1]] = it["sh"].float().cpu()
        counts = torch.tensor(lengths, dtype=torch.int64) if len(set(lengths)) > 1 else None
        return cls(pos, scl, rot, opa, sh, counts)

    @classmethod
    def from_object(cls, obj, name: str = "splat") -> SplatBatch:
        """Check a SPLAT from any source (core's class or ours) and copy its fields as CPU float32."""
        fields = ("positions", "scales", "rotations", "opacities", "sh")
        if obj is None or not all(isinstance(getattr(obj, f, None), torch.Tensor) for f in fields):
            raise InputError(name, f"expected a SPLAT (tensors {', '.join(fields)}), got {type(obj).__name__}")
        pos, scl, rot, opa, sh = (getattr(obj, f).detach().float().cpu() for f in fields)
        if pos.ndim != 3 or pos.shape[2] != 3 or pos.shape[0] < 1:
            raise InputError(name, f"expected positions of shape (B, N, 3), got {tuple(pos.shape)}")
        b, n = pos.shape[:2]
        if opa.ndim == 2:
            opa = opa[..., None]
        for what, t, tail in (("scales", scl, (3,)), ("rotations", rot, (4,)), ("opacities", opa, (1,))):
            if tuple(t.shape) != (b, n, *tail):
                raise InputError(name, f"expected {what} of shape {(b, n, *tail)}, got {tuple(t.shape)}")
        if sh.ndim != 4 or tuple(sh.shape[:2]) != (b, n) or sh.shape[3] != 3:
            raise InputError(name, f"expected sh of shape ({b}, {n}, K, 3), got {tuple(sh.shape)}")
        k = sh.shape[2]
        if round(math.sqrt(k)) ** 2 != k:
            raise InputError(name, f"expected (degree + 1)^2 SH coefficients per colour, got {k}")
        counts = getattr(obj, "counts", None)
        if counts is not None:
            counts = torch.as_tensor(counts).detach().cpu().to(torch.int64).reshape(-1)
            if counts.shape[0] != b or bool((counts < 0).any()) or bool((counts > n).any()):
                raise InputError(name, f"expected counts of {b} lengths in 0..{n}, got {counts.tolist()}")
        return cls(pos, scl, rot, opa, sh, counts)


# ------------------------------------------------------------------------------------------------ rotation
def _sh_rotation(degree: int, turn: torch.Tensor) -> torch.Tensor:
    """(K, K) block-diagonal matrix D with ``sh' = D @ sh`` the coefficients of the colour turned by ``turn``
    (3x3): ``colour'(d) = colour(turn^T d)``. Each band is solved from the 3DGS basis at sample directions."""
    k = (degree + 1) ** 2
    if degree == 0:
        return torch.eye(1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(64, 3, generator=g, dtype=torch.float64), dim=-1)
    y = sh_basis(degree, dirs)                                 # (M, K): Y(d)
    y_back = sh_basis(degree, dirs @ turn.double())            # Y(turn^T d) (row vectors: d @ turn = turn^T d)
    out = torch.zeros(k, k, dtype=torch.float64)
    out[0, 0] = 1.0
    for band in range(1, degree + 1):
        s = slice(band * band, (band + 1) ** 2)
        # Y_j(turn^T d) = sum_i X_ij Y_i(d) (exact within a band), so colour'(d) = sum_j c_j Y_j(turn^T d)
        # = sum_i (X c)_i Y_i(d): D = X, solved from Y(d) X = Y(turn^T d)
        out[s, s] = torch.linalg.lstsq(y[:, s], y_back[:, s]).solution
    return torch.where(out.abs() < 1e-12, torch.zeros_like(out), out)


def _turn(item: dict, turn: torch.Tensor, quat: torch.Tensor) -> dict:
    sh = item["sh"]
    k = sh.shape[1]
    degree = round(math.sqrt(k)) - 1
    d = _sh_rotation(degree, turn).to(sh.dtype)
    q = quat_mul(quat.to(item["rotations"].dtype).expand_as(item["rotations"]), item["rotations"])
    return {**item, "positions": item["positions"] @ turn.T.to(item["positions"].dtype),
            "rotations": q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12),
            "sh": torch.einsum("ij,njc->nic", d, sh)}


def to_core_axes(item: dict, axes: str = Y_DOWN, name: str = "axes") -> dict:
    """An item in our world (z up) -> in ``axes``."""
    if axes == Z_UP:
        return item
    if axes != Y_DOWN:
        raise InputError(name, f"expected one of {', '.join(AXES)}, got {axes!r}")
    return _turn(item, _TURN, _TURN_Q)


def from_core_axes(item: dict, axes: str = Y_DOWN, name: str = "axes") -> dict:
    """An item in ``axes`` -> in our world (z up)."""
    if axes == Z_UP:
        return item
    if axes != Y_DOWN:
        raise InputError(name, f"expected one of {', '.join(AXES)}, got {axes!r}")
    conj = _TURN_Q * torch.tensor([1.0, -1.0, -1.0, -1.0])
    return _turn(item, _TURN.T.contiguous(), conj)


# --------------------------------------------------------------------------------------------- 4D -> SPLAT
def parse_frames(text: str, count: int, name: str = "frames") -> list[int]:
    """Frame numbers (1-based, as in ``frame_00001.ply``) such as ``"1, 5, 10-20"`` -> 0-based indices; empty =
    all ``count`` frames."""
    text = (text or "").strip()
    if not text:
        return list(range(count))
    out = []
    for tok in (t for t in re.split(r"[,\s]+", text) if t):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", tok)
        if not m:
            raise InputError(name, f"expected frame numbers and ranges such as 1, 5, 10-20 (1 to {count}), "
                                   f"got {tok!r}")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if not (1 <= a <= count and 1 <= b <= count) or b < a:
            raise InputError(name, f"frame {tok} is outside 1 to {count} (the model has {count} frame(s))")
        out.extend(range(a - 1, b))
    return out


@torch.no_grad()
def frame_item(model, t=None) -> dict:
    """One frame of a model (``Gaussians4D`` or anything with ``baked(t)``) at time ``t`` in core's activated form,
    in our world axes: exactly the values of the ``.ply`` frame our exporter writes, activated."""
    f = model.baked(t)
    q = f["quats"].float()
    return {"positions": f["means"].float(), "scales": torch.exp(f["scales"].float()),
            "rotations": q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12),
            "opacities": torch.sigmoid(f["opacities"].float()).reshape(-1),
            "sh": torch.cat([f["sh0"], f["shN"]], dim=1).float()}


def gaussians_to_splat(model, frames: str = "", axes: str = Y_DOWN) -> SplatBatch:
    """The frames of 4D Gaussians as a SPLAT batch, one item per frame (the training frame times; one item for a
    static model). ``frames``: 1-based frame numbers and ranges, empty = all."""
    if model is None or getattr(model, "num_gaussians", 0) == 0:
        raise InputError("gaussians", "the model has no Gaussians; there is nothing to convert")
    times = list(model.times) if getattr(model, "is_dynamic", False) else [None]
    picked = parse_frames(frames, len(times))
    if axes not in AXES:
        raise InputError("axes", f"expected one of {', '.join(AXES)}, got {axes!r}")
    return SplatBatch.from_items([to_core_axes(frame_item(model, times[i]), axes) for i in picked])


# --------------------------------------------------------------------------------------- SPLAT -> static
def splat_to_gaussians(splat, item: int = 0, axes: str = Y_DOWN, sh_degree: int | None = None,
                       name: str = "splat") -> Gaussians4D:
    """Item ``item`` (0-based) of a SPLAT as static Gaussians (no motion) in our world. ``sh_degree``: keep this
    many SH bands (missing ones are zero); None = the splat's own degree, at most 4."""
    batch = SplatBatch.from_object(splat, name)
    if not 0 <= item < batch.batch_size:
        raise InputError(name, f"item {item + 1} does not exist: the SPLAT holds {batch.batch_size} item(s)")
    it = batch.item(item)
    n = it["positions"].shape[0]
    if n == 0:
        raise InputError(name, f"item {item + 1} of the SPLAT has no Gaussians")
    for key in ("positions", "scales", "rotations", "opacities", "sh"):
        if not bool(torch.isfinite(it[key]).all()):
            raise InputError(name, f"{key} of item {item + 1} contain NaN or infinite values")
    if bool((it["rotations"].norm(dim=-1) < 1e-12).any()):
        raise InputError(name, f"rotations of item {item + 1} contain zero quaternions")
    if bool((it["scales"] < 0).any()):
        raise InputError(name, f"scales of item {item + 1} must be linear (non-negative), found negative values")
    if bool((it["opacities"] < 0).any()) or bool((it["opacities"] > 1).any()):
        raise InputError(name, f"opacities of item {item + 1} must lie in [0, 1] (after the sigmoid)")
    degree = batch.sh_degree if sh_degree is None else int(sh_degree)
    it["sh"] = _sh_to_degree(it["sh"], min(batch.sh_degree, _MAX_SH_DEGREE))  # drop bands beyond what we render
    it = from_core_axes(it, axes)
    sh = _sh_to_degree(it["sh"], min(degree, _MAX_SH_DEGREE))
    op = it["opacities"].clamp(1e-6, 1 - 1e-6)
    config = {"sh_degree": round(math.sqrt(sh.shape[1])) - 1, "field": None, "times": [0.0], "motion": None}
    return Gaussians4D(it["positions"], torch.log(it["scales"].clamp_min(1e-8)), it["rotations"],
                       torch.log(op / (1 - op)), sh[:, :1], sh[:, 1:], config)


def _sh_to_degree(sh: torch.Tensor, degree: int) -> torch.Tensor:
    k = (degree + 1) ** 2
    if sh.shape[1] >= k:
        return sh[:, :k].contiguous()
    return torch.cat([sh, sh.new_zeros(sh.shape[0], k - sh.shape[1], 3)], dim=1)


# ------------------------------------------------------------------------------------------ fit start
def subsample(static: Gaussians4D, max_points: int | None, seed: int = 0) -> Gaussians4D:
    """At most ``max_points`` of the Gaussians (a seeded random subset, in their order), static."""
    s = {k: v.detach().cpu() for k, v in static.canonical_parameters().items()}
    n = s["means"].shape[0]
    if max_points and n > max_points:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[: int(max_points)].sort().values
        s = {k: v[idx] for k, v in s.items()}
    config = {"sh_degree": static.sh_degree, "field": None, "times": [0.0], "motion": None}
    return Gaussians4D(s["means"], s["scales"], s["quats"], s["opacities"], s["sh0"], s["shN"], config)


def with_motion(static: Gaussians4D, sh_degree: int, times, field: dict | None, bounds, motion) -> Gaussians4D:
    """Static Gaussians as the start of a fit: ``sh_degree`` bands (zero-padded or cut), the frame ``times``, and
    identity motion (``"table"``: identity trajectories; ``"hexplane"``: a zero field over ``bounds``; None:
    static)."""
    s = {k: v.detach().cpu() for k, v in static.canonical_parameters().items()}
    sh = _sh_to_degree(torch.cat([s["sh0"], s["shN"]], dim=1), int(sh_degree))
    config = {"sh_degree": int(sh_degree), "field": field if motion == "hexplane" else None, "times": list(times),
              "motion": motion, "bounds": bounds}
    return Gaussians4D(s["means"], s["scales"], s["quats"], s["opacities"], sh[:, :1], sh[:, 1:], config)


__all__ = ["SplatBatch", "AXES", "Y_DOWN", "Z_UP", "parse_frames", "frame_item", "gaussians_to_splat",
           "splat_to_gaussians", "to_core_axes", "from_core_axes", "subsample", "with_motion"]

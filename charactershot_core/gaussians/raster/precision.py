"""The one place that chooses the accumulation precision of the 4D code on a torch device.

Long sums (the rasteriser's per-pixel transmittance and colour sums, the NaN/inf checks of the fit and of the
renderer's inputs) accumulate in float64 where the device has it (CPU, CUDA) and in float32 with compensated
sums where it does not: Apple's ``mps`` device has no float64 at all. The float32 path never forms one long
running sum whose differences are taken (that loses the digits of short segments to the size of the whole); it
sums each pixel's run on its own, pairwise (a segmented Hillis-Steele scan: every partial sum is a balanced tree
of at most ``ceil(log2 n)`` additions), and checks finiteness per tensor instead of with a sum.

``CHARACTERSHOT_NO_FLOAT64=1`` in the environment makes every device take the float32 path (what a Mac does; the
tests run the CPU that way to compare it with the float64 path).
"""

from __future__ import annotations

import os

import torch

#: environment switch: "1" makes every device take the float32 (mps) path
NO_FLOAT64_ENV = "CHARACTERSHOT_NO_FLOAT64"
#: device types without float64
NO_FLOAT64_DEVICES = ("mps",)


def _device_type(device) -> str:
    if isinstance(device, torch.Tensor):
        device = device.device
    return torch.device(device).type if device is not None else "cpu"


def has_float64(device) -> bool:
    """Whether the 4D code may use float64 tensors on ``device`` (a device, its name or a tensor on it)."""
    if os.environ.get(NO_FLOAT64_ENV, "").strip() not in ("", "0"):
        return False
    return _device_type(device) not in NO_FLOAT64_DEVICES


def accum_dtype(device) -> torch.dtype:
    """float64 where ``device`` has it, else float32 (then the sums below are compensated)."""
    return torch.float64 if has_float64(device) else torch.float32


def segment_scan(x: torch.Tensor, starts: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """Inclusive cumulative sums of ``x`` (P, ...) within contiguous runs (run ``seg[i]`` starts at
    ``starts[seg[i]]``), in x's dtype, pairwise: a Hillis-Steele scan restricted to runs. After the step with
    shift s, element i holds the sum of the (up to) 2 s elements of its run ending at i, itself the sum of two
    halves summed the same way, so no partial sum carries the rounding of another run."""
    p = x.shape[0]
    if p == 0:
        return x.clone()
    rank = torch.arange(p, device=x.device) - starts.index_select(0, seg)  # position within its run
    longest = int(rank.max()) + 1
    out = x.clone()
    shift = 1
    extra = (1,) * (x.dim() - 1)
    while shift < longest:
        prev = torch.zeros_like(out)
        prev[shift:] = out[:-shift]
        take = (rank >= shift).reshape(-1, *extra)
        out = out + torch.where(take, prev, torch.zeros((), dtype=out.dtype, device=out.device))
        shift *= 2
    return out


def all_finite(tensors) -> torch.Tensor:
    """A 0-d bool tensor on the tensors' device, True when none holds NaN or infinity; no host sync.

    float64: one fused check (a float64 sum is non-finite iff an element is: float32 values cannot overflow it).
    float32: the same per tensor with ``isfinite`` (a float32 sum of finite values could overflow)."""
    tensors = [t.detach() for t in tensors]
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    if accum_dtype(tensors[0].device) == torch.float64:
        total = torch.stack([t.sum(dtype=torch.float64) for t in tensors])
        return torch.isfinite(total).all()
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


__all__ = ["NO_FLOAT64_ENV", "has_float64", "accum_dtype", "segment_scan", "all_finite"]

"""Rendering a model: one batch of cameras at one time (``render_model``, used by the fit's loss), every camera of a
rig at given times (``render_views``: previews, held-out scores, orbits), and where a fit or render runs
(``pick_device``)."""

from __future__ import annotations

import torch

from ...errors import InputError
from ..model import Gaussians4D


def pick_device(backend: str, device=None) -> str:
    """Where a fit or render runs: ``device`` when given (the nodes pass ComfyUI's torch device; the torch
    rasteriser runs on any device), else the first CUDA GPU when there is one, else the CPU. gsplat needs CUDA."""
    if backend not in ("auto", "torch", "gsplat"):
        raise InputError("backend", f"expected auto, torch or gsplat, got {backend!r}")
    if device is not None:
        dev = torch.device(device)
        if backend == "gsplat" and dev.type != "cuda":
            raise InputError("backend", f"gsplat needs a CUDA GPU and the fit runs on {dev}; use auto or torch")
        return str(dev)
    if torch.cuda.is_available():
        return "cuda"
    if backend == "gsplat":
        raise InputError("backend", "gsplat needs a CUDA GPU and none is available; use auto or torch")
    return "cpu"


def render_model(model: Gaussians4D, viewmats, Ks, width, height, t=None, backend="auto", sh_degree=None,
                 rasterize_mode=None, packed=False, deformed=None, check_finite=True):
    from .render import rasterize

    kw = model.raster_inputs(t, deformed)
    deg = kw.pop("sh_degree") if sh_degree is None else min(sh_degree, model.sh_degree)
    kw.pop("sh_degree", None)
    c = viewmats.shape[0]
    bg = torch.ones(c, 3, device=viewmats.device)
    return rasterize(viewmats=viewmats, Ks=Ks, width=width, height=height, sh_degree=deg, backend=backend,
                     backgrounds=bg, rasterize_mode=rasterize_mode or model.config.get("rasterize_mode", "classic"),
                     packed=packed, check_finite=check_finite, **kw)


@torch.no_grad()
def render_views(model: Gaussians4D, rig, times=None, backend: str = "auto", device=None,
                 chunk: int = 4) -> torch.Tensor:
    """Render every camera of ``rig`` at every time -> (V, T, H, W, 3) float on the CPU (white background).

    ``backend`` goes as given to every render: under "auto" a gsplat failure falls back to torch, also mid-way."""
    from .render import resolve_backend

    if device is None:
        device = model.splats["means"].device
    resolve_backend(backend, torch.device(device))  # an impossible explicit choice fails before any work
    times = [None] if times is None else list(times)
    vm = rig.viewmats(device=device)
    ks = rig.Ks(device=device)
    out = torch.empty(len(rig), len(times), rig.height, rig.width, 3)
    for ti, t in enumerate(times):
        for s in range(0, len(rig), chunk):
            img, _, _ = render_model(model, vm[s:s + chunk], ks[s:s + chunk], rig.width, rig.height,
                                     None if (t is None or not model.is_dynamic) else float(t), backend)
            out[s:s + chunk, ti] = img.clamp(0, 1).cpu()
    return out

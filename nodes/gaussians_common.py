"""What the 4D nodes (gaussians.py, preview.py) share: the ``ui`` keys of the inline preview, the times a node
input names, the cameras to snap to, an orbit framed on the character, and the ModelPatcher that lends a fit to
ComfyUI's memory manager (made once per fit). Imports only the core library and ComfyUI."""

from __future__ import annotations

import re

import numpy as np
import torch

from ..charactershot_core import cameras as cam
from ..charactershot_core.errors import InputError

PREVIEW_KEY = "charshot_preview"
TURNTABLE_KEY = "charshot_turntable"


def times_from_text(text: str, model, name: str = "times") -> list[float] | None:
    if not model.is_dynamic:
        return None
    text = (text or "").strip()
    if not text:
        return list(model.times)
    try:
        ts = [float(x) for x in re.split(r"[,\s]+", text) if x]
    except ValueError:
        raise InputError(name, f"expected comma-separated times in [0, 1] such as 0, 0.5, 1, got {text!r}") from None
    if not ts or any(not (0.0 <= t <= 1.0) for t in ts):
        raise InputError(name, f"expected times in [0, 1], got {text!r}")
    return ts


def training_rig(model, cameras=None) -> tuple[dict | None, str]:
    """The cameras to snap to: the connected rig, else the rig the fit recorded, else the official 21 views."""
    if cameras is not None:
        return cameras.to_dict(), "connected"
    rig = getattr(model, "config", {}).get("rig")
    if isinstance(rig, dict) and rig.get("views"):
        return rig, "fit"
    return cam.official_rig().to_dict(), "official"


def character_bounds(model, times=None, quantile: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """Box around the character over all ``times`` (None: the model's own times), ignoring the most extreme
    ``quantile`` of Gaussians on each side (stray floaters)."""
    ts = list(times) if times else (list(model.times) if model.is_dynamic else [None])
    lo, hi = [], []
    with torch.no_grad():
        for t in ts:
            m = model.means_at(None if t is None else float(t)).detach().float().cpu()
            if m.shape[0] > 50:
                q = torch.quantile(m, torch.tensor([quantile, 1 - quantile]), dim=0)
                lo.append(q[0])
                hi.append(q[1])
            else:
                lo.append(m.min(0).values)
                hi.append(m.max(0).values)
    return torch.stack(lo).min(0).values.numpy().astype(np.float64), torch.stack(hi).max(0).values.numpy().astype(np.float64)


def framed_orbit(model, num_views: int, elevation: float, width: int, height: int, times=None,
                 margin: float = 0.06) -> cam.CameraRig:
    """An orbit (official azimuths and FoV) whose look-at point is the centre of the character's box over all
    frames and whose distance keeps all eight corners of that box inside every image with ``margin``."""
    lo, hi = character_bounds(model, times)
    centre = 0.5 * (lo + hi)
    square = min(width, height) if (width, height) != (cam.CANVAS_W, cam.CANVAS_H) else cam.SQUARE
    rig = cam.orbit_rig(num_views=num_views, radius=1.0, elevation_deg=elevation, look_at_height=0.0, width=width,
                        height=height, square_size=square)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]) - centre
    need = 0.1
    for k in range(len(rig)):
        c2w = rig.c2w_gl[k]
        right, up, back = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
        tx = (width / 2.0) / rig.fx[k] * (1 - margin)
        ty = (height / 2.0) / rig.fy[k] * (1 - margin)
        for p in corners:
            # camera at centre + d * back: depth of p is d - p.back; |p.right| <= tx * depth, |p.up| <= ty * depth
            need = max(need, abs(p @ right) / tx + p @ back, abs(p @ up) / ty + p @ back)
    near = float(np.max(np.abs(corners))) * 0.5  # keep the camera out of the box
    dist = max(need, near + 0.05)
    c2w = rig.c2w_gl.copy()
    c2w[:, :3, 3] = centre[None, :] + c2w[:, :3, 2] * dist
    return cam.CameraRig(c2w, rig.fx, rig.fy, rig.cx, rig.cy, width, height, list(rig.names), rig.times,
                         rig.square_size)


def patcher_for(model, load_device):
    """The ModelPatcher that loads ``model`` onto ``load_device``: made on first use and kept on the model, so a
    Render 4D run on the same cached fit reuses it (ComfyUI sees one model, already loaded) instead of wrapping the
    fit in a new patcher every time."""
    import comfy.model_management as mm
    import comfy.model_patcher

    patcher = getattr(model, "_charshot_patcher", None)
    if patcher is None or patcher.load_device != load_device:
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                                   offload_device=mm.unet_offload_device())
        object.__setattr__(model, "_charshot_patcher", patcher)  # a plain attribute, not a submodule
    return patcher

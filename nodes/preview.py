"""The inline 4D preview: CharacterShot Preview 4D, and the helpers Save/Load 4D Gaussians share with it.

The node bakes the 4D Gaussians into a ``.cs4d`` bundle (docs/4d_bundle_format.md) in ComfyUI's temp folder, with
the training cameras in its metadata (for "snap to camera"), and renders a few turntable frames on the server for
browsers without WebGL2. The page-side widget (web/js/charactershot_preview.js) reads the ``ui`` keys
``charshot_preview`` (the bundle) and ``charshot_turntable`` (PNG frames).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from comfy_api.latest import io

from ..charactershot_core import cameras as cam
from ..charactershot_core.errors import InputError
from .common import CATEGORY, Cameras, Gaussians4D, advanced
from .paths import next_counter, output_target

CAT = f"{CATEGORY}/4D"
PREVIEW_KEY = "charshot_preview"
TURNTABLE_KEY = "charshot_turntable"


def training_rig(model, cameras=None) -> tuple[dict | None, str]:
    """The cameras to snap to: the connected rig, else the rig the fit recorded, else the official 21 views."""
    if cameras is not None:
        return cameras.to_dict(), "connected"
    rig = getattr(model, "config", {}).get("rig")
    if isinstance(rig, dict) and rig.get("views"):
        return rig, "fit"
    return cam.official_rig().to_dict(), "official"


def write_bundle(model, path: str, times, rig: dict | None = None, rig_source: str = "") -> str:
    """Bake ``model`` at ``times`` (None: a static model) into a 4D bundle at ``path`` (atomic)."""
    from ..charactershot_core.gaussians import export

    ts = list(times) if times is not None else [None]
    with torch.no_grad():
        frames = [model.baked(t) for t in ts]
    f0 = frames[0]
    static = {"sh": torch.cat([f0["sh0"], f0["shN"]], dim=1), "opacities": torch.sigmoid(f0["opacities"])}
    dyn = {"positions": torch.stack([f["means"] for f in frames]), "rotations": torch.stack([f["quats"] for f in frames])}
    scales = torch.stack([f["scales"] for f in frames])
    if len(frames) > 1 and bool((scales - scales[:1]).abs().max() > 1e-6):
        dyn["scales"] = torch.exp(scales)
    else:
        static["scales"] = torch.exp(scales[0])
    meta = {"source": "charactershot 4D Gaussians", "sh_degree": model.sh_degree,
            "rasterize_mode": model.config.get("rasterize_mode", "classic")}
    if rig:
        meta["cameras"] = rig
        meta["cameras_source"] = rig_source
    export.write_bundle(path, static, dyn, times if times is not None else [0.0], meta=meta)
    return path


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


def render_turntable(model, folder: str, stem: str, frames: int, size: int = 256) -> list[str]:
    """``frames`` PNGs of a camera turning once around while time runs (white background); returns file names."""
    from PIL import Image

    from ..charactershot_core.gaussians.fit import render_views
    from ..charactershot_core.gaussians.threads import cpu_threads

    if frames <= 0:
        return []
    times = None
    if model.is_dynamic:
        times = [i / max(1, frames - 1) for i in range(frames)]
    rig = framed_orbit(model, frames, 10.0, size, size, times)
    device = model.splats["means"].device
    names = []
    with cpu_threads():
        for k in range(frames):
            t = None if times is None else [times[k]]
            img = render_views(model, rig.select([k]), t, "auto", device)[0, 0]
            arr = (img.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            name = f"{stem}_turntable_{k:02d}.png"
            tmp = os.path.join(folder, f".{name}.partial")
            Image.fromarray(arr).save(tmp, format="PNG")
            os.replace(tmp, os.path.join(folder, name))
            names.append(name)
    return names


class Preview4D(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotPreview4D",
            display_name="CharacterShot Preview 4D",
            category=CAT,
            is_output_node=True,
            description="Shows 4D Gaussians inside the node: orbit, zoom, pan, play and scrub the motion, snap to a "
                        "training camera. Writes a 4D bundle into ComfyUI's temp folder (nothing into output).",
            inputs=[
                Gaussians4D.Input("gaussians", tooltip="The fitted or loaded 4D character to look at."),
                Cameras.Input("cameras", optional=True,
                              tooltip="Cameras to snap the view to (default: the cameras the fit used)."),
                advanced(io.String.Input("times", default="", optional=True,
                                         tooltip="Which moments the preview plays, comma-separated from 0 (start) "
                                                 "to 1 (end); empty = the frames the fit learnt.")),
                advanced(io.Int.Input("turntable_frames", default=8, min=0, max=72, optional=True,
                                      tooltip="Spinning pictures made on the server, shown instead of the 3D view "
                                              "in browsers without WebGL2 (0 = none, a little faster).")),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, gaussians, cameras=None, times="", turntable_frames=8):
        from .gaussians import _times_from_text

        model = gaussians
        if not hasattr(model, "baked"):
            raise InputError("gaussians", f"expected CHARSHOT_GAUSSIANS4D, got {type(model).__name__}")
        ts = _times_from_text(times, model)
        folder, subfolder, base = output_target("charactershot/preview4d", "gaussians", temp=True)
        os.makedirs(folder, exist_ok=True)
        stem = f"{base}_{next_counter(folder, base):05d}"
        rig, source = training_rig(model, cameras)
        name = f"{stem}.cs4d"
        write_bundle(model, os.path.join(folder, name), ts, rig, source)
        turn = render_turntable(model, folder, stem, int(turntable_frames))
        ui = {PREVIEW_KEY: [{"filename": name, "subfolder": subfolder, "type": "temp"}],
              TURNTABLE_KEY: [{"filename": n, "subfolder": subfolder, "type": "temp"} for n in turn]}
        return io.NodeOutput(ui=ui)


NODES = [Preview4D]

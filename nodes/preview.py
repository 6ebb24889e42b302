"""The inline 4D preview: CharacterShot Preview 4D (a bundle in the temp folder and a server-rendered turntable).

The node bakes the 4D Gaussians into a ``.cs4d`` bundle (docs/4d_bundle_format.md) in ComfyUI's temp folder, with
the training cameras in its metadata (for "snap to camera"), and renders a few turntable frames on the server for
browsers without WebGL2. The page-side widget (web/js/charactershot_preview.js) reads the ``ui`` keys
``charshot_preview`` (the bundle) and ``charshot_turntable`` (PNG frames).
"""

from __future__ import annotations

import os

import numpy as np
from comfy_api.latest import io

from ..charactershot_core.errors import InputError
from ..charactershot_core.gaussians.formats import write_model_bundle
from .common import CATEGORY, Cameras, Gaussians4D, advanced
from .gaussians_common import PREVIEW_KEY, TURNTABLE_KEY, framed_orbit, times_from_text, training_rig
from .paths import next_counter, output_target

CAT = f"{CATEGORY}/4D"


def render_turntable(model, folder: str, stem: str, frames: int, size: int = 256) -> list[str]:
    """``frames`` PNGs of a camera turning once around while time runs (white background); returns file names."""
    from PIL import Image

    from ..charactershot_core.gaussians.raster.views import render_views
    from ..charactershot_core.gaussians.fitting.threads import cpu_threads

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
        model = gaussians
        if not hasattr(model, "baked"):
            raise InputError("gaussians", f"expected CHARSHOT_GAUSSIANS4D, got {type(model).__name__}")
        ts = times_from_text(times, model)
        folder, subfolder, base = output_target("charactershot/preview4d", "gaussians", temp=True)
        os.makedirs(folder, exist_ok=True)
        stem = f"{base}_{next_counter(folder, base):05d}"
        rig, source = training_rig(model, cameras)
        name = f"{stem}.cs4d"
        write_model_bundle(model, os.path.join(folder, name), ts, rig, source)
        turn = render_turntable(model, folder, stem, int(turntable_frames))
        ui = {PREVIEW_KEY: [{"filename": name, "subfolder": subfolder, "type": "temp"}],
              TURNTABLE_KEY: [{"filename": n, "subfolder": subfolder, "type": "temp"} for n in turn]}
        return io.NodeOutput(ui=ui)


NODES = [Preview4D]

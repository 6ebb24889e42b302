"""Core ComfyUI's ``SPLAT`` type, both ways: the frames of 4D Gaussians as a SPLAT batch (core's Render / Transform /
Merge / Mesh / Save splat nodes take it), and a SPLAT (core's "Get Splat" loader) as static 4D Gaussians.

The socket type is the string ``"SPLAT"``, the one newer core declares (``io.Splat``), so the sockets connect on
newer hosts; 0.3.75 has no such type and gets the same string from ``io.Custom``. The value is core's own
``Types.SPLAT`` where the host has it, else ``charactershot_core.gaussians.formats.splat_type.SplatBatch`` (same fields,
same layout). The conversions live in that core module.
"""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..charactershot_core.errors import InputError
from ..charactershot_core.gaussians.formats import splat_type as st
from .common import CATEGORY, Gaussians4D, Splat, advanced

CAT = f"{CATEGORY}/4D"

AXES_TOOLTIP = ("Axes of the splat. 'y down' is what core's splat nodes and most 3DGS captures use (Render Splat "
                "shows the character upright); 'z up' keeps the axes of CharacterShot's .ply files. Change it only "
                "for a splat loaded from a CharacterShot .ply.")


def host_splat(batch: st.SplatBatch):
    """Core's own SPLAT object where the host defines it (newer ComfyUI), else ours (same fields)."""
    try:
        from comfy_api.latest import Types

        cls = getattr(Types, "SPLAT", None)
    except ImportError:
        cls = None
    if cls is None:
        return batch
    positions, scales, rotations, opacities, sh, counts = batch.fields()
    return cls(positions, scales, rotations, opacities, sh, counts=counts)


def _check_model(gaussians):
    if gaussians is None or not hasattr(gaussians, "baked") or getattr(gaussians, "num_gaussians", 0) == 0:
        raise InputError("gaussians", f"expected 4D Gaussians with at least one Gaussian, got "
                                      f"{type(gaussians).__name__}")


class Gaussians4DToSplat(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShot4DGaussiansToSplat",
            display_name="CharacterShot 4D Gaussians to SPLAT",
            category=CAT,
            description="The frames of the 4D character as a core SPLAT batch (one item per frame), for core's "
                        "Render Splat, Transform Splat, Merge Splats, Splat to Mesh and Create 3D File nodes.",
            inputs=[
                Gaussians4D.Input("gaussians", tooltip="Fitted or loaded 4D Gaussians."),
                io.String.Input("frames", default="", optional=True,
                                tooltip="Which frames to pass on, by number as in the saved frame_00001.ply files: "
                                        "for example 1, 5, 10-20. Empty = every frame. Core's Render Splat draws "
                                        "every item; Create 3D File saves only the first."),
                advanced(io.Combo.Input("axes", options=list(st.AXES), default=st.Y_DOWN, optional=True,
                                        tooltip=AXES_TOOLTIP)),
            ],
            outputs=[Splat.Output(display_name="splat", tooltip="One splat per frame, in core's conventions.")],
        )

    @classmethod
    def execute(cls, gaussians, frames="", axes=st.Y_DOWN):
        _check_model(gaussians)
        batch = st.gaussians_to_splat(gaussians, frames, axes)
        text = (f"{batch.batch_size} frame(s) x {batch.positions.shape[1]} Gaussians, SH degree {batch.sh_degree}, "
                f"axes {axes}")
        return io.NodeOutput(host_splat(batch), ui=ui.PreviewText(text))


class SplatTo4DGaussians(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotSplatTo4DGaussians",
            display_name="CharacterShot SPLAT to 4D Gaussians",
            category=CAT,
            description="One splat of a core SPLAT (for example from Get Splat) as static CharacterShot Gaussians: "
                        "preview, render or save it with the 4D nodes.",
            inputs=[
                Splat.Input("splat", tooltip="A core SPLAT, for example from Get Splat or 4D Gaussians to SPLAT."),
                io.Int.Input("item", default=1, min=1, max=100000, optional=True,
                             tooltip="Which splat of the batch (1 = the first; a batch from 4D Gaussians to SPLAT "
                                     "holds one per frame)."),
                advanced(io.Combo.Input("axes", options=list(st.AXES), default=st.Y_DOWN, optional=True,
                                        tooltip=AXES_TOOLTIP)),
            ],
            outputs=[Gaussians4D.Output(display_name="gaussians", tooltip="Static Gaussians (a single frame).")],
        )

    @classmethod
    def execute(cls, splat, item=1, axes=st.Y_DOWN):
        model = st.splat_to_gaussians(splat, int(item) - 1, axes)
        text = f"{model.num_gaussians} Gaussians, SH degree {model.sh_degree}, from item {item}"
        return io.NodeOutput(model, ui=ui.PreviewText(text))


NODES = [Gaussians4DToSplat, SplatTo4DGaussians]

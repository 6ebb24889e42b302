"""Views from one image: SV3D conditioned on a CharacterShot orbit rig, and its frames laid onto the rig's canvas."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io, ui

from ..charactershot_core import canvas as cv
from ..charactershot_core import cameras as cam
from ..charactershot_core import views as vw
from .common import CATEGORY, Cameras, Progress, advanced, image_to_numpy, numpy_to_image

log = logging.getLogger("CharacterShot")

STAGE = f"{CATEGORY}/views"

_ORDER_TIP = ("How SV3D's frames are matched to the cameras. rig: frame k is camera k, your picture first (use "
              "this). sv3d_official: your picture last, as Stability's own sampling script orders them. Use the "
              "same setting in Orbit Conditioning and Views From Orbit.")


def _angles_text(angles: vw.OrbitAngles) -> str:
    az = ", ".join(f"{a:.2f}" for a in angles.azimuths)
    el = sorted({round(e, 2) for e in angles.elevations})
    return (f"{len(angles)} frames; azimuths (deg, counter-clockwise from the input view): {az}; "
            f"elevation(s): {', '.join(f'{e:g}' for e in el)}")


class OrbitConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotOrbitConditioning",
            display_name="CharacterShot Orbit Conditioning (SV3D)",
            category=STAGE,
            description="Makes SV3D turn around your character along the cameras of a CharacterShot rig "
                        "(the official 21 views by default), so that SV3D's frames are the views the sampler needs. "
                        "Use it in place of core's SV3D_Conditioning and feed SV3D through a KSampler.",
            inputs=[
                io.ClipVision.Input("clip_vision", tooltip="SV3D's CLIP vision model (Load CLIP Vision, or the "
                                                           "Image Only Checkpoint Loader's output)."),
                io.Image.Input("init_image", tooltip="Your character, centred on white (ideally square): the front "
                                                     "view."),
                io.Vae.Input("vae", tooltip="SV3D's VAE (from the same checkpoint loader as clip_vision)."),
                Cameras.Input("cameras", optional=True,
                              tooltip="Only for your own orbit rig (default: the official 21 views, which the video "
                                      "model needs)."),
                advanced(io.Int.Input("width", default=vw.SV3D_SIZE, min=16, max=4096, step=8, optional=True,
                                      tooltip="Frame width; SV3D works best at 576.")),
                advanced(io.Int.Input("height", default=vw.SV3D_SIZE, min=16, max=4096, step=8, optional=True,
                                      tooltip="Frame height; SV3D works best at 576.")),
                advanced(io.Combo.Input("frame_order", options=list(vw.FRAME_ORDERS), default="rig", optional=True,
                                        tooltip=_ORDER_TIP)),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive"),
                io.Conditioning.Output(display_name="negative"),
                io.Latent.Output(display_name="latent", tooltip="Empty latent of one frame per view."),
            ],
        )

    @classmethod
    def execute(cls, clip_vision, init_image, vae, cameras=None, width=vw.SV3D_SIZE, height=vw.SV3D_SIZE,
                frame_order="rig"):
        import comfy.utils

        rig = cameras if cameras is not None else cam.official_rig()
        angles = vw.orbit_conditioning_angles(rig, frame_order)  # clear error for a rig that is not an orbit
        Progress.check_interrupt()
        output = clip_vision.encode_image(init_image)
        pooled = output.image_embeds.unsqueeze(0)
        pixels = comfy.utils.common_upscale(init_image.movedim(-1, 1), width, height, "bilinear", "center")
        latent_image = vae.encode(pixels.movedim(1, -1)[:, :, :, :3])
        extra = {"elevation": list(angles.elevations), "azimuth": list(angles.azimuths)}
        positive = [[pooled, {"concat_latent_image": latent_image, **extra}]]
        negative = [[torch.zeros_like(pooled), {"concat_latent_image": torch.zeros_like(latent_image), **extra}]]
        latent = torch.zeros([len(angles), 4, height // 8, width // 8])
        return io.NodeOutput(positive, negative, {"samples": latent}, ui=ui.PreviewText(_angles_text(angles)))


class ViewsFromOrbit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotViewsFromOrbit",
            display_name="CharacterShot Views From Orbit",
            category=STAGE,
            description="Puts SV3D's frames on the sampler's canvas (white 720x480, the character in the "
                        "middle square), one view per camera, all framed alike so the views stay consistent. Your "
                        "original picture can replace the front view.",
            inputs=[
                io.Image.Input("sv3d_frames", tooltip="SV3D's decoded video: one frame per camera of the rig."),
                Cameras.Input("cameras", optional=True,
                              tooltip="The rig the orbit was made for (default: the official 21 views)."),
                advanced(io.Combo.Input("frame_order", options=list(vw.FRAME_ORDERS), default="rig", optional=True,
                                        tooltip=_ORDER_TIP)),
                io.Image.Input("input_image", optional=True,
                               tooltip="Your original picture: it replaces the front view, which keeps its full "
                                       "detail."),
                io.Float.Input("fill", default=cv.TEMPLATE_FILL, min=0.05, max=1.0, step=0.01, optional=True,
                               tooltip="How big the character is in its square: 0.73 matches what the model was "
                                       "trained on."),
                advanced(io.Combo.Input("anchor", options=list(cv.ANCHORS), default="template", optional=True,
                                        tooltip="template: placed like the training pictures (use this); center: "
                                                "in the middle of the square.")),
            ],
            outputs=[
                io.Image.Output(display_name="views", tooltip="The views on the canvas, view 0 first."),
                io.Mask.Output(display_name="mask", tooltip="Where the character is (1 = character)."),
                Cameras.Output(display_name="cameras", tooltip="The rig of these views."),
            ],
        )

    @classmethod
    def execute(cls, sv3d_frames, cameras=None, frame_order="rig", input_image=None, fill=cv.TEMPLATE_FILL,
                anchor="template"):
        rig = cameras if cameras is not None else cam.official_rig()
        frames = image_to_numpy(sv3d_frames, "sv3d_frames")
        first = None
        if input_image is not None:
            first = image_to_numpy(input_image, "input_image")
            if first.shape[0] > 1:
                log.warning("[CharacterShot] input_image has %d images; using the first", first.shape[0])
            first = first[0]
        bar = Progress(len(rig))
        res = vw.views_from_orbit(frames, rig, frame_order, input_image=first, fill=fill, anchor=anchor,
                                  progress=bar.step)
        for w in res.warnings:
            log.warning("[CharacterShot] %s", w)
        summary = (f"{len(rig)} views on a {rig.width}x{rig.height} canvas (frame order {frame_order}"
                   f"{', view 0 = input_image' if first is not None else ''})")
        text = "\n".join([f"WARNING: {w}" for w in res.warnings] + [summary])
        return io.NodeOutput(numpy_to_image(res.images), torch.from_numpy(res.masks), rig, ui=ui.PreviewText(text))


NODES = [OrbitConditioning, ViewsFromOrbit]

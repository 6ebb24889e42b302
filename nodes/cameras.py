"""Camera-prior nodes: the official 21-view orbit, custom orbits and rigs from JSON files."""

from __future__ import annotations

import os

import numpy as np
from comfy_api.latest import io, ui

from ..charactershot_core import cameras as cam
from ..charactershot_core.errors import InputError
from .common import CATEGORY, Cameras, advanced, numpy_to_image
from .paths import list_input_files, resolve_input_file, save_output_file

PRESETS = ["official_21_views", "custom_orbit", "from_json_file"]
NO_FILE = "(none)"


class CameraRig(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        files = [NO_FILE] + list_input_files((".json",))
        return io.Schema(
            node_id="CharacterShotCameraRig",
            display_name="CharacterShot Camera Rig",
            category=f"{CATEGORY}/cameras",
            description="Cameras for multi-view generation and 4D fitting. The model was trained on the official "
                        "21-view orbit; other rigs are for the 4D stage and previews.",
            inputs=[
                io.Combo.Input("preset", options=PRESETS, default=PRESETS[0],
                               tooltip="official_21_views: the cameras the model was trained on (use these to make "
                                       "videos). custom_orbit: your own circle of cameras, set below. "
                                       "from_json_file: a rig saved as JSON in ComfyUI's input folder."),
                io.Int.Input("num_views", default=21, min=1, max=360,
                             tooltip="custom_orbit: how many cameras on the circle (the video model needs the 21 "
                                     "of the official rig)."),
                io.Float.Input("radius", default=cam.OFFICIAL_RADIUS, min=0.1, max=100.0, step=0.05,
                               tooltip="custom_orbit: distance from the cameras to the character, in metres."),
                io.Float.Input("elevation", default=0.0, min=-89.0, max=89.0, step=1.0,
                               tooltip="custom_orbit: camera height in degrees (0 = eye level, positive = from "
                                       "above)."),
                advanced(io.Float.Input("look_at_height", default=cam.OFFICIAL_HEIGHT, min=-10.0, max=10.0,
                                        step=0.05,
                                        tooltip="custom_orbit: the height on the character the cameras aim at, in "
                                                "metres.")),
                advanced(io.Float.Input("fov", default=round(cam.OFFICIAL_FOV_DEG, 4), min=1.0, max=170.0,
                                        step=0.1,
                                        tooltip="custom_orbit: field of view in degrees across the central square "
                                                "of the picture; smaller zooms in.")),
                advanced(io.Float.Input("start_azimuth", default=0.0, min=-360.0, max=360.0, step=1.0,
                                        tooltip="custom_orbit: where the first camera stands, in degrees around the "
                                                "character; 0 = in front.")),
                advanced(io.Combo.Input("direction", options=["counterclockwise", "clockwise"],
                                        default="counterclockwise",
                                        tooltip="The order of the cameras seen from above; the official rig goes "
                                                "counterclockwise.")),
                advanced(io.Int.Input("width", default=cam.CANVAS_W, min=8, max=8192, step=8,
                                      tooltip="custom_orbit: picture width in pixels; the video model needs "
                                              "720.")),
                advanced(io.Int.Input("height", default=cam.CANVAS_H, min=8, max=8192, step=8,
                                      tooltip="custom_orbit: picture height in pixels; the video model needs "
                                              "480.")),
                io.Combo.Input("json_file", options=files, default=NO_FILE, optional=True,
                               tooltip="from_json_file: the rig JSON in ComfyUI's input folder (one saved by "
                                       "CharacterShot Save Camera Rig, or the official template)."),
            ],
            outputs=[
                Cameras.Output(display_name="cameras", tooltip="The camera rig."),
                io.Image.Output(display_name="preview", tooltip="The rig seen from above, view 0 in orange."),
            ],
        )

    @classmethod
    def execute(cls, preset, num_views, radius, elevation, look_at_height, fov, start_azimuth, direction, width,
                height, json_file=NO_FILE):
        if preset == "official_21_views":
            rig = cam.official_rig()
        elif preset == "custom_orbit":
            rig = cam.orbit_rig(num_views=num_views, radius=radius, elevation_deg=elevation,
                                look_at_height=look_at_height, fov_deg=fov, start_azimuth_deg=start_azimuth,
                                clockwise=direction == "clockwise", width=width, height=height,
                                square_size=min(width, height), times=None)
        elif preset == "from_json_file":
            if not json_file or json_file == NO_FILE:
                raise InputError("json_file", "preset is from_json_file but no JSON file was chosen")
            rig = cam.CameraRig.load(resolve_input_file(json_file, "json_file"))
        else:
            raise InputError("preset", f"expected one of {PRESETS}, got {preset!r}")
        preview = numpy_to_image(cam.rig_preview(rig)[None])
        return io.NodeOutput(rig, preview, ui=ui.PreviewImage(preview, cls=cls))


class SaveCameraRig(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotSaveCameraRig",
            display_name="CharacterShot Save Camera Rig",
            category=f"{CATEGORY}/cameras",
            description="Writes the rig as JSON (the official template layout plus per-view intrinsics) into "
                        "ComfyUI's output folder.",
            is_output_node=True,
            inputs=[
                Cameras.Input("cameras", tooltip="The camera rig to save as JSON, to load again with Camera Rig."),
                io.String.Input("filename_prefix", default="charactershot/cameras",
                                tooltip="Name (and sub-folder) in ComfyUI's output folder; a number is added so "
                                        "nothing is overwritten."),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, cameras, filename_prefix):
        import json

        data = json.dumps(cameras.to_dict(), indent=1).encode("utf-8")
        result = save_output_file(filename_prefix, ".json", data, "filename_prefix")
        return io.NodeOutput(ui={"charshot_files": [result]})


NODES = [CameraRig, SaveCameraRig]

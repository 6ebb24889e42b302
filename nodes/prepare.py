"""Preparation nodes: the character canvas, pose frames from keypoints, and already-drawn pose images."""

from __future__ import annotations

import json
import logging

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..charactershot_core import canvas as cv
from ..charactershot_core.errors import InputError
from ..charactershot_core.poses import draw as pdraw
from ..charactershot_core.poses import keypoints as kp
from ..charactershot_core.poses import retarget as rt
from .common import CATEGORY, Progress, advanced, image_to_numpy, numpy_to_image
from .paths import list_input_files, resolve_input_file

log = logging.getLogger("CharacterShot")

# comfyui_controlnet_aux's keypoint type: same name, so its DWPose / OpenPose preprocessors connect
PoseKeypoint = io.Custom("POSE_KEYPOINT")

STAGE = f"{CATEGORY}/prepare"
NO_FILE = "(none)"


def _size_inputs():
    return [
        advanced(io.Int.Input("width", default=cv.CANVAS_W, min=8, max=8192, step=8, optional=True,
                              tooltip="Canvas width in pixels. Keep 720: the video model was trained on it.")),
        advanced(io.Int.Input("height", default=cv.CANVAS_H, min=8, max=8192, step=8, optional=True,
                              tooltip="Canvas height in pixels. Keep 480: the video model was trained on it.")),
    ]


def _report(messages: list[str], summary: str):
    """Log warnings and return a ui text for the node (warnings first)."""
    for m in messages:
        log.warning("[CharacterShot] %s", m)
    text = "\n".join([f"WARNING: {m}" for m in messages] + [summary])
    return ui.PreviewText(text)


def _mask_to_numpy(mask, name: str) -> np.ndarray:
    if not isinstance(mask, torch.Tensor):
        raise InputError(name, f"expected a MASK, got {type(mask).__name__}")
    m = mask.detach().float().cpu()
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 3:
        raise InputError(name, f"expected a MASK shaped (B, H, W), got {tuple(mask.shape)}")
    if m.shape[0] == 0:
        raise InputError(name, "the mask batch is empty")
    return m.numpy()


class PrepareCharacter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotPrepareCharacter",
            display_name="CharacterShot Prepare Character",
            category=STAGE,
            description="Lays character views out like the official training data: the character squared, resized "
                        "to 480x480 and pasted centred on a white 720x480 canvas. Views already on that canvas "
                        "pass unchanged.",
            inputs=[
                io.Image.Input("images", tooltip="Your character: one picture, or one per camera (21)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Where the character is (from a background-removal node, or Load Image's "
                                      "mask). Without it the transparent or plain background around the "
                                      "character is found by itself."),
                advanced(io.Combo.Input("mask_meaning", options=list(cv.MASK_MEANINGS), default="auto",
                                        optional=True,
                                        tooltip="What white means in the mask. auto works for both kinds; choose "
                                                "character (background-removal nodes) or background (Load Image's "
                                                "mask) if the character comes out cut away.")),
                io.Float.Input("fill", default=cv.TEMPLATE_FILL, min=0.05, max=1.0, step=0.01, optional=True,
                               tooltip="How big the character is in its square: 0.73 matches what the model was "
                                       "trained on; 1.0 crops tight."),
                io.Combo.Input("anchor", options=list(cv.ANCHORS), default="center", optional=True,
                               tooltip="center: the character in the middle. template: placed like the training "
                                       "pictures (centre at 42% of the height, feet lower down); choose it to match "
                                       "their framing."),
                advanced(io.Combo.Input("box_mode", options=list(cv.BOX_MODES), default="shared", optional=True,
                                        tooltip="shared: one size for all pictures, so the views of one character "
                                                "keep the same scale (use this for 21 views). per_image: each "
                                                "picture framed on its own.")),
                advanced(io.Boolean.Input("keep_prepared", default=True, optional=True,
                                          tooltip="Leave pictures that are already on the 720x480 white canvas "
                                                  "as they are.")),
                *_size_inputs(),
                advanced(io.Int.Input("square", default=cv.SQUARE, min=8, max=8192, step=8, optional=True,
                                      tooltip="Side of the character's square on the canvas in pixels (480 for the "
                                              "model); at most the smaller of width and height.")),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The views on the white canvas."),
                io.Mask.Output(display_name="mask", tooltip="Where the character is on the canvas (1 = character)."),
            ],
        )

    @classmethod
    def execute(cls, images, mask=None, mask_meaning="auto", fill=cv.TEMPLATE_FILL, anchor="center",
                box_mode="shared", keep_prepared=True, width=cv.CANVAS_W, height=cv.CANVAS_H, square=cv.SQUARE):
        arr = image_to_numpy(images, "images")  # keeps a 4th (alpha) channel when there is one
        m = _mask_to_numpy(mask, "mask") if mask is not None else None
        bar = Progress(arr.shape[0])
        bar.check_interrupt()
        res = cv.prepare_character(arr, m, width=width, height=height, square=square, fill=fill, anchor=anchor,
                                   box_mode=box_mode, mask_meaning=mask_meaning, keep_prepared=keep_prepared,
                                   progress=bar.step)
        n_kept = sum(res.kept)
        summary = (f"{len(res.kept)} image(s) on a {width}x{height} white canvas ({square}px square); "
                   f"{n_kept} already prepared and kept unchanged")
        return io.NodeOutput(numpy_to_image(res.images), torch.from_numpy(res.masks),
                             ui=_report(res.warnings, summary))


class PoseFromKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotPoseFromKeypoints",
            display_name="CharacterShot Pose From Keypoints",
            category=STAGE,
            description="Draws the motion for the sampler: pose keypoints of a video (DWPose or SDPose) "
                        "fitted to your character's body and spread over the model's frame count, plus the drawing of "
                        "your character's own pose.",
            inputs=[
                PoseKeypoint.Input("driving_pose",
                                   tooltip="The motion: keypoints for every frame, e.g. DWPose Estimator "
                                           "(comfyui_controlnet_aux) or SDPose on a video, or CharacterShot Load "
                                           "Pose Keypoints."),
                PoseKeypoint.Input("reference_pose",
                                   tooltip="Your character's pose: DWPose on the front view AFTER CharacterShot "
                                           "Prepare Character, so that it lines up with the canvas."),
                io.Int.Input("num_frames", default=25, min=1, max=257, step=4,
                             tooltip="Frames to make: 1, 5, 9, ... (4k+1). The model was trained on 25; the "
                                     "motion is spread over them."),
                io.Boolean.Input("retarget", default=True,
                                 tooltip="Fit the driving poses to your character's body size and position. Keep "
                                         "it on unless the poses were drawn for this character already."),
                advanced(io.Combo.Input("resample", options=list(rt.RESAMPLE_MODES), default="linear",
                                        optional=True,
                                        tooltip="How the motion is brought to num_frames. linear: spread over the "
                                                "whole clip, smoothly in between (best). nearest: spread, whole "
                                                "frames only. first: just the first num_frames frames.")),
                advanced(io.Combo.Input("missing_person", options=list(kp.MISSING), default="error",
                                        optional=True,
                                        tooltip="When a frame of the motion has nobody in it: stop and name the "
                                                "frame, or repeat the pose of the frame before.")),
                advanced(io.Combo.Input("coordinates", options=list(kp.COORDS), default="auto", optional=True,
                                        tooltip="How the keypoints are measured; auto recognises both kinds. "
                                                "Change it only when the skeleton comes out tiny or huge.")),
                io.Boolean.Input("draw_hands", default=True, optional=True,
                                 tooltip="Draw the hands; turn off when the hand detection is poor and the "
                                         "fingers come out scrambled."),
                io.Boolean.Input("draw_face", default=True, optional=True,
                                 tooltip="Draw the face points; turn off when the face detection is poor."),
                *_size_inputs(),
                advanced(io.Float.Input("min_score", default=kp.DEFAULT_MIN_SCORE, min=0.0, max=1.0, step=0.01,
                                        optional=True,
                                        tooltip="Keypoints the detector is less sure of than this are left out. "
                                                "Raise it when stray limbs appear, lower it when limbs go missing; "
                                                "0 draws every detected point.")),
            ],
            outputs=[
                io.Image.Output(display_name="pose_frames", tooltip="num_frames pose drawings on black."),
                io.Image.Output(display_name="reference_pose", tooltip="The reference pose drawing (1 frame)."),
            ],
        )

    @classmethod
    def execute(cls, driving_pose, reference_pose, num_frames=25, retarget=True, resample="linear",
                missing_person="error", coordinates="auto", draw_hands=True, draw_face=True, width=cv.CANVAS_W,
                height=cv.CANVAS_H, min_score=kp.DEFAULT_MIN_SCORE):
        rt.check_frame_count(num_frames)
        drv = kp.parse_pose_keypoints(driving_pose, name="driving_pose", coords=coordinates, missing=missing_person,
                                      min_score=min_score)
        ref = kp.parse_pose_keypoints(reference_pose, name="reference_pose", coords=coordinates, missing="error",
                                      min_score=min_score)
        warnings = list(drv.warnings) + list(ref.warnings)
        if len(ref.poses) > 1:
            warnings.append(f"reference_pose: has {len(ref.poses)} frames; using frame 0")
        ref_pose = ref.poses[0]
        poses = drv.poses
        if retarget:
            poses, a, b = rt.retarget(ref_pose, poses)
            fit = f"retargeted (scale x {a[0]:.3f}, y {a[1]:.3f}; offset x {b[0]:.3f}, y {b[1]:.3f})"
        else:
            fit = "not retargeted"
        poses = rt.resample_poses(poses, num_frames, resample, name="driving_pose")
        poses = [rt.fit_into_canvas(p, width, height) for p in poses]
        ref_canvas = rt.fit_into_canvas(ref_pose, width, height)
        bar = Progress(len(poses) + 1)
        opts = dict(hands=draw_hands, face=draw_face)
        frames = pdraw.draw_sequence(poses, width, height, progress=bar.step, **opts)
        ref_img = pdraw.draw_pose(ref_canvas, width, height, **opts)[None]
        bar.step()
        summary = (f"{len(drv.poses)} driving frame(s) -> {num_frames} ({resample}), {fit}; "
                   f"coordinates read as {'pixels' if drv.pixel_coords else 'normalised'}"
                   + _dropped_text((drv, ref), min_score))
        return io.NodeOutput(numpy_to_image(frames), numpy_to_image(ref_img), ui=_report(warnings, summary))


def _dropped_text(seqs, min_score: float) -> str:
    """'; left out: ...' for points dropped as below min_score or marked -1, and feet (never drawn)."""
    low = sum(q.n_low_score for q in seqs)
    marked = sum(q.n_not_found for q in seqs)
    parts = []
    if low:
        parts.append(f"{low} point(s) scored below min_score {min_score:g}")
    if marked:
        parts.append(f"{marked} point(s) marked -1 (not found)")
    if any(q.has_feet for q in seqs):
        parts.append("foot points (the official drawing has no feet)")
    return f"; left out: {', '.join(parts)}" if parts else ""


class PreparePoseImages(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotPreparePoseImages",
            display_name="CharacterShot Prepare Pose Images",
            category=STAGE,
            description="Already-drawn pose frames (skeletons on black, any size) placed on the black 720x480 "
                        "canvas like the official pose data and brought to the model's frame count.",
            inputs=[
                io.Image.Input("frames", tooltip="The pose drawings (skeletons on black), in order."),
                io.Int.Input("num_frames", default=25, min=1, max=257, step=4,
                             tooltip="Frames to make: 1, 5, 9, ... (4k+1). The model was trained on 25; the "
                                     "drawings are spread over them."),
                advanced(io.Combo.Input("resample", options=["first", "nearest"], default="nearest", optional=True,
                                        tooltip="nearest: spread over the whole sequence (repeats or skips "
                                                "frames). first: just the first num_frames drawings.")),
                io.Combo.Input("fit", options=list(cv.POSE_FITS), default="auto", optional=True,
                               tooltip="How the drawings are placed on the canvas. auto suits most; fit_content "
                                       "frames the skeletons like the character (use fill and anchor); "
                                       "resize_full stretches to the canvas; fit_square pads to a square."),
                advanced(io.Float.Input("fill", default=cv.TEMPLATE_FILL, min=0.05, max=1.0, step=0.01,
                                        optional=True,
                                        tooltip="fit_content only: how big the skeletons are in their square; "
                                                "match the character's fill.")),
                advanced(io.Combo.Input("anchor", options=list(cv.ANCHORS), default="center", optional=True,
                                        tooltip="fit_content only: centred, or placed like the training "
                                                "pictures; match the character's anchor.")),
                *_size_inputs(),
            ],
            outputs=[io.Image.Output(display_name="pose_frames", tooltip="num_frames pose frames on black.")],
        )

    @classmethod
    def execute(cls, frames, num_frames=25, resample="nearest", fit="auto", fill=cv.TEMPLATE_FILL,
                anchor="center", width=cv.CANVAS_W, height=cv.CANVAS_H):
        rt.check_frame_count(num_frames)
        arr = image_to_numpy(frames, "frames")
        idx = rt.resample_indices(arr.shape[0], num_frames, resample, name="frames")
        Progress.check_interrupt()
        res = cv.prepare_pose_frames(arr[np.unique(idx)], width=width, height=height, fit=fit, fill=fill,
                                     anchor=anchor, name="frames")
        pos = {int(s): k for k, s in enumerate(np.unique(idx))}
        out = res.images[[pos[int(i)] for i in idx]]
        summary = f"{arr.shape[0]} frame(s) -> {num_frames} ({resample}) on a {width}x{height} black canvas"
        return io.NodeOutput(numpy_to_image(out), ui=_report(res.warnings, summary))


class LoadPoseKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        files = [NO_FILE] + list_input_files((".json",))
        return io.Schema(
            node_id="CharacterShotLoadPoseKeypoints",
            display_name="CharacterShot Load Pose Keypoints",
            category=STAGE,
            description="Reads POSE_KEYPOINT JSON (a list of frames {people, canvas_width, canvas_height}, as "
                        "comfyui_controlnet_aux or core's SDPose Keypoint Extractor give it, or one such frame) "
                        "from ComfyUI's input folder. The keypoints pass unchanged; they are checked here.",
            inputs=[
                io.Combo.Input("json_file", options=files, default=NO_FILE,
                               tooltip="A pose keypoints .json file in ComfyUI's input folder (saved from DWPose or "
                                       "SDPose). Refresh the page after adding files."),
            ],
            outputs=[PoseKeypoint.Output(display_name="pose_keypoint", tooltip="The keypoints, one entry per frame.")],
        )

    @classmethod
    def execute(cls, json_file=NO_FILE):
        if not json_file or json_file == NO_FILE:
            raise InputError("json_file", "no JSON file chosen; expected a POSE_KEYPOINT .json in the input folder")
        path = resolve_input_file(json_file, "json_file")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError("json_file", f"cannot read {json_file} as JSON: {e}") from None
        # validates the layout; min_score 0 so that only points no setting could use (score <= 0, marked -1) count as
        # missing here: Pose From Keypoints applies its own min_score
        seq = kp.parse_pose_keypoints(data, name="json_file", missing="repeat_previous", min_score=0.0)
        frames = data if isinstance(data, list) else [data]
        what = (f"{len(frames)} frame(s) from {json_file} ({'pixel' if seq.pixel_coords else 'normalised'} "
                f"coordinates{', with foot points' if seq.has_feet else ''}"
                f"{f', {seq.n_not_found} point(s) marked -1' if seq.n_not_found else ''})")
        return io.NodeOutput(frames, ui=ui.PreviewText(what + "".join(f"\nWARNING: {w}" for w in seq.warnings)))


def image_folders(max_folders: int = 500) -> list[str]:
    """Sub-folders of ComfyUI's input folder that hold numbered images (``0.png``, ``frame_00001.png`` ...)."""
    import os
    import re

    import folder_paths

    root = folder_paths.get_input_directory()
    found: list[str] = []
    if not os.path.isdir(root):
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if dirpath != root and any(re.search(r"\d+\.(png|jpe?g|webp)$", f, re.I) for f in filenames):
            found.append(os.path.relpath(dirpath, root).replace(os.sep, "/") + "/")
            if len(found) >= max_folders:
                break
    return found


class LoadImageSequence(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotLoadImageSequence",
            display_name="CharacterShot Load Image Sequence",
            category=STAGE,
            description="Loads the numbered pictures of a folder in ComfyUI's input folder (0.png, 1.png, "
                        "... or frame_00001.png, ...) in order, as one batch: for pose drawings or frames made "
                        "elsewhere.",
            inputs=[
                io.Combo.Input("folder", options=image_folders() or [NO_FILE],
                               tooltip="A folder of numbered pictures (0.png, 1.png, ...) inside ComfyUI's input "
                                       "folder. Refresh the page after adding folders."),
                io.Int.Input("max_frames", default=0, min=0, max=100000, optional=True,
                             tooltip="Keep only the first N pictures (0 = all)."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The images in numeric order.")],
        )

    @classmethod
    def execute(cls, folder=NO_FILE, max_frames=0):
        from ..charactershot_core.sampling.cli import read_poses
        from .paths import resolve_input_dir

        if not folder or folder == NO_FILE:
            raise InputError("folder", "no folder chosen; put a folder of numbered images in ComfyUI's input folder")
        path = resolve_input_dir(folder.rstrip("/"), "folder")
        arr = read_poses(path, max_frames or None, name="folder")
        return io.NodeOutput(numpy_to_image(arr), ui=ui.PreviewText(f"{arr.shape[0]} image(s) from {folder}"))

    @classmethod
    def fingerprint_inputs(cls, folder=NO_FILE, max_frames=0):
        import os

        from .paths import resolve_input_dir

        try:
            path = resolve_input_dir(folder.rstrip("/"), "folder")
            return ";".join(f"{n}:{os.path.getmtime(os.path.join(path, n))}" for n in sorted(os.listdir(path)))
        except InputError:
            return float("nan")


NODES = [PrepareCharacter, PoseFromKeypoints, PreparePoseImages, LoadPoseKeypoints, LoadImageSequence]

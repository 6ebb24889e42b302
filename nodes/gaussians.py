"""4D stage nodes: multi-view videos in, 4D Gaussians fitted, rendered, saved and loaded."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..charactershot_core import cameras as cam
from ..charactershot_core.errors import InputError
from ..charactershot_core.gaussians.fitting.data import MultiViewVideo
from ..charactershot_core.gaussians.fitting.robust import DEFAULTS as ROBUST_DEFAULTS
from ..charactershot_core.gaussians.fitting.lost_parts import HELP_REPAIR
from ..charactershot_core.gaussians.fitting.robust import HELP_ROBUST, ROBUST_LOSSES
from ..charactershot_core.gaussians.fitting.threads import cpu_threads
from .common import CATEGORY, Cameras, Gaussians4D, MultiView, Progress, Splat, advanced
from .gaussians_common import PREVIEW_KEY, framed_orbit, patcher_for, times_from_text, training_rig
from .paths import folder_root, next_counter, output_target, resolve_in, split_location

CAT = f"{CATEGORY}/4D"
BACKENDS = ["auto", "torch", "gsplat"]
FRAMINGS = ["fit character", "fixed"]
MOTION_MODELS = ["table", "hexplane"]
#: the Fit 4D node's default time budget (seconds): its defaults end in a known time on every device
DEFAULT_FIT_SECONDS = 600.0


def _device_for(backend: str) -> torch.device:
    """ComfyUI's torch device, for every backend (the torch rasteriser runs on any device; gsplat needs CUDA)."""
    import comfy.model_management as mm

    dev = mm.get_torch_device()
    if backend == "gsplat" and dev.type != "cuda":
        raise InputError("backend", "gsplat needs a CUDA GPU and ComfyUI runs on the CPU here; choose auto or torch")
    return dev


def _progress_text(text: str) -> None:
    """Show ``text`` under the running node (ComfyUI's progress text); nothing when there is no server."""
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:
        return
    ctx = get_executing_context()
    server = getattr(PromptServer, "instance", None)
    if ctx is None or server is None or not hasattr(server, "send_progress_text"):
        return
    server.send_progress_text(text, ctx.node_id)


# ------------------------------------------------------------------------------------------- multi-view input
class MultiViewFromImages(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotMultiViewFromImages",
            display_name="CharacterShot Multi-View From Images",
            category=CAT,
            description="Turns an IMAGE batch of views (view-major: all frames of view 0, then view 1, ...) and "
                        "their cameras into a multi-view video for 4D fitting. Backgrounds must be white.",
            inputs=[
                io.Image.Input("images", tooltip="All frames of every view, view after view (all frames of view 0, "
                                                 "then view 1, ...), on a white background."),
                Cameras.Input("cameras", tooltip="The cameras of the views, in the same order as the images."),
                io.Int.Input("frames_per_view", default=1, min=1, max=4096, optional=True,
                             tooltip="How many frames each view has in the batch (1 for still pictures)."),
            ],
            outputs=[MultiView.Output(display_name="multiview", tooltip="Views, cameras and frame times.")],
        )

    @classmethod
    def execute(cls, images, cameras, frames_per_view=1):
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
            raise InputError("images", "expected an IMAGE batch (B, H, W, 3)")
        b = images.shape[0]
        v = len(cameras)
        if b != v * frames_per_view:
            raise InputError("images", f"expected {v} cameras x {frames_per_view} frames = {v * frames_per_view} "
                                       f"images, got {b}")
        x = images[..., :3].reshape(v, frames_per_view, *images.shape[1:3], 3)  # a view: rounded to uint8 per view
        times = cameras.times if cameras.times is not None and len(cameras.times) == frames_per_view > 1 else None
        return io.NodeOutput(MultiViewVideo(x, cameras, times))


class SyntheticCharacter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        from ..charactershot_core.gaussians import synthetic

        motions = list(synthetic.MOTIONS)
        return io.Schema(
            node_id="CharacterShotSyntheticCharacter",
            display_name="CharacterShot Synthetic Character",
            category=CAT,
            description="A procedural animated character rendered from a rig: try the 4D stage without the "
                        "diffusion models, with exact ground truth.",
            inputs=[
                io.Combo.Input("motion", options=motions, default=synthetic.DEFAULT_MOTION,
                               tooltip="The character's motion: wave (the right arm rises, waves and comes down), "
                                       "walk (one walk cycle in place: legs cross, arms swing), turn (the whole "
                                       "body turns 135 degrees on the spot), jump, idle."),
                io.Int.Input("num_frames", default=25, min=1, max=200,
                             tooltip="Frames of motion per view (1: a still character). More frames: a longer clip "
                                     "and a longer fit."),
                advanced(io.Float.Input("scale", default=0.25, min=0.05, max=1.0, step=0.05,
                                        tooltip="Picture size as a share of 720x480: 0.25 (180x120) fits quickly, "
                                                "also on a CPU; raise it for more detail and a longer fit.")),
                io.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1,
                             tooltip="Changes the character's colours and pattern."),
                advanced(io.Int.Input("num_gaussians", default=4000, min=100, max=200000, optional=True,
                                      tooltip="How detailed the test character is; more takes longer to film.")),
                Cameras.Input("cameras", optional=True,
                              tooltip="The cameras that film it (default: the official 21 views)."),
                advanced(io.Combo.Input("backend", options=BACKENDS, default="auto", optional=True,
                                        tooltip="What draws the Gaussians. auto: gsplat on an NVIDIA GPU (fast), "
                                                "plain PyTorch anywhere else or if gsplat fails. Choose torch when "
                                                "gsplat does not install or crashes.")),
            ],
            outputs=[MultiView.Output(display_name="multiview", tooltip="Rendered views, cameras and times."),
                     io.Image.Output(display_name="images", tooltip="The rendered frames, view-major.")],
        )

    @classmethod
    def execute(cls, motion, num_frames, scale, seed, num_gaussians=4000, cameras=None, backend="auto"):
        from ..charactershot_core.gaussians.fitting.data import default_times
        from ..charactershot_core.gaussians.synthetic import SyntheticCharacter as Synth

        rig = cameras if cameras is not None else cam.official_rig()
        times = default_times(num_frames)
        character = Synth(motion=motion, seed=seed, n_gaussians=num_gaussians)
        dev = _device_for(backend)
        with cpu_threads() if dev.type == "cpu" else contextlib.nullcontext():
            frames = character.render_views(rig, times, scale=scale, backend=backend, device=dev)
        frames = torch.as_tensor(frames).float().cpu()
        mv = MultiViewVideo(frames, rig.scaled(scale) if scale != 1.0 else rig, times)
        flat = mv.frames.reshape(-1, mv.height, mv.width, 3)
        return io.NodeOutput(mv, flat)


# ------------------------------------------------------------------------------------------------- fitting
class Fit4DGaussians(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotFit4DGaussians",
            display_name="CharacterShot Fit 4D Gaussians",
            category=CAT,
            description="Builds the 4D character from the multi-view videos: 3D Gaussians and their motion "
                        "over time (with one frame per view: a still 3D character). Frees the video models from GPU "
                        "memory first, shows a preview now and then, and stops within a step when you press Cancel.",
            inputs=[
                MultiView.Input("multiview", tooltip="The videos of your character from every camera (Multi-View "
                                                     "Sampler, Load Multi-View or Synthetic Character)."),
                io.Int.Input("iterations", default=6000, min=1, max=200000,
                             tooltip="Training steps at most: more gives a sharper, steadier character and takes "
                                     "longer. The time budget (seconds) may end the fit earlier."),
                io.Float.Input("seconds", default=DEFAULT_FIT_SECONDS, min=0.0, max=86400.0, step=10.0,
                               tooltip=f"Time budget for the whole fit, preparation included: the default "
                                       f"{DEFAULT_FIT_SECONDS:.0f} s ends it in about {DEFAULT_FIT_SECONDS / 60:.0f} "
                                       "minutes on any computer (then a short report). Give more time for a "
                                       "sharper result; 0 = no limit (the steps alone decide)."),
                io.Float.Input("scale", default=1.0, min=0.05, max=1.0, step=0.05, optional=True,
                               tooltip="Fit on smaller pictures to go faster: 0.5 has 4x fewer pixels per step; 1 "
                                       "keeps every detail."),
                advanced(io.Int.Input("sh_degree", default=0, min=0, max=3, optional=True,
                                      tooltip="Colour that changes with the viewing angle (shine). 0: plain "
                                              "colours, fastest and enough for most characters; 1-3 for glossy "
                                              "materials, slower and bigger files.")),
                advanced(io.Int.Input("batch_views", default=2, min=1, max=64, optional=True,
                                      tooltip="Cameras used per training step: more makes each step steadier but "
                                              "slower.")),
                advanced(io.Int.Input("initial_gaussians", default=20000, min=100, max=1000000, optional=True,
                                      tooltip="How many Gaussians the fit starts with: more for very detailed "
                                              "characters, fewer to go faster. With densify on, the fit adds and "
                                              "removes Gaussians as it goes.")),
                advanced(io.Float.Input("neighbour_weight", default=1.0, min=0.0, max=1000.0, step=0.1,
                                        optional=True,
                                        tooltip="Keeps neighbouring Gaussians moving together: raise it when parts "
                                                "tear apart or flicker during the motion, lower it (0 = off) when "
                                                "fast motion looks smeared.")),
                advanced(io.Float.Input("rigidity_weight", default=-1.0, min=-1.0, max=1000.0, step=0.01,
                                        optional=True,
                                        tooltip="Keeps the body locally rigid while it moves: raise it when limbs "
                                                "bend like rubber. 0 = off; -1 = automatic (on for the table "
                                                "motion model, off for hexplane).")),
                advanced(io.Boolean.Input("densify", default=True, optional=True,
                                          tooltip="Let the fit add Gaussians where detail is missing and remove "
                                                  "useless ones. Keep it on; off keeps the count fixed.")),
                advanced(io.Combo.Input("backend", options=BACKENDS, default="auto", optional=True,
                                        tooltip="What draws the Gaussians. auto: gsplat on an NVIDIA GPU (fast), "
                                                "plain PyTorch anywhere else or if gsplat fails. Choose torch when "
                                                "gsplat does not install or crashes.")),
                advanced(io.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1, optional=True,
                                      tooltip="Change it for a slightly different fit of the same videos; keep it "
                                              "to repeat a result.")),
                advanced(io.Int.Input("preview_every", default=100, min=0, max=100000, optional=True,
                                      tooltip="Show a preview picture in the node every this many steps (0 = "
                                              "never); fewer previews save a little time.")),
                advanced(io.Combo.Input("motion_model", options=MOTION_MODELS, default=MOTION_MODELS[0],
                                        optional=True,
                                        tooltip="table: every Gaussian follows its own path through the frames; "
                                                "learns fast, also on a CPU (recommended). hexplane: the paper's "
                                                "motion field; needs many thousands of steps.")),
                Splat.Input("initial_splat", optional=True,
                            tooltip="Optional: a splat to start from instead of carving the character out of the "
                                    "views (core SPLAT, y down, in the cameras' world); its first splat is used, at "
                                    "most initial_gaussians of it. Leave empty for the usual start."),
                # views like a video model's (docs/4d.md): each says what it trades
                advanced(io.Boolean.Input("background_estimate", default=ROBUST_DEFAULTS["background_estimate"], optional=True,
                                 tooltip=HELP_ROBUST["background_estimate"])),
                advanced(io.Boolean.Input("appearance_correction", default=ROBUST_DEFAULTS["appearance"], optional=True,
                                 tooltip=HELP_ROBUST["appearance"])),
                advanced(io.Boolean.Input("camera_refinement", default=ROBUST_DEFAULTS["pose_refine"], optional=True,
                                 tooltip=HELP_ROBUST["pose_refine"])),
                advanced(io.Combo.Input("robust_loss", options=list(ROBUST_LOSSES), default=ROBUST_DEFAULTS["robust_loss"],
                               optional=True, tooltip=HELP_ROBUST["robust_loss"])),
                advanced(io.Boolean.Input("repair_lost_parts", default=True, optional=True, tooltip=HELP_REPAIR)),
                advanced(io.Combo.Input("colour_field", options=["auto", "on", "off"], default="auto", optional=True,
                                        tooltip=HELP_ROBUST["colour_field"])),
            ],
            outputs=[Gaussians4D.Output(display_name="gaussians", tooltip="Canonical Gaussians + motion."),
                     io.String.Output(display_name="summary",
                                      tooltip="What the fit can report without held-out ground truth: character-box "
                                              "PSNR / SSIM per frame (mean and worst frame) and the motion ratio on "
                                              "up to 4 training views at up to 9 frames (docs/4d.md, Metrics).")],
        )

    @classmethod
    def execute(cls, multiview, iterations, seconds, scale=1.0, sh_degree=0, batch_views=2, initial_gaussians=20000,
                neighbour_weight=1.0, rigidity_weight=-1.0, densify=True, backend="auto", seed=0, preview_every=100,
                motion_model="table", initial_splat=None, background_estimate=ROBUST_DEFAULTS["background_estimate"],
                appearance_correction=ROBUST_DEFAULTS["appearance"], camera_refinement=ROBUST_DEFAULTS["pose_refine"],
                robust_loss=ROBUST_DEFAULTS["robust_loss"], repair_lost_parts=True, colour_field="auto"):
        import comfy.model_management as mm

        from ..charactershot_core.gaussians.fitting.fit import FitConfig, fit, progress_text

        if not isinstance(multiview, MultiViewVideo):
            raise InputError("multiview", f"expected a CHARSHOT_MULTIVIEW, got {type(multiview).__name__}")
        # free the diffusion models before the optimiser takes the GPU
        mm.unload_all_models()
        mm.soft_empty_cache()
        video = multiview.scaled(scale) if scale != 1.0 else multiview
        dev = _device_for(backend)
        cfg = FitConfig(iterations=iterations, seconds=seconds if seconds > 0 else None, sh_degree=sh_degree,
                        batch_views=batch_views, init_points=initial_gaussians, neighbour_weight=neighbour_weight,
                        rigidity_weight=None if rigidity_weight < 0 else rigidity_weight, densify=densify, backend=backend, device=str(dev), seed=seed,
                        motion=motion_model, background_estimate=bool(background_estimate),
                        appearance=bool(appearance_correction), pose_refine=bool(camera_refinement),
                        robust_loss=robust_loss, repair_lost_parts=bool(repair_lost_parts),
                        colour_field=str(colour_field))
        bar = Progress(iterations)
        last_text = [0.0]

        def callback(state):
            now = time.perf_counter()
            if now - last_text[0] >= 1.0 or state.iteration == 1:
                last_text[0] = now
                _progress_text(progress_text(state, cfg.seconds))
            preview = None
            if preview_every and state.iteration % preview_every == 0:
                from PIL import Image

                img = (state.preview().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
                preview = Image.fromarray(img)
            # time budgets end before the iteration count: show progress as the schedule's fraction
            target = max(state.iteration, int(round(state.progress * iterations)))
            bar.step(max(0, target - bar.value), preview=preview)

        from ..charactershot_core.gaussians.evaluation.report import report_text, training_report

        with cpu_threads() if dev.type == "cpu" else contextlib.nullcontext():
            result = fit(video, cfg, callback, initial=_initial_from_splat(initial_splat))
            if bar.value < bar.total:  # the fit is done: a budget that ended it between two steps fills the bar
                bar.step(bar.total - bar.value)
            rep = training_report(result.model, video, backend)  # the choice, like every other render
        model = result.model.cpu()
        model.config["fit"] = {"iterations": result.iterations, "seconds": round(result.seconds, 2),
                               "backend": result.backend, "device": result.device, "width": video.width,
                               "height": video.height}
        model.config["rig"] = video.rig.to_dict()  # the training cameras, for the preview's "snap to camera"
        text = report_text(rep, f"fit: {result.iterations} iterations in {result.seconds:.0f} s, "
                                f"{model.num_gaussians} Gaussians, {result.backend}, {video.num_views} views x "
                                f"{video.num_frames} frames at {video.width}x{video.height}")
        return io.NodeOutput(model, text, ui=ui.PreviewText(text))


# ------------------------------------------------------------------------------------------------ rendering
class Render4D(io.ComfyNode):
    MODES = ["orbit", "turntable", "rig_cameras"]

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotRender4D",
            display_name="CharacterShot Render 4D",
            category=CAT,
            description="Renders 4D Gaussians on white: an orbit of cameras at every time, a turntable (the camera "
                        "turns while time runs), or the cameras of a rig.",
            inputs=[
                Gaussians4D.Input("gaussians", tooltip="The fitted or loaded 4D character."),
                io.Combo.Input("mode", options=cls.MODES, default="orbit",
                               tooltip="orbit: cameras all around, at every frame. turntable: one picture per frame "
                                       "while the camera circles once (a spinning clip). rig_cameras: the cameras "
                                       "of a connected rig, at every frame."),
                io.Int.Input("num_views", default=8, min=1, max=360, optional=True,
                             tooltip="orbit only: how many cameras around the character; more for a closer look "
                                     "all round."),
                advanced(io.String.Input("times", default="", optional=True,
                                         tooltip="Exact moments to render, comma-separated from 0 (start) to 1 "
                                                 "(end), e.g. '0, 0.5, 1'. Empty: num_frames decides.")),
                io.Int.Input("num_frames", default=0, min=0, max=1000, optional=True,
                             tooltip="How many moments of the motion to render, evenly spaced; raise it for a "
                                     "smoother clip. 0 = the frames the fit learnt."),
                io.Float.Input("elevation", default=0.0, min=-89.0, max=89.0, step=1.0, optional=True,
                               tooltip="Camera height in degrees: 0 = eye level, positive = from above (orbit and "
                                       "turntable)."),
                advanced(io.Float.Input("radius", default=cam.OFFICIAL_RADIUS, min=0.1, max=100.0, step=0.05,
                                        optional=True,
                                        tooltip="Camera distance, used only with framing 'fixed' (orbit and "
                                                "turntable).")),
                io.Int.Input("width", default=720, min=8, max=8192, step=8, optional=True,
                             tooltip="Picture width in pixels (orbit and turntable): larger is sharper and "
                                     "slower."),
                io.Int.Input("height", default=480, min=8, max=8192, step=8, optional=True,
                             tooltip="Picture height in pixels (orbit and turntable): larger is sharper and "
                                     "slower."),
                Cameras.Input("cameras", optional=True, tooltip="rig_cameras mode: the rig to render from."),
                advanced(io.Combo.Input("backend", options=BACKENDS, default="auto", optional=True,
                                        tooltip="What draws the Gaussians. auto: gsplat on an NVIDIA GPU (fast), "
                                                "plain PyTorch anywhere else or if gsplat fails. Choose torch when "
                                                "gsplat does not install or crashes.")),
                advanced(io.Combo.Input("framing", options=FRAMINGS, default=FRAMINGS[0], optional=True,
                                        tooltip="fit character: the camera keeps the whole character in view over "
                                                "the clip (use this). fixed: the camera aims at the official rig's "
                                                "height from 'radius', to match the training cameras.")),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="Renders, view-major (all times of view 0, ...).")],
        )

    @classmethod
    def execute(cls, gaussians, mode, num_views=8, times="", num_frames=0, elevation=0.0, radius=cam.OFFICIAL_RADIUS,
                width=720, height=480, cameras=None, backend="auto", framing=FRAMINGS[0]):
        import comfy.model_management as mm

        from ..charactershot_core.gaussians.raster.views import render_views

        model = gaussians
        if (times or "").strip() == "" and num_frames > 0 and model.is_dynamic:
            ts = [i / max(1, num_frames - 1) for i in range(num_frames)]
        else:
            ts = times_from_text(times, model)
        dev = _device_for(backend)
        patcher = patcher_for(model, dev)  # one per cached fit, reused by every run
        mm.load_models_gpu([patcher], force_full_load=True)
        m = patcher.model
        device = m.splats["means"].device
        be = backend  # the user's choice goes to every render ("auto" falls back to torch if gsplat fails)
        if mode == "rig_cameras":
            if cameras is None:
                raise InputError("cameras", "mode rig_cameras needs a camera rig connected")
            rig = cameras
        elif mode in ("orbit", "turntable"):
            nv = num_views if mode == "orbit" else max(1, len(ts) if ts else 1)
            if framing not in FRAMINGS:
                raise InputError("framing", f"expected one of {FRAMINGS}, got {framing!r}")
            if framing == "fit character":
                rig = framed_orbit(m, nv, elevation, width, height, ts)
            else:
                rig = cam.orbit_rig(num_views=nv, radius=radius, elevation_deg=elevation, width=width, height=height,
                                    square_size=min(width, height) if (width, height) != (720, 480) else 480)
        else:
            raise InputError("mode", f"expected one of {cls.MODES}, got {mode!r}")
        with torch.inference_mode(), cpu_threads() if device.type == "cpu" else contextlib.nullcontext():
            if mode == "turntable":
                n = len(rig)
                bar = Progress(n)
                out = []
                for k in range(n):
                    t = None if ts is None else [ts[k]]
                    out.append(render_views(m, rig.select([k]), t, be, device)[0, 0])
                    bar.step()
                imgs = torch.stack(out)
            else:
                bar = Progress(len(rig))
                out = []
                for k in range(len(rig)):
                    out.append(render_views(m, rig.select([k]), ts, be, device)[0])
                    bar.step()
                imgs = torch.cat(out)  # (V*T, H, W, 3)
        return io.NodeOutput(imgs.float().clamp(0, 1))


# -------------------------------------------------------------------------------------------- save / load
class Save4DGaussians(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotSave4DGaussians",
            display_name="CharacterShot Save 4D Gaussians",
            category=CAT,
            is_output_node=True,
            description="Writes a standard 3DGS .ply per frame (SuperSplat imports them as an animation), the compact "
                        "4D bundle for the web viewer and the reloadable weights (.safetensors) into ComfyUI's output "
                        "folder; optionally a Niantic .spz per frame, one .splatv (splaTV, gsplat.js) and a one-file "
                        ".html viewer that plays from disk.",
            inputs=[
                Gaussians4D.Input("gaussians", tooltip="The 4D character to save."),
                io.String.Input("filename_prefix", default="charactershot/4d",
                                tooltip="Name (and sub-folder) in ComfyUI's output folder; a number is added so "
                                        "nothing is overwritten."),
                advanced(io.String.Input("times", default="", optional=True,
                                         tooltip="Which moments to save, comma-separated from 0 (start) to 1 (end); "
                                                 "empty = the frames the fit learnt.")),
                io.Boolean.Input("save_ply", default=True, optional=True,
                                 tooltip="One .ply per frame: opens in SuperSplat (as an animation) and most splat "
                                         "viewers and 3D tools."),
                advanced(io.Boolean.Input("save_bundle", default=True, optional=True,
                                          tooltip="The compact 4D file (.cs4d) that CharacterShot's viewers play. "
                                                  "Keep it on.")),
                advanced(io.Boolean.Input("save_weights", default=True, optional=True,
                                          tooltip="The fitted character (.safetensors), to load again later with "
                                                  "CharacterShot Load 4D Gaussians and render or save it. Keep it "
                                                  "on.")),
                io.Boolean.Input("save_spz", default=False, optional=True,
                                 tooltip="One compact .spz per frame, about 10x smaller than .ply; opens in "
                                         "SuperSplat, PlayCanvas and Spark."),
                io.Boolean.Input("save_splatv", default=False, optional=True,
                                 tooltip="One .splatv file with the whole motion, for splaTV / gsplat.js web "
                                         "players; the summary says how closely it follows the fit."),
                advanced(io.Int.Input("splatv_windows", default=0, min=0, max=64, optional=True,
                                      tooltip="Only with save_splatv: in how many pieces the motion is stored. "
                                              "More follows the motion closer but makes a bigger file; 0 = "
                                              "automatic, 1 = one smooth curve for the whole clip.")),
                io.Boolean.Input("save_html", default=False, optional=True,
                                 tooltip="One .html file that plays the 4D character in any browser: double-click "
                                         "it, no server, no internet. Good for sharing."),
            ],
            outputs=[io.String.Output(display_name="summary",
                                      tooltip="What was written: files, sizes, time, and the .splatv motion-fit error.")],
        )

    @classmethod
    def execute(cls, gaussians, filename_prefix, times="", save_ply=True, save_bundle=True, save_weights=True,
                save_spz=False, save_splatv=False, save_html=False, splatv_windows=0):
        from ..charactershot_core.gaussians import formats as fmt

        chosen = [f for f, on in (("ply", save_ply), ("spz", save_spz), ("splatv", save_splatv), ("html", save_html),
                                  ("bundle", save_bundle)) if on]
        if not (chosen or save_weights):
            raise InputError("save_ply", "nothing to save: enable at least one of save_ply, save_bundle, save_spz, "
                                         "save_splatv, save_html, save_weights")
        model = gaussians
        if model is None or getattr(model, "num_gaussians", 0) == 0:
            raise InputError("gaussians", "the model has no Gaussians; there is nothing to save")
        ts = times_from_text(times, model)
        folder, subfolder, base = output_target(filename_prefix, "filename_prefix")
        os.makedirs(folder, exist_ok=True)
        stem = f"{base}_{next_counter(folder, base):05d}"
        # everything is written into a private temporary folder first, then moved in: no half-written set
        tmp = tempfile.mkdtemp(prefix=".charshot-partial-", dir=folder)
        summary_lines = []
        try:
            written = []
            if chosen:
                rig_dict, source = training_rig(model)
                rig = cam.CameraRig.from_dict(rig_dict, "cameras") if rig_dict else None
                written, summary = fmt.export_formats(model, tmp, ts, chosen, prefix=f"{stem}_", rig=rig,
                                                      rig_source=source, splatv_windows=int(splatv_windows))
                summary_lines.append(fmt.summary_text(summary))
            if save_weights:
                path = os.path.join(tmp, f"{stem}.safetensors")
                model.save(path)
                written.append(path)
            names = []
            for path in written:
                name = os.path.basename(path)
                os.replace(path, os.path.join(folder, name))
                names.append(name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        files = [{"filename": n, "subfolder": subfolder, "type": "output"} for n in names]
        summary_lines.append("saved: " + ", ".join(names))
        text = "\n".join(summary_lines)
        ui = {"charshot_4d": files, "text": [text]}
        # the node's inline preview shows what was saved: the bundle, else the first frame's .ply
        shown = [f for f in files if f["filename"].endswith(".cs4d")] or [f for f in files if f["filename"].endswith(".ply")][:1]
        if shown:
            ui[PREVIEW_KEY] = shown[:1]
        return io.NodeOutput(text, ui=ui)


class Load4DGaussians(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotLoad4DGaussians",
            display_name="CharacterShot Load 4D Gaussians",
            category=CAT,
            description="Loads weights written by CharacterShot Save 4D Gaussians (or the fit4d command) and shows "
                        "their 4D bundle in the node. The list holds the .safetensors weights and .cs4d bundles "
                        "in the charactershot/ folder of ComfyUI's output folder (marked ' [output]', where Save 4D "
                        "Gaussians writes by default) and input folder, and at the top of the input folder; "
                        "choosing a bundle loads the weights saved next to it.",
            inputs=[
                io.Combo.Input("file", options=list_4d_files(),
                               tooltip="Weights (.safetensors) or a 4D bundle (.cs4d) from output/charactershot/ "
                                       "(suffix ' [output]', e.g. 'charactershot/4d_00001.safetensors [output]'), "
                                       "input/charactershot/ or the top of the input folder. Refresh (R) after "
                                       "saving new ones."),
            ],
            outputs=[Gaussians4D.Output(display_name="gaussians", tooltip="Canonical Gaussians + deformation.")],
        )

    @classmethod
    def validate_inputs(cls, file):
        # any text is accepted here (API users type names, new files appear after the list was made); the file
        # itself is checked when the node runs, with an error that names the input
        return True if isinstance(file, str) else "file: expected a file name"

    @classmethod
    def execute(cls, file):
        from ..charactershot_core.gaussians.model import Gaussians4D as Model

        weights, bundle, kind = resolve_4d_file(file)
        if not _is_4d_weights(weights):  # checked here, not while listing: one header read, for the file chosen
            raise InputError("file", f"{os.path.basename(weights)} is not a CharacterShot 4D Gaussians file (its "
                                     "header lacks the format 'charactershot-4dgs'): choose weights written by "
                                     "CharacterShot Save 4D Gaussians or the fit4d command")
        model = Model.load(weights)
        ui = None
        if bundle:
            root = folder_root(kind)
            rel = os.path.relpath(bundle, root).replace(os.sep, "/")
            sub, name = os.path.split(rel)
            ui = {PREVIEW_KEY: [{"filename": name, "subfolder": sub, "type": kind}]}
        return io.NodeOutput(model, ui=ui)

    @classmethod
    def fingerprint_inputs(cls, file):
        try:
            path = resolve_4d_file(file)[0]
            return f"{path}:{os.path.getmtime(path)}"
        except Exception:
            return float("nan")


PACK_FOLDER = "charactershot"  # the pack's own subfolder of input/ and output/ (Save 4D Gaussians' default prefix)
LIST_DEPTH = 3                  # folder levels below it that the list looks into
_4D_NAME = re.compile(r"^[^.].*\.(safetensors|cs4d)$", re.I)


def _scan_names(root: str, sub: str, depth: int, out: list[str], max_files: int) -> None:
    """Names matching the 4D file pattern in ``root/sub`` and ``depth`` levels of folders below it (relative, '/'):
    directory entries only, no file is opened; folders of frames (``viewXX``) and hidden folders are skipped."""
    try:
        with os.scandir(os.path.join(root, sub) if sub else root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    folders = []
    for e in entries:
        if len(out) >= max_files:
            return
        if e.name.startswith("."):
            continue
        try:
            if e.is_dir():
                if depth > 0 and not re.fullmatch(r"view\d+", e.name):
                    folders.append(e.name)
            elif _4D_NAME.match(e.name):
                out.append(f"{sub}/{e.name}" if sub else e.name)
        except OSError:
            continue
    for name in folders:
        _scan_names(root, f"{sub}/{name}" if sub else name, depth - 1, out, max_files)


def list_4d_files(max_files: int = 2000) -> list[str]:
    """The Load 4D Gaussians list, made each time ComfyUI builds its node list, so it stays cheap: by name only
    (``*.safetensors``, ``*.cs4d``; no header is read: the file is checked when the node runs) in the pack's own
    subfolder ``charactershot/`` of the output folder (suffix ' [output]', where Save 4D Gaussians writes by
    default) and of the input folder, and at the top of the input folder.  Nothing else of output/ is walked; a
    file elsewhere can still be typed (API) as 'sub/name.safetensors [output]'."""
    found: list[str] = []
    for kind in ("input", "output"):
        try:
            root = folder_root(kind)
        except Exception:  # noqa: BLE001 - no host folders: nothing to list
            continue
        names: list[str] = []
        if kind == "input":
            _scan_names(root, "", 0, names, max_files)
        _scan_names(root, PACK_FOLDER, LIST_DEPTH, names, max_files)
        found += names if kind == "input" else [f"{n} [output]" for n in names]
    return found


def _is_4d_weights(path: str) -> bool:
    """True for weights written by this pack (checked from the safetensors header only; at run time)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - not safetensors, unreadable: not ours (safetensors has its own error type)
        return False
    return meta.get("format") == "charactershot-4dgs"


def resolve_4d_file(file: str) -> tuple[str, str | None, str]:
    """(weights path, bundle path or None, folder kind) for a list value or a typed name."""
    from ..charactershot_core.naming import confined

    text = (file or "").strip()
    if text.lower().endswith(".cs4d") or re.match(r"^.*\.cs4d\s*\[(input|output|temp)\]$", text, re.I):
        name, kind = split_location(text)
        bundle = resolve_in(name, kind, "file", "file", "a .cs4d file name")
        stem = re.sub(r"_bundle\.cs4d$", "", name, flags=re.I)
        stem = re.sub(r"\.cs4d$", "", stem, flags=re.I)
        weights_name = f"{stem}.safetensors"
        weights = confined(folder_root(kind), weights_name, "file", kind, "a .cs4d file name")
        if not os.path.isfile(weights):
            raise InputError("file", f"{name} is a 4D bundle for viewing; the weights saved with it ({weights_name}) "
                                     f"are not in ComfyUI's {kind} folder, so there are no Gaussians to pass on. "
                                     "Choose a .safetensors file (Save 4D Gaussians with save_weights on).")
        return weights, bundle, kind
    weights = resolve_weights(file)
    kind = split_location(text)[1]
    sibling = re.sub(r"\.safetensors$", "_bundle.cs4d", weights, flags=re.I)
    return weights, (sibling if os.path.isfile(sibling) else None), kind


def resolve_weights(file: str) -> str:
    text, kind = split_location(file)
    if text and not text.lower().endswith(".safetensors"):
        raise InputError("file", f"expected a .safetensors file, got {text!r}")
    return resolve_in(text, kind, "file", "file", "a .safetensors file name")


NODES = [MultiViewFromImages, SyntheticCharacter, Fit4DGaussians, Render4D, Save4DGaussians, Load4DGaussians]


def _initial_from_splat(splat):
    """The first splat of the Fit node's SPLAT input as static Gaussians to start from (None stays None)."""
    if splat is None:
        return None
    from ..charactershot_core.gaussians.formats import splat_type as st

    return st.splat_to_gaussians(splat, 0, st.Y_DOWN, name="initial_splat")

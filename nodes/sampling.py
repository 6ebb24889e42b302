"""Sampling nodes: multi-view videos (Multi-View Sampler), 2D animation (Animate 2D), saving and loading views.

Thin over ``charactershot_core.sampling``: the models go through ComfyUI's VRAM manager (the VAE is loaded to encode
and decode, the transformer to denoise), every step updates a progress bar (groups x steps) with a latent preview
and checks for Cancel, and every finished view group is written at once to the pack's group store in ComfyUI's user
directory (``group_store_root``; it survives restarts, unlike the temp folder): a rerun with the same inputs, model
and seed reuses finished groups, and an interrupt, error or restart keeps them.  CharacterShot Clear Cached Groups
reports its size and empties it.
"""

from __future__ import annotations

import logging
import os
import re

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..charactershot_core import cameras as cam
from ..charactershot_core.distributed import serverconfig
from ..charactershot_core.distributed.serverconfig import EXECUTION, HERE
from ..charactershot_core.errors import CharacterShotError, InputError
from ..charactershot_core.gaussians.fitting.data import MultiViewVideo, default_times
from ..charactershot_core.sampling import (Animate2DJob, GroupStore, LocalExecutor, MultiViewJob, MultiViewWorker,
                                           animate_2d, assemble, sample_multiview)
from ..charactershot_core.sampling.schedulers import DYNAMIC_CFG, SCHEDULERS
from .common import CATEGORY, VAE, Cameras, Model2D, Model4D, MultiView, Progress, TextEmbeds, advanced
from .paths import output_target, resolve_in, split_location

log = logging.getLogger("CharacterShot")

CAT = f"{CATEGORY}/sampling"
DYNAMIC_OPTIONS = ["auto", *DYNAMIC_CFG]
STORE_FOLDER_KEY = "charactershot_cache"  # optional extra_model_paths.yaml entry that moves the store
NO_FOLDER = "(none)"


def group_store_root() -> str:
    """Where finished view groups are kept: ``<user directory>/__charactershot/cache/groups``, which ComfyUI keeps
    across restarts (the temp folder is emptied at every start) and does not serve over HTTP; or
    ``<path>/groups`` when the server's owner named a ``charactershot_cache`` folder in extra_model_paths.yaml."""
    import folder_paths

    from ..charactershot_core.sampling.store import comfy_store_root

    if STORE_FOLDER_KEY in folder_paths.folder_names_and_paths:
        paths = folder_paths.get_folder_paths(STORE_FOLDER_KEY)
        if paths:
            return os.path.join(os.path.abspath(paths[0]), "groups")
    return comfy_store_root(folder_paths.get_user_directory())


def group_store() -> GroupStore:
    return GroupStore(group_store_root())


def _store_where() -> str:
    try:
        return group_store_root()
    except Exception:  # noqa: BLE001 - no host folders (schema built outside a server): the documented default
        return "ComfyUI's user directory, __charactershot/cache/groups"


def _dynamic(choice: str, scheduler: str) -> str:
    """auto: dynamic CFG from the timestep value with DPM (official CLI), off with DDIM (the official advice)."""
    if choice == "auto":
        return "timestep" if scheduler == "dpm" else "off"
    return choice


def _images_uint8(image, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(name, f"expected an IMAGE batch (B, H, W, 3), got {shape}")
    if image.shape[0] == 0:
        raise InputError(name, "the image batch is empty")
    return (image[..., :3].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def _groups_text(text: str) -> list[int] | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return [int(x) for x in re.split(r"[,\s]+", text) if x]
    except ValueError:
        raise InputError("groups", f"expected comma-separated group indices such as 0, 2 (empty = all), got "
                                   f"{text!r}") from None


def job_shape(views: int, latent_frames: int, h: int, w: int, cfg: float, low_memory: bool):
    """The size of one transformer call (latent frames include the reference frame; h, w in pixels)."""
    from ..charactershot_core.sampling.memory import JobShape

    return JobShape(views, latent_frames, h // 8, w // 8, cfg > 1.0, bool(low_memory))


def _device_hooks(model, vae, shape, height: int, width: int):
    """use_vae / use_transformer for the workers: ComfyUI's load_models_gpu with memory_required from the job's real
    shapes (charactershot_core.sampling.memory, docs/sampling.md; an estimate that advises), partial loading below
    that (cast-enabled layers, nodes/vram.py), and a clear error only when even a fully offloaded run cannot fit."""
    from ..charactershot_core.sampling import memory as M
    from .vram import load_with_budget, offload_streams

    def use_vae():
        need = M.vae_decode_bytes(vae.config, height, width, vae.dtype, vae.tiling)
        floor = M.Floor(need, M.largest_layer_bytes(vae.vae, vae.dtype), offload_streams())
        load_with_budget(vae.patcher, need, floor, lambda free, f: M.vae_too_big_message(free, f, vae.tiling),
                         "VAE")
        return vae.patcher.load_device

    def use_transformer():
        need = M.transformer_activation_bytes(model.config, shape, model.dtype)
        floor = M.Floor(M.transformer_counted_bytes(model.config, shape, model.dtype),
                        M.largest_layer_bytes(model.transformer, model.dtype), offload_streams())
        storage = getattr(model, "weight_storage", "default")
        load_with_budget(model.patcher, need, floor, lambda free, f: M.too_big_message(free, f, shape, storage),
                         "transformer")
        return model.patcher.load_device

    return use_vae, use_transformer


def log_plan(model, vae, shape, height: int, width: int) -> str:
    """The VRAM plan of this job on ComfyUI's device, logged before sampling (and returned)."""
    from .vram import vram_plan

    text = vram_plan(model, vae, shape, height, width).text()
    for line in text.splitlines():
        log.info("[CharacterShot] %s", line)
    return text


def _preview_image(strip: np.ndarray):
    from PIL import Image

    return Image.fromarray(strip)


class MultiViewSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotMultiViewSampler",
            display_name="CharacterShot Multi-View Sampler",
            category=CAT,
            description="Makes videos of your character from every camera of the rig, moving like the pose "
                        "frames. The views are made in groups of five, so the same seed gives the same videos; "
                        f"finished groups are kept across restarts (in {_store_where()}) and reused when you run "
                        "again; CharacterShot Clear Cached Groups shows their size and removes them.",
            inputs=[
                Model4D.Input("model", tooltip="The CharacterShot model, from CharacterShot Model Loader."),
                VAE.Input("vae", tooltip="The video VAE, from CharacterShot VAE Loader."),
                TextEmbeds.Input("text", tooltip="The prompt, from CharacterShot Text Encode."),
                io.Image.Input("views", tooltip="Your character seen from every camera of the rig, front view first, "
                                                "on the white 720x480 canvas (CharacterShot Prepare Character or "
                                                "Views From Orbit make them)."),
                io.Image.Input("pose_frames", tooltip="The motion to perform: one pose drawing per frame "
                                                      "(CharacterShot Pose From Keypoints or Prepare Pose Images)."),
                io.Image.Input("reference_pose", tooltip="The pose your character stands in on the front view, "
                                                         "drawn like the pose frames."),
                io.Int.Input("seed", default=42, min=0, max=2 ** 63 - 1,
                             tooltip="Change it for another take of the same motion; keep it to get the same "
                                     "videos again (finished view groups are then reused)."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Denoising steps. 50 gives the quality the model was made for; fewer (30) "
                                     "is faster, with less detail."),
                advanced(io.Float.Input("cfg", default=6.0, min=0.0, max=30.0, step=0.1,
                                        tooltip="How strongly the prompt and the poses steer the videos. 6 suits "
                                                "most characters; lower it when colours look burnt or overdone. 1 "
                                                "or less turns guidance off: twice as fast, weaker results.")),
                advanced(io.Combo.Input("scheduler", options=list(SCHEDULERS), default="dpm",
                                        tooltip="The noise schedule. dpm is the one the model was released with "
                                                "(keep it); ddim is an alternative to compare.")),
                Cameras.Input("cameras", optional=True,
                              tooltip="Only for your own camera rig; leave it unconnected for the 21 views the model "
                                      "was trained on (other rigs give weaker results)."),
                advanced(io.Int.Input("num_frames", default=25, min=1, max=257, step=4, optional=True,
                                      tooltip="Length of the videos in frames (1, 5, 9, ... 4k+1). It must match "
                                              "the number of pose frames. 25 is what the model was trained on; "
                                              "longer clips need more memory and time.")),
                advanced(io.Combo.Input("dynamic_cfg", options=DYNAMIC_OPTIONS, default="auto", optional=True,
                                        tooltip="How guidance changes during sampling. auto: as the model was "
                                                "released (keep it unless you compare). step_index: a ramp that "
                                                "follows the step count. off: the same strength at every step.")),
                advanced(io.Int.Input("group_size", default=5, min=2, max=64, optional=True,
                                      tooltip="Views made together (the front view is in every group). Keep 5, "
                                              "what the model was trained with.")),
                advanced(io.String.Input("groups", default="", optional=True,
                                         tooltip="Make only some view groups, e.g. '0, 2' (empty = all): for a "
                                                 "quick look at a few views, or to redo one group. The outputs then "
                                                 "hold only those views.")),
                advanced(io.Boolean.Input("low_memory", default=False, optional=True,
                                          tooltip="Turn on when the sampler runs out of GPU memory: the same "
                                                  "videos with a lower memory peak, a little slower.")),
                advanced(io.Combo.Input("camera_source", options=["checkpoint", "from_rig"], default="checkpoint",
                                        optional=True,
                                        tooltip="checkpoint: the camera positions the model learnt (use this). "
                                                "from_rig: cameras computed from the connected rig; experimental, "
                                                "for other rigs.")),
                advanced(io.Boolean.Input("reuse_finished", default=True, optional=True,
                                          tooltip="Reuse view groups already made with the same inputs, model and "
                                                  "seed. They are kept across restarts in "
                                                  f"{_store_where()}; CharacterShot Clear Cached Groups shows "
                                                  "their size and removes them. Turn off to make them again.")),
                advanced(io.String.Input("ray_address", default="", optional=True,
                                         display_name="ray_address (removed: leave empty)",
                                         tooltip="No longer used; leave it empty. It is kept only so that old "
                                                 "workflows open: a value here stops the run with an error. To "
                                                 "use other machines, choose 'execution'.")),
                advanced(io.Combo.Input("execution", options=list(EXECUTION), default=HERE, optional=True,
                                        tooltip="here: make the videos on this machine. ray / ray local: spread the "
                                                "view groups over several GPUs, when the server's owner has set "
                                                "that up (docs/distributed.md).")),
            ],
            outputs=[
                MultiView.Output(display_name="multiview", tooltip="The multi-view videos with their cameras and "
                                                                   "frame times (Fit 4D Gaussians takes it)."),
                io.Image.Output(display_name="images", tooltip="All frames, view-major (all frames of view 0, "
                                                               "then view 1, ...)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, ray_address=None):
        """Old workflows: a ``ray_address`` value is refused when the prompt is queued (nothing runs)."""
        msg = serverconfig.old_address_error(ray_address)
        return True if msg is None else msg

    @classmethod
    def execute(cls, model, vae, text, views, pose_frames, reference_pose, seed, steps, cfg, scheduler,
                cameras=None, num_frames=25, dynamic_cfg="auto", group_size=5, groups="", low_memory=False,
                camera_source="checkpoint", reuse_finished=True, ray_address="", execution=HERE):
        import comfy.model_management as mm

        ray_target = _ray_target(execution, ray_address)  # before anything: an old address is refused here

        rig = cameras if cameras is not None else cam.official_rig()
        v_imgs = _images_uint8(views, "views")
        poses = _images_uint8(pose_frames, "pose_frames")
        ref = _images_uint8(reference_pose, "reference_pose")
        if ref.shape[0] != 1:
            log.warning("[CharacterShot] reference_pose: %d images given; using the first", ref.shape[0])
        if poses.shape[0] != num_frames:
            raise InputError("pose_frames", f"{poses.shape[0]} pose frames given but num_frames is {num_frames}; "
                                            "resample the poses (Prepare Pose Images / Pose From Keypoints) or "
                                            "change num_frames")
        if len(rig) != v_imgs.shape[0]:
            raise InputError("views", f"{v_imgs.shape[0]} view images but the camera rig has {len(rig)} views; give "
                                      "one image per camera, view 0 first")
        h, w = v_imgs.shape[1:3]
        rig_px = rig if (rig.width, rig.height) == (w, h) else rig.resized(w, h)
        job = MultiViewJob(v_imgs, poses, ref[0], text.prompt_embeds, text.negative_prompt_embeds, seed=seed,
                           steps=steps, guidance=cfg, scheduler=scheduler,
                           dynamic_cfg=_dynamic(dynamic_cfg, scheduler), group_size=group_size,
                           low_memory=low_memory, rig=rig_px)
        shape = job_shape(max(len(g) for g in job.groups), job.latent_frames + 1, h, w, cfg, low_memory)
        log_plan(model, vae, shape, h, w)
        use_vae, use_transformer = _device_hooks(model, vae, shape, h, w)
        worker = MultiViewWorker(model, vae, use_vae=use_vae, use_transformer=use_transformer,
                                 camera_source=camera_source)
        warnings = job.warnings + worker.check_job(job)
        for m in warnings:
            log.warning("[CharacterShot] %s", m)
        wanted = _groups_text(groups)
        store = group_store()
        todo = [gi for gi in (wanted if wanted is not None else range(len(job.groups)))
                if not (reuse_finished and 0 <= gi < len(job.groups)
                        and store.has(job.group_key(gi, worker.identity)))]
        bar = Progress(max(1, len(todo)) * steps)
        finished = {}

        def on_step(gi, i, n, x0_fn):
            preview = None
            if x0_fn is not None and (i % max(1, n // 10) == 0 or i == n - 1):
                from ..charactershot_core.sampling.preview import preview_strip

                preview = _preview_image(preview_strip(x0_fn().cpu(), *worker.preview_map))
            bar.step(1, preview=preview)

        def on_group(res):
            finished[res.index] = res
            log.info("[CharacterShot] view group %d %s: views %s -> %s", res.index,
                     "reused" if res.reused else "sampled", res.views, res.path)

        try:
            if ray_target is not None:
                result = _sample_on_ray(job, model, vae, camera_source, ray_target, store, wanted,
                                        on_step, on_group, reuse_finished, worker.identity)
            else:
                result = sample_multiview(job, LocalExecutor(worker), store, wanted, on_step, on_group,
                                          reuse=reuse_finished, passthrough=(mm.InterruptProcessingException,))
        except mm.InterruptProcessingException:
            if finished:
                log.warning("[CharacterShot] interrupted; finished view groups are kept and reused on a rerun: %s",
                            ", ".join(f"group {gi} ({r.path})" for gi, r in sorted(finished.items())))
            raise
        if result.complete:
            frames = result.frames
            out_rig = rig_px
        else:
            idx = sorted({v for gi in result.results for v in job.groups[gi]})
            first = {}
            for gi in sorted(result.results):
                for j, v in enumerate(job.groups[gi]):
                    first.setdefault(v, result.results[gi].frames[j])
            frames = torch.stack([first[v] for v in idx])
            out_rig = rig_px.select(idx)
        times = rig.times if rig.times is not None and len(rig.times) == frames.shape[1] else \
            default_times(frames.shape[1])
        mv = MultiViewVideo(frames, out_rig, times)  # kept as uint8 (21 x 25 frames at 720x480: 0.54 GB)
        summary = (f"{frames.shape[0]} views x {frames.shape[1]} frames at {w}x{h}; groups sampled "
                   f"{result.sampled or 'none'}, reused {result.reused or 'none'}; kept in {store.root}")
        try:
            from ..charactershot_core.sampling.store import human_size

            held = store.report()
            summary += f" ({len(held.groups)} groups, {human_size(held.bytes)} in all)"
        except OSError:
            pass
        text_ui = "\n".join([f"WARNING: {m}" for m in warnings] + [summary])
        return io.NodeOutput(mv, mv.frames.reshape(-1, h, w, 3), ui=ui.PreviewText(text_ui))  # shares storage


def _ray_target(execution, ray_address):
    """The Ray address for this run from the server's configuration (None: sample here). The removed
    ``ray_address`` input of old workflows is never used as an address: a value there is an error."""
    cfg = serverconfig.RayServerConfig()
    if execution != HERE and serverconfig.old_address_error(ray_address) is None:
        import folder_paths

        cfg = serverconfig.load(os.environ, folder_paths.get_user_directory())  # read at every run
    return serverconfig.resolve(execution, ray_address, cfg)


def _sample_on_ray(job, model, vae, camera_source, address, store, wanted, on_step, on_group, reuse, identity):
    """The job's groups on a Ray cluster through a child-process driver (Ray never starts in the server).

    Groups already in the store under this server's model identity are taken from it first (so a rerun does not
    start any actor when nothing is left to do); the rest go to the cluster, which stores them in the same place."""
    from ..charactershot_core.distributed.submit import submit_to_ray
    from ..charactershot_core.sampling import SamplerSpec
    from ..charactershot_core.sampling.executor import MultiViewResult

    indices = list(range(len(job.groups))) if wanted is None else sorted(set(wanted))
    bad = [g for g in indices if not 0 <= g < len(job.groups)]
    if bad:
        raise InputError("groups", f"group indices {bad} out of range: the job has {len(job.groups)} groups")
    done = {}
    for gi in indices:
        key = job.group_key(gi, identity)
        if reuse and store.has(key):
            res = store.load(key)
            res.index = gi
            done[gi] = res
            on_group(res)
    todo = [gi for gi in indices if gi not in done]
    if todo:
        dtype = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[model.dtype]
        checkpoint = os.path.dirname(model.source) if os.path.basename(model.source) == "transformer" \
            else model.source
        spec = SamplerSpec(checkpoint=checkpoint, vae=vae.source, camera=model.camera_source, dtype=dtype,
                           weight_storage=model.weight_storage, text_mode=model.text_mode,
                           camera_source=camera_source)
        if address in ("local", "auto"):
            import comfy.model_management as mm

            mm.unload_all_models()  # the actors on this machine load their own copies of the models
            mm.soft_empty_cache()
        remote = submit_to_ray(job, spec, address, store.root, todo, on_step=on_step, on_group=on_group,
                               log=lambda m: log.info("[CharacterShot] ray: %s", m))
        done.update(remote.results)
    frames = assemble(job.groups, done, job.num_views) if len(done) == len(job.groups) else None
    return MultiViewResult(job, done, frames, sorted(set(done) - set(todo)), todo)


class Animate2D(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotAnimate2D",
            display_name="CharacterShot Animate 2D",
            category=CAT,
            description="Animates one picture of your character so that it moves like the pose frames (the "
                        "Character2D model).",
            inputs=[
                Model2D.Input("model2d", tooltip="The 2D model, from CharacterShot 2D Model Loader."),
                VAE.Input("vae", tooltip="The video VAE, from CharacterShot VAE Loader."),
                TextEmbeds.Input("text", tooltip="The prompt, from CharacterShot Text Encode."),
                io.Image.Input("image", tooltip="The picture of your character (720x480 works best; the first "
                                                "picture of a batch is used)."),
                io.Image.Input("pose_frames", tooltip="The motion to perform: one pose drawing per frame."),
                io.Image.Input("reference_pose", tooltip="The pose your character stands in on the picture, drawn "
                                                         "like the pose frames."),
                io.Int.Input("seed", default=42, min=0, max=2 ** 63 - 1,
                             tooltip="Change it for another take of the same motion; keep it to repeat a result."),
                io.Int.Input("steps", default=50, min=1, max=1000,
                             tooltip="Denoising steps. 50 gives the quality the model was made for; fewer is "
                                     "faster with softer detail."),
                advanced(io.Float.Input("cfg", default=6.0, min=0.0, max=30.0, step=0.1,
                                        tooltip="How strongly the prompt and the poses steer the video. 6 suits "
                                                "most pictures; lower it when colours look burnt or overdone.")),
                advanced(io.Combo.Input("scheduler", options=list(SCHEDULERS), default="dpm",
                                        tooltip="The noise schedule. dpm is the one the model was released with; "
                                                "ddim is an alternative to compare.")),
                advanced(io.Int.Input("num_frames", default=25, min=1, max=257, step=4, optional=True,
                                      tooltip="Length of the video in frames (4k+1); it must match the number of "
                                              "pose frames. 25 is what the model was trained on.")),
                advanced(io.Combo.Input("dynamic_cfg", options=DYNAMIC_OPTIONS, default="auto", optional=True,
                                        tooltip="How guidance changes during sampling. auto: as the model was "
                                                "released. step_index: a ramp that follows the step count. off: "
                                                "the same strength at every step.")),
                advanced(io.Boolean.Input("low_memory", default=False, optional=True,
                                          tooltip="Turn on when it runs out of GPU memory: the same video with a "
                                                  "lower memory peak, a little slower.")),
            ],
            outputs=[io.Image.Output(display_name="frames", tooltip="The animated frames.")],
        )

    @classmethod
    def execute(cls, model2d, vae, text, image, pose_frames, reference_pose, seed, steps, cfg, scheduler,
                num_frames=25, dynamic_cfg="auto", low_memory=False):
        img = _images_uint8(image, "image")
        poses = _images_uint8(pose_frames, "pose_frames")
        ref = _images_uint8(reference_pose, "reference_pose")
        if poses.shape[0] != num_frames:
            raise InputError("pose_frames", f"{poses.shape[0]} pose frames given but num_frames is {num_frames}")
        if img.shape[0] > 1:
            log.warning("[CharacterShot] image: %d images given; animating the first", img.shape[0])
        job = Animate2DJob(img[0], poses, ref[0], text.prompt_embeds, text.negative_prompt_embeds, seed=seed,
                           steps=steps, guidance=cfg, scheduler=scheduler,
                           dynamic_cfg=_dynamic(dynamic_cfg, scheduler), low_memory=low_memory)
        h, w = img.shape[1:3]
        shape = job_shape(1, job.latent_frames + 1, h, w, cfg, low_memory)
        log_plan(model2d, vae, shape, h, w)
        use_vae, use_transformer = _device_hooks(model2d, vae, shape, h, w)
        bar = Progress(steps)
        frames = animate_2d(model2d, vae, job, use_vae=use_vae, use_transformer=use_transformer,
                            on_step=lambda i, n, x0: bar.step(1))
        for m in job.warnings:
            log.warning("[CharacterShot] %s", m)
        return io.NodeOutput(frames.float() / 255.0)


# ------------------------------------------------------------------------------------------------ save / load
class SaveMultiView(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotSaveMultiView",
            display_name="CharacterShot Save Multi-View",
            category=CAT,
            is_output_node=True,
            description="Writes multi-view videos as PNG frames in the official layout (viewXX/frame_XXXXX.png) "
                        "with cameras.json into ComfyUI's output folder; the 4D CLI and CharacterShot Load "
                        "Multi-View read it back.",
            inputs=[
                MultiView.Input("multiview", tooltip="The multi-view videos to save."),
                io.String.Input("filename_prefix", default="charactershot/multiview",
                                tooltip="Name (and sub-folder) in ComfyUI's output folder; a number is added so "
                                        "nothing is overwritten."),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, multiview, filename_prefix="charactershot/multiview"):
        from ..charactershot_core.sampling.store import write_multiview_folder
        from .paths import next_counter

        if not isinstance(multiview, MultiViewVideo):
            raise InputError("multiview", f"expected a CHARSHOT_MULTIVIEW, got {type(multiview).__name__}")
        folder, subfolder, base = output_target(filename_prefix, "filename_prefix")
        os.makedirs(folder, exist_ok=True)
        name = f"{base}_{next_counter(folder, base):05d}"
        write_multiview_folder(os.path.join(folder, name), multiview.pixels, multiview.rig, multiview.times)
        sub = f"{subfolder}/{name}" if subfolder else name
        images = [{"filename": "frame_00001.png", "subfolder": f"{sub}/view{v:02d}", "type": "output"}
                  for v in range(multiview.num_views)]
        return io.NodeOutput(ui={"images": images})


def multiview_sources() -> list[str]:
    """Folders (``viewXX/`` or ``view{k}.png``) and ``.mp4`` files in the input folder, and saved folders of the
    output folder (suffix `` [output]``)."""
    import folder_paths

    found = []
    for kind, root in (("input", folder_paths.get_input_directory()), ("output", folder_paths.get_output_directory())):
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not re.match(r"view\d+$", d))
            depth = os.path.relpath(dirpath, root).count(os.sep)
            if depth > 3:
                dirnames[:] = []
            names = os.listdir(dirpath)
            rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
            if rel != "." and (any(re.fullmatch(r"view\d+", n) for n in names)
                               or any(re.fullmatch(r"view\d+\.(png|jpg|jpeg)", n, re.I) for n in names)):
                found.append(rel + ("/ [output]" if kind == "output" else "/"))
            if kind == "input":
                for fn in sorted(filenames):
                    if fn.lower().endswith(".mp4"):
                        r = fn if rel == "." else f"{rel}/{fn}"
                        found.append(r)
            if len(found) > 500:
                break
    return found


def resolve_multiview_source(name: str) -> str:
    text, kind = split_location(name)
    if kind == "temp" or text == NO_FOLDER:
        raise InputError("source", f"expected a folder or .mp4 from the list, got {name!r}")
    return resolve_in(text.rstrip("/"), kind, "source", "folder or .mp4", "a folder or .mp4 from the list")


class LoadMultiView(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotLoadMultiView",
            display_name="CharacterShot Load Multi-View",
            category=CAT,
            description="Reads multi-view videos: a folder in the official layout (viewXX/frame_XXXXX.png, or "
                        "view{k}.png for one frame per view; with its cameras.json when there is one) or the official "
                        "CLI's single mp4 (5 groups x 5 views x 25 frames).",
            inputs=[
                io.Combo.Input("source", options=multiview_sources() or [NO_FOLDER],
                               tooltip="The videos to load: a folder or .mp4 in ComfyUI's input folder, or a folder "
                                       "saved by Save Multi-View (marked ' [output]'). Refresh the page after "
                                       "adding files."),
                Cameras.Input("cameras", optional=True,
                              tooltip="Only for your own camera rig (default: the folder's cameras.json, else the "
                                      "official 21 views)."),
                advanced(io.Int.Input("frames_per_view", default=25, min=1, max=1000, optional=True,
                                      tooltip=".mp4 only: frames of each view in the video. Keep 25 for videos "
                                              "made by CharacterShot.")),
                advanced(io.Int.Input("group_size", default=5, min=2, max=64, optional=True,
                                      tooltip=".mp4 only: views per group in the video. Keep 5 for videos made by "
                                              "CharacterShot.")),
            ],
            outputs=[MultiView.Output(display_name="multiview", tooltip="Views, cameras and frame times."),
                     io.Image.Output(display_name="images", tooltip="All frames, view-major.")],
        )

    @classmethod
    def execute(cls, source, cameras=None, frames_per_view=25, group_size=5):
        from ..charactershot_core.gaussians.fitting.data import read_frames_dir
        from ..charactershot_core.sampling.store import read_official_mp4

        path = resolve_multiview_source(source)
        if os.path.isfile(path):
            rig = cameras if cameras is not None else cam.official_rig()
            arr = read_official_mp4(path, cam.view_groups(len(rig), group_size), frames_per_view)
        else:
            arr = read_frames_dir(path, "source")
            rig_file = os.path.join(path, "cameras.json")
            if cameras is not None:
                rig = cameras
            elif os.path.isfile(rig_file):
                rig = cam.CameraRig.load(rig_file)
            else:
                rig = cam.official_rig()
        if len(rig) != arr.shape[0]:
            raise InputError("cameras", f"the rig has {len(rig)} cameras but {source} holds {arr.shape[0]} views")
        t = arr.shape[1]
        times = rig.times if rig.times is not None and len(rig.times) == t and t > 1 else default_times(t)
        mv = MultiViewVideo(torch.from_numpy(arr), rig, times)
        return io.NodeOutput(mv, mv.frames.reshape(-1, mv.height, mv.width, 3))

    @classmethod
    def fingerprint_inputs(cls, source, **kwargs):
        try:
            path = resolve_multiview_source(source)
            return f"{path}:{os.path.getmtime(path)}"
        except CharacterShotError:
            return float("nan")


class ClearCachedGroups(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotClearCachedGroups",
            display_name="CharacterShot Clear Cached Groups",
            category=CAT,
            is_output_node=True,
            description="Shows how much disk the finished view groups of the Multi-View Sampler take (kept across "
                        f"restarts in {_store_where()}) and removes them. With dry_run on (the default) it only "
                        "reports; a removed group is sampled again the next time a workflow needs it. Command "
                        "line: python -m charactershot_core groups --comfyui COMFYUI_FOLDER [--clear].",
            inputs=[
                io.Boolean.Input("dry_run", default=True,
                                 tooltip="On: only report the size and what would be removed. Off: remove."),
                io.Float.Input("older_than_days", default=0.0, min=0.0, max=3650.0, step=1.0, optional=True,
                               tooltip="Only groups last used (sampled or reused) more than this many days ago; "
                                       "0 = all of them."),
            ],
            outputs=[io.String.Output(display_name="report", tooltip="The store's folder, the groups and their size "
                                                                     "(removed, or that would be removed).")],
        )

    @classmethod
    def execute(cls, dry_run=True, older_than_days=0.0):
        from ..charactershot_core.sampling.store import human_size

        if older_than_days is None or older_than_days < 0:
            raise InputError("older_than_days", f"expected 0 or more days, got {older_than_days}")
        store = group_store()
        rep = store.clear(dry_run=bool(dry_run), older_than_days=float(older_than_days))
        if dry_run:
            lines = [rep.text("holds"), f"dry run: nothing removed; clearing would free {human_size(rep.bytes)}"]
        else:
            lines = [rep.text("lost"), f"freed {human_size(rep.bytes)}"]
            log.info("[CharacterShot] cleared cached view groups: %s", lines[0])
        text = "\n".join(lines)
        return io.NodeOutput(text, ui=ui.PreviewText(text))

    @classmethod
    def fingerprint_inputs(cls, dry_run=True, older_than_days=0.0):
        return float("nan")  # the store changes between runs: always look again


NODES = [MultiViewSampler, Animate2D, SaveMultiView, LoadMultiView, ClearCachedGroups]

"""Workers that hold the models and sample view groups (multi-view) or whole clips (2D).

A worker never decides *which* groups to run or where results go: that is the executor's and the store's job
(``executor.py``, ``store.py``).  Workers only turn a job and a group index into a :class:`GroupResult`.

Device placement is delegated to two hooks, ``use_vae()`` and ``use_transformer()``, each returning the device
to run on.  Standalone (CLI, Ray actors) both simply return the worker's device; inside ComfyUI the nodes pass
hooks that call ``comfy.model_management.load_models_gpu`` so that only the model in use is on the GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import CharacterShotError, InputError
from ..models.camera_guider import camera_tokens
from ..models.rope import rotary_embeddings
from .job import Animate2DJob, GroupResult, MultiViewJob
from .pipeline import (DenoiseOptions, decode_views, denoise, draw_noise, encode_pose_latents, encode_posteriors,
                       frames_to_uint8, predict_2d, predict_4d, sample_image_latents)
from .preview import fit_latent_to_rgb
from .schedulers import DEFAULT_SCHEDULER_CONFIG

log = logging.getLogger("CharacterShot")

StepHook = Callable[[int, int, Callable[[], torch.Tensor]], None]
CAMERA_SOURCES = ("checkpoint", "from_rig")
POSTERIOR_CACHE = 64  # view posteriors kept (each a few hundred KB at 480x720)


def _stat_identity(path: str) -> str:
    """Real path plus the sizes and mtimes of the files (a folder: every file below it, two levels deep)."""
    h = hashlib.sha256()
    path = os.path.realpath(path) if path else ""
    h.update(path.encode())
    if os.path.isfile(path):
        st = os.stat(path)
        h.update(f"{st.st_size}:{int(st.st_mtime)}".encode())
    elif os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if root.count(os.sep) - path.count(os.sep) < 2 \
                else []
            for fn in sorted(files):
                st = os.stat(os.path.join(root, fn))
                h.update(f"{os.path.relpath(os.path.join(root, fn), path)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:24]


def model_identity(model, vae) -> str:
    """Identity of (4D or 2D model, VAE) for group keys: the files they came from, dtypes and modes, and a digest
    of the camera guider and camera embeddings (small, and a user may swap the camera pack alone)."""
    from ..models.text import fingerprint_module

    parts = {"model": _stat_identity(getattr(model, "source", "")), "dtype": str(model.dtype),
             "config": getattr(model, "config", {}), "vae": _stat_identity(getattr(vae, "source", "")),
             "vae_dtype": str(vae.dtype)}
    if hasattr(model, "camera_guider"):
        parts.update(storage=model.weight_storage, text_mode=model.text_mode,
                     camera=_stat_identity(model.camera_source), guider=fingerprint_module(model.camera_guider))
        if model.camera_embs is not None:
            e = model.camera_embs
            flat = e.reshape(-1)[:: max(1, e.numel() // 65536)]
            parts["embs"] = hashlib.sha256(flat.float().numpy().tobytes()).hexdigest()[:16] + str(tuple(e.shape))
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def scheduler_config_for(source: str) -> dict:
    """The ``scheduler/scheduler_config.json`` of the official folder ``source`` is in, else the CogVideoX-5B one."""
    if source:
        here = os.path.abspath(source)
        for folder in (here, os.path.dirname(here), os.path.dirname(os.path.dirname(here))):
            p = os.path.join(folder, "scheduler", "scheduler_config.json")
            if os.path.isfile(p):
                try:
                    with open(p, encoding="utf-8") as f:
                        return json.load(f)
                except (OSError, ValueError) as e:
                    raise InputError("scheduler", f"{p}: not valid JSON ({e})") from None
    return dict(DEFAULT_SCHEDULER_CONFIG)


def _cpu_hook(device):
    dev = torch.device(device)
    return lambda: dev


def _check_model_kind(model, want: str) -> None:
    is4d = hasattr(model, "camera_guider")
    if want == "4d" and not is4d:
        raise InputError("model", "this is the 2D pose model (Character2D); the multi-view sampler needs the "
                                  "CharacterShot multi-view model (CharacterShot Model Loader). Use CharacterShot "
                                  "Animate 2D for the 2D model.")
    if want == "2d" and is4d:
        raise InputError("model2d", "this is the CharacterShot multi-view (4D) model; Animate 2D needs the "
                                    "Character2D pose model (CharacterShot 2D Model Loader). Use CharacterShot "
                                    "Multi-View Sampler for the multi-view model.")


def _oom_message(what: str) -> str:
    return (f"out of memory while {what}. Lower the memory: turn on low_memory (the two CFG halves one after the "
            "other, same result), load the model with weight_storage fp8_e4m3fn, keep VAE tiling and slicing on, "
            "or free other models; finished view groups are kept and reused on a rerun")


class MultiViewWorker:
    """Samples view groups with one loaded multi-view model and VAE; caches what several groups share."""

    def __init__(self, model, vae, device=None, use_vae: Optional[Callable] = None,
                 use_transformer: Optional[Callable] = None, camera_source: str = "checkpoint",
                 scheduler_config: Optional[dict] = None):
        _check_model_kind(model, "4d")
        if camera_source not in CAMERA_SOURCES:
            raise InputError("camera_source", f"expected one of {CAMERA_SOURCES}, got {camera_source!r}")
        self.model = model
        self.vae = vae
        dev = torch.device(device) if device is not None else model.transformer.device
        self.use_vae = use_vae or _cpu_hook(dev)
        self.use_transformer = use_transformer or _cpu_hook(dev)
        self.camera_source = camera_source
        self.scheduler_config = scheduler_config or scheduler_config_for(model.source)
        self.identity = model_identity(model, vae) + (":rig" if camera_source == "from_rig" else "")
        self._posteriors: dict = {}
        self._pose_cache: dict = {}
        self.preview_map: Optional[tuple] = None  # (A, b): latent -> RGB of the current group, for previews

    # ------------------------------------------------------------------------------------------------ checks
    def check_job(self, job: MultiViewJob) -> list:
        """Errors for what cannot run, warnings (returned) for what runs out of distribution."""
        warnings = []
        c = self.model.config
        lat_ch = c["in_channels"] // 2
        vae_ch = int(self.vae.config.get("latent_channels", lat_ch))
        if vae_ch != lat_ch:
            raise InputError("vae", f"the VAE has {vae_ch} latent channels but the model takes {lat_ch} (+{lat_ch} "
                                    "pose channels); use the CogVideoX VAE of the same model")
        if self.camera_source == "checkpoint":
            embs = self.model.camera_embs
            if embs is None:
                raise InputError("model", "the model has no camera embeddings; load a camera pack or use "
                                          "camera_source from_rig")
            bad = [i for i in job.camera_indices if not 0 <= i < embs.shape[0]]
            if bad:
                raise InputError("views", f"{job.num_views} views but the model has {embs.shape[0]} camera "
                                          f"embeddings (indices {bad[:5]} missing); give at most {embs.shape[0]} "
                                          "views or use camera_source from_rig")
            if job.rig is not None:
                from ..cameras import official_rig
                off = official_rig()
                same = len(job.rig) <= len(off) and all(
                    abs(job.rig.c2w_gl[k] - off.c2w_gl[job.camera_indices[k]]).max() < 1e-3
                    for k in range(len(job.rig)))
                if not same:
                    warnings.append("the camera rig is not the official 21-view orbit, but the official camera "
                                    "embeddings are used (view k gets embedding k): the model was trained on the "
                                    "21-view rig only")
        elif job.rig is None:
            raise InputError("cameras", "camera_source from_rig needs the cameras input")
        else:
            warnings.append("camera embeddings computed from the rig (Plücker rays): their convention is our "
                            "inference, not validated against the shipped embeddings")
        return warnings

    # ------------------------------------------------------------------------------------------------ parts
    def _image_posteriors(self, job: MultiViewJob, views: list, device) -> list:
        out = []
        for v in views:
            img = job.views[v]
            key = (hashlib.sha256(img.numpy().tobytes()).hexdigest(), str(device))
            if key not in self._posteriors:
                while len(self._posteriors) >= POSTERIOR_CACHE:  # a long-running server sees many characters
                    self._posteriors.pop(next(iter(self._posteriors)))
                self._posteriors[key] = encode_posteriors(self.vae.vae, img[None], device)[0]
            out.append(self._posteriors[key])
        return out

    def _pose_latents(self, job: MultiViewJob, device) -> torch.Tensor:
        h = hashlib.sha256()
        h.update(job.pose_frames.numpy().tobytes())
        h.update(job.reference_pose.numpy().tobytes())
        key = (h.hexdigest(), job.pose_latents, int(job.seed), str(device))
        if key not in self._pose_cache:
            gen = torch.Generator().manual_seed(int(job.seed)) if job.pose_latents == "sample" else None
            self._pose_cache = {key: encode_pose_latents(self.vae.vae, job.pose_frames, job.reference_pose,
                                                         self.vae.scaling_factor, gen, device)}
        return self._pose_cache[key]

    def _camera_maps(self, job: MultiViewJob, views: list) -> torch.Tensor:
        if self.camera_source == "from_rig":
            rig = job.rig if (job.rig.width, job.rig.height) == (job.width, job.height) \
                else job.rig.resized(job.width, job.height)
            return rig.plucker(views)
        maps = self.model.camera_embs[[job.camera_indices[v] for v in views]].float()
        if tuple(maps.shape[-2:]) != (job.height, job.width):
            maps = torch.nn.functional.interpolate(maps, size=(job.height, job.width), mode="bilinear",
                                                   align_corners=False)
        return maps

    # ------------------------------------------------------------------------------------------------ run
    @torch.no_grad()
    def run_group(self, job: MultiViewJob, index: int, on_step: Optional[StepHook] = None,
                  on_stage: Optional[Callable[[str], None]] = None) -> GroupResult:
        """Sample group ``index`` of ``job`` exactly as one official pipeline call, decode its views."""
        views = job.groups[index]
        model = self.model
        dtype = model.dtype
        sf = self.vae.scaling_factor
        try:
            if on_stage:
                on_stage("encode")
            dev = self.use_vae()
            gen = torch.Generator().manual_seed(int(job.seed))  # re-created per group, as officially
            posteriors = self._image_posteriors(job, views, dev)
            image_latents = sample_image_latents(posteriors, gen, sf, dtype)
            self.preview_map = fit_latent_to_rgb(posteriors[0].mean[0, :, 0].float().cpu() * sf, job.views[views[0]])
            pose = self._pose_latents(job, dev)
            ch, h, w = image_latents.shape[3:]
            guider_out = model.camera_guider(self._camera_maps(job, views))  # fp32, on the guider's device
            tokens = camera_tokens(guider_out)
            if on_stage:
                on_stage("denoise")
            dev = self.use_transformer()
            noise = draw_noise(gen, len(views), job.latent_frames, ch, h, w, dev, dtype)
            pose_v = pose[:, None].expand(1, len(views), *pose.shape[1:])
            text = torch.cat([job.negative_prompt_embeds, job.prompt_embeds]) if job.guidance > 1.0 \
                else job.prompt_embeds
            opts = DenoiseOptions(job.steps, job.guidance, job.scheduler, job.dynamic_cfg, job.spacing,
                                  job.low_memory)
            rope = model.transformer.rotary_embeddings(job.latent_frames + 1, len(views), h // model.config[
                "patch_size"], w // model.config["patch_size"], dev)  # once per group, not per step
            latents = denoise(predict_4d(model.transformer, tokens.to(dev, dtype), model.per_sample_text, rope),
                              image_latents, noise, pose_v, text, opts, gen, job.scheduler_config
                              or self.scheduler_config, dev, dtype, on_step)
            if on_stage:
                on_stage("decode")
            dev = self.use_vae()
            frames = frames_to_uint8(decode_views(self.vae.vae, latents, sf, dev))
        except torch.OutOfMemoryError:
            raise CharacterShotError(_oom_message(f"sampling view group {index}")) from None
        return GroupResult(index, list(views), job.group_key(index, self.identity), latents.float().cpu(), frames)


@dataclass
class SamplerSpec:
    """How to build a :class:`MultiViewWorker` from files (for other processes: the CLI, Ray actors)."""

    checkpoint: str
    vae: str
    camera: Optional[str] = None
    dtype: str = "auto"
    weight_storage: str = "default"
    text_mode: str = "faithful"
    device: Optional[str] = None
    camera_source: str = "checkpoint"

    def resolved_device(self) -> torch.device:
        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def resolved_dtype(self, device: torch.device) -> torch.dtype:
        from ..models.loading import parse_dtype

        if self.dtype != "auto":
            return parse_dtype(self.dtype)
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def build(self) -> MultiViewWorker:
        from ..models.loading import load_model_4d, load_vae

        dev = self.resolved_device()
        dtype = self.resolved_dtype(dev)
        model = load_model_4d(self.checkpoint, self.camera, dtype, self.weight_storage, self.text_mode, device=dev)
        vae = load_vae(self.vae, dtype, device=dev)
        return MultiViewWorker(model, vae, dev, camera_source=self.camera_source)


@torch.no_grad()
def animate_2d(model2d, vae, job: Animate2DJob, device=None, use_vae: Optional[Callable] = None,
               use_transformer: Optional[Callable] = None, on_step: Optional[StepHook] = None,
               scheduler_config: Optional[dict] = None) -> torch.Tensor:
    """The 2D pose pipeline (official ``CogVideoXImageToVideo2DPipeline``, its crash and wrong reference pose
    fixed): frames (F, H, W, 3) uint8."""
    _check_model_kind(model2d, "2d")
    dev0 = torch.device(device) if device is not None else next(model2d.transformer.parameters()).device
    use_vae = use_vae or _cpu_hook(dev0)
    use_transformer = use_transformer or _cpu_hook(dev0)
    c = model2d.config
    lat_ch = c["in_channels"] // 2
    if int(vae.config.get("latent_channels", lat_ch)) != lat_ch:
        raise InputError("vae", f"the VAE has {vae.config.get('latent_channels')} latent channels but the model takes "
                                f"{lat_ch}; use the CogVideoX VAE of the same model")
    dtype = model2d.dtype
    sf = vae.scaling_factor
    try:
        dev = use_vae()
        gen = torch.Generator().manual_seed(int(job.seed))
        image_latents = sample_image_latents(encode_posteriors(vae.vae, job.image[None], dev), gen, sf, dtype)
        pose_gen = torch.Generator().manual_seed(int(job.seed)) if job.pose_latents == "sample" else None
        pose = encode_pose_latents(vae.vae, job.pose_frames, job.reference_pose, sf, pose_gen, dev)
        ch, h, w = image_latents.shape[3:]
        dev = use_transformer()
        noise = draw_noise(gen, 1, job.latent_frames, ch, h, w, dev, dtype)
        p = c["patch_size"]
        rope = rotary_embeddings(job.latent_frames + 1, h // p, w // p, c["attention_head_dim"],
                                 (c["sample_height"] // p, c["sample_width"] // p), dev)
        text = torch.cat([job.negative_prompt_embeds, job.prompt_embeds]) if job.guidance > 1.0 else job.prompt_embeds
        opts = DenoiseOptions(job.steps, job.guidance, job.scheduler, job.dynamic_cfg, job.spacing, job.low_memory)
        latents = denoise(predict_2d(model2d.transformer, rope), image_latents, noise, pose[:, None], text, opts, gen,
                          job.scheduler_config or scheduler_config or scheduler_config_for(model2d.source), dev,
                          dtype, on_step)
        dev = use_vae()
        frames = decode_views(vae.vae, latents, sf, dev)
    except torch.OutOfMemoryError:
        raise CharacterShotError(_oom_message("animating")) from None
    return frames_to_uint8(frames)[0]

"""What one character's multi-view sampling is made of: the job (all inputs), its view groups and their keys.

A *view group* is the unit of work (spec §A.9): the official pipeline samples 21 views as 5 independent calls of 5
views (view 0 first in each), each with a generator re-created from the same seed.  A group's result is a pure
function of the group's view images and camera indices, the pose frames and reference pose, the text embeddings,
the sampling options, the seed and the model: :meth:`MultiViewJob.group_key` hashes exactly those, so a finished
group can be reused by a rerun, computed in another process or on another machine, and assembled afterwards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..cameras import CameraRig, view_groups
from ..errors import InputError
from .schedulers import DYNAMIC_CFG, SCHEDULERS, SPACINGS, check_sampling_options

KEY_VERSION = "charactershot-group-v1"
TRAINED_SIZE = (480, 720)       # (height, width) the official models were trained at
TRAINED_FRAMES = 25
POSE_LATENT_MODES = ("sample", "mode")


def _as_uint8_images(x, name: str, ndim: int) -> torch.Tensor:
    """A uint8 tensor of ``ndim`` dims (..., H, W, 3) from a uint8/float tensor or array."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not torch.is_tensor(x):
        raise InputError(name, f"expected an image tensor, got {type(x).__name__}")
    if x.ndim == ndim - 1 and ndim == 4:
        x = x[None]
    if x.ndim == ndim + 1 and ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != ndim or x.shape[-1] not in (3, 4):
        want = "(N, H, W, 3)" if ndim == 4 else "(H, W, 3)"
        raise InputError(name, f"expected images shaped {want}, got {tuple(x.shape)}")
    x = x[..., :3]
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return x.contiguous()


def _tensor_digest(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{tuple(t.shape)}:{t.dtype}".encode())
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    h.update(t.numpy().tobytes())


@dataclass
class MultiViewJob:
    """Everything one character's multi-view sampling depends on (besides the model)."""

    views: torch.Tensor                  # (V, H, W, 3) uint8, the reference view images, view 0 first (rig order)
    pose_frames: torch.Tensor            # (F, H, W, 3) uint8, the driving pose drawings, F = 4k + 1
    reference_pose: torch.Tensor         # (H, W, 3) uint8, the pose of view 0 drawn the same way
    prompt_embeds: torch.Tensor          # (1, S, D)
    negative_prompt_embeds: torch.Tensor  # (1, S, D)
    seed: int = 42
    steps: int = 50
    guidance: float = 6.0
    scheduler: str = "dpm"
    dynamic_cfg: str = "timestep"
    spacing: str = "trailing"
    groups: Optional[list] = None        # view groups (lists of view indices); default: view_groups(V, group_size)
    group_size: int = 5
    camera_indices: Optional[list] = None  # camera embedding used by each view (default: view k -> embedding k)
    pose_latents: str = "sample"         # "sample": posterior draws from a generator seeded with `seed`; "mode"
    scheduler_config: Optional[dict] = None
    low_memory: bool = False             # CFG halves one after the other: same numbers, lower peak (not in the key)
    rig: Optional[CameraRig] = None      # cameras of the views, for the outputs (not in the key)
    warnings: list = field(default_factory=list)

    def __post_init__(self):
        self.views = _as_uint8_images(self.views, "views", 4)
        self.pose_frames = _as_uint8_images(self.pose_frames, "pose_frames", 4)
        if self.reference_pose is None:
            raise InputError("reference_pose", "missing: connect the reference pose (the pose of view 0, drawn like "
                                               "the pose frames; CharacterShot Pose From Keypoints makes it)")
        self.reference_pose = _as_uint8_images(self.reference_pose, "reference_pose", 3)
        self.validate()

    # ----------------------------------------------------------------------------------------------- checks
    @property
    def num_views(self) -> int:
        return int(self.views.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.pose_frames.shape[0])

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // 4 + 1

    @property
    def height(self) -> int:
        return int(self.views.shape[1])

    @property
    def width(self) -> int:
        return int(self.views.shape[2])

    def validate(self) -> None:
        check_sampling_options(self.steps, self.guidance, self.scheduler, self.dynamic_cfg)
        if self.spacing not in SPACINGS:
            raise InputError("timestep_spacing", f"expected one of {', '.join(SPACINGS)}, got {self.spacing!r}")
        if self.pose_latents not in POSE_LATENT_MODES:
            raise InputError("pose_latents", f"expected one of {POSE_LATENT_MODES}, got {self.pose_latents!r}")
        check_frames_and_size(self.views, self.pose_frames, self.reference_pose, self.warnings)
        for name, t in (("prompt_embeds", self.prompt_embeds), ("negative_prompt_embeds", self.negative_prompt_embeds)):
            if not torch.is_tensor(t) or t.ndim != 3 or t.shape[0] != 1:
                raise InputError("text", f"{name}: expected (1, S, D) embeddings, got "
                                         f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
        if self.prompt_embeds.shape != self.negative_prompt_embeds.shape:
            raise InputError("text", f"prompt and negative prompt embeddings differ in shape: "
                                     f"{tuple(self.prompt_embeds.shape)} vs {tuple(self.negative_prompt_embeds.shape)}")
        v = self.num_views
        if self.rig is not None and len(self.rig) != v:
            raise InputError("views", f"the camera rig has {len(self.rig)} views but {v} view images were given; "
                                      "give one image per camera, view 0 first")
        if self.groups is None:
            self.groups = view_groups(v, self.group_size)
        self.groups = [[int(i) for i in g] for g in self.groups]
        if not self.groups or any(not g for g in self.groups):
            raise InputError("groups", "expected at least one non-empty view group")
        for g in self.groups:
            bad = [i for i in g if not 0 <= i < v]
            if bad:
                raise InputError("groups", f"view indices {bad} out of range for {v} views")
            if len(set(g)) != len(g):
                raise InputError("groups", f"a view group repeats a view: {g}")
        covered = set().union(*map(set, self.groups))
        missing = sorted(set(range(v)) - covered)
        if missing:
            raise InputError("groups", f"views {missing} are in no view group")
        if self.camera_indices is None:
            self.camera_indices = list(range(v))
        self.camera_indices = [int(i) for i in self.camera_indices]
        if len(self.camera_indices) != v:
            raise InputError("camera_indices", f"expected one camera index per view ({v}), got "
                                               f"{len(self.camera_indices)}")

    # ----------------------------------------------------------------------------------------------- keys
    def _common_digest(self, model_identity: str):
        h = hashlib.sha256()
        opts = {"v": KEY_VERSION, "model": model_identity, "seed": int(self.seed), "steps": int(self.steps),
                "guidance": float(self.guidance), "scheduler": self.scheduler, "dynamic_cfg": self.dynamic_cfg,
                "spacing": self.spacing, "pose_latents": self.pose_latents,
                "scheduler_config": self.scheduler_config or {}}
        h.update(json.dumps(opts, sort_keys=True).encode())
        for t in (self.pose_frames, self.reference_pose, self.prompt_embeds, self.negative_prompt_embeds):
            _tensor_digest(h, t)
        return h

    def group_key(self, index: int, model_identity: str) -> str:
        """Hex key of group ``index``: changes when anything its result depends on changes."""
        h = self._common_digest(model_identity)
        views = self.groups[index]
        h.update(json.dumps({"views": views, "cameras": [self.camera_indices[v] for v in views]}).encode())
        for v in views:
            _tensor_digest(h, self.views[v])
        return h.hexdigest()[:32]

    def describe(self) -> dict:
        return {"views": self.num_views, "frames": self.num_frames, "height": self.height, "width": self.width,
                "seed": int(self.seed), "steps": int(self.steps), "guidance": float(self.guidance),
                "scheduler": self.scheduler, "dynamic_cfg": self.dynamic_cfg, "spacing": self.spacing,
                "groups": self.groups, "camera_indices": self.camera_indices, "pose_latents": self.pose_latents}


def check_frames_and_size(views: torch.Tensor, pose_frames: torch.Tensor, reference_pose: torch.Tensor,
                          warnings: list, requested_frames: int | None = None) -> None:
    """Frame count 4k + 1 (and equal to ``requested_frames``), sizes multiples of 16 and equal; warn off the trained
    480x720 x 25 frames."""
    f = int(pose_frames.shape[0])
    if f < 1 or (f - 1) % 4:
        lo = (f - 1) // 4 * 4 + 1
        raise InputError("pose_frames", f"expected 4k+1 frames (1, 5, ..., 25, ...), got {f}; use {lo} or {lo + 4} "
                                        "(CharacterShot Prepare Pose Images / Pose From Keypoints resample)")
    if requested_frames is not None and f != requested_frames:
        raise InputError("pose_frames", f"{f} pose frames given but {requested_frames} frames requested")
    h, w = int(views.shape[-3]), int(views.shape[-2])
    if h % 16 or w % 16:
        raise InputError("views", f"image size {w}x{h} is not a multiple of 16 (the VAE divides by 8 and the "
                                  "transformer patches by 2); use 720x480, the trained size")
    for name, t in (("pose_frames", pose_frames), ("reference_pose", reference_pose)):
        if (int(t.shape[-3]), int(t.shape[-2])) != (h, w):
            raise InputError(name, f"size {int(t.shape[-2])}x{int(t.shape[-3])} differs from the views' {w}x{h}")
    if (h, w) != TRAINED_SIZE:
        warnings.append(f"views are {w}x{h}; the model was trained at {TRAINED_SIZE[1]}x{TRAINED_SIZE[0]} (other sizes "
                        "run but are out of distribution)")
    latent = (f - 1) // 4 + 1
    if latent % 2 == 0:
        warnings.append(f"{f} frames make {latent} latent frames, an even count: the CogVideoX VAE then decodes "
                        f"{4 * latent} frames, not {f} (as the official pipeline would); 9, 17, 25 or 33 frames "
                        "decode to themselves")
    if f != TRAINED_FRAMES:
        warnings.append(f"{f} frames; the model was trained on {TRAINED_FRAMES} (other counts run but are out of "
                        "distribution)")


@dataclass
class Animate2DJob:
    """The 2D pose-driven animation of one reference image (Character2D model)."""

    image: torch.Tensor                  # (H, W, 3) uint8, the reference image
    pose_frames: torch.Tensor            # (F, H, W, 3) uint8
    reference_pose: torch.Tensor         # (H, W, 3) uint8: the pose of `image` (not of another image: §A.10 fix)
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    seed: int = 42
    steps: int = 50
    guidance: float = 6.0
    scheduler: str = "dpm"
    dynamic_cfg: str = "timestep"
    spacing: str = "trailing"
    pose_latents: str = "sample"
    scheduler_config: Optional[dict] = None
    low_memory: bool = False
    warnings: list = field(default_factory=list)

    def __post_init__(self):
        self.image = _as_uint8_images(self.image, "image", 3)
        self.pose_frames = _as_uint8_images(self.pose_frames, "pose_frames", 4)
        if self.reference_pose is None:
            raise InputError("reference_pose", "missing: connect the pose of the reference image")
        self.reference_pose = _as_uint8_images(self.reference_pose, "reference_pose", 3)
        check_sampling_options(self.steps, self.guidance, self.scheduler, self.dynamic_cfg)
        if self.pose_latents not in POSE_LATENT_MODES:
            raise InputError("pose_latents", f"expected one of {POSE_LATENT_MODES}, got {self.pose_latents!r}")
        check_frames_and_size(self.image[None], self.pose_frames, self.reference_pose, self.warnings)

    @property
    def latent_frames(self) -> int:
        return (int(self.pose_frames.shape[0]) - 1) // 4 + 1


@dataclass
class GroupResult:
    """One finished view group: its final latents (frame 0 = reference) and its decoded frames."""

    index: int
    views: list                      # view indices (rig order) of the group, view 0 first
    key: str
    latents: torch.Tensor            # (1, Vg, L + 1, C, h, w) float32
    frames: torch.Tensor             # (Vg, F, H, W, 3) uint8
    reused: bool = False
    path: str = ""


def assemble(groups: list, results: dict, num_views: int) -> torch.Tensor:
    """(V, F, H, W, 3) uint8: each view from the first group (in job order) that lists it, so view 0 comes from the
    first group, as the official assembly does."""
    out = [None] * num_views
    for gi, views in enumerate(groups):
        res = results.get(gi)
        if res is None:
            raise InputError("groups", f"group {gi} has no result yet; cannot assemble")
        for j, v in enumerate(views):
            if out[v] is None:
                out[v] = res.frames[j]
    return torch.stack(out)


def group_of_views(groups: list) -> dict:
    """view index -> index of the first group that lists it."""
    first = {}
    for gi, g in enumerate(groups):
        for v in g:
            first.setdefault(v, gi)
    return first


__all__ = ["MultiViewJob", "Animate2DJob", "GroupResult", "assemble", "check_frames_and_size", "group_of_views",
           "DYNAMIC_CFG", "SCHEDULERS", "TRAINED_SIZE", "TRAINED_FRAMES"]

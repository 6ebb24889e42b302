"""Fitting 4D Gaussians to multi-view videos: the configuration, the initial model and the training loop.

The loop (``_Training``) is the same for every motion model: progress p in [0, 1] is the larger of iterations done /
``iterations`` and seconds spent / ``seconds`` (a time budget compresses the whole schedule rather than cutting it
short); each iteration asks the motion model's schedule (``schedules.py``) for its stage, learning rates and frame,
samples ``batch_views`` training cameras, renders the Gaussians at that frame (loss = L1 + λ D-SSIM on white at the
canvas resolution with the rig's intrinsics, through ``robust.ViewCorrections``), adds the schedule's regularisers,
and steps the optimisers.

1. visual-hull initialisation from the silhouettes of the middle frame (``init.visual_hull``);
2. static coarse stage on the middle frame (static input: the whole fit; no motion is built);
3. the motion stages of the schedule: the trajectory table's sweep and global stages, or the HexPlane field's fine
   stage (spec §C.5, §C.7: the neighbour constraint, KNN graph on the canonical centres rebuilt after every
   densification, + optional rigidity / isometry).

Densification and pruning use gsplat's ``DefaultStrategy`` (pure torch: any device, both rasteriser backends) on the
canonical parameters, fed with the screen-space gradients of the (deformed) Gaussians. NaN/inf checks and the last
good state: ``guard.py`` (:class:`FitDivergedError`).

Rendering uses the configured ``backend`` on every call: under ``"auto"`` a gsplat failure (at its build, in a
forward or in a backward pass) is logged once and the fit goes on with the torch rasteriser on the same device
(``render.mark_gsplat_unusable``). ``device`` (ComfyUI's torch device in the nodes) is where the fit runs, for
either rasteriser.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from ...errors import CharacterShotError, InputError
from ..model import DEFAULT_FIELD, TABLE_KEYS, Gaussians4D, make_gaussians, scene_bounds
from ..raster.views import pick_device, render_model, render_views
from .background import white_balanced, whiten_video
from .data import MultiViewVideo, check_character, to_float
from .guard import DivergenceGuard
from .init import visual_hull
from .robust import DEFAULTS as ROBUST_DEFAULTS
from .robust import ViewCorrections
from .schedules import lr_factor, make_schedule
from .trajectory import FrameAdam


COLOUR_FIELD_MODES = ("auto", "on", "off")


@dataclass
class FitConfig:
    motion: str = "table"             # videos: "table" (per-Gaussian trajectories, fast) or "hexplane" (the paper's)
    iterations: int = 3000            # upper bound on iterations
    seconds: float | None = None      # time budget (whole fit, initialisation included); None = no limit
    batch_views: int = 2              # cameras rendered per iteration
    coarse_fraction: float = 0.2      # share of the schedule spent on the static coarse stage (dynamic input)
    sh_degree: int = 0
    init_points: int = 20000
    hull_resolution: int = 0          # voxels along the hull's longest side; 0 = from the image size
    init_opacity: float = 0.5
    init_scale: float = 0.5           # multiplier of the initial spacing of the hull samples
    lambda_dssim: float = 0.2
    # learning rates (means and deformation scaled by the scene scale, exponential decay to lr * lr_final_factor).
    # About 4-8x 3DGS's defaults, which are made for 30k iterations: tuned for budgets of a few hundred to a few
    # thousand iterations (real views, 300 s on a CPU; see benchmarks/bench_fit4d.py)
    lr_means: float = 1.28e-3
    lr_scales: float = 2e-2
    lr_quats: float = 4e-3
    lr_opacities: float = 1e-1
    lr_sh0: float = 2e-2
    lr_shN: float = 2e-2 / 20
    lr_grid: float = 1.6e-2           # 10x 4DGaussians': its 20k-iteration rates barely move the field in 1k
    lr_mlp: float = 1.6e-3
    lr_final_factor: float = 0.01     # positions
    lr_final_factor_field: float = 0.1  # the deformation field
    lr_final_factor_other: float = 1.0  # colours, opacities, scales, rotations (decaying them cost ~1 dB in short budgets)
    # densification (gsplat DefaultStrategy); fractions are of the schedule
    densify: bool = True
    densify_from: float = 0.05
    densify_until: float = 0.6
    densify_every: int = 100
    grow_grad2d: float = 2e-4
    grow_scale3d: float = 0.01
    prune_opa: float = 0.005
    max_gaussians: int = 300000
    # deformation field and its regularisers
    field: dict = field(default_factory=lambda: dict(DEFAULT_FIELD))
    plane_tv_weight: float = 1e-4
    time_smoothness_weight: float = 1e-2
    l1_time_planes: float = 1e-4
    # neighbour constraint (paper) and rigidity / isometry
    neighbour_weight: float = 1.0     # multiplier of the paper's dynamic time weight; 0 disables it
    knn_k: int = 8
    neighbour_nodes: int = 4096       # centre nodes sampled per iteration for the neighbour terms (all if fewer)
    motion_threshold: float = 0.01
    rigidity_weight: float | None = None  # None: 1 for the trajectory table (limbs stay coherent), 0 for HexPlane
    isometry_weight: float = 0.0
    temporal_windows: bool = True     # hexplane: progressive windows from the middle frame
    # trajectory table (motion="table"): static coarse stage, optical-flow initialisation, an outward sweep
    # over the frames from the middle one (each frame warm-started from its inner neighbour), then error-weighted
    # sampling of all frames
    flow_init: bool = True
    sweep_fraction: float = 0.35      # share of the schedule for the outward sweep (after the coarse stage)
    sweep_replay: float = 0.25        # probability that a sweep iteration revisits an already swept frame
    lr_traj_means: float = 1.28e-3    # x scene scale, decays with lr_final_factor over the dynamic stages
    lr_traj_quats: float = 4e-3
    table_smoothness_weight: float = 1.0   # second difference of positions over consecutive frames
    coarse_image_weight: float = 1.0  # table: + L1 of 8x-downsampled images (a wider basin for limbs far off)
    repair_lost_parts: bool = True    # table: put parts the flow lost back where each frame's silhouettes say (lost_parts.py)
    repair_every: int = 50            # global stage: iterations between repairs of the worst frame (0: none)
    # views like a video model's (robust.py): the background estimated from each image's border (background.py),
    # a per-view affine colour + per-view-and-frame gain applied to the render in the loss only (appearance.py),
    # a per-view SE(3) refinement of the training cameras (camera_refine.py), the per-pixel penalty
    background_estimate: bool = ROBUST_DEFAULTS["background_estimate"]
    appearance: bool = ROBUST_DEFAULTS["appearance"]
    lr_appearance: float = 5e-3
    appearance_reg: float = 1e-2
    saturated_colour: bool = False     # with background_estimate: a colour per image whose background saturated at
                                       # white, anchored to the white-balanced ones (appearance.SaturatedColour)
    colour_field: str = "auto"        # a smooth colour field per view + a gain per view and frame, on the character,
                                      # in the loss only (appearance.ViewColourField): "on", "off", or "auto": on
                                      # when the background estimate found views whose background drifted off white
    colour_field_cells: int = 8       # the field's cells along the image's long side
    pose_refine: bool = ROBUST_DEFAULTS["pose_refine"]
    lr_pose: float = 2e-4
    pose_reg: float = 1e-2
    pose_warmup: float = 1.0          # camera refinement's learning rate x this at the start, x 1 from the static stage's end
    pose_lr_final: float = 1.0        # camera refinement's learning rate x this at the fit's end (linear from the static stage's)
    pose_dof: str = "image"           # "image": pan, tilt, roll, dolly per view (camera_refine.py); "rigid": SE(3)
    pose_keep: float = 1e-3           # at the static stage's end the corrections are kept only when they move the
                                      # views' pictures by more than this x the image's long side on average (0.18 px
                                      # at 180x120); else they are reset to the rig and frozen (0: always kept)
    robust_loss: str = ROBUST_DEFAULTS["robust_loss"]  # "l1", "charbonnier" or "trimmed"
    # rendering
    backend: str = "auto"
    device: str | None = None         # where the fit runs; None = the first CUDA GPU if there is one, else the CPU
    check_every: int = 10             # iterations between host reads of the NaN/inf flags (and of the loss)
    rasterize_mode: str = "classic"
    seed: int = 0
    snapshot_every: int = 25
    min_iterations: int = 5

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitState:
    """What the progress callback receives every iteration (``loss`` reads the loss tensor: a host sync, only when
    the callback asks for it)."""

    iteration: int
    max_iterations: int
    progress: float
    stage: str
    _loss: object
    num_gaussians: int
    elapsed: float
    model: Gaussians4D
    _preview: object = None
    frame: int = 0            # the frame index this iteration trained on
    views: tuple = ()         # the camera indices it rendered

    @property
    def loss(self) -> float:
        return float(self._loss)

    def preview(self) -> torch.Tensor:
        """(H, W, 3) render of the first training camera at the middle time, on the CPU."""
        return self._preview()


@dataclass
class FitResult:
    model: Gaussians4D
    iterations: int
    seconds: float
    init_seconds: float
    backend: str
    device: str
    history: list = field(default_factory=list)
    config: dict = field(default_factory=dict)


def progress_text(state: FitState, seconds: float | None = None) -> str:
    """One line for a progress display: the iteration (of the maximum), the stage, the time spent and, with a time
    budget ``seconds``, the time left."""
    line = f"iteration {state.iteration} of at most {state.max_iterations} ({state.stage}), {state.elapsed:.0f} s"
    if seconds:
        line += f", {max(0.0, seconds - state.elapsed):.0f} s left of {seconds:.0f} s"
    else:
        line += ", no time budget"
    return line


def _check_video(video: MultiViewVideo, cfg: FitConfig):
    if not isinstance(video, MultiViewVideo):
        raise InputError("multiview", f"expected a multi-view video, got {type(video).__name__}")
    check_character(video, "multiview")  # views that cannot show a character: refused before any work
    if cfg.iterations < 1:
        raise InputError("iterations", f"expected at least 1 iteration, got {cfg.iterations}")
    if cfg.seconds is not None and not cfg.seconds > 0:
        raise InputError("seconds", f"expected a positive time budget, got {cfg.seconds}")
    if cfg.sh_degree not in (0, 1, 2, 3):
        raise InputError("sh_degree", f"expected 0 to 3, got {cfg.sh_degree}")
    if cfg.batch_views < 1:
        raise InputError("batch_views", f"expected at least 1, got {cfg.batch_views}")
    if cfg.motion not in ("table", "hexplane"):
        raise InputError("motion", f"expected 'table' or 'hexplane', got {cfg.motion!r}")


def initialize(video: MultiViewVideo, cfg: FitConfig, initial: Gaussians4D | None = None) -> Gaussians4D:
    """The initial model: Gaussians on the visual hull of the middle frame, or ``initial`` (static Gaussians, at most
    ``init_points`` of them) (+ for videos, identity trajectories, or an identity HexPlane field bounded by the
    Gaussians' box padded by a quarter; a static input gets no motion)."""
    nt = video.num_frames
    mid = nt // 2
    if initial is None:
        res = cfg.hull_resolution or int(min(160, max(48, video.width, video.height)))
        pts, cols, spacing = visual_hull(video.images(frames=[mid])[:, 0], video.rig, cfg.init_points, res,
                                         seed=cfg.seed)
    else:
        from ..formats.splat_type import subsample, with_motion

        initial = subsample(initial, cfg.init_points, cfg.seed)
        pts = initial.splats["means"].detach().cpu()
    field_cfg = None
    bounds = None
    motion = cfg.motion if nt > 1 else None
    if motion not in (None, "table", "hexplane"):
        raise InputError("motion", f"expected 'table' or 'hexplane', got {cfg.motion!r}")
    if motion == "hexplane":
        field_cfg = dict(cfg.field)
        r = list(field_cfg["resolution"])
        # no more time cells than needed for a grid row at every frame (frames i/(T-1): T cells)
        gaps = [b - a for a, b in zip(video.times, video.times[1:])]
        need = int(math.ceil(1.0 / max(1e-6, min(gaps)) - 1e-6)) + 1
        r[3] = max(2, min(int(r[3]), need))
        field_cfg["resolution"] = r
        bounds = scene_bounds(pts, pad=0.25)
    if initial is not None:
        model = with_motion(initial, cfg.sh_degree, video.times, field_cfg, bounds, motion)
    else:
        model = make_gaussians(pts, cols, spacing * cfg.init_scale, cfg.sh_degree, video.times, field_cfg,
                               cfg.init_opacity, bounds, motion=motion)
    model.config["rasterize_mode"] = cfg.rasterize_mode
    return model


def fit(video: MultiViewVideo, config: FitConfig | None = None, callback=None,
        initial: Gaussians4D | None = None) -> FitResult:
    """Fit Gaussians to ``video`` (its views are all training views). See the module docstring. ``initial``: static
    Gaussians to start from instead of the visual hull (``splat_type.splat_to_gaussians`` makes them from a SPLAT)."""
    cfg = config or FitConfig()
    _check_video(video, cfg)
    anchors = None
    drifted = False
    if cfg.background_estimate:
        if cfg.saturated_colour:
            anchors = white_balanced(video)
        whitened = whiten_video(video)
        drifted, video = whitened is not video, whitened
    mode = cfg.colour_field if isinstance(cfg.colour_field, str) else ("on" if cfg.colour_field else "off")
    if mode not in COLOUR_FIELD_MODES:
        raise InputError("colour_field", f"expected one of {', '.join(COLOUR_FIELD_MODES)}, got {cfg.colour_field!r}")
    cfg = replace(cfg, colour_field="on" if mode == "on" or (mode == "auto" and drifted) else "off")
    if cfg.rigidity_weight is None:
        table = cfg.motion == "table" and video.num_frames > 1
        cfg = replace(cfg, rigidity_weight=1.0 if table else 0.0)
    with torch.inference_mode(False), torch.enable_grad():
        return _Training(video, cfg, callback, initial, anchors).run()


class _Training:
    """One fit: the loop every motion model shares (time budget and progress, the NaN/inf checks and the last good
    state, densification, the gsplat fallback, the history and the callback) around the model's schedule."""

    def __init__(self, video: MultiViewVideo, cfg: FitConfig, callback, initial: Gaussians4D | None, anchors=None):
        from ..raster.render import resolve_backend

        strategy_cls = _default_strategy()  # first: without gsplat nothing else is worth starting
        self.t_start = time.perf_counter()
        self.video, self.cfg, self.callback = video, cfg, callback
        self.device = device = pick_device(cfg.backend, cfg.device)
        self.backend = cfg.backend  # the user's choice reaches every render: "auto" can fall back to torch any time
        self.used_backend = resolve_backend(self.backend, torch.device(device))
        torch.manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)

        self.model = model = initialize(video, cfg, initial).to(device)
        self.init_seconds = time.perf_counter() - self.t_start
        if cfg.seconds is not None and self.init_seconds >= cfg.seconds:
            raise InputError("seconds", f"a time budget of {cfg.seconds:g} s is too small: preparing the data and "
                                        f"the initial Gaussians alone took {self.init_seconds:.1f} s; allow at least "
                                        f"{math.ceil(self.init_seconds * 2 + 5)} s")
        scene_scale = _scene_scale(video.rig)
        self.vm_all, self.ks_all = video.rig.viewmats(device=device), video.rig.Ks(device=device)
        self.gt_all = video.pixels.to(device)  # uint8 (no copy on the CPU); each batch becomes float where used
        self.schedule = make_schedule(cfg, model, video, scene_scale, device, self.rng, gen)

        # one Adam per Gaussian parameter (DefaultStrategy's contract); the schedule's own optimisers beside them
        self.base_lr = {"means": cfg.lr_means * scene_scale, "scales": cfg.lr_scales, "quats": cfg.lr_quats,
                        "opacities": cfg.lr_opacities, "sh0": cfg.lr_sh0, "shN": cfg.lr_shN,
                        **self.schedule.base_lrs()}
        self.optims = {k: (FrameAdam if k in TABLE_KEYS else torch.optim.Adam)(
            [{"params": [p], "lr": self.base_lr[k], "name": k}], eps=1e-15) for k, p in model.splats.items()}
        self.strategy = strategy_cls(prune_opa=cfg.prune_opa, grow_grad2d=cfg.grow_grad2d,
                                     grow_scale3d=cfg.grow_scale3d, refine_start_iter=0, refine_stop_iter=1 << 60,
                                     reset_every=1 << 60, refine_every=1000, verbose=False)
        self.strategy.check_sanity(model.splats, self.optims)
        self.corr = ViewCorrections(cfg, video.num_views, video.num_frames, scene_scale, device, self.vm_all,
                                    _look_at(video.rig), anchors, size=(video.width, video.height))
        self.sstate = self.strategy.initialize_state(scene_scale=scene_scale)
        self.schedule.attach(self.optims, self.sstate)
        self.refine_count = 0
        self.guard = DivergenceGuard(model, cfg.check_every, device)
        self.history = []
        self.train_views = list(range(video.num_views))
        self.pose_check = None  # what the camera refinement had learned at the static stage's end, kept or not

    def check_pose(self, it: int) -> None:
        """At the static stage's end: keep the camera refinement only where it found a misalignment. Each view's
        correction is measured as the mean shift (px) it gives the Gaussians' centres in its picture. On consistent
        views what the static stage learns is the model's own error (0.05 px on average at the demo's 180x120,
        against 0.66 px for views drawn off the rig as ``degrade``'s misalignment does), and keeping it costs those
        views a little; so when the mean over the views is below ``pose_keep`` x the image's long side, the
        corrections are reset to the rig and frozen."""
        pose = self.corr.pose
        if pose is None or pose.frozen:
            self.pose_check = {}
            return
        means = self.model.splats["means"].detach()
        pts = means[torch.randperm(means.shape[0], generator=torch.Generator().manual_seed(self.cfg.seed))[:4096]
                    .to(means.device)]
        shift = pose.image_shift(self.vm_all, self.ks_all, pts)
        limit = self.cfg.pose_keep * max(self.video.width, self.video.height)
        keep = not (limit > 0 and float(shift.mean()) < limit)
        if not keep:
            pose.freeze()
        self.pose_check = {"iteration": it, "shift_px_mean": round(float(shift.mean()), 4),
                           "shift_px_max": round(float(shift.max()), 4), "limit_px": round(limit, 4), "kept": keep}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def progress(self, it: int) -> float:
        p = it / self.cfg.iterations
        if self.cfg.seconds is not None:
            p = max(p, self.elapsed() / self.cfg.seconds)
        return p

    def preview(self) -> torch.Tensor:
        video, mid = self.video, self.video.num_frames // 2
        times = [video.times[mid]] if video.num_frames > 1 else None
        return render_views(self.model, video.rig.select([0]), times, self.backend, self.device)[0, 0]

    def run(self) -> FitResult:
        cfg, schedule = self.cfg, self.schedule
        it = 0
        t_prev, it_dt = None, 0.0  # the last iteration's duration: a budget stops before an iteration overruns it
        while it < cfg.iterations:
            now = time.perf_counter()
            if t_prev is not None:
                it_dt = now - t_prev
            t_prev = now
            p = self.progress(it)
            if p >= 1.0:
                break
            if cfg.seconds is not None and it >= cfg.min_iterations and now - self.t_start + it_dt > cfg.seconds:
                break
            it += 1
            if self.pose_check is None and p >= cfg.coarse_fraction:
                self.check_pose(it)
            if schedule.moves and schedule.stage == "coarse" and p >= cfg.coarse_fraction:
                if schedule.start_motion(self.elapsed):  # it took time: not an iteration's duration
                    t_prev = None
                    p = self.progress(it)
                    if cfg.seconds is not None and self.elapsed() >= cfg.seconds and it > 1:
                        it -= 1  # the time budget is spent: no iteration past it
                        break
            schedule.update_stage(p)
            if not self.iteration(it, p):
                it -= 1  # done again with the torch rasteriser
        return self.finish(it)

    def set_lrs(self, p: float) -> None:
        cfg, optims, base_lr = self.cfg, self.optims, self.base_lr
        optims["means"].param_groups[0]["lr"] = base_lr["means"] * lr_factor(p, cfg.lr_final_factor)
        other = lr_factor(p, cfg.lr_final_factor_other)
        for k in ("scales", "quats", "opacities", "sh0", "shN"):
            optims[k].param_groups[0]["lr"] = base_lr[k] * other
        self.schedule.set_lrs(p, base_lr)
        self.corr.set_lrs(p)

    def iteration(self, it: int, p: float) -> bool:
        """One iteration; False when gsplat failed in the backward pass and the iteration must be done again."""
        cfg, schedule, model, video = self.cfg, self.schedule, self.model, self.video
        self.set_lrs(p)
        fi = schedule.pick_frame(p)
        cams = self.rng.sample(self.train_views, min(cfg.batch_views, len(self.train_views)))
        t = schedule.time_of(fi)
        sh_deg = min(cfg.sh_degree, int(p / 0.1)) if cfg.sh_degree > 0 else 0
        self.guard.start_iteration(it)

        cur = schedule.state_at(fi, t)  # computed once: rendered and constrained
        img, alpha, info = render_model(model, self.corr.viewmats(self.vm_all, cams), self.ks_all[cams], video.width,
                                        video.height, t, self.backend, sh_deg, packed=False, deformed=cur,
                                        check_finite=False)
        self.used_backend = info.get("backend", self.used_backend)
        gt = to_float(self.gt_all[cams, fi])
        img = self.corr.corrected(img, cams, fi, alpha)
        active = {fi}  # the frames whose trajectory rows get gradients
        loss = schedule.regularise(self.corr.loss(img, gt), img, gt, cur, fi, t, active)
        self.guard.flag_loss(it, loss)

        self.strategy.step_pre_backward(model.splats, self.optims, self.sstate, it, info)
        if not self.backward(it, loss):
            return False
        self.guard.flag_gradients(it)
        self.optimise(it, p, active, info)
        self.record(it, loss.detach(), fi, cams)
        return True

    def backward(self, it: int, loss: torch.Tensor) -> bool:
        from ..raster.render import GsplatUnavailableError, is_gsplat_failure, mark_gsplat_unusable

        try:
            loss.backward()
        except Exception as e:
            # gsplat's backward kernels can fail where its forward ran (a card its build has no kernels for):
            # under "auto" redo this iteration with the torch rasteriser, as a failed forward does
            if self.used_backend != "gsplat" or not is_gsplat_failure(e):
                raise
            reason = mark_gsplat_unusable(e)
            if str(self.backend).lower().strip() != "auto":
                raise GsplatUnavailableError(reason) from e
            for opt in [*self.optims.values(), *self.schedule.extra_optimisers()]:
                opt.zero_grad(set_to_none=True)
            self.corr.zero_grad()
            self.guard.unflag(it)
            self.used_backend = "torch"
            return False
        return True

    def optimise(self, it: int, p: float, active: set, info: dict) -> None:
        cfg, model = self.cfg, self.model
        # densification: a virtual step that is a multiple of refine_every only when we want to refine
        do_refine = (cfg.densify and cfg.densify_from <= p <= cfg.densify_until and it % cfg.densify_every == 0
                     and model.num_gaussians < cfg.max_gaussians)
        if cfg.densify and p <= cfg.densify_until:
            if do_refine:
                self.refine_count += 1
                vstep = self.strategy.refine_every * self.refine_count
            else:
                vstep = self.strategy.refine_every * self.refine_count + 1
            _step_all(self.optims, active)
            self.strategy.step_post_backward(model.splats, self.optims, self.sstate, vstep, info, packed=False)
        else:
            _step_all(self.optims, active)
        self.corr.step()
        self.schedule.step_extra()

    def record(self, it: int, loss_t: torch.Tensor, fi: int, cams) -> None:
        """The history (every 10th iteration), the snapshot of the last good state, the callback."""
        cfg, model, stage = self.cfg, self.model, self.schedule.stage
        if it % 10 == 0 or it == 1:
            self.history.append({"iteration": it, "loss": loss_t, "gaussians": model.num_gaussians, "stage": stage,
                                 "seconds": round(self.elapsed(), 3)})
        if it % cfg.snapshot_every == 0:
            self.guard.snapshot(it)
        if self.callback is not None:
            self.callback(FitState(it, cfg.iterations, min(1.0, self.progress(it)), stage, loss_t,
                                   model.num_gaussians, self.elapsed(), model, self.preview, fi, tuple(cams)))

    def finish(self, it: int) -> FitResult:
        cfg, model = self.cfg, self.model
        self.guard.finish(it)
        for h_ in self.history:
            h_["loss"] = float(h_["loss"])
        if it < min(cfg.min_iterations, cfg.iterations):
            raise InputError("seconds", f"a time budget of {cfg.seconds:g} s is too small: only {it} iteration(s) "
                                        f"fitted (initialisation took {self.init_seconds:.1f} s); allow more time")
        for p_ in model.parameters():
            p_.requires_grad_(False)
        model.train(False)  # eval mode
        flow_stats = self.schedule.finish()
        result = FitResult(model, it, self.elapsed(), self.init_seconds, self.used_backend, self.device,
                           self.history, cfg.to_dict())
        result.flow_stats = flow_stats
        result.view_corrections = self.corr  # the learned per-view corrections (robust.ViewCorrections), never rendered
        result.repairs = getattr(self.schedule, "repairs", [])
        result.pose_check = self.pose_check or {}
        return result


def _look_at(rig) -> torch.Tensor:
    """The scene's centre: the point closest to every camera's axis (camera refinement's gauge)."""
    from .init import look_at_point

    return torch.as_tensor(np.asarray(look_at_point(rig), np.float32))


def _scene_scale(rig) -> float:
    """1.1 x the largest distance of a camera from the cameras' centroid (from the origin if they coincide)."""
    centres = rig.centers
    scene_scale = float(np.linalg.norm(centres - centres.mean(0), axis=1).max()) * 1.1
    if not scene_scale > 0:
        scene_scale = float(np.linalg.norm(centres, axis=1).max()) * 1.1
    return scene_scale


def _default_strategy():
    """gsplat's ``DefaultStrategy`` class: 3DGS densification and pruning (gsplat is a hard requirement)."""
    try:
        from gsplat.strategy import DefaultStrategy
    except Exception as e:  # missing package, broken install, an error raised while importing it
        raise CharacterShotError(f"the 4D fit needs the gsplat package (gsplat>=1.5, in requirements.txt) to densify "
                                 f"the Gaussians, and `from gsplat.strategy import DefaultStrategy` failed "
                                 f"({type(e).__name__}: {e}). Install it into ComfyUI's Python environment: "
                                 f"python -m pip install \"gsplat>=1.5\"") from None
    return DefaultStrategy


def _step_all(optims: dict, active) -> None:
    for k, opt in optims.items():
        if k in TABLE_KEYS:
            opt.step(active)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

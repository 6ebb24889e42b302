"""Fitting canonical Gaussians + HexPlane deformation to multi-view videos (the paper's 4D stage, done correctly).

Schedule (``FitConfig``; progress p in [0, 1] is the larger of iterations done / ``iterations`` and seconds spent /
``seconds``, so a time budget compresses the whole schedule rather than cutting it short):

1. visual-hull initialisation from the silhouettes of the middle frame (``init.visual_hull``);
2. static coarse stage on the middle frame (static input: the whole fit; no deformation field is built);
3. deformation stage: each iteration samples one frame and ``batch_views`` training cameras, deforms the Gaussians
   to that time and renders them; loss = L1 + λ D-SSIM on white at the canvas resolution with the rig's intrinsics,
   + the HexPlane regularisers + the neighbour constraint (spec §C.7, with gradients, KNN graph on the canonical
   centres rebuilt after every densification) + optional rigidity / isometry.
   Optional progressive temporal windows grow from the middle frame (the paper's intent, §C.5).

Densification and pruning use gsplat's ``DefaultStrategy`` (pure torch: any device, both rasteriser backends) on the
canonical parameters, fed with the screen-space gradients of the (deformed) Gaussians.
Every iteration checks the parameters, loss and gradients for NaN/inf on the device, without waiting for it; the
host reads those flags every ``check_every`` iterations and before each snapshot of the last good state: on the first
bad iteration the fit restores that state and raises :class:`FitDivergedError` (the exact iteration number and what
broke, the state attached).

Rendering uses the configured ``backend`` on every call: under ``"auto"`` a gsplat failure (at its build, in a
forward or in a backward pass) is logged once and the fit goes on with the torch rasteriser on the same device
(``render.mark_gsplat_unusable``). ``device`` (ComfyUI's torch device in the nodes) is where the fit runs, for
either rasteriser.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ...errors import CharacterShotError, InputError
from . import losses
from .data import MultiViewVideo, check_character, to_float
from .init import visual_hull
from .background import whiten_video
from ..model import DEFAULT_FIELD, TABLE_KEYS, Gaussians4D, make_gaussians, scene_bounds
from ..raster.precision import all_finite
from .robust import DEFAULTS as ROBUST_DEFAULTS
from .robust import ViewCorrections
from ..raster.views import pick_device, render_model, render_views
from ..rotations import quat_mul
from .trajectory import FrameAdam, flow_init, temporal_smoothness


class FitDivergedError(CharacterShotError):
    """NaN or infinity appeared during fitting. ``model`` holds the last good state, ``iteration`` where it broke."""

    def __init__(self, iteration: int, what: str, model: Gaussians4D | None, good_iteration: int):
        self.iteration, self.what, self.model, self.good_iteration = iteration, what, model, good_iteration
        super().__init__(f"fitting diverged at iteration {iteration}: {what} became NaN or infinite; the last good "
                         f"state (iteration {good_iteration}) was kept")


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
    # views like a video model's (robust.py): the background estimated from each image's border (background.py),
    # a per-view affine colour + per-view-and-frame gain applied to the render in the loss only (appearance.py),
    # a per-view SE(3) refinement of the training cameras (camera_refine.py), the per-pixel penalty
    background_estimate: bool = ROBUST_DEFAULTS["background_estimate"]
    appearance: bool = ROBUST_DEFAULTS["appearance"]
    lr_appearance: float = 5e-3
    appearance_reg: float = 1e-2
    pose_refine: bool = ROBUST_DEFAULTS["pose_refine"]
    lr_pose: float = 2e-4
    pose_reg: float = 1e-2
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


def _lr_factor(p: float, final: float) -> float:
    return final ** min(max(p, 0.0), 1.0)


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
    if cfg.background_estimate:
        video = whiten_video(video)
    if cfg.rigidity_weight is None:
        import dataclasses

        table = cfg.motion == "table" and video.num_frames > 1
        cfg = dataclasses.replace(cfg, rigidity_weight=1.0 if table else 0.0)
    with torch.inference_mode(False), torch.enable_grad():
        return _fit(video, cfg, callback, initial)


def _fit(video: MultiViewVideo, cfg: FitConfig, callback, initial: Gaussians4D | None = None) -> FitResult:
    from ..raster.render import GsplatUnavailableError, is_gsplat_failure, mark_gsplat_unusable, resolve_backend

    DefaultStrategy = _default_strategy()  # first: without gsplat nothing else is worth starting
    t_start = time.perf_counter()
    device = pick_device(cfg.backend, cfg.device)
    backend = cfg.backend  # the user's choice reaches every render: "auto" can fall back to torch at any time
    used_backend = resolve_backend(backend, torch.device(device))
    check_every = max(1, int(cfg.check_every))
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    pixels = video.pixels  # (V, T, H, W, 3) uint8; each batch becomes float where it is used
    rig = video.rig
    v, nt, h, w, _ = pixels.shape
    dynamic = nt > 1
    mid = nt // 2

    # 1) initialisation
    model = initialize(video, cfg, initial).to(device)
    init_seconds = time.perf_counter() - t_start
    if cfg.seconds is not None and init_seconds >= cfg.seconds:
        raise InputError("seconds", f"a time budget of {cfg.seconds:g} s is too small: preparing the data and the "
                                    f"initial Gaussians alone took {init_seconds:.1f} s; allow at least "
                                    f"{math.ceil(init_seconds * 2 + 5)} s")

    centres = rig.centers
    scene_scale = float(np.linalg.norm(centres - centres.mean(0), axis=1).max()) * 1.1
    if not scene_scale > 0:
        scene_scale = float(np.linalg.norm(centres, axis=1).max()) * 1.1
    vm_all = rig.viewmats(device=device)
    ks_all = rig.Ks(device=device)
    gt_all = pixels.to(device)  # uint8 (no copy on the CPU)

    # 2) optimisers: one Adam per Gaussian parameter (DefaultStrategy's contract), one for the field
    base_lr = {"means": cfg.lr_means * scene_scale, "scales": cfg.lr_scales, "quats": cfg.lr_quats,
               "opacities": cfg.lr_opacities, "sh0": cfg.lr_sh0, "shN": cfg.lr_shN}
    table = model.motion == "table"
    if table:
        base_lr["traj_means"] = cfg.lr_traj_means * scene_scale
        base_lr["traj_quats"] = cfg.lr_traj_quats
    optims = {k: (FrameAdam if k in TABLE_KEYS else torch.optim.Adam)(
        [{"params": [p], "lr": base_lr[k], "name": k}], eps=1e-15) for k, p in model.splats.items()}
    field_opt = None
    if model.deformation is not None:
        field_opt = torch.optim.Adam([
            {"params": model.deformation.grid_parameters(), "lr": cfg.lr_grid * scene_scale, "name": "grid"},
            {"params": model.deformation.mlp_parameters(), "lr": cfg.lr_mlp * scene_scale, "name": "mlp"},
        ], eps=1e-15)
    strategy = DefaultStrategy(prune_opa=cfg.prune_opa, grow_grad2d=cfg.grow_grad2d, grow_scale3d=cfg.grow_scale3d,
                               refine_start_iter=0, refine_stop_iter=1 << 60, reset_every=1 << 60,
                               refine_every=1000, verbose=False)
    strategy.check_sanity(model.splats, optims)
    corr = ViewCorrections(cfg, v, nt, scene_scale, device)
    sstate = strategy.initialize_state(scene_scale=scene_scale)
    refine_count = 0
    # trajectory table: the outward sweep's frame order and the per-frame error estimates of the global stage
    sweep_order = sorted((f for f in range(nt) if f != mid), key=lambda f: (abs(f - mid), f < mid))
    swept = [mid]
    sweep_slot = -1
    frame_err = [None] * nt
    pending_err = []  # (frame, loss tensor) not yet read back (no host sync per iteration)
    flow_stats = {}

    def progress(it: int) -> float:
        p = it / cfg.iterations
        if cfg.seconds is not None:
            p = max(p, (time.perf_counter() - t_start) / cfg.seconds)
        return p

    # the snapshot of the last good state
    good = {"it": 0, "tensors": {k: x.clone() for k, x in model.state_tensors().items()}, "config": model.config}

    def restore_good() -> Gaussians4D:
        return Gaussians4D.from_tensors(good["tensors"], good["config"])

    edges = None
    edges_n = -1
    history = []
    bg_frames = list(range(nt))
    train_views = list(range(v))

    def preview_fn():
        return render_views(model, rig.select([0]), [video.times[mid]] if dynamic else None, backend, device)[0, 0]

    # NaN/inf flags of the iterations since the last host check: 0 fine, else the index into BROKE + 1
    flags = torch.zeros(check_every, dtype=torch.int8, device=device)
    flag_from = 1  # the iteration of flags[0]
    broke = ("the Gaussian parameters", "the loss", "the gradients")

    def check_flags(upto: int):
        """Read the flags of iterations flag_from..upto (one host sync); raise FitDivergedError on the first bad."""
        nonlocal flag_from
        n = upto - flag_from + 1
        if n <= 0:
            return
        codes = flags[:n].tolist()
        bad = next((k for k, c in enumerate(codes) if c), None)
        if bad is not None:
            raise FitDivergedError(flag_from + bad, broke[codes[bad] - 1], restore_good(), good["it"])
        flags.zero_()
        flag_from = upto + 1

    def flag(it_: int, ok: torch.Tensor, code: int):
        slot = flags[it_ - flag_from]
        slot.copy_(torch.where((slot == 0) & ~ok, torch.full_like(slot, code), slot))

    it = 0
    stage = "coarse"
    loss_t = torch.full((), float("nan"))
    t_prev, it_dt = None, 0.0  # the last iteration's duration: a budget stops before an iteration would overrun it
    while it < cfg.iterations:
        now = time.perf_counter()
        if t_prev is not None:
            it_dt = now - t_prev
        t_prev = now
        p = progress(it)
        if p >= 1.0:
            break
        if cfg.seconds is not None and it >= cfg.min_iterations and now - t_start + it_dt > cfg.seconds:
            break
        it += 1
        if dynamic and stage == "coarse" and p >= cfg.coarse_fraction:
            stage = "fine"
            if table:
                stage = "sweep"
                if cfg.flow_init:
                    allow = None
                    if cfg.seconds is not None:  # at most a quarter of the budget, and what is left of it
                        left = cfg.seconds - (time.perf_counter() - t_start)
                        allow = max(0.0, min(0.25 * cfg.seconds, 0.5 * left))
                    flow_stats = _table_flow_init(model, pixels, rig, mid, sstate, allow)
                    nb = flow_stats.pop("knn", None)
                    if nb is not None and nb.shape[0] == model.num_gaussians:  # reuse its neighbours for the graph
                        edges = losses.graph_from_knn(nb[:, :cfg.knn_k].to(device))
                        edges_n = model.num_gaussians
                t_prev = None  # the flow initialisation is not an iteration's duration
                p = progress(it)
                if (cfg.seconds is not None and time.perf_counter() - t_start >= cfg.seconds
                        and it > 1):  # the time budget is spent: no iteration past it
                    it -= 1
                    break
        if table and stage == "sweep" and (p >= cfg.coarse_fraction + cfg.sweep_fraction or not sweep_order):
            stage = "global"
        # --- learning rates
        decay = _lr_factor(p, cfg.lr_final_factor)
        optims["means"].param_groups[0]["lr"] = base_lr["means"] * decay
        if table:
            if stage != "coarse":  # the canonical centres stay; each frame's row moves
                optims["means"].param_groups[0]["lr"] = 0.0
            dp = (p - cfg.coarse_fraction) / max(1e-6, 1 - cfg.coarse_fraction)
            td = _lr_factor(dp, cfg.lr_final_factor)
            optims["traj_means"].param_groups[0]["lr"] = base_lr["traj_means"] * td
            optims["traj_quats"].param_groups[0]["lr"] = base_lr["traj_quats"] * _lr_factor(dp, 0.1)
        other = _lr_factor(p, cfg.lr_final_factor_other)
        for k in ("scales", "quats", "opacities", "sh0", "shN"):
            optims[k].param_groups[0]["lr"] = base_lr[k] * other
        if field_opt is not None:
            fp = (p - cfg.coarse_fraction) / max(1e-6, 1 - cfg.coarse_fraction)
            fd = _lr_factor(fp, cfg.lr_final_factor_field)
            field_opt.param_groups[0]["lr"] = cfg.lr_grid * scene_scale * fd
            field_opt.param_groups[1]["lr"] = cfg.lr_mlp * scene_scale * fd
        # --- sample a frame and a batch of cameras
        nb_frame = None  # table: the neighbouring frame the regularisers compare with
        if stage == "coarse":
            fi = mid
        elif stage == "sweep":
            sp = (p - cfg.coarse_fraction) / max(1e-6, cfg.sweep_fraction)
            slot = min(len(sweep_order) - 1, int(sp * len(sweep_order)))
            while sweep_slot < slot:  # a new frame: warm start from its inner neighbour's refined row
                sweep_slot += 1
                f_new = sweep_order[sweep_slot]
                _warm_start(model, f_new, f_new - 1 if f_new > mid else f_new + 1, sstate)
                swept.append(f_new)
            if rng.random() < cfg.sweep_replay and len(swept) > 2:
                fi = rng.choice(swept[:-1])
            else:
                fi = swept[-1]
            nb_frame = fi - 1 if fi > mid else (fi + 1 if fi < mid else None)
        elif stage == "global":
            if pending_err:  # one host sync for the losses of the last iterations
                for (f_, _), e_ in zip(pending_err, torch.stack([e for _, e in pending_err]).tolist()):
                    frame_err[f_] = e_ if frame_err[f_] is None else 0.8 * frame_err[f_] + 0.2 * e_
                pending_err.clear()
            fi = _pick_frame(frame_err, rng)
            nb_frame = fi + rng.choice([-1, 1]) if 0 < fi < nt - 1 else (1 if fi == 0 else nt - 2)
        elif cfg.temporal_windows:
            fp = (p - cfg.coarse_fraction) / max(1e-6, 1 - cfg.coarse_fraction)
            half = int(math.ceil(fp * 1.25 * (nt / 2)))  # the window covers everything by 80% of the fine stage
            lo_i, hi_i = max(0, mid - half), min(nt - 1, mid + half)
            fi = rng.randint(lo_i, hi_i)
        else:
            fi = rng.choice(bg_frames)
        cams = rng.sample(train_views, min(cfg.batch_views, v))
        t = float(video.times[fi]) if (stage in ("fine", "sweep", "global") and dynamic) else None
        sh_deg = min(cfg.sh_degree, int(p / 0.1)) if cfg.sh_degree > 0 else 0

        if it - flag_from >= check_every:
            check_flags(it - 1)
        flag(it, _finite_t(list(model.parameters())), 1)

        if table and t is not None:
            cur = model.frame_state(fi)
        else:
            cur = model.deformed(t) if t is not None else None  # computed once: rendered and constrained
        img, alpha, info = render_model(model, corr.viewmats(vm_all, cams), ks_all[cams], w, h, t, backend, sh_deg,
                                        packed=False, deformed=cur, check_finite=False)
        used_backend = info.get("backend", used_backend)
        gt = to_float(gt_all[cams, fi])
        img = corr.corrected(img, cams, fi)
        loss = corr.loss(img, gt)
        active = {fi}
        if table and t is not None:
            pending_err.append((fi, loss.detach()))
            if cfg.coarse_image_weight > 0:
                loss = loss + cfg.coarse_image_weight * _coarse_l1(img, gt, 8)
            if nb_frame is not None and (cfg.neighbour_weight > 0 or cfg.rigidity_weight > 0
                                      or cfg.isometry_weight > 0 or cfg.table_smoothness_weight > 0):
                n_now = model.num_gaussians
                if edges is None or edges_n != n_now:  # rebuilt after every densification
                    edges = losses.knn_graph(model.splats["means"], cfg.knn_k)
                    edges_n = n_now
                nodes, sub = losses.sample_edges(edges, n_now, cfg.neighbour_nodes, gen)
                loss = loss + _table_regularisers(model, cfg, cur, fi, nb_frame, nodes, sub, stage, video.times, nt,
                                                  active)
        if stage == "fine" and model.deformation is not None and not table:
            grid = model.deformation.grid
            if cfg.plane_tv_weight:
                loss = loss + cfg.plane_tv_weight * grid.space_smoothness()
            if cfg.time_smoothness_weight:
                loss = loss + cfg.time_smoothness_weight * grid.time_smoothness()
            if cfg.l1_time_planes:
                loss = loss + cfg.l1_time_planes * grid.time_l1()
            if cfg.neighbour_weight > 0 or cfg.rigidity_weight > 0 or cfg.isometry_weight > 0:
                n_now = model.num_gaussians
                if edges is None or edges_n != n_now:  # rebuilt after every densification
                    edges = losses.knn_graph(model.splats["means"], cfg.knn_k)
                    edges_n = n_now
                # the other time: the window edge (progressive windows) or a neighbouring frame
                if cfg.temporal_windows:
                    pi = lo_i if fi <= mid else hi_i
                    pi = pi if pi != fi else (fi - 1 if fi > 0 else min(nt - 1, fi + 1))
                else:
                    pi = fi + rng.choice([-1, 1])
                    pi = min(nt - 1, max(0, pi)) if 0 <= pi < nt else (fi - 1 if fi > 0 else fi + 1)
                t_prev = float(video.times[pi])
                # a random subset of centre nodes with all their edges: an unbiased estimate at a fraction of
                # the cost (the other time's deformation is only evaluated where it is needed)
                nodes, sub = losses.sample_edges(edges, n_now, cfg.neighbour_nodes, gen)
                sp = model.splats
                xc, qc = cur[0][nodes], cur[2][nodes]
                xp, _, qp = model.deformation(sp["means"][nodes], sp["scales"][nodes], sp["quats"][nodes], t_prev)
                if cfg.neighbour_weight > 0:
                    nl, lam = losses.neighbour_loss(xc, xp, sub, t, t_prev, cfg.motion_threshold)
                    loss = loss + cfg.neighbour_weight * lam * nl
                if cfg.isometry_weight > 0:
                    loss = loss + cfg.isometry_weight * losses.isometry_loss(xc, sp["means"][nodes], sub)
                if cfg.rigidity_weight > 0:
                    loss = loss + cfg.rigidity_weight * losses.rigidity_loss(xc, qc, xp, qp, sub)

        flag(it, torch.isfinite(loss.detach()), 2)

        strategy.step_pre_backward(model.splats, optims, sstate, it, info)
        try:
            loss.backward()
        except Exception as e:
            # gsplat's backward kernels can fail where its forward ran (a card its build has no kernels for):
            # under "auto" redo this iteration with the torch rasteriser, as a failed forward does
            if used_backend != "gsplat" or not is_gsplat_failure(e):
                raise
            reason = mark_gsplat_unusable(e)
            if str(backend).lower().strip() != "auto":
                raise GsplatUnavailableError(reason) from e
            for opt in [*optims.values(), *([field_opt] if field_opt is not None else [])]:
                opt.zero_grad(set_to_none=True)
            corr.zero_grad()
            flags[it - flag_from] = 0
            used_backend = "torch"
            it -= 1
            continue
        flag(it, _finite_t([p_.grad for p_ in model.parameters() if p_.grad is not None]), 3)

        # densification: a virtual step that is a multiple of refine_every only when we want to refine
        do_refine = (cfg.densify and cfg.densify_from <= p <= cfg.densify_until and it % cfg.densify_every == 0
                     and model.num_gaussians < cfg.max_gaussians)
        if cfg.densify and p <= cfg.densify_until:
            if do_refine:
                refine_count += 1
                vstep = strategy.refine_every * refine_count
            else:
                vstep = strategy.refine_every * refine_count + 1
            _step_all(optims, active)
            strategy.step_post_backward(model.splats, optims, sstate, vstep, info, packed=False)
        else:
            _step_all(optims, active)
        corr.step()
        if field_opt is not None:
            if stage == "fine":
                field_opt.step()
            field_opt.zero_grad(set_to_none=True)

        loss_t = loss.detach()
        if it % 10 == 0 or it == 1:
            history.append({"iteration": it, "loss": loss_t, "gaussians": model.num_gaussians, "stage": stage,
                            "seconds": round(time.perf_counter() - t_start, 3)})
        if it % cfg.snapshot_every == 0:
            # a snapshot only of a state whose every iteration was checked, and whose parameters are finite now
            flag(it, _finite_t(list(model.parameters())), 1)
            check_flags(it)
            good = {"it": it, "tensors": {k: x.clone() for k, x in model.state_tensors().items()},
                    "config": json_copy(model.config)}
        if callback is not None:
            callback(FitState(it, cfg.iterations, min(1.0, progress(it)), stage, loss_t, model.num_gaussians,
                              time.perf_counter() - t_start, model, preview_fn, fi, tuple(cams)))

    if it >= flag_from:
        flag(it, _finite_t(list(model.parameters())), 1)
        check_flags(it)
    if not model.all_finite():
        bad = restore_good()
        raise FitDivergedError(it, "the Gaussian parameters", bad, good["it"])
    for h_ in history:
        h_["loss"] = float(h_["loss"])
    if it < min(cfg.min_iterations, cfg.iterations):
        raise InputError("seconds", f"a time budget of {cfg.seconds:g} s is too small: only {it} iteration(s) fitted "
                                    f"(initialisation took {init_seconds:.1f} s); allow more time")
    for p_ in model.parameters():
        p_.requires_grad_(False)
    model.train(False)  # eval mode
    sstate.pop("traj_init", None)
    result = FitResult(model, it, time.perf_counter() - t_start, init_seconds, used_backend, device, history,
                       cfg.to_dict())
    result.flow_stats = flow_stats
    return result


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


def _coarse_l1(img: torch.Tensor, gt: torch.Tensor, k: int) -> torch.Tensor:
    """L1 between (B, H, W, 3) images average-pooled by ``k``: a limb rendered up to ~k pixels away from its target
    still overlaps it there, so it gets a pull instead of fading."""
    from torch.nn import functional as F_

    a = F_.avg_pool2d(img.permute(0, 3, 1, 2), k, ceil_mode=True)
    b = F_.avg_pool2d(gt.permute(0, 3, 1, 2), k, ceil_mode=True)
    return (a - b).abs().mean()


def _step_all(optims: dict, active) -> None:
    for k, opt in optims.items():
        if k in TABLE_KEYS:
            opt.step(active)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)


def _table_flow_init(model: Gaussians4D, frames, rig, mid: int, sstate: dict, seconds: float | None = None) -> dict:
    """Fill the table from optical flow and keep the initial rows (densified with the Gaussians, in the strategy's
    state) for the sweep's warm starts. ``seconds``: its time allowance (``flow_init``)."""
    stats = flow_init(model, frames, rig, mid, seconds=seconds)
    sstate["traj_init"] = torch.cat([model.splats["traj_means"].detach(), model.splats["traj_quats"].detach()], -1).clone()
    return stats


@torch.no_grad()
def _warm_start(model: Gaussians4D, f: int, g: int, sstate: dict) -> None:
    """Row f := row g (refined) + the initial step from g to f (flow), for positions and rotations."""
    init = sstate.get("traj_init")
    if init is None or init.shape[0] != model.num_gaussians:
        return
    tm, tq = model.splats["traj_means"], model.splats["traj_quats"]
    tm[:, f] = tm[:, g] + init[:, f, :3] - init[:, g, :3]
    qg0 = init[:, g, 3:]
    conj = qg0 * torch.tensor([1.0, -1.0, -1.0, -1.0], device=qg0.device)
    step = quat_mul(init[:, f, 3:], conj / qg0.square().sum(-1, keepdim=True).clamp_min(1e-12))
    tq[:, f] = quat_mul(step, tq[:, g])


def _pick_frame(frame_err: list, rng: random.Random) -> int:
    """Error-weighted frame choice: p_f = 0.5 / F + 0.5 err_f / sum err (frames not yet seen count as the worst)."""
    nt = len(frame_err)
    known = [e for e in frame_err if e is not None]
    worst = max(known) if known else 1.0
    errs = [worst if e is None else e for e in frame_err]
    tot = sum(errs) or 1.0
    probs = [0.5 / nt + 0.5 * e / tot for e in errs]
    r = rng.random() * sum(probs)
    acc = 0.0
    for f, pr in enumerate(probs):
        acc += pr
        if r <= acc:
            return f
    return nt - 1


def _table_regularisers(model: Gaussians4D, cfg: FitConfig, cur, fi: int, other: int, nodes, sub, stage: str,
                        times, nt: int, active: set) -> torch.Tensor:
    """The neighbour constraint (paper), rigidity, isometry and temporal smoothness on the trajectory table, between
    the trained frame ``fi`` and a neighbouring frame ``other`` (fixed during the sweep: its row is already fitted)."""
    xc, qc = cur[0][nodes], cur[2][nodes]
    xo, _, qo = model.frame_state(other, index=nodes)
    if stage == "sweep":
        xo, qo = xo.detach(), qo.detach()
    else:
        active.add(other)
    total = xc.sum() * 0.0
    if cfg.neighbour_weight > 0:
        nl, lam = losses.neighbour_loss(xc, xo, sub, times[fi], times[other], cfg.motion_threshold)
        total = total + cfg.neighbour_weight * lam * nl
    if cfg.rigidity_weight > 0:
        total = total + cfg.rigidity_weight * losses.rigidity_loss(xc, qc, xo, qo, sub)
    if cfg.isometry_weight > 0:
        total = total + cfg.isometry_weight * losses.isometry_loss(xc, xo, sub)
    if cfg.table_smoothness_weight > 0 and 0 < fi < nt - 1:
        xa = model.frame_state(fi - 1, index=nodes)[0]
        xb = model.frame_state(fi + 1, index=nodes)[0]
        if stage == "sweep":
            xa, xb = xa.detach(), xb.detach()
        else:
            active.update((fi - 1, fi + 1))
        total = total + cfg.table_smoothness_weight * temporal_smoothness(xa, xc, xb)
    return total


def _finite_t(tensors) -> torch.Tensor:
    """A 0-d bool tensor on the tensors' device, True when none holds NaN or infinity; no host sync
    (``precision.all_finite``: a float64 sum where the device has float64, per-tensor checks where it has not)."""
    return all_finite(tensors)


def json_copy(d):
    import json

    return json.loads(json.dumps(d))

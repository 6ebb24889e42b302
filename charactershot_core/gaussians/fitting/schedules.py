"""One schedule per motion model: its stages, the extra parameters it trains and its regularisers.

The training loop (``fit.py``) asks its schedule, every iteration, for the stage, the learning rates of the motion's
parameters, the frame to train on (the loop then samples the cameras), the Gaussians at that frame and the
regularisers to add to the photometric loss. The stage names are what progress displays and the history show.

- :class:`StaticSchedule`: a static input (one frame): the "coarse" stage only, no motion.
- :class:`TableSchedule`: per-Gaussian trajectories. "coarse" (static, on the middle frame), then, after the optical
  flow initialisation, an outward "sweep" over the frames from the middle one (each new frame warm-started from its
  inner neighbour), then "global" with error-weighted frame sampling; the neighbour constraint, rigidity, isometry
  and temporal smoothness between the trained frame and a neighbouring one.
- :class:`HexPlaneSchedule`: the paper's deformation field. "coarse", then "fine" on frames from a window that grows
  from the middle frame (or any frame); the field's own optimiser and its plane regularisers, and the neighbour
  terms between the trained time and another one.

Progress ``p`` in [0, 1] is the loop's (iterations or seconds spent); the stages start at fractions of it.
"""

from __future__ import annotations

import math
import random

import torch

from . import losses
from ..rotations import quat_mul
from .lost_parts import repair_toward
from .trajectory import flow_init, temporal_smoothness


def lr_factor(p: float, final: float) -> float:
    """Exponential decay from 1 at p = 0 to ``final`` at p = 1 (p clamped to [0, 1])."""
    return final ** min(max(p, 0.0), 1.0)


class NeighbourGraph:
    """The KNN graph on the canonical centres for the neighbour terms, rebuilt when the number of Gaussians changes
    (after every densification)."""

    def __init__(self, k: int):
        self.k, self.edges, self.n = k, None, -1

    def get(self, model):
        n_now = model.num_gaussians
        if self.edges is None or self.n != n_now:
            self.edges = losses.knn_graph(model.splats["means"], self.k)
            self.n = n_now
        return self.edges

    def set(self, edges, n: int):
        self.edges, self.n = edges, n


def make_schedule(cfg, model, video, scene_scale: float, device, rng: random.Random,
                  gen: torch.Generator) -> "StaticSchedule":
    """The schedule of ``model``'s motion: the trajectory table, a HexPlane field, or none (static input)."""
    if video.num_frames > 1 and model.motion == "table":
        cls = TableSchedule
    elif video.num_frames > 1 and model.deformation is not None:
        cls = HexPlaneSchedule
    else:
        cls = StaticSchedule
    return cls(cfg, model, video, scene_scale, device, rng, gen)


class StaticSchedule:
    """No motion: every iteration trains the middle frame's Gaussians, with the photometric loss alone."""

    moves = False  # whether the schedule leaves the static "coarse" stage

    def __init__(self, cfg, model, video, scene_scale: float, device, rng: random.Random, gen: torch.Generator):
        self.cfg, self.model, self.video = cfg, model, video
        self.scene_scale, self.device, self.rng, self.gen = scene_scale, device, rng, gen
        self.nt = video.num_frames
        self.mid = self.nt // 2
        self.stage = "coarse"
        self.optims, self.sstate = None, None

    def base_lrs(self) -> dict:
        """Learning rates of the motion's per-Gaussian parameters (one Adam each, densified with the Gaussians)."""
        return {}

    def extra_optimisers(self) -> list:
        """Optimisers of parameters that are not per Gaussian (the loop zeroes them when it redoes an iteration)."""
        return []

    def attach(self, optims: dict, sstate: dict) -> None:
        """The loop's per-Gaussian optimisers and the densification strategy's state."""
        self.optims, self.sstate = optims, sstate

    def start_motion(self, elapsed) -> bool:
        """Leave the static stage (progress reached ``coarse_fraction``). ``elapsed()``: seconds since the fit
        started. True when the loop must read its clock again (the schedule did work that took time)."""
        return False

    def update_stage(self, p: float) -> None:
        """Later stage changes, once the progress of this iteration is known."""

    def set_lrs(self, p: float, base_lr: dict) -> None:
        """The motion's learning rates for progress ``p`` (the loop has set the Gaussians' own)."""

    def pick_frame(self, p: float) -> int:
        return self.mid

    def time_of(self, fi: int) -> float | None:
        """The time rendered for frame ``fi``: None while static."""
        return None if self.stage == "coarse" else float(self.video.times[fi])

    def state_at(self, fi: int, t: float | None):
        """The Gaussians at frame ``fi`` / time ``t`` (means, scales, quats), or None for the canonical ones."""
        return None

    def regularise(self, loss, img, gt, cur, fi: int, t: float | None, active: set):
        """``loss`` (the photometric loss of this iteration) + the schedule's terms; ``active`` collects the
        frames whose trajectory rows get gradients."""
        return loss

    def step_extra(self) -> None:
        """Step and zero the optimisers of ``extra_optimisers`` (after the Gaussians' step)."""

    def finish(self) -> dict:
        """The schedule's statistics for the result (``flow_stats``), and its state released."""
        return {}


class TableSchedule(StaticSchedule):
    """Per-Gaussian trajectories: coarse -> (optical flow) -> outward sweep -> global, see the module docstring."""

    moves = True

    def __init__(self, *a):
        super().__init__(*a)
        nt, mid = self.nt, self.mid
        self.sweep_order = sorted((f for f in range(nt) if f != mid), key=lambda f: (abs(f - mid), f < mid))
        self.swept = [mid]
        self.sweep_slot = -1
        self.frame_err = [None] * nt
        self.pending_err = []  # (frame, loss tensor) not yet read back (no host sync per iteration)
        self.flow_stats = {}
        self.nb_frame = None  # the neighbouring frame the regularisers compare with
        self.graph = NeighbourGraph(self.cfg.knn_k)
        self.repairs = []  # what each repair of a lost part found and did (lost_parts.repair_frame)
        self.global_steps = 0

    def _repair(self, frame: int) -> None:
        """Put back the parts the flow lost in ``frame`` (lost_parts.py), when the fit does that."""
        if self.cfg.repair_lost_parts and frame != self.mid:
            self.repairs.append(repair_toward(self.model, frame, self.mid, self.video.pixels, self.video.rig,
                                              self.cfg.seed))

    def base_lrs(self) -> dict:
        return {"traj_means": self.cfg.lr_traj_means * self.scene_scale, "traj_quats": self.cfg.lr_traj_quats}

    def start_motion(self, elapsed) -> bool:
        cfg, model = self.cfg, self.model
        self.stage = "sweep"
        if cfg.flow_init:
            allow = None
            if cfg.seconds is not None:  # at most a quarter of the budget, and what is left of it
                left = cfg.seconds - elapsed()
                allow = max(0.0, min(0.25 * cfg.seconds, 0.5 * left))
            self.flow_stats = _table_flow_init(model, self.video.pixels, self.video.rig, self.mid, self.sstate, allow)
            nb = self.flow_stats.pop("knn", None)
            if nb is not None and nb.shape[0] == model.num_gaussians:  # reuse its neighbours for the graph
                self.graph.set(losses.graph_from_knn(nb[:, :cfg.knn_k].to(self.device)), model.num_gaussians)
        return True  # the flow initialisation is not an iteration's duration

    def update_stage(self, p: float) -> None:
        cfg = self.cfg
        if self.stage == "sweep" and (p >= cfg.coarse_fraction + cfg.sweep_fraction or not self.sweep_order):
            self.stage = "global"
            self._repair(self.swept[-1])  # the last swept frame

    def set_lrs(self, p: float, base_lr: dict) -> None:
        cfg, optims = self.cfg, self.optims
        if self.stage != "coarse":  # the canonical centres stay; each frame's row moves
            optims["means"].param_groups[0]["lr"] = 0.0
        dp = (p - cfg.coarse_fraction) / max(1e-6, 1 - cfg.coarse_fraction)
        optims["traj_means"].param_groups[0]["lr"] = base_lr["traj_means"] * lr_factor(dp, cfg.lr_final_factor)
        optims["traj_quats"].param_groups[0]["lr"] = base_lr["traj_quats"] * lr_factor(dp, 0.1)

    def pick_frame(self, p: float) -> int:
        self.nb_frame = None
        if self.stage == "sweep":
            return self._sweep_frame(p)
        if self.stage == "global":
            return self._global_frame()
        return self.mid

    def _sweep_frame(self, p: float) -> int:
        cfg, mid, rng = self.cfg, self.mid, self.rng
        sp = (p - cfg.coarse_fraction) / max(1e-6, cfg.sweep_fraction)
        slot = min(len(self.sweep_order) - 1, int(sp * len(self.sweep_order)))
        while self.sweep_slot < slot:  # a new frame: warm start from its inner neighbour's refined row
            self._repair(self.swept[-1])  # the frame just swept: a part its fit lost
            self.sweep_slot += 1
            f_new = self.sweep_order[self.sweep_slot]
            _warm_start(self.model, f_new, f_new - 1 if f_new > mid else f_new + 1, self.sstate)
            self._repair(f_new)  # and where the flow's step lost a part, before the frame is fitted
            self.swept.append(f_new)
        if rng.random() < cfg.sweep_replay and len(self.swept) > 2:
            fi = rng.choice(self.swept[:-1])
        else:
            fi = self.swept[-1]
        self.nb_frame = fi - 1 if fi > mid else (fi + 1 if fi < mid else None)
        return fi

    def _global_frame(self) -> int:
        nt, frame_err = self.nt, self.frame_err
        if self.pending_err:  # one host sync for the losses of the last iterations
            for (f_, _), e_ in zip(self.pending_err, torch.stack([e for _, e in self.pending_err]).tolist()):
                frame_err[f_] = e_ if frame_err[f_] is None else 0.8 * frame_err[f_] + 0.2 * e_
            self.pending_err.clear()
        self.global_steps += 1
        if self.cfg.repair_every > 0 and self.global_steps % self.cfg.repair_every == 0:  # the worst frame
            errs = [-1.0 if e is None else e for e in frame_err]
            self._repair(max((f for f in range(nt) if f != self.mid), key=lambda f: errs[f]))
        fi = _pick_frame(frame_err, self.rng)
        self.nb_frame = fi + self.rng.choice([-1, 1]) if 0 < fi < nt - 1 else (1 if fi == 0 else nt - 2)
        return fi

    def state_at(self, fi: int, t: float | None):
        return None if t is None else self.model.frame_state(fi)

    def regularise(self, loss, img, gt, cur, fi: int, t: float | None, active: set):
        cfg = self.cfg
        if t is None:
            return loss
        self.pending_err.append((fi, loss.detach()))
        if cfg.coarse_image_weight > 0:
            loss = loss + cfg.coarse_image_weight * _coarse_l1(img, gt, 8)
        if self.nb_frame is not None and (cfg.neighbour_weight > 0 or cfg.rigidity_weight > 0
                                          or cfg.isometry_weight > 0 or cfg.table_smoothness_weight > 0):
            edges = self.graph.get(self.model)
            nodes, sub = losses.sample_edges(edges, self.model.num_gaussians, cfg.neighbour_nodes, self.gen)
            loss = loss + _table_regularisers(self.model, cfg, cur, fi, self.nb_frame, nodes, sub, self.stage,
                                              self.video.times, self.nt, active)
        return loss

    def finish(self) -> dict:
        self.sstate.pop("traj_init", None)
        return self.flow_stats


class HexPlaneSchedule(StaticSchedule):
    """The HexPlane deformation field: coarse -> fine (progressive temporal windows), see the module docstring."""

    moves = True

    def __init__(self, *a):
        super().__init__(*a)
        cfg, s, field = self.cfg, self.scene_scale, self.model.deformation
        self.field_opt = torch.optim.Adam([
            {"params": field.grid_parameters(), "lr": cfg.lr_grid * s, "name": "grid"},
            {"params": field.mlp_parameters(), "lr": cfg.lr_mlp * s, "name": "mlp"},
        ], eps=1e-15)
        self.graph = NeighbourGraph(cfg.knn_k)
        self.window = (self.mid, self.mid)  # the frames of the current temporal window

    def extra_optimisers(self) -> list:
        return [self.field_opt]

    def start_motion(self, elapsed) -> bool:
        self.stage = "fine"
        return False

    def set_lrs(self, p: float, base_lr: dict) -> None:
        cfg = self.cfg
        fp = (p - cfg.coarse_fraction) / max(1e-6, 1 - cfg.coarse_fraction)
        fd = lr_factor(fp, cfg.lr_final_factor_field)
        self.field_opt.param_groups[0]["lr"] = cfg.lr_grid * self.scene_scale * fd
        self.field_opt.param_groups[1]["lr"] = cfg.lr_mlp * self.scene_scale * fd

    def pick_frame(self, p: float) -> int:
        cfg, nt, mid = self.cfg, self.nt, self.mid
        if self.stage == "coarse":
            return mid
        if cfg.temporal_windows:
            fp = (p - cfg.coarse_fraction) / max(1e-6, 1 - cfg.coarse_fraction)
            half = int(math.ceil(fp * 1.25 * (nt / 2)))  # the window covers everything by 80% of the fine stage
            self.window = (max(0, mid - half), min(nt - 1, mid + half))
            return self.rng.randint(*self.window)
        return self.rng.choice(list(range(nt)))

    def state_at(self, fi: int, t: float | None):
        return None if t is None else self.model.deformed(t)

    def regularise(self, loss, img, gt, cur, fi: int, t: float | None, active: set):
        cfg = self.cfg
        if self.stage != "fine":
            return loss
        grid = self.model.deformation.grid
        if cfg.plane_tv_weight:
            loss = loss + cfg.plane_tv_weight * grid.space_smoothness()
        if cfg.time_smoothness_weight:
            loss = loss + cfg.time_smoothness_weight * grid.time_smoothness()
        if cfg.l1_time_planes:
            loss = loss + cfg.l1_time_planes * grid.time_l1()
        if cfg.neighbour_weight > 0 or cfg.rigidity_weight > 0 or cfg.isometry_weight > 0:
            loss = self._neighbour_terms(loss, cur, fi, t)
        return loss

    def _other_frame(self, fi: int) -> int:
        """The other time of the neighbour terms: the window's edge (progressive windows) or a neighbouring frame."""
        nt, mid = self.nt, self.mid
        if self.cfg.temporal_windows:
            lo_i, hi_i = self.window
            pi = lo_i if fi <= mid else hi_i
            return pi if pi != fi else (fi - 1 if fi > 0 else min(nt - 1, fi + 1))
        pi = fi + self.rng.choice([-1, 1])
        return min(nt - 1, max(0, pi)) if 0 <= pi < nt else (fi - 1 if fi > 0 else fi + 1)

    def _neighbour_terms(self, loss, cur, fi: int, t: float):
        cfg, model = self.cfg, self.model
        edges = self.graph.get(model)
        t_prev = float(self.video.times[self._other_frame(fi)])
        # a random subset of centre nodes with all their edges: an unbiased estimate at a fraction of the cost (the
        # other time's deformation is only evaluated where it is needed)
        nodes, sub = losses.sample_edges(edges, model.num_gaussians, cfg.neighbour_nodes, self.gen)
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
        return loss

    def step_extra(self) -> None:
        if self.stage == "fine":
            self.field_opt.step()
        self.field_opt.zero_grad(set_to_none=True)


def _coarse_l1(img: torch.Tensor, gt: torch.Tensor, k: int) -> torch.Tensor:
    """L1 between (B, H, W, 3) images average-pooled by ``k``: a limb rendered up to ~k pixels away from its target
    still overlaps it there, so it gets a pull instead of fading."""
    from torch.nn import functional as F_

    a = F_.avg_pool2d(img.permute(0, 3, 1, 2), k, ceil_mode=True)
    b = F_.avg_pool2d(gt.permute(0, 3, 1, 2), k, ceil_mode=True)
    return (a - b).abs().mean()


def _table_flow_init(model, frames, rig, mid: int, sstate: dict, seconds: float | None = None) -> dict:
    """Fill the table from optical flow and keep the initial rows (densified with the Gaussians, in the strategy's
    state) for the sweep's warm starts. ``seconds``: its time allowance (``flow_init``)."""
    stats = flow_init(model, frames, rig, mid, seconds=seconds)
    sstate["traj_init"] = torch.cat([model.splats["traj_means"].detach(), model.splats["traj_quats"].detach()], -1).clone()
    return stats


@torch.no_grad()
def _warm_start(model, f: int, g: int, sstate: dict) -> None:
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


def _table_regularisers(model, cfg, cur, fi: int, other: int, nodes, sub, stage: str, times, nt: int,
                        active: set) -> torch.Tensor:
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

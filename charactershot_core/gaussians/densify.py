"""Adaptive density control of the Gaussians (3DGS's densification and pruning), for fits where gsplat is not
importable.

The fit uses gsplat's ``gsplat.strategy.DefaultStrategy`` when that module imports and :class:`DensifyStrategy`
otherwise (:func:`strategy_class`, one ``CharacterShot`` log line per process). Both follow the algorithm of 3D
Gaussian Splatting (Kerbl et al. 2023) as gsplat 1.5 parameterises it, with the same constructor arguments and the
same calls (``check_sanity``, ``initialize_state``, ``step_pre_backward``, ``step_post_backward``,
``refine_every``), so the fit does not care which one it got:

* statistics: after each backward pass, for every (camera, Gaussian) pair drawn (``radii > 0``), the norm of
  d loss / d ``means2d`` converted from pixels to normalised device coordinates (x by ``width / 2``, y by
  ``height / 2``) and multiplied by ``n_cameras`` (the loss is a mean over the cameras of the batch) is added to
  ``grad2d`` and 1 to ``count``; with ``refine_scale2d_stop_iter`` the largest screen radius relative to the image
  is kept too;
* every ``refine_every`` steps (after ``refine_start_iter``, before ``refine_stop_iter``): a Gaussian whose mean
  gradient exceeds ``grow_grad2d`` is cloned when its largest scale is at most ``grow_scale3d x scene_scale``
  (under-reconstruction), else split in two: both children drawn from the parent's own Gaussian, scales divided by
  1.6 (over-reconstruction); then Gaussians with opacity below ``prune_opa`` are removed, and after the first
  opacity reset also those larger than ``prune_scale3d x scene_scale``; the statistics restart;
* every ``reset_every`` steps the opacities are clamped to ``2 x prune_opa`` (gsplat 1.5.3 has an operator
  precedence slip that never runs this; the fit disables it in both by a huge ``reset_every``).

Every parameter in ``params`` is per Gaussian (first dimension N): the canonical attributes and any other table,
such as the trajectory table's ``traj_means`` / ``traj_quats`` (N, F, D). A clone copies its parent's rows, a split
child copies them too (except the sampled centre and the smaller scales); the optimisers' per-row state (Adam's
moments: any state tensor with N rows, never ``step``) starts at zero for new and split rows and keeps its rows
otherwise; tensors with N rows in the strategy's ``state`` dict (the fit keeps the table's initial rows there) are
edited like the parameters. Row order differs from gsplat (a split child replaces its parent in place, the other
child and the clones are appended); nothing depends on it.

Written for this pack from gsplat's documentation and the 3DGS paper.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .rotations import quat_to_rotmat

log = logging.getLogger("CharacterShot")

#: why gsplat's strategy module could not be imported in this process (logged once), or None
_STRATEGY_IMPORT_FAILURE: str | None = None

REQUIRED = ("means", "scales", "quats", "opacities")


def _import_gsplat_strategy():
    """gsplat's DefaultStrategy class (tests replace this, or ``sys.modules``, to make it fail)."""
    from gsplat.strategy import DefaultStrategy

    return DefaultStrategy


def strategy_class():
    """gsplat's ``DefaultStrategy`` when ``gsplat.strategy`` imports, else :class:`DensifyStrategy`; the first
    failure in a process is logged in one line."""
    global _STRATEGY_IMPORT_FAILURE
    try:
        return _import_gsplat_strategy()
    except Exception as e:  # missing package, broken install, an error raised while importing it
        first = (str(e).strip().splitlines() or [""])[0]
        reason = (f"{type(e).__name__}: {first}" if first else type(e).__name__)[:400]
        if _STRATEGY_IMPORT_FAILURE is None:
            _STRATEGY_IMPORT_FAILURE = reason
            log.warning("gsplat is not importable (%s); 4D fits densify and prune the Gaussians with the pack's own "
                        "strategy (charactershot_core.gaussians.densify, the same algorithm and settings).", reason)
        return DensifyStrategy


def _rows(params) -> int:
    return int(params["means"].shape[0])


@dataclass
class DensifyStrategy:
    """3DGS densification and pruning with gsplat ``DefaultStrategy``'s arguments and defaults (see the module)."""

    prune_opa: float = 0.005
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    grow_scale2d: float = 0.05
    prune_scale3d: float = 0.1
    prune_scale2d: float = 0.15
    refine_scale2d_stop_iter: int = 0
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    reset_every: int = 3000
    refine_every: int = 100
    pause_refine_after_reset: int = 0
    absgrad: bool = False
    revised_opacity: bool = False
    verbose: bool = False
    key_for_gradient: str = "means2d"

    # ------------------------------------------------------------------ the strategy interface
    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        """``grad2d``/``count`` (and ``radii``) are created on the first update, at the then number of Gaussians."""
        state: dict[str, Any] = {"grad2d": None, "count": None, "scene_scale": float(scene_scale)}
        if self.refine_scale2d_stop_iter > 0:
            state["radii"] = None
        return state

    def check_sanity(self, params, optimizers) -> None:
        """The parameters have one optimiser each (one parameter group, that parameter), the keys the algorithm
        reads, and N rows every one. Raises ``ValueError``."""
        trainable = {k for k, p in params.items() if p.requires_grad}
        if trainable != set(optimizers):
            raise ValueError(f"densification needs one optimiser per trainable parameter: parameters "
                             f"{sorted(trainable)}, optimisers {sorted(optimizers)}")
        for k, opt in optimizers.items():
            groups = opt.param_groups
            if len(groups) != 1 or len(groups[0]["params"]) != 1 or groups[0]["params"][0] is not params[k]:
                raise ValueError(f"the optimiser of {k!r} must hold exactly that parameter in one parameter group")
        missing = [k for k in REQUIRED if k not in params]
        if missing:
            raise ValueError(f"densification needs the parameters {', '.join(REQUIRED)}; missing {', '.join(missing)}")
        n = _rows(params)
        bad = {k: tuple(p.shape) for k, p in params.items() if p.dim() == 0 or p.shape[0] != n}
        if bad:
            raise ValueError(f"every parameter must have one row per Gaussian ({n}); not so: {bad}")

    def step_pre_backward(self, params, optimizers, state, step: int, info: dict) -> None:
        """Keep the gradient of the screen-space centres (a non-leaf tensor) through the backward pass."""
        if self.key_for_gradient not in info:
            raise KeyError(f"the render info has no {self.key_for_gradient!r} (the Gaussians' screen positions)")
        info[self.key_for_gradient].retain_grad()

    def step_post_backward(self, params, optimizers, state, step: int, info: dict, packed: bool = False) -> None:
        """Accumulate the statistics of this step; refine and reset opacities on schedule."""
        if step >= self.refine_stop_iter:
            return
        self._accumulate(params, state, info, packed)
        if (step > self.refine_start_iter and step % self.refine_every == 0
                and step % self.reset_every >= self.pause_refine_after_reset):
            n_clone, n_split = self._grow(params, optimizers, state, step)
            n_prune = self._prune(params, optimizers, state, step)
            state["last_refine"] = {"step": step, "cloned": n_clone, "split": n_split, "pruned": n_prune,
                                    "gaussians": _rows(params)}
            if self.verbose:
                print(f"step {step}: {n_clone} Gaussians cloned, {n_split} split, {n_prune} pruned; "
                      f"{_rows(params)} now")
            for k in ("grad2d", "count", "radii"):
                if state.get(k) is not None:
                    state[k].zero_()
        if step > 0 and step % self.reset_every == 0:
            reset_opacities(params, optimizers, self.prune_opa * 2.0)

    # ------------------------------------------------------------------ statistics
    @torch.no_grad()
    def _accumulate(self, params, state, info, packed) -> None:
        n = _rows(params)
        device = params["means"].device
        for k in ("grad2d", "count") + (("radii",) if self.refine_scale2d_stop_iter > 0 else ()):
            if state.get(k) is None or state[k].shape[0] != n:
                state[k] = torch.zeros(n, device=device)
        m2 = info[self.key_for_gradient]
        g = getattr(m2, "absgrad", None) if self.absgrad else m2.grad
        if g is None:  # nothing drawn this step (no gradient reached the screen positions)
            return
        # pixels -> normalised device coordinates, and undo the mean over the batch's cameras
        g = g * g.new_tensor([info["width"] / 2.0 * info["n_cameras"], info["height"] / 2.0 * info["n_cameras"]])
        radii = info["radii"]
        if radii.dim() == g.dim() - 1:  # radii without the x/y axis (older gsplat)
            radii = radii.unsqueeze(-1)
        if packed:
            ids = info["gaussian_ids"]
            norms = g.norm(dim=-1)
            rad = radii.max(dim=-1).values
        else:
            drawn = (radii > 0).all(dim=-1)  # (C, N)
            ids = drawn.nonzero()[:, 1]
            norms = g[drawn].norm(dim=-1)
            rad = radii[drawn].max(dim=-1).values
        state["grad2d"].index_add_(0, ids, norms.to(state["grad2d"].dtype))
        state["count"].index_add_(0, ids, torch.ones_like(norms, dtype=state["count"].dtype))
        if self.refine_scale2d_stop_iter > 0:
            rel = rad.to(state["radii"].dtype) / float(max(info["width"], info["height"]))
            state["radii"].scatter_reduce_(0, ids, rel, reduce="amax")

    # ------------------------------------------------------------------ growing and pruning
    @torch.no_grad()
    def _grow(self, params, optimizers, state, step) -> tuple[int, int]:
        mean_grad = state["grad2d"] / state["count"].clamp_min(1)
        high = mean_grad > self.grow_grad2d
        small = params["scales"].exp().amax(dim=-1) <= self.grow_scale3d * state["scene_scale"]
        to_clone = high & small
        to_split = high & ~small
        if step < self.refine_scale2d_stop_iter:
            to_split |= state["radii"] > self.grow_scale2d
        n_clone, n_split = int(to_clone.sum()), int(to_split.sum())
        if n_clone:
            clone(params, optimizers, state, to_clone)
            to_split = torch.cat([to_split, to_split.new_zeros(n_clone)])  # clones are not split in the same step
        if n_split:
            split(params, optimizers, state, to_split, self.revised_opacity)
        return n_clone, n_split

    @torch.no_grad()
    def _prune(self, params, optimizers, state, step) -> int:
        drop = torch.sigmoid(params["opacities"].flatten()) < self.prune_opa
        if step > self.reset_every:
            drop |= params["scales"].exp().amax(dim=-1) > self.prune_scale3d * state["scene_scale"]
            if step < self.refine_scale2d_stop_iter:
                drop |= state["radii"] > self.prune_scale2d
        n = int(drop.sum())
        if n:
            remove(params, optimizers, state, drop)
        return n


# ---------------------------------------------------------------------------------------------- row edits
def _replace(params, optimizers, names, new_value: Callable, new_moment: Callable) -> None:
    """Swap each named parameter for ``new_value(name, old)`` and carry its optimiser state over: tensors with the
    old number of rows (not ``step``) become ``new_moment(old_rows_tensor)``, the rest is kept."""
    n_old = _rows(params)
    for name in list(names):
        old = params[name]
        new = nn.Parameter(new_value(name, old.detach()).contiguous(), requires_grad=old.requires_grad)
        params[name] = new
        opt = optimizers.get(name)
        if opt is None:
            continue
        st = opt.state.pop(old, None)
        if st is not None:
            for key, v in list(st.items()):
                if key != "step" and torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n_old:
                    st[key] = new_moment(v)
            opt.state[new] = st
        for group in opt.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]


def _edit_state(state: dict, n_old: int, fn: Callable) -> None:
    for k, v in list(state.items()):
        if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n_old:
            state[k] = fn(v)


def clone(params, optimizers, state, mask: torch.Tensor) -> None:
    """Append a copy of every masked Gaussian (all its rows); the copies' optimiser moments start at zero."""
    sel = mask.nonzero().squeeze(1)
    n_old = _rows(params)

    def moment(v):
        return torch.cat([v, v.new_zeros((len(sel),) + v.shape[1:])])
    _replace(params, optimizers, list(params.keys()), lambda name, p: torch.cat([p, p[sel]]), moment)
    _edit_state(state, n_old, lambda v: torch.cat([v, v[sel]]))


def split(params, optimizers, state, mask: torch.Tensor, revised_opacity: bool = False) -> None:
    """Replace every masked Gaussian by two: centres drawn from the parent's Gaussian (rotation and scales), scales
    divided by 1.6, every other row copied (opacity as is, or ``1 - sqrt(1 - a)`` with ``revised_opacity``). The
    first child takes the parent's place, the second is appended; both start with zero optimiser moments."""
    sel = mask.nonzero().squeeze(1)
    k = len(sel)
    n_old = _rows(params)
    scales = params["scales"].detach()[sel].exp()
    rot = quat_to_rotmat(params["quats"].detach()[sel])
    offsets = torch.einsum("kij,bkj->bki", rot, scales * torch.randn(2, k, 3, device=scales.device,
                                                                   dtype=scales.dtype))

    def child_rows(name, p):
        if name == "means":
            return p[sel] + offsets  # (2, k, 3)
        if name == "scales":
            return torch.log(scales / 1.6).expand(2, k, 3)
        if name == "opacities" and revised_opacity:
            a = torch.sigmoid(p[sel])
            return torch.logit(1.0 - torch.sqrt((1.0 - a).clamp_min(0.0))).expand(2, *a.shape)
        return p[sel].expand(2, *p[sel].shape)

    def value(name, p):
        c = child_rows(name, p).to(p.dtype)
        out = torch.cat([p, c[1]])
        out[sel] = c[0]
        return out

    def moment(v):
        out = torch.cat([v, v.new_zeros((k,) + v.shape[1:])])
        out[sel] = 0
        return out
    _replace(params, optimizers, list(params.keys()), value, moment)
    _edit_state(state, n_old, lambda v: torch.cat([v, v[sel]]))


def remove(params, optimizers, state, mask: torch.Tensor) -> None:
    """Delete the masked Gaussians' rows everywhere."""
    keep = ~mask
    n_old = _rows(params)
    _replace(params, optimizers, list(params.keys()), lambda name, p: p[keep], lambda v: v[keep])
    _edit_state(state, n_old, lambda v: v[keep])


def reset_opacities(params, optimizers, value: float) -> None:
    """Clamp the opacities to at most ``value`` (logit space) and zero their optimiser moments."""
    cap = math.log(value / (1.0 - value))
    _replace(params, optimizers, ["opacities"], lambda name, p: p.clamp(max=cap), torch.zeros_like)


__all__ = ["DensifyStrategy", "clone", "remove", "reset_opacities", "split", "strategy_class"]

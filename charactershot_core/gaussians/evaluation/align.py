"""Held-out cameras aligned to a fit whose training cameras were refined, before the fit is scored.

A fit with camera refinement (``fitting/camera_refine.py``) places the scene where the training views agree, with
the corrections' mean fixed at zero. When the training views sit off the rig (a video model's views), their true
misalignments do not average to exactly zero, so the fitted scene sits a fraction of a pixel off the rig as a whole,
and nothing in the training views can tell by how much. A held-out view rendered straight from the rig then shows the
fit shifted by that fraction: on sharp renders a 0.1 px shift alone costs about 35 dB of PSNR (a floor that caps any
fit's score), so the raw held-out score measures the unknowable registration as much as the fit.

The usual protocol for fits that refine their cameras (BARF, Lin et al. 2021; gsplat's pose optimisation) first
aligns each test camera to the frozen fit, then scores. :func:`align_cameras` does that with the same four numbers
per view the fit's image-plane refinement learns (pan, tilt, roll about the camera's centre, a dolly along its axis):
a few Adam steps on the L1 error of a few frames, the Gaussians frozen, keeping the best cameras seen (the rig's own
included, so the alignment never makes that error worse). Four numbers per view against thousands of
pixels per frame cannot redraw a missing limb or hide a floater; they only register the picture. The benchmark
reports the score before and after.
"""

from __future__ import annotations

import numpy as np
import torch

from ...cameras import GL_TO_CV, CameraRig
from ...errors import InputError
from ..fitting.camera_refine import se3_exp
from ..raster.views import render_model


def _twists(delta: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """(V, 4) pan, tilt, roll (radians) and dolly (fraction of the camera's distance) -> (V, 6) twists."""
    z = torch.zeros_like(delta[:, :2])
    return torch.cat([delta[:, :3], z, delta[:, 3:] * dist[:, None]], -1)


def align_cameras(model, rig: CameraRig, times, truth, steps: int = 60, frames: int = 3, lr: float = 1e-3,
                  backend: str = "torch"):
    """Cameras of ``rig`` moved (pan, tilt, roll, dolly per view) so the frozen ``model`` best matches ``truth``
    ``(V, T, H, W, 3)`` (the rig's views at ``times``), fitted on up to ``frames`` frames spread over the clip.

    Returns ``(aligned_rig, shifts)``: a ``CameraRig`` with the corrected cameras (intrinsics unchanged) and, per
    view, how far the correction moves the picture at the image centre, in pixels."""
    truth = torch.as_tensor(np.asarray(truth) if not isinstance(truth, torch.Tensor) else truth)
    times = list(times)
    if truth.dim() != 5 or truth.shape[0] != len(rig) or truth.shape[1] != len(times):
        raise InputError("truth", f"expected ({len(rig)}, {len(times)}, H, W, 3) images of the rig's views, got "
                                  f"{tuple(truth.shape)}")
    if steps < 0:
        raise InputError("steps", f"expected 0 or more steps, got {steps}")
    truth = truth.float() / 255.0 if truth.dtype == torch.uint8 else truth.float()
    device = model.splats["means"].device
    vm0, ks = rig.viewmats(device=device), rig.Ks(device=device)
    centre = model.splats["means"].detach().mean(0)
    dist = (vm0[:, :3, :3] @ centre + vm0[:, :3, 3])[:, 2].abs().clamp_min(1e-6)
    delta = torch.zeros(len(rig), 4, device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    picks = sorted({int(round(i)) for i in np.linspace(0, len(times) - 1, min(frames, len(times)))})
    target = truth[:, picks].to(device)

    def errors():  # (V,) mean L1 of each view over the picked frames
        vm = se3_exp(_twists(delta, dist)) @ vm0
        total = torch.zeros(len(rig), device=device)
        for j, fi in enumerate(picks):
            t = times[fi]
            img, _, _ = render_model(model, vm, ks, rig.width, rig.height,
                                     None if (t is None or not model.is_dynamic) else float(t), backend)
            total = total + (img - target[:, j]).abs().mean((1, 2, 3))
        return total

    best = torch.full((len(rig),), float("inf"), device=device)
    best_delta = delta.detach().clone()
    for step in range(steps + 1):
        with torch.set_grad_enabled(step < steps):
            err = errors()
        better = err.detach() < best  # each view keeps the best cameras seen, the rig's own included
        best = torch.where(better, err.detach(), best)
        best_delta[better] = delta.detach()[better]
        if step == steps:
            break
        for g in opt.param_groups:
            g["lr"] = lr * (1.0 - 0.9 * step / max(1, steps))
        opt.zero_grad(set_to_none=True)
        err.sum().backward()
        opt.step()
    with torch.no_grad():
        vm = (se3_exp(_twists(best_delta, dist)) @ vm0).cpu().double().numpy()
        fx = torch.as_tensor(rig.fx)
        shifts = (best_delta[:, :2].cpu().double().norm(dim=1) * fx).numpy()
    c2w_gl = np.linalg.inv(vm) @ np.linalg.inv(GL_TO_CV)
    aligned = CameraRig(c2w_gl, rig.fx, rig.fy, rig.cx, rig.cy, rig.width, rig.height, list(rig.names), rig.times,
                        rig.square_size)
    return aligned, shifts

"""Schedulers and guidance of the official CharacterShot pipelines (spec §A.4-A.5).

The official CLI builds ``CogVideoXDPMScheduler.from_config(scheduler_config, timestep_spacing="trailing")``: the
CogVideoX-5B scheduler (v-prediction, scaled-linear betas with zero terminal SNR) stepping with a stochastic
DPM-Solver++(2M)-style update that draws its noise from the pipeline's generator.  ``ddim`` is diffusers'
``CogVideoXDDIMScheduler`` on the same config (deterministic; the official code then turns dynamic CFG off).

Dynamic CFG: the official loop computes ``g = 1 + scale * (1 - cos(pi * ((steps - t) / steps) ** 5)) / 2`` with
``t`` the *timestep value* (999, 979, ...), not the step index (a quirk copied from upstream CogVideoX; with
trailing spacing ``(steps - t) / steps`` is a large negative number and ``g`` jumps within [1, 1 + scale]).
``dynamic_cfg="timestep"`` reproduces that (the default, what the weights were sampled with);
``"step_index"`` uses the step index, the documented fix; ``"off"`` keeps ``scale`` constant.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InputError

SCHEDULERS = ("dpm", "ddim")
DYNAMIC_CFG = ("timestep", "step_index", "off")
SPACINGS = ("trailing", "leading", "linspace")

# The CogVideoX-5B scheduler configuration (spec §A.5), used when a checkpoint folder carries none.
DEFAULT_SCHEDULER_CONFIG: dict = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
    "set_alpha_to_one": True, "snr_shift_scale": 1.0, "steps_offset": 0, "timestep_spacing": "trailing",
}


def make_scheduler(name: str = "dpm", config: dict | None = None, spacing: str = "trailing"):
    """A fresh diffusers scheduler (``dpm``: CogVideoXDPMScheduler, ``ddim``: CogVideoXDDIMScheduler)."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    if name not in SCHEDULERS:
        raise InputError("scheduler", f"expected one of {', '.join(SCHEDULERS)}, got {name!r}")
    if spacing not in SPACINGS:
        raise InputError("timestep_spacing", f"expected one of {', '.join(SPACINGS)}, got {spacing!r}")
    cfg = {k: v for k, v in (config or DEFAULT_SCHEDULER_CONFIG).items() if not k.startswith("_")}
    cls = CogVideoXDPMScheduler if name == "dpm" else CogVideoXDDIMScheduler
    return cls.from_config(cfg, timestep_spacing=spacing)


def is_dpm(scheduler: Any) -> bool:
    from diffusers import CogVideoXDPMScheduler

    return isinstance(scheduler, CogVideoXDPMScheduler)


def guidance_at(scale: float, steps: int, step_index: int, timestep: float, mode: str = "timestep") -> float:
    """The guidance scale the official loop uses at this step (see the module docstring)."""
    if mode == "off":
        return float(scale)
    if mode == "timestep":
        x = (steps - float(timestep)) / steps
    elif mode == "step_index":
        x = step_index / steps  # 0 at the first step, rising to (steps - 1) / steps: guidance grows from 1
    else:
        raise InputError("dynamic_cfg", f"expected one of {', '.join(DYNAMIC_CFG)}, got {mode!r}")
    return 1.0 + scale * (1.0 - math.cos(math.pi * x ** 5.0)) / 2.0


def check_sampling_options(steps: int, guidance: float, scheduler: str, dynamic_cfg: str) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InputError("steps", f"expected a positive number of steps, got {steps!r}")
    if not math.isfinite(float(guidance)) or guidance < 0:
        raise InputError("cfg", f"expected a guidance scale >= 0, got {guidance!r}")
    if scheduler not in SCHEDULERS:
        raise InputError("scheduler", f"expected one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if dynamic_cfg not in DYNAMIC_CFG:
        raise InputError("dynamic_cfg", f"expected one of {', '.join(DYNAMIC_CFG)}, got {dynamic_cfg!r}")

"""Our models under ComfyUI's VRAM manager: cast-enabled layers, so partial loading works at any budget.

ComfyUI's ``ModelPatcher.load`` walks the leaf modules that hold weights.  When a module does not fit the budget it
is left on the offload device (the CPU) and, *if* it carries ``comfy_cast_weights`` (the ``comfy.ops`` layers), its
weights are copied to the compute device for each call.  A plain ``nn.Linear`` that does not fit is simply left on
the CPU, and the first matmul fails with "Expected all tensors to be on the same device".  So, after a model is
built, :func:`cast_enable` swaps the class of every weight-bearing leaf module for a cast-enabled one:

* ``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.GroupNorm``, ``nn.LayerNorm``, ``nn.Embedding`` and their subclasses
  (diffusers' ``CogVideoXSafeConv3d``...) become ComfyUI's own ``comfy.ops.disable_weight_init`` classes (a subclass
  that keeps the original class's ``forward`` first in line when it is a subclass), so ComfyUI's offload streams and
  weight functions apply to them exactly as to its core models;
* every other leaf module with its own weights or buffers (our ``FP8Linear``, T5's ``T5LayerNorm``, ...) gets a
  generic cast: while offloaded, its tensors are copied to the input's device for the call (an fp8 weight travels in
  8 bits and is dequantised on the device, in the compute dtype).

Class swaps change no tensor and no state-dict key; with ``comfy_cast_weights`` False (fully loaded) each layer runs
its original ``forward``.  ``charactershot_core`` knows nothing of this (it never imports ComfyUI).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger("CharacterShot")

_GENERIC_CLASSES: dict = {}
_SUBCLASSES: dict = {}


def _comfy_map() -> list:
    import comfy.ops as ops

    base = ops.disable_weight_init
    # Most specific first: the first torch class found in a module's MRO decides.
    return [(nn.Linear, base.Linear), (nn.Conv1d, base.Conv1d), (nn.Conv2d, base.Conv2d), (nn.Conv3d, base.Conv3d),
            (nn.GroupNorm, base.GroupNorm), (nn.LayerNorm, base.LayerNorm), (nn.Embedding, base.Embedding)]


def _cast_base():
    import comfy.ops as ops

    return ops.CastWeightBiasOp


def _first_tensor(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    return None


def _generic_class(cls):
    """``cls`` with a cast-on-call forward (for leaf modules that are not standard torch layers)."""
    if cls in _GENERIC_CLASSES:
        return _GENERIC_CLASSES[cls]

    def forward(self, *args, **kwargs):
        if not (self.comfy_cast_weights or self.weight_function or self.bias_function):
            return cls.forward(self, *args, **kwargs)
        x = _first_tensor(args, kwargs)
        if x is None:
            return cls.forward(self, *args, **kwargs)
        import comfy.model_management as mm

        mm.throw_exception_if_processing_interrupted()
        dev = x.device
        saved_p, saved_b = dict(self._parameters), dict(self._buffers)
        try:
            for name, t in saved_p.items():
                if t is None:
                    continue
                moved = t.to(dev, copy=False)
                for f in (self.weight_function if name == "weight" else
                          self.bias_function if name == "bias" else []):
                    moved = f(moved)
                self._parameters[name] = moved
            for name, t in saved_b.items():
                if t is not None:
                    self._buffers[name] = t.to(dev, copy=False)
            return cls.forward(self, *args, **kwargs)
        finally:
            self._parameters.update(saved_p)
            self._buffers.update(saved_b)

    new = type(f"ComfyCast{cls.__name__}", (cls, _cast_base()),
               {"forward": forward, "__module__": __name__, "charshot_generic_cast": True})
    _GENERIC_CLASSES[cls] = new
    return new


def _standard_class(cls, comfy_cls):
    if cls in _SUBCLASSES:
        return _SUBCLASSES[cls]
    new = type(f"ComfyCast{cls.__name__}", (cls, comfy_cls), {"__module__": __name__})
    _SUBCLASSES[cls] = new
    return new


def holds_weights(m: nn.Module) -> bool:
    """A module with tensors of its own (parameters or buffers), the unit ComfyUI's loader moves."""
    return any(t is not None for t in m._parameters.values()) or any(t is not None for t in m._buffers.values())


def _skipped_by_loader(m: nn.Module) -> bool:
    """Own parameters and children with parameters: ``ModelPatcher._load_list`` leaves such a module out."""
    return any(t is not None for t in m._parameters.values()) and any(
        True for c in m.children() for _ in c.parameters())


def cast_enable(module: nn.Module) -> int:
    """Swap, in place, every weight-bearing module of ``module`` for a cast-enabled class; returns how many."""
    cast_op = _cast_base()
    mapping = _comfy_map()
    count = 0
    for _, m in module.named_modules():
        if isinstance(m, cast_op) or not holds_weights(m):
            continue
        cls = type(m)
        target = None
        for torch_cls, comfy_cls in mapping:
            if isinstance(m, torch_cls):
                target = comfy_cls if cls is torch_cls else _standard_class(cls, comfy_cls)
                break
        if target is None:
            target = _generic_class(cls)
        m.__class__ = target
        if _skipped_by_loader(m):
            # ComfyUI's load list skips a module whose children hold weights too; it would never be moved to the
            # GPU in a partial load, so it always copies its own tensors to the input's device instead.
            if not getattr(target, "charshot_generic_cast", False):
                m.__class__ = _generic_class(cls)
            m.comfy_cast_weights = True
        if isinstance(m, nn.Embedding) and "bias" not in m.__dict__ and "bias" not in m._parameters:
            m.bias = None  # comfy.ops reads .bias, which torch's Embedding does not have
        count += 1
    return count


def not_offloadable(module: nn.Module) -> list[str]:
    """Names of modules holding weights that ComfyUI could neither load nor cast (must be empty)."""
    cast_op = _cast_base()
    return [n for n, m in module.named_modules() if holds_weights(m) and (
        not isinstance(m, cast_op) or _skipped_by_loader(m) and not m.comfy_cast_weights)]


# ----------------------------------------------------------------------------------------------- budgets
def device_memory(device) -> tuple:
    """(bytes ComfyUI can give our next model on ``device``, its reserve): what is free now plus what the models
    it holds there would free when unloaded; None for the CPU (no budget)."""
    import comfy.model_management as mm

    if mm.is_device_cpu(device):
        return None, 0
    free = mm.get_free_memory(device)
    for lm in list(mm.current_loaded_models):
        try:
            if lm.device == device and lm.model is not None:
                free += lm.model_loaded_memory()
        except Exception:  # noqa: BLE001 - a dead weakref: nothing to count
            continue
    return free, mm.extra_reserved_memory()


def offload_streams() -> int:
    """Layers in flight at once when weights are streamed: ComfyUI's async offload streams plus the one in use."""
    import comfy.model_management as mm

    return max(0, int(getattr(mm, "NUM_STREAMS", 0) or 0)) + 1


def load_with_budget(patcher, memory_required: int, floor=None, too_big=None, what: str = "model") -> None:
    """``load_models_gpu([patcher], memory_required)``: ComfyUI keeps ``memory_required`` (our estimate) free for the
    activations and loads what fits of the weights, offloading the rest (cast-enabled layers).

    The estimate advises, it does not forbid.  The one refusal: ``floor`` (a ``memory.Floor``, the least a fully
    offloaded run needs: the counted activations without margin plus the largest layer in flight) above all the
    memory the device can give (free now, plus what unloading ComfyUI's models frees, the reserve included);
    ``too_big(free, floor)`` makes that error, raised before anything is loaded.  When the estimate leaves no room
    for weights, the run goes on all the same (ComfyUI loads what its own rules allow and streams the rest, as for
    its own models), and the log says so with the numbers."""
    import comfy.model_management as mm

    from ..charactershot_core.errors import CharacterShotError
    from ..charactershot_core.sampling.memory import fmt

    free, reserve = device_memory(patcher.load_device)
    if free is not None and floor is not None and too_big is not None and floor.total > free:
        raise CharacterShotError(too_big(free, floor))
    room = None if free is None else free - reserve - int(memory_required)
    if room is not None and room < 0:
        log.info("[CharacterShot] %s: the activation estimate %s is above the %s free beside ComfyUI's reserve "
                 "(%s); running anyway on ComfyUI's partial loading, the weights that do not fit streamed from the "
                 "CPU%s", what, fmt(memory_required), fmt(free - reserve), fmt(reserve),
                 "" if floor is None else f" (the least a fully offloaded call needs: {floor.text()})")
    mm.load_models_gpu([patcher], memory_required=int(memory_required))


def device_speed(device) -> tuple:
    """(relative speed to an H200 or None, the card's name) for the time estimate."""
    from ..charactershot_core.sampling.memory import DEVICE_SPEED

    if device.type != "cuda":
        return None, str(device)
    try:
        name = torch.cuda.get_device_name(device)
    except Exception:  # noqa: BLE001 - no name: no time estimate
        return None, str(device)
    for key, speed in sorted(DEVICE_SPEED.items(), key=lambda kv: -len(kv[0])):
        if key.replace(" ", "").lower() in name.replace(" ", "").lower():
            return speed, name
    return None, name


def vram_plan(model, vae, shape, height: int, width: int):
    """The plan (charactershot_core.sampling.memory.Plan) for ``model`` (+ ``vae``) on ComfyUI's device."""
    from ..charactershot_core.sampling import memory as M

    patcher = getattr(model, "patcher", None)
    device = patcher.load_device if patcher is not None else torch.device("cpu")
    free, reserve = device_memory(device)
    speed, name = device_speed(device)
    plan = M.make_plan(model.config, model.transformer, model.dtype, shape, vae=vae,
                       vae_tiling=getattr(vae, "tiling", True), height=height, width=width, free=free,
                       reserve=reserve, speed=speed, device_name=name, streams=offload_streams())
    if free is None:
        plan.lines.append("  the CPU: no VRAM budget (everything stays in RAM)")
    if speed is None:
        ref = M.step_seconds(model.config, shape, 1.0)
        plan.lines.append(f"  time per step: no figure for {name}; on an H200 about {ref:.1f} s "
                          "(docs/performance.md has a table per card)")
    return plan

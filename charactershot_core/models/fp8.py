"""Optional fp8 (``torch.float8_e4m3fn``) weight storage for Linear layers, compute in the activation dtype.

Format (one per quantised Linear layer ``<prefix>``):

* ``<prefix>.weight``: float8_e4m3fn, the weight divided by its scale (clamped to ±448);
* ``<prefix>.scale_weight``: float32 scalar (shape ``()``), per-tensor scale = max|W| / 448 (1 for an all-zero W);
* ``<prefix>.bias``: unchanged (bf16/fp16/fp32).

The real weight is ``weight.float() * scale_weight``.  This is the key naming ComfyUI uses for its "scaled fp8"
checkpoints.  At run time each layer dequantises its weight to the input's dtype just before the matmul, so only
one layer's weight exists in bf16 at a time: the transformer's weights take half the memory of bf16.

* :func:`quantize_fp8_` converts a loaded model in place;
* :func:`prepare_fp8_` makes a model (usually on the meta device) ready to ``load_state_dict(..., assign=True)``
  an already-fp8 state dict (the layers to convert are read from its ``*.scale_weight`` keys);
* :func:`is_fp8_state_dict` tells the two kinds of state dict apart.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
SCALE_KEY = "scale_weight"
DEFAULT_INCLUDE = ("transformer_blocks.*",)


class FP8Linear(nn.Module):
    """A Linear layer whose weight is stored in fp8 with a per-tensor float32 scale."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 bias_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8_DTYPE, device=device),
                                   requires_grad=False)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, dtype=bias_dtype, device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.register_buffer(SCALE_KEY, torch.ones((), dtype=torch.float32, device=device))

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> "FP8Linear":
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, device=w.device,
                    bias_dtype=linear.bias.dtype if linear.bias is not None else w.dtype)
        amax = w.detach().abs().max().float()
        scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
        layer.weight.data = (w.detach().float() / scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
        getattr(layer, SCALE_KEY).copy_(scale)
        if linear.bias is not None:
            layer.bias.data = linear.bias.detach().clone()
        return layer

    def _apply(self, fn, recurse=True):
        """Device moves apply as usual, but dtype casts (``model.to(torch.bfloat16)``, ``.half()``...) leave the
        fp8 weight and the float32 scale as they are (only the bias follows), so a quantised model stays one."""
        weight, scale = self.weight.data, getattr(self, SCALE_KEY)
        super()._apply(fn, recurse)
        if self.weight.dtype != FP8_DTYPE:
            self.weight.data = weight.to(self.weight.device)
        if getattr(self, SCALE_KEY).dtype != torch.float32:
            self._buffers[SCALE_KEY] = scale.to(getattr(self, SCALE_KEY).device)
        return self

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.weight.float() * getattr(self, SCALE_KEY)).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, fp8"


def _matches(name: str, patterns: Optional[Sequence[str]]) -> bool:
    return patterns is not None and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


@torch.no_grad()
def quantize_fp8_(module: nn.Module, include: Optional[Sequence[str]] = DEFAULT_INCLUDE,
                  exclude: Optional[Sequence[str]] = None) -> int:
    """Replace, in place, every ``nn.Linear`` whose qualified name matches ``include`` (fnmatch patterns; None =
    all) and no ``exclude`` pattern with an :class:`FP8Linear`.  Returns the number of layers converted.

    The default converts the Linear layers inside ``transformer_blocks`` (attention, feed-forward and modulation
    linears: >99.7 % of the 4D transformer's weights) and keeps the embeddings and output projection as they are.
    Layers are converted one at a time, so the extra memory is one layer's float32 copy.
    """
    names = [n for n, m in module.named_modules() if type(m) is nn.Linear]
    count = 0
    for name in names:
        if include is not None and not _matches(name, include):
            continue
        if _matches(name, exclude):
            continue
        lin = module.get_submodule(name)
        if lin.weight.device.type == "meta":
            raise ValueError(f"quantize_fp8_: {name} is on the meta device; load the weights first "
                             "(for an fp8 checkpoint use prepare_fp8_ before load_state_dict)")
        _replace(module, name, FP8Linear.from_linear(lin))
        count += 1
    return count


def fp8_layer_names(keys: Iterable[str]) -> list:
    """Names of the fp8 layers of a state dict (from its ``*.scale_weight`` keys)."""
    suffix = "." + SCALE_KEY
    return sorted(k[: -len(suffix)] for k in keys if k.endswith(suffix))


def is_fp8_state_dict(state_dict) -> bool:
    return any(k.endswith("." + SCALE_KEY) for k in state_dict.keys())


def prepare_fp8_(module: nn.Module, state_dict_keys: Iterable[str]) -> int:
    """Turn the Linear layers that an fp8 state dict stores quantised into :class:`FP8Linear` placeholders, so that
    ``module.load_state_dict(sd, strict=True, assign=True)`` then loads it.  Works on the meta device (nothing is
    allocated there).  Returns the number of layers converted; raises ``KeyError`` naming a layer the state dict
    quantises but the model does not have as a Linear.
    """
    count = 0
    for name in fp8_layer_names(state_dict_keys):
        try:
            lin = module.get_submodule(name)
        except AttributeError:
            raise KeyError(f"fp8 state dict quantises '{name}', which this model does not have") from None
        if isinstance(lin, FP8Linear):
            continue
        if type(lin) is not nn.Linear:
            raise KeyError(f"fp8 state dict quantises '{name}', which is a {type(lin).__name__}, not a Linear layer")
        bias_dtype = lin.bias.dtype if lin.bias is not None else lin.weight.dtype
        _replace(module, name, FP8Linear(lin.in_features, lin.out_features, lin.bias is not None,
                                         device=lin.weight.device, bias_dtype=bias_dtype))
        count += 1
    return count


def fp8_weight_bytes(module: nn.Module) -> int:
    """Bytes held by the module's parameters and buffers (to check the fp8 saving)."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))

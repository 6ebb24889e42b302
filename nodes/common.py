"""Shared pieces of the ComfyUI adapter: custom types, tensor conversions, progress and interrupts."""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from ..charactershot_core.errors import InputError

CATEGORY = "CharacterShot"

# Custom socket types, prefixed so they never clash with other packs. Stable forever.
Cameras = io.Custom("CHARSHOT_CAMERAS")          # charactershot_core.cameras.CameraRig
Model4D = io.Custom("CHARSHOT_MODEL")            # multi-view transformer + camera guider + camera embeddings
Model2D = io.Custom("CHARSHOT_MODEL2D")          # Character2D pose transformer
VAE = io.Custom("CHARSHOT_VAE")                  # diffusers AutoencoderKLCogVideoX in a ModelPatcher
# core's splat type: newer core declares io.Splat with io_type "SPLAT"; 0.3.75 gets the same string from io.Custom
SPLAT_TYPE = "SPLAT"
Splat = getattr(io, "Splat", None) or io.Custom(SPLAT_TYPE)
TextEmbeds = io.Custom("CHARSHOT_TEXT")          # prompt + negative prompt embeddings (226 tokens)
MultiView = io.Custom("CHARSHOT_MULTIVIEW")      # multi-view videos + cameras + times
Gaussians4D = io.Custom("CHARSHOT_GAUSSIANS4D")  # canonical Gaussians + deformation field


def advanced(inp):
    """Mark an input as one for experts: front-ends that know the flag (1.58 and newer) fold it behind the node's
    "Show advanced inputs" button, older ones show it as before. The value still reaches the node either way.

    0.3.75's widget inputs take no ``advanced`` argument, but every input's ``extra_dict`` is merged into its
    definition, which is where front-ends read the flag; newer hosts also have the attribute."""
    inp.extra_dict = {**(getattr(inp, "extra_dict", None) or {}), "advanced": True}
    if hasattr(inp, "advanced"):
        inp.advanced = True
    return inp


def is_advanced(inp) -> bool:
    return bool((getattr(inp, "extra_dict", None) or {}).get("advanced") or getattr(inp, "advanced", None))


def image_to_numpy(image: torch.Tensor, name: str) -> np.ndarray:
    """ComfyUI IMAGE (B, H, W, C) float in [0, 1] -> (B, H, W, 3) uint8, with a clear error for bad input."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(name, f"expected an IMAGE batch of shape (B, H, W, C), got {shape}")
    if image.shape[0] == 0:
        raise InputError(name, "the image batch is empty")
    if image.shape[-1] not in (1, 3, 4):
        raise InputError(name, f"expected 1, 3 or 4 channels, got {image.shape[-1]}")
    arr = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def numpy_to_image(arr: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 or float -> ComfyUI IMAGE float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    return t.float().clamp(0, 1)


class Progress:
    """A ComfyUI progress bar that also honours Cancel: ``step()`` raises when the user interrupted."""

    def __init__(self, total: int):
        import comfy.utils

        self.total = max(1, int(total))
        self.bar = comfy.utils.ProgressBar(self.total)
        self.value = 0

    @staticmethod
    def check_interrupt() -> None:
        import comfy.model_management as mm

        mm.throw_exception_if_processing_interrupted()

    def step(self, n: int = 1, preview=None) -> None:
        self.check_interrupt()
        self.value = min(self.total, self.value + n)
        if preview is None:
            self.bar.update_absolute(self.value, self.total)
        else:
            self.bar.update_absolute(self.value, self.total, ("JPEG", preview, 512))

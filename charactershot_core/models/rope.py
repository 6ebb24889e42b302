"""3D rotary position embeddings as the official CharacterShot pipeline builds them (spec §A.7).

The pipeline calls diffusers' ``get_3d_rotary_pos_embed`` (θ = 10000, ``use_real``, ``grid_type="linspace"``) with
crop coordinates from the "resize-crop region" of the token grid inside the base grid
(``sample_height // patch_size`` × ``sample_width // patch_size``).  It is called twice per group: once with the
number of latent frames (spatial-temporal attention) and once with the number of views (spatial-view attention,
the view index taking the place of time).  At the trained size the base grid equals the token grid and the crop is
((0, 0), (grid_h, grid_w)).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from diffusers.models.embeddings import get_3d_rotary_pos_embed


def grid_crop_region(grid_h: int, grid_w: int, base_h: int, base_w: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Top-left and bottom-right corners of a (grid_h, grid_w) grid fitted, aspect kept, into (base_h, base_w).

    The grid is scaled to touch the base grid on its limiting side and centred on the other; the corners are
    rounded to integers (this is the region the CogVideoX 1.0 pipelines hand to the RoPE builder).
    """
    if grid_h <= 0 or grid_w <= 0 or base_h <= 0 or base_w <= 0:
        raise ValueError(f"grid and base sizes must be positive, got grid {grid_h}x{grid_w}, base {base_h}x{base_w}")
    if grid_h / grid_w > base_h / base_w:
        fit_h, fit_w = base_h, int(round(base_h / grid_h * grid_w))
    else:
        fit_w, fit_h = base_w, int(round(base_w / grid_w * grid_h))
    top = int(round((base_h - fit_h) / 2.0))
    left = int(round((base_w - fit_w) / 2.0))
    return (top, left), (top + fit_h, left + fit_w)


def rotary_embeddings(
    num_frames_or_views: int,
    grid_h: int,
    grid_w: int,
    head_dim: int,
    base_grid: Optional[Tuple[int, int]] = None,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (T·grid_h·grid_w, head_dim), rows ordered t-major then h then w.

    ``grid_h``/``grid_w`` are the token grid (latent size // patch size).  ``base_grid`` is
    (sample_height // patch_size, sample_width // patch_size) of the transformer config; by default the grid
    itself, which is what the pipeline computes at the trained size.  Tables are computed in float32 (as diffusers
    does) and returned in ``dtype``; the attention applies them in float32 whatever the activation dtype.
    """
    if num_frames_or_views <= 0:
        raise ValueError(f"num_frames_or_views must be positive, got {num_frames_or_views}")
    if head_dim % 4 != 0:
        raise ValueError(f"head_dim must be divisible by 4 for 3D RoPE, got {head_dim}")
    base_h, base_w = base_grid if base_grid is not None else (grid_h, grid_w)
    crops = grid_crop_region(grid_h, grid_w, base_h, base_w)
    cos, sin = get_3d_rotary_pos_embed(
        embed_dim=head_dim,
        crops_coords=crops,
        grid_size=(grid_h, grid_w),
        temporal_size=num_frames_or_views,
        use_real=True,
        device=device,
    )
    return cos.to(dtype), sin.to(dtype)


def pipeline_rotary_embeddings(config, height: int, width: int, num_latent_frames: int, num_views: int,
                               vae_scale_factor_spatial: int = 8, device=None):
    """The two tables the official 4D pipeline passes: ``(image_rotary_emb, view_rotary_emb)``.

    ``config`` is a :class:`Transformer4DConfig` (or anything with ``patch_size``, ``attention_head_dim``,
    ``sample_height`` and ``sample_width``); ``height``/``width`` are pixel sizes.
    """
    p = config.patch_size
    grid_h = height // (vae_scale_factor_spatial * p)
    grid_w = width // (vae_scale_factor_spatial * p)
    base = (config.sample_height // p, config.sample_width // p)
    image = rotary_embeddings(num_latent_frames, grid_h, grid_w, config.attention_head_dim, base, device)
    view = rotary_embeddings(num_views, grid_h, grid_w, config.attention_head_dim, base, device)
    return image, view

"""CharacterShot models: our dual-attention 4D transformer, the camera guider, RoPE tables and fp8 storage.

The 2D pose model is a stock diffusers ``CogVideoXTransformer3DModel``; :func:`build_transformer_2d` makes one
from a config (on the meta device by default).
"""

from __future__ import annotations

import torch

from .camera_guider import CameraGuider, camera_tokens  # noqa: F401
from .config import FULL_CONFIG_2D, FULL_CONFIG_4D, Transformer4DConfig  # noqa: F401
from .rope import pipeline_rotary_embeddings, rotary_embeddings  # noqa: F401
from .transformer4d import (CharacterShotTransformer4D, build_on_meta, parameter_count,  # noqa: F401
                            random_init_)

_2D_KEYS = ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "flip_sin_to_cos",
            "freq_shift", "time_embed_dim", "ofs_embed_dim", "text_embed_dim", "num_layers", "dropout",
            "attention_bias", "sample_width", "sample_height", "sample_frames", "patch_size", "patch_size_t",
            "temporal_compression_ratio", "max_text_seq_length", "activation_fn", "timestep_activation_fn",
            "norm_elementwise_affine", "norm_eps", "spatial_interpolation_scale", "temporal_interpolation_scale",
            "use_rotary_positional_embeddings", "use_learned_positional_embeddings", "patch_bias")


def build_transformer_2d(config: dict | None = None, device: str | torch.device = "meta",
                         dtype: torch.dtype | None = None):
    """A diffusers ``CogVideoXTransformer3DModel`` (the Character2D pose model) for ``config``.

    Unknown keys (``_class_name``...) are ignored.  Learned positional embeddings are switched off after
    construction, as the official pipelines do (``pos_embedding`` stays in the state dict so checkpoints load
    strictly, but is never added: RoPE only).  On the meta device, load with ``assign=True``.
    """
    from diffusers import CogVideoXTransformer3DModel

    cfg = dict(FULL_CONFIG_2D if config is None else config)
    kwargs = {k: v for k, v in cfg.items() if k in _2D_KEYS}
    with torch.device(device):
        model = CogVideoXTransformer3DModel(**kwargs)
    model.patch_embed.use_learned_positional_embeddings = False
    if dtype is not None and torch.device(device).type != "meta":
        model = model.to(dtype)
    return model

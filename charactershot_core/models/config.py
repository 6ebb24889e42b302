"""Transformer configurations of the CharacterShot models.

``FULL_CONFIG_4D`` / ``FULL_CONFIG_2D`` are the CogVideoX-5B-I2V transformer configuration (spec §F) in the
diffusers ``config.json`` spelling; the 4D one names the official dual-attention class, the 2D one the stock
diffusers ``CogVideoXTransformer3DModel`` (the ``Character2D`` pose model).

``Transformer4DConfig`` is the typed form our own 4D transformer is built from.  Its defaults are the defaults of
the official/diffusers constructor, so a ``config.json`` that leaves a key out means what it means to diffusers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

FULL_CONFIG_4D: dict = {
    "_class_name": "CogVideoXTransformer4DModel",
    "num_attention_heads": 48,
    "attention_head_dim": 64,
    "in_channels": 32,
    "out_channels": 16,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "time_embed_dim": 512,
    "ofs_embed_dim": None,
    "text_embed_dim": 4096,
    "num_layers": 42,
    "dropout": 0.0,
    "attention_bias": True,
    "sample_width": 90,
    "sample_height": 60,
    "sample_frames": 49,
    "patch_size": 2,
    "patch_size_t": None,
    "temporal_compression_ratio": 4,
    "max_text_seq_length": 226,
    "activation_fn": "gelu-approximate",
    "timestep_activation_fn": "silu",
    "norm_elementwise_affine": True,
    "norm_eps": 1e-5,
    "spatial_interpolation_scale": 1.875,
    "temporal_interpolation_scale": 1.0,
    "use_rotary_positional_embeddings": True,
    "use_learned_positional_embeddings": True,
    "patch_bias": True,
}

FULL_CONFIG_2D: dict = dict(FULL_CONFIG_4D, _class_name="CogVideoXTransformer3DModel")

CLASS_NAME_4D = "CogVideoXTransformer4DModel"
CLASS_NAME_2D = "CogVideoXTransformer3DModel"


@dataclass
class Transformer4DConfig:
    """Configuration of :class:`~charactershot_core.models.transformer4d.CharacterShotTransformer4D`.

    Field names and defaults follow the official ``CogVideoXTransformer4DModel.__init__`` (itself the diffusers
    CogVideoX signature).  ``from_dict`` ignores keys it does not know (``_class_name``, ``_diffusers_version``...).
    """

    num_attention_heads: int = 30
    attention_head_dim: int = 64
    in_channels: int = 16
    out_channels: Optional[int] = 16
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    time_embed_dim: int = 512
    ofs_embed_dim: Optional[int] = None
    text_embed_dim: int = 4096
    num_layers: int = 30
    dropout: float = 0.0
    attention_bias: bool = True
    sample_width: int = 90
    sample_height: int = 60
    sample_frames: int = 49
    patch_size: int = 2
    patch_size_t: Optional[int] = None
    temporal_compression_ratio: int = 4
    max_text_seq_length: int = 226
    activation_fn: str = "gelu-approximate"
    timestep_activation_fn: str = "silu"
    norm_elementwise_affine: bool = True
    norm_eps: float = 1e-5
    spatial_interpolation_scale: float = 1.875
    temporal_interpolation_scale: float = 1.0
    use_rotary_positional_embeddings: bool = False
    use_learned_positional_embeddings: bool = False
    patch_bias: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "Transformer4DConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"_class_name": CLASS_NAME_4D, **d}

    # Derived sizes -------------------------------------------------------------------------------------------
    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def out_dim(self) -> int:
        return self.out_channels if self.out_channels is not None else self.in_channels

    def validate(self) -> None:
        """Reject configurations our implementation does not reproduce (with a message saying why)."""
        problems = []
        if self.patch_size_t is not None:
            problems.append(f"patch_size_t={self.patch_size_t} (CogVideoX 1.5 temporal patching) is not supported; "
                            "CharacterShot is built on CogVideoX 1.0 (patch_size_t null)")
        if self.ofs_embed_dim:
            problems.append(f"ofs_embed_dim={self.ofs_embed_dim} (CogVideoX 1.5 I2V) is not supported; expected null")
        if not self.use_rotary_positional_embeddings:
            problems.append("use_rotary_positional_embeddings=false: CharacterShot models use 3D RoPE; expected true")
        if self.activation_fn != "gelu-approximate":
            problems.append(f"activation_fn={self.activation_fn!r}: expected 'gelu-approximate'")
        if self.timestep_activation_fn != "silu":
            problems.append(f"timestep_activation_fn={self.timestep_activation_fn!r}: expected 'silu'")
        for name in ("num_attention_heads", "attention_head_dim", "in_channels", "time_embed_dim", "text_embed_dim",
                     "num_layers", "patch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                problems.append(f"{name}={v!r}: expected a positive integer")
        if problems:
            raise ValueError("unsupported transformer config: " + "; ".join(problems))


def config_from_any(config: Any) -> Transformer4DConfig:
    """Accept a :class:`Transformer4DConfig` or a diffusers-style dict."""
    if isinstance(config, Transformer4DConfig):
        config.validate()
        return config
    if isinstance(config, dict):
        return Transformer4DConfig.from_dict(config)
    raise TypeError(f"expected a Transformer4DConfig or a dict, got {type(config).__name__}")

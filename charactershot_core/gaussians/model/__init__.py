"""The Gaussians themselves and their motion models: canonical 3D Gaussians (``gaussians4d``) moved over time by a
per-Gaussian trajectory table or a HexPlane deformation field (``hexplane``), and their safetensors weights.

Imports: ``..rotations`` and ``charactershot_core.errors`` only (no rendering, fitting or formats).
"""

from .gaussians4d import (DEFAULT_FIELD, FORMAT, FORMAT_VERSION, MOTIONS, SH_C0, TABLE_KEYS, Deformation,  # noqa: F401
                          Gaussians4D, hermite_weights, make_gaussians, numpy_params, rgb_to_sh0,
                          scene_bounds, sh0_to_rgb)
from .hexplane import HexPlane  # noqa: F401

__all__ = ["Gaussians4D", "Deformation", "HexPlane", "make_gaussians", "scene_bounds", "rgb_to_sh0", "sh0_to_rgb",
           "SH_C0", "FORMAT", "FORMAT_VERSION", "DEFAULT_FIELD", "numpy_params", "MOTIONS",
           "TABLE_KEYS", "hermite_weights"]

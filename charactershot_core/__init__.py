"""CharacterShot core library: models, sampling, cameras, poses, 4D Gaussians and I/O.

This package never imports ComfyUI; the ComfyUI adapter lives in ``nodes/``.
"""

__version__ = "0.1.0"

from .errors import CharacterShotError, InputError  # noqa: F401

"""CharacterShot for ComfyUI: 4D character animation from a character image and a 2D pose sequence.

ComfyUI imports this folder as a custom-node package. The nodes use the V3 schema
(``comfy_api.v0_0_2``) and are registered through ``comfy_entrypoint``; the web widget is served from ``web/``.
"""

WEB_DIRECTORY = "./web"

from .nodes import comfy_entrypoint  # noqa: E402,F401

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]

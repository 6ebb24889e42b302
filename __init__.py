"""CharacterShot for ComfyUI: 4D character animation from a character image and a 2D pose sequence.

ComfyUI imports this folder as a custom-node package. The nodes use the V3 schema
(``comfy_api.latest``) and are registered through ``comfy_entrypoint``; the web widget is served from ``web/``.
"""

import importlib.util

WEB_DIRECTORY = "./web"

# Inside ComfyUI ``comfy_api`` is always importable and the nodes load (an error there must surface in ComfyUI's
# log). Outside it (pytest collecting this folder as a package, the headless CLI), only the core library is usable.
if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401

    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]

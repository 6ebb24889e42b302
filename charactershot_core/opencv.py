"""OpenCV from whichever distribution the environment already has.

``opencv-python``, ``opencv-python-headless`` and their ``-contrib-`` variants all install the same ``cv2`` module
and overwrite each other's files; other node packs (comfyui_controlnet_aux: ``opencv-python``) bring one of them.
The pack therefore declares none as a requirement (pip would put a second one beside the first) and imports ``cv2``
on first use through :data:`cv2`, a stand-in whose attributes are the real module's. Without any OpenCV the nodes
still load; the first step that needs it raises :class:`OpenCVMissing` saying what to install.

    from .opencv import cv2
    cv2.resize(img, (w, h))
"""

from __future__ import annotations

import logging

from .errors import CharacterShotError

# every distribution that provides the cv2 module; one is enough, two break each other
DISTRIBUTIONS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
INSTALL_HINT = ("install one OpenCV distribution into the Python that runs ComfyUI: "
                "'pip install opencv-python-headless' (or 'opencv-python', the one other node packs such as "
                "comfyui_controlnet_aux install); never both, they overwrite each other's cv2")

log = logging.getLogger(__name__)


class OpenCVMissing(CharacterShotError, ImportError):
    """No usable ``cv2`` in this Python."""


def require_cv2():
    """The ``cv2`` module, or :class:`OpenCVMissing` naming the distributions to install."""
    try:
        import cv2 as module
    except ImportError as e:
        raise OpenCVMissing(f"OpenCV (the cv2 module) is needed for this step and cannot be imported ({e}); "
                            f"{INSTALL_HINT}") from None
    return module


class _LazyCV2:
    """``cv2`` imported on first attribute access."""

    def __getattr__(self, name):
        return getattr(require_cv2(), name)

    def __repr__(self) -> str:
        return "<cv2, imported on first use>"


cv2 = _LazyCV2()


def installed_distributions(path=None) -> list[str]:
    """The OpenCV distributions installed (``path``: where to look, default ``sys.path``), by their metadata."""
    from importlib import metadata

    found = metadata.distributions() if path is None else metadata.distributions(path=list(path))
    names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in found}
    return [n for n in DISTRIBUTIONS if n in names]


def check(path=None) -> str | None:
    """A warning for the server log when OpenCV will not work well, else None."""
    found = installed_distributions(path)
    if len(found) > 1:
        return (f"OpenCV is installed twice ({', '.join(found)}): they share the cv2 module and overwrite each "
                f"other's files; uninstall all but one (pip uninstall {' '.join(found[1:])})")
    try:
        require_cv2()
    except OpenCVMissing as e:
        return f"{e}. The nodes load; the steps that draw poses, resize images or read videos need it"
    return None


def warn_at_load() -> None:
    msg = check()
    if msg:
        log.warning("[CharacterShot] %s", msg)

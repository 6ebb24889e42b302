"""The pack's sample inputs (``data/samples/``: a character picture and its pose, a short driving pose sequence),
which the flagship template loads, and their installation into ComfyUI's input folder.

The ComfyUI adapter calls :func:`install_samples` with ComfyUI's input folder when the pack loads: the files go to
the top of that folder as ``charactershot_sample_<name>`` (where core's Load Image lists pictures). A file already
there is never overwritten (a user may have edited it); a failure to copy (a read-only folder) is logged and changes
nothing else. Nothing is written outside the given folder."""

from __future__ import annotations

import logging
import os
import shutil

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "samples")
PREFIX = "charactershot_sample_"
FILES = ("character.png", "character_pose.json", "pose_wave.json")


def sample_name(name: str) -> str:
    """The name a loader takes for the sample ``name`` (a file of data/samples/)."""
    return PREFIX + name


def install_samples(input_dir: str) -> list[str]:
    """Copy the samples missing from ``input_dir``; returns the names copied."""
    copied = []
    try:
        for name in FILES:
            dst = os.path.join(input_dir, sample_name(name))
            if os.path.exists(dst):
                continue
            os.makedirs(input_dir, exist_ok=True)
            tmp = dst + ".partial"
            shutil.copyfile(os.path.join(SOURCE, name), tmp)
            os.replace(tmp, dst)
            copied.append(sample_name(name))
    except OSError as e:
        logging.warning("CharacterShot: could not copy the sample inputs to %s (%s); the templates' sample files "
                        "are in %s", input_dir, e, SOURCE)
    return copied

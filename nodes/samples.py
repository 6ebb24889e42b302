"""The pack's sample inputs (charactershot_core/data/samples/: a character picture and its pose, a short driving pose
sequence) put where ComfyUI's loaders find them: ``input/charactershot_samples/``, once, when the pack loads.

A file already there is never overwritten (a user may have edited it); a failure to copy (a read-only input folder)
is logged and changes nothing else. Nothing is written outside ComfyUI's input folder."""

from __future__ import annotations

import logging
import os
import shutil

SUBFOLDER = "charactershot_samples"
SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "charactershot_core", "data",
                      "samples")
FILES = ("character.png", "character_pose.json", "pose_wave.json")


def sample_path(name: str) -> str:
    """The value a loader takes for a sample: ``charactershot_samples/<name>`` (relative to the input folder)."""
    return f"{SUBFOLDER}/{name}"


def install_samples(input_dir: str | None = None) -> list[str]:
    """Copy the samples missing from ``<input>/charactershot_samples/``; returns the names copied."""
    if input_dir is None:
        import folder_paths

        input_dir = folder_paths.get_input_directory()
    target = os.path.join(input_dir, SUBFOLDER)
    copied = []
    try:
        for name in FILES:
            dst = os.path.join(target, name)
            if os.path.exists(dst):
                continue
            os.makedirs(target, exist_ok=True)
            tmp = dst + ".partial"
            shutil.copyfile(os.path.join(SOURCE, name), tmp)
            os.replace(tmp, dst)
            copied.append(name)
    except OSError as e:
        logging.warning("CharacterShot: could not copy the sample inputs to %s (%s); the templates' sample "
                        "files are in %s", target, e, SOURCE)
    return copied

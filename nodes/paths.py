"""Files the nodes read and write, kept inside the ComfyUI folders they belong to."""

from __future__ import annotations

import os
import re

import folder_paths

from ..charactershot_core.errors import InputError
from ..charactershot_core.naming import check_relative, confined, inside, path_too_long
from ..charactershot_core.naming import next_counter as _next_counter

# characters the nodes append to a prefix's last part: "_00001", "_frame_00001.splatv", a ".partial…" marker
NAME_RESERVE = 40
# and to the whole path: a private ".charshot-partial-XXXXXXXX" folder, the counter, the longest file name
PATH_RESERVE = 80


def _inside(root: str, path: str, pathmod=os.path) -> bool:
    return inside(root, path, pathmod)


def list_input_files(extensions: tuple[str, ...], max_files: int = 2000) -> list[str]:
    """Files under ComfyUI's input folder with one of ``extensions``, as relative paths with '/'."""
    root = folder_paths.get_input_directory()
    found: list[str] = []
    if not os.path.isdir(root):
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.lower().endswith(extensions):
                found.append(os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/"))
                if len(found) >= max_files:
                    return found
    return found


_LOCATION = re.compile(r"^(.*?)\s*\[(input|output|temp)\]$")


def folder_root(kind: str) -> str:
    """ComfyUI's input, output or temp folder."""
    return {"input": folder_paths.get_input_directory, "output": folder_paths.get_output_directory,
            "temp": folder_paths.get_temp_directory}[kind]()


def split_location(value: str, default: str = "input") -> tuple[str, str]:
    """``'name [output]'`` -> ``('name', 'output')``; a plain name is in ``default``."""
    text = (value or "").strip()
    m = _LOCATION.match(text)
    return (m.group(1).strip(), m.group(2)) if m else (text, default)


def resolve_in(name: str, kind: str, input_name: str, what: str = "file", expected: str | None = None) -> str:
    """Absolute path of ``name`` inside ComfyUI's ``kind`` folder (input, output, temp); refuses anything that would
    leave it.  ``what``: ``file``, ``folder`` or anything else (either) must exist there."""
    path = confined(folder_root(kind), name, input_name, kind, expected or "a " + what)
    exists = os.path.isfile if what == "file" else os.path.isdir if what == "folder" else os.path.exists
    if not exists(path):
        raise InputError(input_name, f"{what} not found in ComfyUI's {kind} folder: {name}")
    return path


def resolve_input_file(name: str, input_name: str) -> str:
    """Absolute path of ``name`` inside ComfyUI's input folder; refuses anything that would leave it."""
    return resolve_in(name, "input", input_name, "file")


def resolve_input_dir(name: str, input_name: str) -> str:
    """Absolute path of a folder inside ComfyUI's input folder; refuses anything that would leave it."""
    return resolve_in(name, "input", input_name, "folder")


def output_target(filename_prefix: str, input_name: str, temp: bool = False) -> tuple[str, str, str]:
    """(folder, subfolder, base name) for a prefix such as ``charactershot/gaussians``, inside output (or temp).
    Every part of the prefix must be a name legal on Windows, macOS and Linux (:mod:`charactershot_core.naming`)."""
    root = folder_paths.get_temp_directory() if temp else folder_paths.get_output_directory()
    where = "temp" if temp else "output"
    prefix = check_relative(filename_prefix, input_name, "file name prefix", reserve=NAME_RESERVE)
    subfolder, _, base = prefix.rpartition("/")
    folder = os.path.join(root, *subfolder.split("/")) if subfolder else root
    if not _inside(root, folder):
        raise InputError(input_name, f"{filename_prefix!r} points outside ComfyUI's {where} folder")
    too_long = path_too_long(os.path.join(folder, base), PATH_RESERVE)
    if too_long:
        raise InputError(input_name, too_long)
    return folder, subfolder, base


def next_counter(folder: str, base: str) -> int:
    """The next free counter for files named ``{base}_{counter:05d}...`` in ``folder`` (case-insensitive, as on
    Windows and macOS: :func:`charactershot_core.naming.next_counter`)."""
    return _next_counter(folder, base)


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a failure never leaves a half-written file."""
    tmp = f"{path}.partial{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_output_file(filename_prefix: str, ext: str, data: bytes, input_name: str, temp: bool = False) -> dict:
    """Save bytes as ``{prefix}_{counter:05d}{ext}`` and return the ``{filename, subfolder, type}`` ComfyUI serves."""
    folder, subfolder, base = output_target(filename_prefix, input_name, temp)
    os.makedirs(folder, exist_ok=True)
    name = f"{base}_{next_counter(folder, base):05d}{ext}"
    atomic_write(os.path.join(folder, name), data)
    return {"filename": name, "subfolder": subfolder, "type": "temp" if temp else "output"}

"""File and folder names built from user text, legal on Windows, macOS and Linux alike.

Every name the pack writes that contains something a user typed (a ``filename_prefix``, a jobs file's ``out``
folder) goes through this module, so a workflow made on one system saves on the others too.  The rules are
Windows' (the strictest of the three):

- none of ``< > : " / \\ | ? *`` and no control character (``\\x00``-``\\x1f``) inside a name;
- no name ending in a dot or a space (Windows silently drops them, so ``a.`` and ``a`` would be one file);
- none of the reserved device names ``CON PRN AUX NUL COM1-9 LPT1-9`` (also with superscript digits ``COM¹``),
  in any case, with or without an extension (``nul.txt`` and ``Con .png`` are reserved too);
- at most 255 characters per name (NTFS counts UTF-16 units, Linux and macOS count UTF-8 bytes: both are checked);
- on Windows, a whole path under ``MAX_PATH`` (260) unless the system has long paths enabled.

:func:`check_name` / :func:`check_relative` refuse a bad name with the pack's :class:`~.errors.InputError` (naming
the input and the fix); :func:`safe_name` turns any text into a legal name instead, for names that are not the
user's own choice.  :func:`inside` is the path confinement the nodes use; its path module is a parameter so that
Windows' rules (``ntpath``: drives, UNC shares, backslashes, case-insensitivity) are testable on any system.
"""

from __future__ import annotations

import os
import re
import sys

from .errors import InputError

ILLEGAL_CHARS = '<>:"/\\|?*'
_ILLEGAL = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_SUPERSCRIPT = "\u00b9\u00b2\u00b3"
RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
                     | {f"{dev}{d}" for dev in ("COM", "LPT") for d in "123456789" + _SUPERSCRIPT})
MAX_NAME = 255        # per file or folder name
MAX_PATH = 260        # a whole path on Windows without long-path support (including the final NUL)


def _name_units(name: str) -> int:
    """The length every file system counts: the larger of UTF-16 units (NTFS) and UTF-8 bytes (ext4, APFS)."""
    return max(len(name.encode("utf-16-le")) // 2, len(name.encode("utf-8")))


def name_problem(name: str, reserve: int = 0) -> str | None:
    """Why ``name`` (one file or folder name, no separators) is not legal everywhere, or ``None`` when it is.
    ``reserve``: characters the pack will append (a counter, an extension), counted in the length limit."""
    if not isinstance(name, str):
        return f"expected text, got {type(name).__name__}"
    if not name:
        return "an empty name"
    if name in (".", ".."):
        return f"{name!r} is not a name"
    bad = sorted(set(_ILLEGAL.findall(name)))
    if bad:
        shown = " ".join(repr(c) if c.isprintable() else f"\\x{ord(c):02x}" for c in bad)
        return f"{name!r} contains {shown}, which Windows does not allow in names (none of {ILLEGAL_CHARS} or control " \
               "characters)"
    if name[-1] in ". ":
        return f"{name!r} ends in a {'dot' if name[-1] == '.' else 'space'}, which Windows drops from names"
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in RESERVED:
        return f"{name!r} is a reserved device name on Windows ({stem}, with any extension)"
    n = _name_units(name) + reserve
    if n > MAX_NAME:
        extra = f" with the {reserve} characters the pack appends" if reserve else ""
        return f"{name[:24]!r}... is too long: {n} characters{extra}, at most {MAX_NAME} per name"
    return None


def safe_name(text: str, fallback: str = "unnamed", reserve: int = 0) -> str:
    """A legal name made from ``text``: illegal characters become ``_``, trailing dots and spaces go, a reserved
    device name gets a ``_`` suffix (``CON`` -> ``CON_``, ``nul.txt`` -> ``nul_.txt``), and the result is cut to
    the length limit (minus ``reserve``).  Empty text gives ``fallback``."""
    name = _ILLEGAL.sub("_", str(text or "")).strip().rstrip(". ")
    if name in ("", ".", ".."):
        name = fallback
    stem, dot, ext = name.partition(".")
    if stem.rstrip(" ").upper() in RESERVED:
        name = stem.rstrip(" ") + "_" + dot + ext
    limit = max(1, MAX_NAME - reserve)
    while _name_units(name) > limit:
        name = name[:-1]
    name = name.rstrip(". ") or fallback
    return name


def check_name(name: str, input_name: str, what: str = "name", reserve: int = 0) -> str:
    """``name`` if it is legal everywhere, else :class:`InputError` naming ``input_name`` and a legal alternative."""
    why = name_problem(name, reserve)
    if why is not None:
        raise InputError(input_name, f"expected a {what} that is legal on Windows, macOS and Linux: {why}; for example "
                                     f"{safe_name(name, reserve=reserve)!r}")
    return name


def _split(text: str) -> list[str]:
    return [p for p in re.split(r"[\\/]", text) if p not in ("", ".")]


def check_relative(text: str, input_name: str, what: str = "name", reserve: int = 0) -> str:
    """A relative name such as ``charactershot/alice`` (``/`` or ``\\`` between folders), checked part by part and
    returned with ``/``.  Refused: empty text, an absolute path (``/x``, ``\\x``, ``C:\\x``, ``C:x``,
    ``\\\\server\\share``), ``..``, and any part :func:`name_problem` refuses.  ``reserve`` applies to the last part."""
    raw = (text or "").strip() if isinstance(text, str) else text
    if not isinstance(raw, str) or not raw:
        raise InputError(input_name, f"expected a relative {what} such as 'charactershot/name', got {text!r}")
    if raw[0] in "/\\" or re.match(r"^[A-Za-z]:", raw):
        raise InputError(input_name, f"expected a relative {what} such as 'charactershot/name' (no drive, no leading "
                                     f"slash), got {text!r}")
    parts = _split(raw)
    if not parts:
        raise InputError(input_name, f"expected a relative {what} such as 'charactershot/name', got {text!r}")
    if ".." in parts:
        raise InputError(input_name, f"expected a {what} that stays inside its folder (no '..'), got {text!r}")
    for i, p in enumerate(parts):
        check_name(p, input_name, what, reserve if i == len(parts) - 1 else 0)
    return "/".join(parts)


def check_path(path: str, input_name: str, what: str = "folder", pathmod=os.path, existing_ok: bool = True) -> str:
    """Check every name in ``path`` (a folder the pack will create, absolute or relative) with :func:`name_problem`;
    the drive or share (``C:``, ``\\\\server\\share``) and ``.``/``..`` are left as they are, and so (with
    ``existing_ok``) are the folders that exist already: only the names the pack would create are its business."""
    if not isinstance(path, str) or not path.strip():
        raise InputError(input_name, f"expected a {what} path, got {path!r}")
    seps = "\\/" if pathmod.sep == "\\" else "/"
    drive, rest = pathmod.splitdrive(path)
    prefix = drive + (pathmod.sep if rest[:1] and rest[0] in seps else "")
    for p in re.split(f"[{re.escape(seps)}]", rest.lstrip(seps)):
        if p in ("", ".", ".."):
            continue
        prefix = pathmod.join(prefix, p) if prefix else p
        if existing_ok and pathmod is os.path and os.path.exists(prefix):
            continue
        why = name_problem(p)
        if why is not None:
            raise InputError(input_name, f"expected a {what} whose names are legal on Windows, macOS and Linux: {why} "
                                         f"(in {path!r})")
    return path


def _long_paths_enabled() -> bool:
    """Windows 10+ with ``LongPathsEnabled`` set (Python's own manifest opts in); ``False`` when unknown."""
    if sys.platform != "win32":
        return True
    try:
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem") as k:
            return bool(winreg.QueryValueEx(k, "LongPathsEnabled")[0])
    except OSError:
        return False


def path_too_long(path: str, reserve: int = 0, pathmod=os.path, long_paths: bool | None = None) -> str | None:
    """Why ``path`` plus ``reserve`` characters is too long for Windows (``MAX_PATH``) or ``None``.  Only Windows'
    path rules (``pathmod`` is ``ntpath``) have this limit, and only without long-path support."""
    if pathmod.sep != "\\":
        return None
    if long_paths is None:
        long_paths = pathmod is os.path and _long_paths_enabled()
    n = len(pathmod.abspath(path)) + reserve
    if long_paths or n < MAX_PATH:
        return None
    return f"the path would be {n} characters long ({path!r} plus up to {reserve} for the pack's file names); Windows " \
           f"allows {MAX_PATH - 1} unless long paths are enabled: use a shorter name"


def inside(root: str, path: str, pathmod=os.path) -> bool:
    """Whether ``path`` is ``root`` or lies under it, after resolving links (``pathmod.realpath``) and, with
    Windows' rules, case and separators (``pathmod.normcase``).  A path on another drive or share, or one that
    cannot be compared, is not inside (never an exception)."""
    try:
        r = pathmod.normcase(pathmod.realpath(root))
        p = pathmod.normcase(pathmod.realpath(path))
        return pathmod.commonpath([r, p]) == r
    except (ValueError, TypeError, OSError):
        return False


def confined(root: str, name: str, input_name: str, where: str = "input", expected: str = "a file",
             pathmod=os.path) -> str:
    """``root`` joined with the user's relative ``name``, refused with :class:`InputError` when the result would
    leave ``root``: an absolute name, a drive (``C:x``, ``D:\\\\x``) or share, ``..``, or a link pointing out.
    ``where`` names the folder in the message (``input``, ``output``, ``temp``)."""
    if not isinstance(name, str) or not name or pathmod.isabs(name) or pathmod.splitdrive(name)[0] \
            or name[0] in "/\\" or ".." in re.split(r"[\\/]", name):
        raise InputError(input_name, f"expected {expected} inside ComfyUI's {where} folder, got {name!r}")
    path = pathmod.join(root, *_split(name))
    if not inside(root, path, pathmod):
        raise InputError(input_name, f"{name!r} points outside ComfyUI's {where} folder")
    return path


def next_counter(folder: str, base: str) -> int:
    """The next free counter for files named ``{base}_{counter:05d}...`` in ``folder``.  Names are compared without
    case, because Windows and macOS file systems do: ``Alice_00001.ply`` takes counter 1 from ``alice`` too, so a
    later save never replaces an earlier one there."""
    pat = re.compile(re.escape(base) + r"_(\d{5,})", re.IGNORECASE)
    best = 0
    if os.path.isdir(folder):
        for fn in os.listdir(folder):
            m = pat.match(fn)
            if m:
                best = max(best, int(m.group(1)))
    return best + 1

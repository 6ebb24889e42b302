"""The ``batch`` jobs file: the characters to animate, with their views, poses, seeds and output folders.

::

    {
      "model": "models/charactershot/CharacterShot",       the multi-view model (official folder or file)
      "vae": null, "camera": null, "t5": null,             as 'sample' (default: inside the model folder)
      "text": null,                                        safetensors with prompt_embeds + negative_prompt_embeds
      "dtype": "auto", "weight_storage": "default", "text_mode": "faithful", "camera_source": "checkpoint",
      "defaults": {"steps": 50, "cfg": 6.0, "num_frames": 25},   any character field, for every character
      "fit": {"iterations": 3000, "scale": 0.5},           4D fit of each character (fit4d options); omit: no fit
      "characters": [
        {"name": "alice", "views": "alice/views", "poses": "alice/poses",
         "reference_pose": "alice/ref_pose.png", "seed": 42, "out": "out/alice"},
        ...
      ]
    }

Relative paths are relative to the jobs file's folder.  Character fields: ``name``, ``views``, ``poses``,
``reference_pose``, ``out`` (required; ``name`` defaults to the out folder's name), ``seed``, ``steps``, ``cfg``,
``num_frames``, ``scheduler``, ``dynamic_cfg``, ``prompt``, ``negative_prompt``, ``cameras``, ``group_size``,
``low_memory``, ``text``, ``fit`` (``false``: no fit for this one; an object: these fit4d options).
Every error names the file, the line and the field.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Optional

from ..errors import InputError
from ..naming import check_path

TOP_FIELDS = {"model": "path", "vae": "path?", "camera": "path?", "t5": "path?", "text": "path?",
              "dtype": ("auto", "bf16", "fp16", "fp32"), "weight_storage": ("default", "fp8_e4m3fn"),
              "text_mode": ("faithful", "per_sample"), "camera_source": ("checkpoint", "from_rig"),
              "defaults": "object", "fit": "fit", "characters": "list"}
CHAR_FIELDS = {"name": "str", "views": "path", "poses": "path", "reference_pose": "path", "out": "path",
               "seed": "int", "steps": "int", "cfg": "float", "num_frames": "int", "scheduler": "scheduler",
               "dynamic_cfg": "dynamic_cfg", "prompt": "str", "negative_prompt": "str", "cameras": "path?",
               "group_size": "int", "low_memory": "bool", "text": "path?", "fit": "fit"}
CHAR_REQUIRED = ("views", "poses", "reference_pose", "out")
FIT_FLAGS = {"no_temporal_windows", "no_densify", "quiet"}
FIT_REFUSED = {"frames", "cameras", "out", "metrics"}   # set by the batch itself


class _Lined(dict):
    """A JSON object that knows its line and the line of each of its keys."""

    line: int = 1
    key_lines: dict


def _key_positions(s: str, start: int, end: int) -> dict:
    """Offsets of the keys of the object spanning ``s[start:end]`` (``s[start] == '{'``), nested ones skipped."""
    out, depth, i = {}, 0, start
    while i < end:
        c = s[i]
        if c == '"':
            j = i + 1
            while j < end and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            if depth == 1:
                k = j + 1
                while k < end and s[k] in " \t\r\n":
                    k += 1
                if k < end and s[k] == ":":
                    out.setdefault(json.loads(s[i:j + 1]), i)
            i = j + 1
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        i += 1
    return out


class _LineDecoder(json.JSONDecoder):
    def __init__(self):
        super().__init__()
        base = json.decoder.JSONObject

        def parse_object(s_and_end, *args, **kw):
            s, begin = s_and_end
            obj, end = base(s_and_end, *args, **kw)
            d = _Lined(obj)
            d.line = s.count("\n", 0, begin - 1) + 1
            d.key_lines = {k: s.count("\n", 0, p) + 1 for k, p in _key_positions(s, begin - 1, end).items()}
            return d, end

        self.parse_object = parse_object
        self.scan_once = json.scanner.py_make_scanner(self)


@dataclass
class Character:
    index: int
    name: str
    fields: dict                     # merged with the defaults, paths resolved
    line: int
    key_lines: dict
    fit: Optional[dict] = None       # fit4d options (None: no fit)

    def where(self, key: str) -> str:
        return f"line {self.key_lines.get(key, self.line)}, characters[{self.index}].{key}"


@dataclass
class JobsFile:
    path: str
    top: dict
    characters: list = field(default_factory=list)
    line_of: dict = field(default_factory=dict)

    def error(self, where: str, msg: str) -> InputError:
        return InputError("jobs", f"{self.path}: {where}: {msg}")


def _err(path, line, where, msg):
    return InputError("jobs", f"{path}: line {line}, {where}: {msg}")


def _check_value(path, line, where, kind, value, base):
    if kind in ("path", "path?"):
        if value is None and kind == "path?":
            return None
        if not isinstance(value, str) or not value.strip():
            return _raise(_err(path, line, where, f"expected a path (a non-empty string), got {json.dumps(value)}"))
        v = os.path.expanduser(value)
        return v if os.path.isabs(v) else os.path.normpath(os.path.join(base, v))
    if kind == "str":
        if not isinstance(value, str):
            _raise(_err(path, line, where, f"expected a string, got {json.dumps(value)}"))
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            _raise(_err(path, line, where, f"expected an integer, got {json.dumps(value)}"))
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _raise(_err(path, line, where, f"expected a number, got {json.dumps(value)}"))
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            _raise(_err(path, line, where, f"expected true or false, got {json.dumps(value)}"))
        return value
    if kind in ("scheduler", "dynamic_cfg"):
        from ..sampling.schedulers import DYNAMIC_CFG, SCHEDULERS

        choices = list(SCHEDULERS if kind == "scheduler" else DYNAMIC_CFG)
        if value not in choices:
            _raise(_err(path, line, where, f"expected one of {choices}, got {json.dumps(value)}"))
        return value
    if isinstance(kind, tuple):
        if value not in kind:
            _raise(_err(path, line, where, f"expected one of {list(kind)}, got {json.dumps(value)}"))
        return value
    raise AssertionError(kind)


def _raise(e):
    raise e


def _fit_options(path, obj, line, where) -> Optional[dict]:
    if obj is None or obj is False:
        return None
    if obj is True:
        return {}
    if not isinstance(obj, dict):
        _raise(_err(path, line, where, f"expected an object of fit4d options, true or false, got {json.dumps(obj)}"))
    lines = getattr(obj, "key_lines", {})
    for k in obj:
        if k.replace("-", "_") in FIT_REFUSED:
            _raise(_err(path, lines.get(k, line), f"{where}.{k}", "set by the batch (the character's out folder "
                                                                  "and cameras); leave it out"))
    return dict(obj)


def fit_argv(options: dict, frames: str, cameras: str, out: str) -> list:
    """fit4d command line for ``options`` (``{"iterations": 200, "no_densify": true}`` -> ``--iterations 200
    --no-densify``)."""
    argv = ["fit4d", "--frames", frames, "--cameras", cameras, "--out", out]
    for k, v in options.items():
        flag = "--" + k.replace("_", "-")
        if k.replace("-", "_") in FIT_FLAGS:
            if v:
                argv.append(flag)
        else:
            argv += [flag, str(v)]
    return argv


def check_fit_options(path: str, options: dict, line: int, where: str) -> None:
    """Parse the fit options with the fit4d parser now, so a typo fails before any sampling."""
    import argparse

    from ..gaussians import cli as gcli

    parser = argparse.ArgumentParser(prog="fit4d", add_help=False, exit_on_error=False)
    sub = parser.add_subparsers(dest="command")
    gcli.register(sub)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            _args, extra = parser.parse_known_args(fit_argv(options, "F", "C", "O"))
    except (argparse.ArgumentError, SystemExit) as e:
        why = (err.getvalue().strip().splitlines() or [str(e)])[-1]
        raise _err(path, line, where, f"not a valid fit4d option set ({why}); see 'python -m charactershot_core "
                                      "fit4d -h'") from None
    if extra:
        raise _err(path, line, where, f"unknown fit4d option(s) {extra}; see 'python -m charactershot_core fit4d -h'")


def load_jobs(path: str) -> JobsFile:
    """Read and check a jobs file (paths resolved, defaults merged); nothing on disk is touched yet."""
    path = os.path.abspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InputError("jobs", f"cannot read {path} ({e.strerror or e})") from None
    try:
        top = _LineDecoder().decode(text)
    except json.JSONDecodeError as e:
        raise InputError("jobs", f"{path}: line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
    base = os.path.dirname(path)
    if not isinstance(top, dict):
        raise _err(path, 1, "top level", "expected an object with 'model' and 'characters'")
    tl = top.key_lines
    for k in top:
        if k not in TOP_FIELDS:
            raise _err(path, tl.get(k, 1), k, f"unknown field; expected one of {sorted(TOP_FIELDS)}")
    for k in ("model", "characters"):
        if k not in top:
            raise _err(path, top.line, "top level", f"missing field {k!r}")
    jobs = JobsFile(path, {})
    for k, kind in TOP_FIELDS.items():
        if k in ("defaults", "fit", "characters") or k not in top:
            continue
        jobs.top[k] = _check_value(path, tl.get(k, 1), k, kind, top[k], base)
    defaults = top.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _err(path, tl.get("defaults", 1), "defaults", "expected an object of character fields")
    dl = getattr(defaults, "key_lines", {})
    for k in defaults:
        if k not in CHAR_FIELDS or k in ("name", "out"):
            raise _err(path, dl.get(k, 1), f"defaults.{k}", f"not a field every character can share; expected "
                                                             f"some of {sorted(set(CHAR_FIELDS) - {'name', 'out'})}")
    top_fit = _fit_options(path, top.get("fit"), tl.get("fit", 1), "fit")
    if top_fit is not None:
        check_fit_options(path, top_fit, tl.get("fit", 1), "fit")
    chars = top["characters"]
    if not isinstance(chars, list) or not chars:
        raise _err(path, tl.get("characters", 1), "characters", "expected a non-empty list of characters")
    outs, names = {}, {}
    for i, c in enumerate(chars):
        if not isinstance(c, dict):
            raise _err(path, tl.get("characters", 1), f"characters[{i}]",
                       f"expected an object with views, poses, reference_pose and out, got {json.dumps(c)}")
        cl = c.key_lines
        for k in c:
            if k not in CHAR_FIELDS:
                raise _err(path, cl.get(k, c.line), f"characters[{i}].{k}",
                           f"unknown field; expected some of {sorted(CHAR_FIELDS)}")
        merged = {}
        for k, kind in CHAR_FIELDS.items():
            if k == "fit":
                continue
            if k in c:
                merged[k] = _check_value(path, cl.get(k, c.line), f"characters[{i}].{k}", kind, c[k], base)
            elif k in defaults:
                merged[k] = _check_value(path, dl.get(k, 1), f"defaults.{k}", kind, defaults[k], base)
        for k in CHAR_REQUIRED:
            if merged.get(k) is None:
                raise _err(path, c.line, f"characters[{i}]", f"missing field {k!r} (and no default)")
        try:
            check_path(merged["out"], "out", "folder")
        except InputError as e:
            raise _err(path, cl.get("out", c.line), f"characters[{i}].out", e.detail) from None
        if "fit" in c:
            fit = _fit_options(path, c["fit"], cl.get("fit", c.line), f"characters[{i}].fit")
            if fit is not None:
                fit = {**(top_fit or {}), **fit}
                check_fit_options(path, fit, cl.get("fit", c.line), f"characters[{i}].fit")
        else:
            fit = top_fit
        name = merged.get("name") or os.path.basename(merged["out"].rstrip(os.sep)) or f"character{i}"
        if merged["out"] in outs:
            raise _err(path, cl.get("out", c.line), f"characters[{i}].out",
                       f"the same output folder as characters[{outs[merged['out']]}] ({merged['out']}); give each "
                       "character its own")
        if name in names:
            raise _err(path, cl.get("name", c.line), f"characters[{i}].name",
                       f"the same name as characters[{names[name]}] ({name!r}); names must differ")
        outs[merged["out"]] = names[name] = i
        jobs.characters.append(Character(i, name, merged, c.line, dict(cl), fit))
    return jobs

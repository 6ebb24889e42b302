"""The export driver: the ``formats`` choice the CLI and Save 4D Gaussians share, and ``export_formats``, which
writes a chosen set (per-frame ``.ply`` / ``.spz``, one ``.splatv``, the one-file ``.html``, the ``.cs4d`` bundle)
of a model baked at given times. docs/4d.md lists which viewer opens which file.

Every writer is atomic (a temporary file and a rename); ``export_formats`` writes a whole set into a private
folder first, so a failure leaves no partial set.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import torch

from ...errors import InputError
from .bundle import bundle_meta, bundle_parts, write_bundle
from .common import atomic_write_bytes, baked_frames, sh0_to_rgb
from .html import html_bytes
from .ply import write_ply
from .splatv import SPLATV_MAX_GAUSSIANS, auto_windows, splatv_bytes, splatv_cameras
from .spz import SPZ_MAX_POINTS, write_spz

FORMATS = ("ply", "spz", "splatv", "html", "bundle")
DEFAULT_FORMATS = ("ply", "bundle")


def parse_formats(value, name: str = "formats") -> list[str]:
    """``"ply, spz"`` / ``["ply", "spz"]`` -> the chosen format names in FORMATS order; unknown names are an error."""
    if value is None:
        return list(DEFAULT_FORMATS)
    items = value.replace(";", ",").split(",") if isinstance(value, str) else list(value)
    chosen = []
    for item in items:
        if not isinstance(item, str):
            raise InputError(name, f"expected format names, got {item!r}")
        key = item.strip().lower().lstrip(".")
        if not key:
            continue
        if key == "cs4d":
            key = "bundle"
        if key not in FORMATS:
            raise InputError(name, f"unknown format {item.strip()!r}; expected some of {', '.join(FORMATS)}")
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise InputError(name, f"no format chosen; expected some of {', '.join(FORMATS)}")
    return [f for f in FORMATS if f in chosen]


def export_formats(model, out_dir: str, times, formats=DEFAULT_FORMATS, prefix: str = "", rig=None,
                   rig_source: str = "", splatv_windows: int | None = None) -> tuple[list[str], dict]:
    """Write ``formats`` of ``model`` baked at ``times`` (None: a static model) into ``out_dir``.

    Files: ``{prefix}frame_00001.ply`` ... (``{prefix}gaussians.ply`` for a static model), ``{prefix}frame_00001.spz``
    ... (``gaussians.spz``), ``{prefix}motion.splatv``, ``{prefix}viewer.html``, ``{prefix}bundle.cs4d``. ``rig`` (a
    CameraRig) gives the cameras the bundle, the HTML and the ``.splatv`` carry; ``splatv_windows``: time windows of
    the ``.splatv`` (``splatv_bytes``). Everything is written into a
    private temporary folder inside ``out_dir`` and moved in at the end: an error leaves none of the set.
    Returns the paths and a summary (per format: ``files``, ``bytes``, ``seconds``; ``splatv``: the motion fit).
    """
    chosen = parse_formats(formats)
    if model is None or getattr(model, "num_gaussians", 0) == 0:
        raise InputError("gaussians", "the model has no Gaussians; there is nothing to export")
    if times is not None and not list(times):
        raise InputError("times", "expected at least one frame time")
    os.makedirs(out_dir, exist_ok=True)
    n = model.num_gaussians
    if "spz" in chosen and n > SPZ_MAX_POINTS:
        raise InputError("formats", f"spz: {n} Gaussians are more than .spz readers accept ({SPZ_MAX_POINTS})")
    if splatv_windows is None or splatv_windows == 0:
        splatv_windows = auto_windows(len(times) if times is not None else 1)
    if "splatv" in chosen and n * max(1, int(splatv_windows)) > SPLATV_MAX_GAUSSIANS:
        raise InputError("formats", f"splatv: {n} Gaussians x {splatv_windows} time window(s) are more than a "
                                    f".splatv player holds ({SPLATV_MAX_GAUSSIANS})")
    t0 = time.perf_counter()
    ts, frames = baked_frames(model, times)
    summary: dict = {"count": n, "frames": len(ts), "formats": chosen, "bake_seconds": time.perf_counter() - t0}
    tmp = tempfile.mkdtemp(prefix=".charshot-partial-", dir=out_dir)
    written: list[str] = []
    try:
        def record(fmt, paths, start):
            summary[fmt] = {"files": len(paths), "bytes": int(sum(os.path.getsize(p) for p in paths)),
                            "seconds": time.perf_counter() - start, **summary.get(fmt, {})}
            written.extend(paths)

        if "ply" in chosen or "spz" in chosen:
            for fmt in ("ply", "spz"):
                if fmt not in chosen:
                    continue
                start, paths = time.perf_counter(), []
                for i, fr in enumerate(frames):
                    name = f"{prefix}frame_{i + 1:05d}.{fmt}" if times is not None else f"{prefix}gaussians.{fmt}"
                    path = os.path.join(tmp, name)
                    sh = torch.cat([fr["sh0"], fr["shN"]], dim=1)
                    writer = write_ply if fmt == "ply" else write_spz
                    writer(path, fr["means"], fr["quats"], fr["scales"], fr["opacities"], sh)
                    paths.append(path)
                record(fmt, paths, start)
        if "splatv" in chosen:
            start = time.perf_counter()
            tt = [0.0] if times is None else [float(x) for x in times]
            mid = int(np.argmin(np.abs(np.asarray(tt) - 0.5 * (min(tt) + max(tt)))))
            f = frames[mid]
            rgb = sh0_to_rgb(f["sh0"][:, 0, :].numpy())
            data, report = splatv_bytes(
                tt, torch.stack([fr["means"] for fr in frames]).numpy(),
                torch.stack([fr["quats"] for fr in frames]).numpy(), torch.exp(f["scales"]).numpy(), rgb,
                torch.sigmoid(f["opacities"]).numpy(), splatv_cameras(rig),
                meta={"times": tt, "source": "charactershot 4D Gaussians"}, windows=splatv_windows)
            path = atomic_write_bytes(os.path.join(tmp, f"{prefix}motion.splatv"), data)
            summary["splatv"] = {"fit": report}
            record("splatv", [path], start)
        bundle_data = None
        if "bundle" in chosen or "html" in chosen:
            start = time.perf_counter()
            static, dyn = bundle_parts(frames, model.is_dynamic)
            path = os.path.join(tmp, f"{prefix}bundle.cs4d")
            write_bundle(path, static, dyn, times if times is not None else [0.0],
                         meta=bundle_meta(model, rig.to_dict() if rig is not None else None, rig_source))
            with open(path, "rb") as fh:
                bundle_data = fh.read()
            if "bundle" in chosen:
                record("bundle", [path], start)
            else:
                os.unlink(path)
            if "html" in chosen:
                start = time.perf_counter()
                hp = atomic_write_bytes(os.path.join(tmp, f"{prefix}viewer.html"), html_bytes(bundle_data))
                record("html", [hp], start)
        final = []
        for p in written:
            dest = os.path.join(out_dir, os.path.basename(p))
            os.replace(p, dest)
            final.append(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary["seconds"] = time.perf_counter() - t0
    return final, summary


def summary_text(summary: dict) -> str:
    """One line per format for the node's text output and the CLI."""
    lines = [f"{summary['count']} Gaussians x {summary['frames']} frames"]
    for fmt in summary.get("formats", []):
        s = summary.get(fmt)
        if not s:
            continue
        line = f"{fmt}: {s['files']} file(s), {s['bytes'] / 1e6:.2f} MB, {s['seconds']:.2f} s"
        if fmt == "splatv":
            r = s["fit"]
            line += f"; {r.get('windows', 1)} time window(s)"
            line += (f"; cubic motion fit error (of the character's size): mean {100 * r['position_mean_rel']:.3f} %, "
                     f"p95 {100 * r['position_p95_rel']:.3f} %, max {100 * r['position_max_rel']:.2f} %; "
                     f"{100 * r['gaussians_over_1pct']:.1f} % of Gaussians off by > 1 % at some frame; rotation "
                     f"mean {r['rotation_mean_deg']:.2f} deg, p95 {r['rotation_p95_deg']:.2f} deg")
        lines.append(line)
    return "\n".join(lines)

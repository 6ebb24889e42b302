"""Headless 4D commands: ``fit4d``, ``render`` and ``export`` (``python -m charactershot_core <command> -h``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from ..errors import InputError
from .fitting.lost_parts import HELP_REPAIR
from .fitting.robust import HELP_ROBUST, ROBUST_LOSSES

WEIGHTS_NAME = "gaussians.safetensors"


def _int_list(text: str, name: str) -> list[int]:
    text = (text or "").strip()
    if not text:
        return []
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise InputError(name, f"expected comma-separated integers such as 3,10,17, got {text!r}") from None


def _float_list(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise InputError(name, f"expected comma-separated numbers such as 0,0.5,1, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("fit4d", help="fit 3D/4D Gaussians to multi-view images or videos and score held-out views")
    p.add_argument("--frames", required=True, help="folder with view{k}.png (static) or viewXX/frame_XXXXX.png (video)")
    p.add_argument("--cameras", required=True, help="camera rig JSON (the official template layout)")
    p.add_argument("--out", required=True, help="output folder: weights, held-out renders")
    p.add_argument("--metrics", default=None, help="metrics JSON file (default: OUT/metrics.json)")
    p.add_argument("--holdout", default="", help="view indices kept out of training and scored, e.g. 3,10,17")
    p.add_argument("--holdout-times", default="", help="frame indices kept out of training and scored as "
                                                       "intermediate times (videos; 0-based), e.g. 2,6")
    p.add_argument("--scale", type=float, default=1.0, help="resolution factor (0.25: 720x480 -> 180x120)")
    p.add_argument("--iterations", type=int, default=30000, help="maximum number of iterations")
    p.add_argument("--seconds", type=float, default=None, help="time budget in seconds from the start of the command to the end of the fit (loading "
                        "the frames and the fit's initialisation included; the scoring renders after it are not)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"], help="rasteriser")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sh-degree", type=int, default=None, help="spherical-harmonics degree (0-3)")
    p.add_argument("--batch-views", type=int, default=None, help="cameras per iteration")
    p.add_argument("--points", type=int, default=None, help="initial Gaussians from the visual hull")
    p.add_argument("--neighbour-weight", type=float, default=None, help="neighbour constraint weight (0: off)")
    p.add_argument("--rigidity-weight", type=float, default=None)
    p.add_argument("--isometry-weight", type=float, default=None)
    p.add_argument("--table-smoothness", type=float, default=None,
                   help="table: weight of the second-difference smoothness of the trajectories over frames")
    p.add_argument("--motion-model", default="table", choices=["table", "hexplane"],
                   help="videos: table = a trajectory per Gaussian initialised from optical flow (learns fast); "
                        "hexplane = the paper's deformation field (slow on a CPU)")
    p.add_argument("--no-temporal-windows", action="store_true", help="hexplane: train every frame from the start "
                                                                      "instead of windows growing from the middle frame")
    p.add_argument("--no-densify", action="store_true", help="keep the initial Gaussians (no densification)")
    p.add_argument("--no-repair-lost-parts", action="store_true",
                   help="do not run the repair: " + HELP_REPAIR.replace("%", "%%"))
    # views like a video model's (docs/4d.md): what each option costs and gains
    p.add_argument("--background-estimate", action=argparse.BooleanOptionalAction, default=None,
                   help=HELP_ROBUST["background_estimate"].replace("%", "%%"))
    p.add_argument("--appearance", action=argparse.BooleanOptionalAction, default=None,
                   help=HELP_ROBUST["appearance"].replace("%", "%%"))
    p.add_argument("--colour-field", default=None, choices=["auto", "on", "off"],
                   help=HELP_ROBUST["colour_field"].replace("%", "%%"))
    p.add_argument("--pose-refine", action=argparse.BooleanOptionalAction, default=None,
                   help=HELP_ROBUST["pose_refine"].replace("%", "%%"))
    p.add_argument("--pose-keep", type=float, default=None,
                   help="camera refinement: at the end of the static stage keep the corrections only when they move "
                        "the views' pictures by more than this share of the image's long side on average (default "
                        "0.001: 0.18 px at 180x120); else the views agree with the rig and the corrections are reset "
                        "and frozen, so consistent views pay nothing for them; 0 keeps them always")
    p.add_argument("--robust-loss", default=None, choices=list(ROBUST_LOSSES), help=HELP_ROBUST["robust_loss"].replace("%", "%%"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 is much faster "
                                                          "on a CPU shared with other busy processes")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_fit4d)

    r = subparsers.add_parser("render", help="render fitted Gaussians from a rig or an orbit at given times")
    r.add_argument("--weights", required=True, help=f"the {WEIGHTS_NAME} written by fit4d")
    r.add_argument("--out", required=True, help="output folder for PNGs")
    r.add_argument("--cameras", default=None, help="rig JSON (default: an orbit, see --orbit)")
    r.add_argument("--orbit", type=int, default=21, help="number of orbit views when no --cameras")
    r.add_argument("--width", type=int, default=720)
    r.add_argument("--height", type=int, default=480)
    r.add_argument("--scale", type=float, default=1.0)
    r.add_argument("--times", default=None, help="comma-separated times in [0,1] (default: the training times)")
    r.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    r.set_defaults(func=cmd_render)

    e = subparsers.add_parser("export", help="export per-frame .ply (a SuperSplat sequence) and .spz, a .splatv, a "
                                             "one-file .html viewer and the 4D bundle")
    e.add_argument("--weights", required=True, help=f"the {WEIGHTS_NAME} written by fit4d")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--times", default=None, help="comma-separated times in [0,1] (default: the training times)")
    e.add_argument("--no-ply", action="store_true", help="skip the per-frame .ply files")
    e.add_argument("--no-bundle", action="store_true", help="skip the 4D bundle")
    e.add_argument("--formats", default=None,
                   help="comma-separated formats to write, any of ply (per frame, a SuperSplat sequence), spz (per "
                        "frame, Niantic spz v3), splatv (one splaTV file), html (one-file viewer), bundle (.cs4d); "
                        "default: ply,bundle (overrides --no-ply / --no-bundle)")
    e.add_argument("--splatv-windows", type=int, default=0,
                   help=".splatv time windows: each Gaussian written once per window with its own cubic motion "
                        "(0: one per 5 frames, at most 5; 1: one cubic for the whole clip)")
    e.add_argument("--cameras", default=None, help="rig JSON whose cameras the bundle, HTML and .splatv carry "
                                                   "(default: the cameras the fit recorded, if any)")
    e.set_defaults(func=cmd_export)


# ----------------------------------------------------------------------------------------------- fit4d
def _say(args, *msg):
    if not getattr(args, "quiet", False):
        print(*msg, file=sys.stderr, flush=True)


def frame_name(k: int, fi: int, video: bool) -> str:
    return os.path.join("heldout", f"view{k}", f"frame_{fi + 1:05d}.png") if video else os.path.join("heldout", f"view{k}.png")


def cmd_fit4d(args) -> int:
    from .fitting.data import check_character, load_multiview
    from .fitting.fit import fit
    from .evaluation.metrics import summary_text

    # --seconds covers the whole command up to the end of the fit: from main()'s start (imports), loading counts
    started = getattr(args, "started", None) or time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    video = load_multiview(args.frames, args.cameras)
    check_character(video, "--frames")  # before any work, nothing written
    holdout, train_idx, hold_t, train_t = _fit4d_split(args, video.num_views, video.num_frames)
    if args.scale != 1.0:
        video = video.scaled(args.scale)
    cfg = _fit4d_config(args)
    train = video.select_views(train_idx).select_frames(train_t)
    _say(args, f"fit4d: {len(train_idx)} training views x {len(train_t)} frames at {video.width}x{video.height}, "
               f"held out views {holdout or 'none'}, times {hold_t or 'none'}")

    last = [0.0]

    def progress(state):
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            _say(args, f"  it {state.iteration} {state.stage} loss {state.loss:.4f} gaussians {state.num_gaussians} "
                       f"{state.elapsed:.0f}s")

    load_seconds = time.perf_counter() - started
    if cfg.seconds is not None:
        cfg.seconds = max(cfg.seconds - load_seconds, 1e-3)
    result = fit(train, cfg, progress)
    fit_end = time.perf_counter()
    model = result.model
    os.makedirs(args.out, exist_ok=True)
    model.save(os.path.join(args.out, WEIGHTS_NAME))

    metrics = {"iterations": result.iterations, "seconds": round(result.seconds, 3),
               "init_seconds": round(result.init_seconds, 3), "load_seconds": round(load_seconds, 3),
               "gaussians": model.num_gaussians,
               "backend": result.backend, "device": result.device, "width": video.width, "height": video.height,
               "train_views": train_idx, "holdout_views": holdout, "holdout_times": hold_t,
               "frames": video.num_frames, "dynamic": model.is_dynamic, "motion_model": model.motion,
               "repairs": getattr(result, "repairs", []), "pose_check": getattr(result, "pose_check", {})}
    _score_fit4d(args, video, model, metrics, train_idx, train_t)
    metrics["times_train"] = [video.times[f] for f in train_t]
    metrics["score_seconds"] = round(time.perf_counter() - fit_end, 3)
    metrics["config"] = result.config
    flat = _write_metrics(metrics, args.metrics or os.path.join(args.out, "metrics.json"))
    show = {k: flat[k] for k in flat if k.split(".")[0] in ("heldout", "train", "heldout_intermediate",
                                                            "train_intermediate", "motion", "iterations", "seconds",
                                                            "gaussians", "backend")
            and not isinstance(flat[k], list)}
    print(json.dumps(show, indent=1))
    print(summary_text(metrics))
    return 0


def _fit4d_split(args, v: int, nt: int):
    """The held-out and training views and frames of ``--holdout`` / ``--holdout-times``, checked."""
    holdout = sorted(set(_int_list(args.holdout, "holdout")))
    for k in holdout:
        if not 0 <= k < v:
            raise InputError("holdout", f"view {k} does not exist (there are {v} views, 0..{v - 1})")
    train_idx = [k for k in range(v) if k not in holdout]
    if len(train_idx) < 2:
        raise InputError("holdout", f"at least 2 training views must remain, got {len(train_idx)} of {v}")
    hold_t = sorted(set(_int_list(args.holdout_times, "holdout_times")))
    for f in hold_t:
        if not 0 <= f < nt:
            raise InputError("holdout_times", f"frame {f} does not exist (there are {nt} frames)")
    train_t = [f for f in range(nt) if f not in hold_t]
    if hold_t and len(train_t) < 2:
        raise InputError("holdout_times", "at least 2 training frames must remain")
    return holdout, train_idx, hold_t, train_t


def _fit4d_config(args):
    """The FitConfig of fit4d's options (the ones not given keep FitConfig's defaults)."""
    from .fitting.fit import FitConfig

    cfg = FitConfig(iterations=args.iterations, seconds=args.seconds, backend=args.backend, seed=args.seed,
                    motion=getattr(args, "motion_model", "table"))
    for name, attr in (("sh_degree", "sh_degree"), ("batch_views", "batch_views"), ("points", "init_points"),
                       ("neighbour_weight", "neighbour_weight"), ("rigidity_weight", "rigidity_weight"),
                       ("isometry_weight", "isometry_weight"), ("table_smoothness", "table_smoothness_weight"),
                       ("background_estimate", "background_estimate"), ("appearance", "appearance"),
                       ("pose_refine", "pose_refine"), ("pose_keep", "pose_keep"), ("robust_loss", "robust_loss"),
                       ("colour_field", "colour_field")):
        val = getattr(args, name)
        if val is not None:
            setattr(cfg, attr, val)
    cfg.temporal_windows = not args.no_temporal_windows
    cfg.densify = not args.no_densify
    cfg.repair_lost_parts = not getattr(args, "no_repair_lost_parts", False)
    return cfg


def _score_fit4d(args, video, model, metrics: dict, train_idx: list, train_t: list) -> None:
    """Render and score the fitted ``model`` into ``metrics``: the held-out views at every frame (their renders written
    to ``args.out``), the training views at up to 5 frames, the held-out times and the motion ratio."""
    from .fitting.data import write_png
    from .raster.views import render_views
    from .evaluation.metrics import clip_boxes, clip_scores, motion_scores, score

    holdout, hold_t = metrics["holdout_views"], metrics["holdout_times"]
    is_video = video.num_frames > 1

    def rend(views, frame_idx):
        """(V', T', H, W, 3) renders into one tensor, a few views per call (about 2 Mpx: one view at a time at full
        size, where the whole rig at once would hold the rasteriser's working memory for every view together)."""
        ts = [video.times[f] for f in frame_idx] if is_video else None
        step = max(1, 2_000_000 // (len(frame_idx) * video.width * video.height))
        out = None
        for a in range(0, len(views), step):
            # args.backend: the choice, not what ran
            img = render_views(model, video.rig.select(views[a:a + step]), ts, args.backend)
            if out is None:
                out = torch.empty((len(views),) + tuple(img.shape[1:]), dtype=img.dtype)
            out[a:a + img.shape[0]] = img
        return out

    def take(x, idx):
        """Frames ``idx`` of the clips ``x``; ``x`` itself (no copy) when that is all of them in order."""
        return x if list(idx) == list(range(x.shape[1])) else x[:, idx]

    # held-out views at every frame (training times and held-out times), rendered once; their renders on disk.
    # Box metrics use one character box per view (the ground truth's foreground over all frames, metrics.clip_boxes)
    all_t = sorted(set(train_t) | set(hold_t))
    pos = {f: i for i, f in enumerate(all_t)}

    def section(pred, gt, frames, boxes):
        """Whole-image + per-image-box scores, and the per-frame clip box scores, of pred/gt (V, T', ...)."""
        out = score(pred.reshape(-1, *pred.shape[2:]), gt.reshape(-1, *gt.shape[2:]))
        out.update(clip_scores(pred, gt, frames, boxes))
        return out

    if holdout:
        pred_all = rend(holdout, all_t)
        gt_all = video.pixels_of(holdout, all_t)  # uint8: the metrics convert one image at a time
        boxes = clip_boxes(gt_all)
        idx = [pos[f] for f in train_t]
        metrics["heldout"] = section(take(pred_all, idx), take(gt_all, idx), train_t, boxes)
        if hold_t:
            idx = [pos[f] for f in hold_t]
            metrics["heldout_intermediate"] = section(take(pred_all, idx), take(gt_all, idx), hold_t, boxes)
        if is_video:
            metrics["motion"] = {**motion_scores(pred_all, gt_all, boxes), "views": "held-out", "frames": all_t}
        for a, k in enumerate(holdout):
            for b, f in enumerate(all_t):
                write_png(os.path.join(args.out, frame_name(k, f, is_video)), pred_all[a, b])
    else:
        metrics["heldout"] = {"psnr": None, "ssim": None, "psnr_fg": None, "ssim_fg": None}
    # training views: every frame for short videos, a spread of up to 5 frames otherwise (+ the held-out times)
    sub = train_t if len(train_t) <= 5 else [train_t[i] for i in sorted({round(j * (len(train_t) - 1) / 4) for j in range(5)})]
    t_frames = sorted(set(sub) | set(hold_t))
    tpos = {f: i for i, f in enumerate(t_frames)}
    pred_tr = rend(train_idx, t_frames)
    gt_tr = video.pixels_of(train_idx, t_frames)
    tboxes = [clip_boxes(video.pixels_of([k], all_t))[0] for k in train_idx]  # one view at a time
    idx = [tpos[f] for f in sub]
    metrics["train"] = section(take(pred_tr, idx), take(gt_tr, idx), sub, tboxes)
    if hold_t:
        idx = [tpos[f] for f in hold_t]
        metrics["train_intermediate"] = section(take(pred_tr, idx), take(gt_tr, idx), hold_t, tboxes)
    if is_video and not holdout and len(t_frames) > 1:
        # no held-out views: the motion ratio on the training views (at the scored frames) is what can be computed
        metrics["motion"] = {**motion_scores(pred_tr, gt_tr, tboxes), "views": "training", "frames": t_frames}


def _write_metrics(metrics: dict, path: str) -> dict:
    """Write ``metrics`` to ``path`` (atomically) in both spellings: dotted keys ("heldout.psnr") and the nested
    sections ({"heldout": {"psnr": ...}}); returns the dotted ones."""
    flat = _flatten(metrics)
    both = dict(flat)
    for k, v in metrics.items():
        if isinstance(v, dict) and k != "config":
            both[k] = v
    text = json.dumps(both, indent=1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.partial{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return flat


def _flatten(d: dict, prefix: str = "") -> dict:
    """Nested metrics -> dotted keys (``heldout.psnr``), as the issue names them; the config stays nested."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "config":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ----------------------------------------------------------------------------------------------- render
def _times(text, model) -> list[float] | None:
    if not model.is_dynamic:
        return None
    if text is None:
        return list(model.times)
    ts = _float_list(text, "times")
    if not ts or any(not (0.0 <= t <= 1.0) for t in ts):
        raise InputError("times", f"expected times in [0, 1], got {text!r}")
    return ts


def cmd_render(args) -> int:
    from ..cameras import CameraRig, orbit_rig
    from .fitting.data import write_png
    from .raster.views import pick_device, render_views
    from .model import Gaussians4D

    model = Gaussians4D.load(args.weights)
    rig = CameraRig.load(args.cameras) if args.cameras else orbit_rig(num_views=args.orbit, width=args.width,
                                                                       height=args.height)
    if args.scale != 1.0:
        rig = rig.scaled(args.scale)
    times = _times(args.times, model)
    device = pick_device(args.backend)
    model.to(device)
    imgs = render_views(model, rig, times, args.backend, device)
    for k in range(imgs.shape[0]):
        for f in range(imgs.shape[1]):
            name = f"view{k}/frame_{f + 1:05d}.png" if times is not None else f"view{k}.png"
            write_png(os.path.join(args.out, name), imgs[k, f])
    print(f"wrote {imgs.shape[0] * imgs.shape[1]} images to {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from . import formats as fmt
    from .model import Gaussians4D

    model = Gaussians4D.load(args.weights)
    times = _times(args.times, model)
    if args.formats is not None:
        chosen = fmt.parse_formats(args.formats, "--formats")
    else:
        chosen = [f for f, on in (("ply", not args.no_ply), ("bundle", not args.no_bundle)) if on]
        if not chosen:
            raise InputError("--no-ply", "nothing to export: both --no-ply and --no-bundle were given")
    rig = None
    if args.cameras:
        from .. import cameras as cam

        try:
            with open(args.cameras, encoding="utf-8") as f:
                rig = cam.CameraRig.from_dict(json.load(f), "--cameras")
        except OSError as e:
            raise InputError("--cameras", f"cannot read {args.cameras}: {e.strerror}") from None
    files, summary = fmt.export_formats(model, args.out, times, chosen, rig=rig or _recorded_rig(model),
                                        rig_source="connected" if rig is not None else "fit",
                                        splatv_windows=args.splatv_windows)
    for f in files:
        print(f)
    print(fmt.summary_text(summary), file=sys.stderr)
    return 0


def _recorded_rig(model):
    """The training cameras the fit recorded in the model's config, if any."""
    from .. import cameras as cam

    rig = getattr(model, "config", {}).get("rig")
    if isinstance(rig, dict) and rig.get("views"):
        try:
            return cam.CameraRig.from_dict(rig, "rig")
        except InputError:
            return None
    return None


def export_all(model, out_dir: str, times, ply: bool = True, bundle: bool = True, prefix: str = "",
               formats=None, rig=None) -> list[str]:
    """Per-frame INRIA ``.ply`` files (``{prefix}frame_XXXXX.ply``, or ``{prefix}gaussians.ply`` for a static model)
    and the 4D bundle (``{prefix}bundle.cs4d``, docs/4d_bundle_format.md), or the ``formats`` chosen
    (``formats.export_formats``: also ``.spz``, ``.splatv``, ``.html``). The set is written atomically."""
    from . import formats as fmt

    chosen = formats if formats is not None else [f for f, on in (("ply", ply), ("bundle", bundle)) if on]
    if not chosen:
        return []
    return fmt.export_formats(model, out_dir, times, chosen, prefix=prefix, rig=rig)[0]


__all__ = ["register", "export_all", "WEIGHTS_NAME"]

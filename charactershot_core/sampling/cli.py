"""Headless sampling: ``sample`` (multi-view videos, any subset of view groups), ``merge`` and ``animate2d``.

``sample --out OUT`` writes::

    OUT/run.json                           the job (options, groups, their keys, the model identity)
    OUT/groups/<key>/...                   each finished view group (see store.py); reused by a rerun
    OUT/view<XX>/frame_<NNNNN>.png         the assembled views, once every group is there
    OUT/cameras.json                       their cameras (the 4D stage reads OUT directly: fit4d --frames OUT)

``groups`` reports the size of a group store (a ComfyUI's, ``--comfyui DIR``, or any folder, ``--store DIR``) and
clears it (``--clear``; ``--dry-run`` lists what would go; ``--older-than-days N`` keeps recently used groups).

``--groups 0,2`` samples only those groups (run another process, on another GPU or machine, with the others), and
``merge OUT RUN1 RUN2 ...`` gathers the groups of several runs of the same job and assembles them.  Nothing is
downloaded: models come from local paths.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import uuid

import numpy as np
import torch

from ..errors import InputError

RUN_FILE = "run.json"
GROUPS_DIR = "groups"
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp")


# --------------------------------------------------------------------------------------------------- inputs
def read_image(path: str, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise InputError(name, f"cannot read image {path} ({e})") from None


def read_views(folder: str) -> np.ndarray:
    """``view{k}.png`` or ``viewXX/frame_XXXXX.png`` (first frame of each view) -> (V, H, W, 3) uint8."""
    from ..gaussians.fitting.data import read_frames_dir

    arr = read_frames_dir(folder, "views")
    return np.ascontiguousarray(arr[:, 0])


def read_poses(folder: str, num_frames: int | None, name: str = "poses") -> np.ndarray:
    """Pose images sorted by the number in their name (``0.png``, ``1.png`` ... or ``frame_00001.png``); the first
    ``num_frames`` (all when None), as the official CLI takes them -> (F, H, W, 3) uint8."""
    if not os.path.isdir(folder):
        raise InputError(name, f"folder not found: {folder}")
    files = []
    for fn in os.listdir(folder):
        stem, ext = os.path.splitext(fn)
        m = re.search(r"(\d+)$", stem)
        if ext.lower() in _IMAGE_EXT and m:
            files.append((int(m.group(1)), fn))
    if not files:
        raise InputError(name, f"{folder} holds no numbered pose images (0.png, 1.png, ...)")
    files.sort()
    if num_frames is not None:
        if len(files) < num_frames:
            raise InputError(name, f"{folder} holds {len(files)} pose images; {num_frames} frames requested")
        files = files[:num_frames]
    imgs = [read_image(os.path.join(folder, fn), name) for _, fn in files]
    if len({im.shape for im in imgs}) != 1:
        raise InputError(name, f"pose images in {folder} differ in size")
    return np.stack(imgs)


def _text(args):
    """(prompt_embeds, negative_prompt_embeds) from --text, or T5 (--t5 or the model's official folder)."""
    from ..models import text as T

    if args.text:
        from safetensors.torch import load_file

        try:
            d = load_file(args.text)
            return d["prompt_embeds"], d["negative_prompt_embeds"]
        except (OSError, KeyError, ValueError) as e:
            raise InputError("text", f"{args.text}: expected a safetensors file with prompt_embeds and "
                                     f"negative_prompt_embeds ({type(e).__name__}: {e})") from None
    folder = args.t5 or (args.model if os.path.isdir(os.path.join(args.model, "text_encoder")) else None)
    if not folder:
        raise InputError("t5", "no text encoder: give --t5 FOLDER (text_encoder/ + tokenizer/) or --text "
                               "FILE.safetensors with prompt_embeds and negative_prompt_embeds")
    enc = T.T5FolderEncoder(folder, dtype=torch.float32)
    out = enc.encode([args.prompt, args.negative_prompt])
    return out[0:1].cpu(), out[1:2].cpu()


def _vae_path(args) -> str:
    if args.vae:
        return args.vae
    if os.path.isdir(os.path.join(args.model, "vae")):
        return args.model
    raise InputError("vae", "give --vae (a CogVideoX VAE file or folder); the model path has no vae/ folder")


def _spec(args, kind: str = "4d"):
    from .worker import SamplerSpec

    return SamplerSpec(checkpoint=args.model, vae=_vae_path(args), camera=getattr(args, "camera", None),
                       dtype=args.dtype, weight_storage=getattr(args, "weight_storage", "default"),
                       text_mode=getattr(args, "text_mode", "faithful"), device=args.device,
                       camera_source=getattr(args, "camera_source", "checkpoint"))


def _groups_arg(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError("groups", f"expected comma-separated group indices such as 0,2, got {text!r}") from None


def build_job(args, text=None):
    """The :class:`MultiViewJob` of a ``sample`` command line (inputs are read and checked before T5 is loaded)."""
    from ..cameras import CameraRig, official_rig
    from .job import MultiViewJob

    views = read_views(args.views)
    poses = read_poses(args.poses, args.num_frames)
    ref = read_image(args.reference_pose, "reference_pose")
    if args.cameras:
        rig = CameraRig.load(args.cameras)
    else:
        rig = official_rig()
        if len(rig) != views.shape[0]:
            raise InputError("views", f"{views.shape[0]} views but the official rig has {len(rig)}; give --cameras")
    h, w = views.shape[1:3]
    if (rig.width, rig.height) != (w, h):
        rig = rig.resized(w, h)
    groups = None
    if args.group_size:
        from ..cameras import view_groups

        groups = view_groups(views.shape[0], args.group_size)
    if text is None:
        text = _text(args)
    return MultiViewJob(torch.from_numpy(views), torch.from_numpy(poses), torch.from_numpy(ref), text[0], text[1],
                        seed=args.seed, steps=args.steps, guidance=args.cfg, scheduler=args.scheduler,
                        dynamic_cfg=args.dynamic_cfg, groups=groups, low_memory=args.low_memory, rig=rig)


# --------------------------------------------------------------------------------------------------- outputs
def write_assembled(out: str, frames: torch.Tensor, rig, times=None) -> None:
    """The assembled views into ``out`` (next to run.json and groups/), atomically per view folder."""
    from .store import write_multiview_folder

    tmp = os.path.join(out, f".assembled-{uuid.uuid4().hex[:8]}")
    try:
        write_multiview_folder(tmp, frames, rig, times)
        for name in sorted(os.listdir(tmp)):
            dst = os.path.join(out, name)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            os.replace(os.path.join(tmp, name), dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_run_file(out: str, job, identity: str) -> dict:
    info = {"job": job.describe(), "model_identity": identity,
            "group_keys": [job.group_key(i, identity) for i in range(len(job.groups))],
            "rig": job.rig.to_dict() if job.rig is not None else None}
    os.makedirs(out, exist_ok=True)
    p = os.path.join(out, RUN_FILE)
    tmp = p + f".partial{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, p)
    return info


def _print_step(gi: int, i: int, n: int, _x0) -> None:
    if i == n - 1 or i % 10 == 0:
        print(f"  group {gi}: step {i + 1}/{n}", file=sys.stderr, flush=True)


def cmd_sample(args) -> int:
    from .executor import LocalExecutor, sample_multiview
    from .store import GroupStore

    if args.threads:
        torch.set_num_threads(args.threads)
    job = build_job(args)
    for w in job.warnings:
        print(f"warning: {w}", file=sys.stderr)
    t0 = time.time()
    worker = _spec(args).build()
    for w in worker.check_job(job):
        print(f"warning: {w}", file=sys.stderr)
    out = os.path.abspath(args.out)
    write_run_file(out, job, worker.identity)
    store = GroupStore(os.path.join(out, GROUPS_DIR))

    def on_group(res):
        how = "reused" if res.reused else "sampled"
        print(f"group {res.index} {how}: views {res.views} -> {res.path}", file=sys.stderr, flush=True)

    result = sample_multiview(job, LocalExecutor(worker), store, _groups_arg(args.groups),
                              on_step=None if args.quiet else _print_step, on_group=on_group)
    if result.complete:
        write_assembled(out, result.frames, job.rig, job.rig.times if job.rig is not None else None)
        print(f"all {len(job.groups)} groups done in {time.time() - t0:.1f} s: {job.num_views} views x "
              f"{job.num_frames} frames in {out}")
    else:
        left = sorted(set(range(len(job.groups))) - set(result.results))
        print(f"groups {sorted(result.results)} done in {time.time() - t0:.1f} s; groups {left} are left: run "
              f"them elsewhere and 'merge' the runs")
    return 0


def merge_runs(out: str, runs: list[str]) -> dict:
    """Gather the finished groups of several runs of one job into ``out`` and assemble them when complete."""
    from .job import assemble
    from .store import GroupStore

    infos = []
    for r in runs:
        p = os.path.join(r, RUN_FILE)
        if not os.path.isfile(p):
            raise InputError("runs", f"{r} has no {RUN_FILE}: not a 'sample' output folder")
        with open(p, encoding="utf-8") as f:
            infos.append(json.load(f))
    keys = infos[0]["group_keys"]
    for r, info in zip(runs[1:], infos[1:]):
        if info["group_keys"] != keys:
            raise InputError("runs", f"{r} is a run of another job (different inputs, options, seed or model) "
                                     f"than {runs[0]}; only runs of the same job can be merged")
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    target = GroupStore(os.path.join(out, GROUPS_DIR))
    for r in runs:
        src = GroupStore(os.path.join(r, GROUPS_DIR))
        for k in src.keys():
            if k in keys and not target.has(k) and os.path.abspath(src.path(k)) != target.path(k):
                tmp = os.path.join(target.root, f".{k}.partial-{uuid.uuid4().hex[:8]}")
                os.makedirs(target.root, exist_ok=True)
                shutil.copytree(src.path(k), tmp)
                os.replace(tmp, target.path(k))
    p = os.path.join(out, RUN_FILE)
    if not os.path.isfile(p):
        shutil.copyfile(os.path.join(runs[0], RUN_FILE), p)
    missing = [i for i, k in enumerate(keys) if not target.has(k)]
    if missing:
        return {"complete": False, "missing": missing}
    results = {i: target.load(k) for i, k in enumerate(keys)}
    job = infos[0]["job"]
    frames = assemble(job["groups"], results, job["views"])
    from ..cameras import CameraRig

    rig = CameraRig.from_dict(infos[0]["rig"]) if infos[0].get("rig") else None
    write_assembled(out, frames, rig, rig.times if rig is not None else None)
    return {"complete": True, "missing": []}


def cmd_merge(args) -> int:
    res = merge_runs(args.out, args.runs)
    if res["complete"]:
        print(f"merged {len(args.runs)} run(s) into {args.out}: all groups present, views assembled")
        return 0
    print(f"merged into {args.out}; groups {res['missing']} are still missing", file=sys.stderr)
    return 1


def cmd_animate2d(args) -> int:
    from ..models.loading import load_model_2d, load_vae
    from .job import Animate2DJob
    from .store import write_view_frames
    from .worker import SamplerSpec, animate_2d

    if args.threads:
        torch.set_num_threads(args.threads)
    text = _text(args)
    image = read_image(args.image, "image")
    poses = read_poses(args.poses, args.num_frames)
    ref = read_image(args.reference_pose, "reference_pose")
    job = Animate2DJob(torch.from_numpy(image), torch.from_numpy(poses), torch.from_numpy(ref), text[0], text[1],
                       seed=args.seed, steps=args.steps, guidance=args.cfg, scheduler=args.scheduler,
                       dynamic_cfg=args.dynamic_cfg, low_memory=args.low_memory)
    for w in job.warnings:
        print(f"warning: {w}", file=sys.stderr)
    spec = SamplerSpec(args.model, _vae_path(args), dtype=args.dtype, device=args.device)
    dev = spec.resolved_device()
    dtype = spec.resolved_dtype(dev)
    model = load_model_2d(args.model, dtype, device=dev)
    vae = load_vae(spec.vae, dtype, device=dev)
    frames = animate_2d(model, vae, job, dev, on_step=None if args.quiet else
                        (lambda i, n, x0: _print_step(0, i, n, x0)))
    out = os.path.abspath(args.out)
    tmp = out + f".partial-{uuid.uuid4().hex[:8]}"
    try:
        write_view_frames(tmp, 0, frames)
        os.makedirs(out, exist_ok=True)
        dst = os.path.join(out, "view00")
        if os.path.isdir(dst):
            shutil.rmtree(dst)
        os.replace(os.path.join(tmp, "view00"), dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{frames.shape[0]} frames in {os.path.join(out, 'view00')}")
    return 0


# --------------------------------------------------------------------------------------------------- parser
def _common(p, model_help: str) -> None:
    from ..models.text import OFFICIAL_NEGATIVE_PROMPT, OFFICIAL_PROMPT
    from .schedulers import DYNAMIC_CFG, SCHEDULERS

    p.add_argument("--poses", required=True, help="folder of pose images 0.png, 1.png, ... (black canvas)")
    p.add_argument("--reference-pose", required=True, help="the reference pose image (pose of view 0 / the image)")
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--vae", default=None, help="CogVideoX VAE file or folder (default: MODEL/vae)")
    p.add_argument("--t5", default=None, help="T5 folder with text_encoder/ + tokenizer/ (default: MODEL)")
    p.add_argument("--text", default=None, help="safetensors with prompt_embeds + negative_prompt_embeds instead of T5")
    p.add_argument("--prompt", default=OFFICIAL_PROMPT)
    p.add_argument("--negative-prompt", default=OFFICIAL_NEGATIVE_PROMPT)
    p.add_argument("--num-frames", type=int, default=25, help="frames (4k+1); the first N pose images are used")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=6.0, help="guidance scale")
    p.add_argument("--scheduler", default="dpm", choices=list(SCHEDULERS))
    p.add_argument("--dynamic-cfg", default="timestep", choices=list(DYNAMIC_CFG),
                   help="timestep: as the official code (the default); step_index: the fix; off: constant")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--low-memory", action="store_true", help="run the CFG halves one after the other")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", required=True, help="output folder")


def store_from_args(args):
    """The group store named by ``--store`` (a folder) or ``--comfyui`` (a ComfyUI folder, or ``--user-directory``)."""
    from .store import COMFY_STORE, GroupStore, comfy_store_root

    if bool(args.store) == bool(args.comfyui or args.user_directory):
        raise InputError("store", "give the store folder (--store DIR) or the ComfyUI it belongs to (--comfyui DIR "
                                  "or --user-directory DIR)")
    if args.store:
        root = args.store
    else:
        user = args.user_directory or os.path.join(args.comfyui, "user")
        if not os.path.isdir(user):
            raise InputError("comfyui", f"{user} is not a folder (ComfyUI's user directory is expected there; "
                                        "with --user-directory give that folder)")
        root = comfy_store_root(user)
    if os.path.exists(root) and not os.path.isdir(root):
        raise InputError("store", f"{root} is not a folder")
    if args.store and os.path.isdir(root) and any(os.path.isfile(os.path.join(root, n)) for n in os.listdir(root)):
        raise InputError("store", f"{root} holds files, so it is not a group store (one folder per group); "
                                  f"a ComfyUI's store is <user directory>/{'/'.join(COMFY_STORE)}")
    return GroupStore(root)


def cmd_groups(args) -> int:
    from .store import human_size

    store = store_from_args(args)
    if args.older_than_days < 0:
        raise InputError("older-than-days", f"expected 0 or more days, got {args.older_than_days}")
    if args.clear:
        rep = store.clear(dry_run=args.dry_run, older_than_days=args.older_than_days)
        verb = "would free" if args.dry_run else "freed"
        print(rep.text("would lose" if args.dry_run else "lost"))
        print(f"{verb} {human_size(rep.bytes)}")
    else:
        rep = store.report(args.older_than_days)
        for key, size, used in rep.groups:
            print(f"{key}  {human_size(size):>9}  last used {time.strftime('%Y-%m-%d %H:%M', time.localtime(used))}")
        print(rep.text())
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="multi-view videos of a character (any subset of its view groups)")
    p.add_argument("--views", required=True, help="folder with view0.png ... (or viewXX/frame_00001.png)")
    p.add_argument("--cameras", default=None, help="rig JSON of the views (default: the official 21-view rig)")
    p.add_argument("--camera", default=None, help="camera pack / official folder (default: the model folder)")
    p.add_argument("--camera-source", default="checkpoint", choices=["checkpoint", "from_rig"],
                   help="camera embeddings from the checkpoint (official) or Plücker rays of --cameras")
    p.add_argument("--weight-storage", default="default", choices=["default", "fp8_e4m3fn"])
    p.add_argument("--text-mode", default="faithful", choices=["faithful", "per_sample"])
    p.add_argument("--groups", default=None, help="comma-separated view-group indices to sample (default: all)")
    p.add_argument("--group-size", type=int, default=0, help="views per group (default: 5, the official groups)")
    _common(p, "the CharacterShot model: official folder or single .safetensors (+ --camera)")
    p.set_defaults(func=cmd_sample)

    m = subparsers.add_parser("merge", help="gather the groups of several 'sample' runs of one job and assemble them")
    m.add_argument("--out", required=True, help="output folder (may be one of the runs)")
    m.add_argument("runs", nargs="+", help="'sample' output folders")
    m.set_defaults(func=cmd_merge)

    g = subparsers.add_parser("groups", help="size of a store of finished view groups; --clear empties it")
    g.add_argument("--store", default=None, help="the store folder (e.g. a 'sample' run's OUT/groups)")
    g.add_argument("--comfyui", default=None, help="a ComfyUI folder: its store, user/__charactershot/cache/groups")
    g.add_argument("--user-directory", default=None, help="a ComfyUI's --user-directory, if it was moved")
    g.add_argument("--clear", action="store_true", help="remove the groups (and unfinished writes left by a crash)")
    g.add_argument("--dry-run", action="store_true", help="with --clear: list what would be removed, remove nothing")
    g.add_argument("--older-than-days", type=float, default=0.0,
                   help="only groups last used more than N days ago (0: all)")
    g.set_defaults(func=cmd_groups)

    a = subparsers.add_parser("animate2d", help="2D pose-driven animation of one image (Character2D model)")
    a.add_argument("--image", required=True, help="the reference image")
    _common(a, "the Character2D model: official folder or single .safetensors")
    a.set_defaults(func=cmd_animate2d)

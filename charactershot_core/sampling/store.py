"""Finished view groups on disk, and the saved multi-view layout.

Group store (``GroupStore(root)``): one folder per group key, written under a temporary name and renamed when
complete, so a folder that exists is a finished group (an interrupted write leaves only a ``.partial`` folder that
is ignored and cleaned up)::

    <root>/<key>/group.json                     what the group is (index, views, frames, job summary)
    <root>/<key>/latents.safetensors            final latents (1, Vg, L + 1, C, h, w) float32
    <root>/<key>/view<XX>/frame_<NNNNN>.png     decoded frames (XX = view index in the rig, NNNNN from 00001)

PNG is lossless: a reused group gives exactly the frames a fresh run gives.  Loading a group touches its
``group.json``, so its modification time is the group's last use (:meth:`GroupStore.clear` can keep recent ones).

In ComfyUI the store lives in the user directory, ``<user>/__charactershot/cache/groups`` (``COMFY_STORE``), which
ComfyUI keeps across restarts (its temp folder is emptied at every start) and does not serve over HTTP.

Saved multi-view layout (``write_multiview_folder``), the one the 4D CLI and the official ``prepare_data.py`` use::

    <folder>/view<XX>/frame_<NNNNN>.png         XX = 00..V-1, NNNNN = 00001..F
    <folder>/cameras.json                       the rig (CameraRig JSON) with the frame times
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..cameras import CameraRig
from ..errors import InputError
from .job import GroupResult

# The group store inside ComfyUI's user directory (folder names; nodes/sampling.py and ``groups --comfyui``).
COMFY_STORE = ("__charactershot", "cache", "groups")
STALE_PARTIAL_SECONDS = 6 * 3600  # an unfinished write older than this is left over from a crash


def comfy_store_root(user_directory: str) -> str:
    """The group store of a ComfyUI whose user directory is ``user_directory``."""
    return os.path.join(os.path.abspath(user_directory), *COMFY_STORE)


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def folder_bytes(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for fn in files:
            try:
                total += os.lstat(os.path.join(dirpath, fn)).st_size
            except OSError:
                continue
    return total


@dataclass
class StoreReport:
    """What a store holds (or what :meth:`GroupStore.clear` removed / would remove)."""

    root: str
    groups: list = field(default_factory=list)      # [(key, bytes, last used: seconds since the epoch)]
    partial: list = field(default_factory=list)     # [(folder name, bytes)] unfinished writes
    kept: int = 0                                   # groups kept by ``older_than_days``
    removed: bool = False                           # True: the groups and partial folders listed are gone

    @property
    def bytes(self) -> int:
        return sum(b for _, b, _ in self.groups) + sum(b for _, b in self.partial)

    def text(self, verb: str = "holds") -> str:
        n = len(self.groups)
        head = f"{self.root} {verb} {n} finished view group{'s' if n != 1 else ''}"
        if self.partial:
            head += f" and {len(self.partial)} unfinished write{'s' if len(self.partial) != 1 else ''}"
        head += f": {human_size(self.bytes)}"
        if self.kept:
            head += f" (and {self.kept} used more recently, left alone)"
        return head



def _write_png(path: str, rgb: np.ndarray) -> None:
    from ..opencv import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"cannot encode {path}")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def _read_png(path: str) -> np.ndarray:
    from ..opencv import cv2

    try:  # read the bytes ourselves: cv2.imread cannot open non-ASCII paths on Windows
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError("frames", f"cannot read image {path}: {exc}") from exc
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise InputError("frames", f"cannot read image {path}")
    return np.ascontiguousarray(img[..., ::-1])


def write_view_frames(folder: str, view: int, frames: torch.Tensor) -> None:
    """frames (F, H, W, 3) uint8 -> ``folder/view<XX>/frame_<NNNNN>.png``."""
    d = os.path.join(folder, f"view{view:02d}")
    os.makedirs(d, exist_ok=True)
    arr = frames.numpy() if torch.is_tensor(frames) else np.asarray(frames)
    for i, im in enumerate(arr):
        _write_png(os.path.join(d, f"frame_{i + 1:05d}.png"), im)


class GroupStore:
    """Finished groups under ``root``, keyed by :meth:`MultiViewJob.group_key`."""

    def __init__(self, root: str):
        self.root = os.path.abspath(os.fspath(root))

    def path(self, key: str) -> str:
        return os.path.join(self.root, key)

    def has(self, key: str) -> bool:
        return os.path.isfile(os.path.join(self.path(key), "group.json"))

    def save(self, result: GroupResult, job_summary: Optional[dict] = None) -> str:
        from safetensors.torch import save_file

        os.makedirs(self.root, exist_ok=True)
        final = self.path(result.key)
        if self.has(result.key):
            result.path = final
            return final
        tmp = os.path.join(self.root, f".{result.key}.partial-{uuid.uuid4().hex[:8]}")
        try:
            os.makedirs(tmp)
            save_file({"latents": result.latents.detach().float().cpu().contiguous()},
                      os.path.join(tmp, "latents.safetensors"))
            for j, v in enumerate(result.views):
                write_view_frames(tmp, v, result.frames[j])
            meta = {"index": result.index, "views": result.views, "key": result.key,
                    "frames": int(result.frames.shape[1]), "height": int(result.frames.shape[2]),
                    "width": int(result.frames.shape[3]), "job": job_summary or {}}
            with open(os.path.join(tmp, "group.json"), "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=1)
            try:
                os.replace(tmp, final)
            except OSError:
                if not self.has(result.key):  # another process finished the same group first: keep theirs
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        result.path = final
        return final

    def load(self, key: str) -> GroupResult:
        from safetensors.torch import load_file

        d = self.path(key)
        try:
            with open(os.path.join(d, "group.json"), encoding="utf-8") as f:
                meta = json.load(f)
            latents = load_file(os.path.join(d, "latents.safetensors"))["latents"]
            frames = []
            for v in meta["views"]:
                vd = os.path.join(d, f"view{int(v):02d}")
                frames.append(np.stack([_read_png(os.path.join(vd, f"frame_{i + 1:05d}.png"))
                                        for i in range(int(meta["frames"]))]))
        except (OSError, ValueError, KeyError) as e:
            raise InputError("groups", f"the stored group {d} is damaged ({type(e).__name__}: {e}); delete that "
                                       "folder to sample the group again") from None
        try:
            os.utime(os.path.join(d, "group.json"))  # last use, for clear(older_than_days=...)
        except OSError:
            pass
        return GroupResult(int(meta["index"]), [int(v) for v in meta["views"]], key, latents,
                           torch.from_numpy(np.stack(frames)), reused=True, path=d)

    def keys(self) -> list:
        if not os.path.isdir(self.root):
            return []
        return sorted(k for k in os.listdir(self.root) if not k.startswith(".") and self.has(k))

    def report(self, older_than_days: float = 0.0, stale_partial: float = STALE_PARTIAL_SECONDS,
               now: Optional[float] = None) -> StoreReport:
        """The finished groups (all, or those last used more than ``older_than_days`` ago) and the unfinished
        writes older than ``stale_partial`` seconds, with their sizes."""
        now = time.time() if now is None else now
        rep = StoreReport(self.root)
        if not os.path.isdir(self.root):
            return rep
        for key in self.keys():
            d = self.path(key)
            used = os.path.getmtime(os.path.join(d, "group.json"))
            if older_than_days > 0 and now - used < older_than_days * 86400:
                rep.kept += 1
                continue
            rep.groups.append((key, folder_bytes(d), used))
        for name in sorted(os.listdir(self.root)):
            d = os.path.join(self.root, name)
            if not (name.startswith(".") and os.path.isdir(d)):
                continue
            if ".removing-" in name or ".partial-" in name and now - os.path.getmtime(d) >= stale_partial:
                rep.partial.append((name, folder_bytes(d)))
        return rep

    def clear(self, dry_run: bool = True, older_than_days: float = 0.0,
              stale_partial: float = STALE_PARTIAL_SECONDS) -> StoreReport:
        """Remove the finished groups (all, or those last used more than ``older_than_days`` days ago) and
        unfinished writes left by a crash; ``dry_run`` only reports what would go.  Writes in progress (younger
        than ``stale_partial`` seconds) are never touched."""
        rep = self.report(older_than_days, stale_partial)
        if dry_run:
            return rep
        for key, _, _ in rep.groups:
            # rename first: a half-deleted group must never look finished
            d = self.path(key)
            gone = os.path.join(self.root, f".{key}.removing-{uuid.uuid4().hex[:8]}")
            try:
                os.replace(d, gone)
            except OSError:
                continue
            shutil.rmtree(gone, ignore_errors=True)
        for name, _ in rep.partial:
            shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
        rep.removed = True
        return rep


def write_multiview_folder(folder: str, frames: torch.Tensor, rig: Optional[CameraRig],
                           times: Optional[list] = None) -> list:
    """Write (V, F, H, W, 3) uint8 in the saved layout, atomically (a temporary folder renamed at the end)."""
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(folder) and os.listdir(folder):
        raise InputError("output", f"{folder} exists and is not empty; choose a new folder")
    tmp = os.path.join(parent, f".{os.path.basename(folder)}.partial-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(tmp)
        for v in range(frames.shape[0]):
            write_view_frames(tmp, v, frames[v])
        if rig is not None:
            from ..gaussians.fitting.data import default_times

            r = rig.resized(frames.shape[3], frames.shape[2]) if (rig.width, rig.height) != \
                (frames.shape[3], frames.shape[2]) else rig
            r = CameraRig(r.c2w_gl, r.fx, r.fy, r.cx, r.cy, r.width, r.height, r.names,
                          list(times) if times is not None else default_times(frames.shape[1]), r.square_size)
            r.save(os.path.join(tmp, "cameras.json"))
        if os.path.isdir(folder):
            os.rmdir(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------------ the official mp4
def read_official_mp4(path: str, groups: list, frames_per_view: int = 25) -> np.ndarray:
    """The official CLI's single mp4 (groups x views x frames, group by group, spec §A.9) -> (V, F, H, W, 3) uint8.

    Each view is taken from the first group that lists it (view 0 from group 0), as ``prepare_data.py`` does.
    """
    from ..opencv import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise InputError("video", f"cannot open {path} as a video")
    frames = []
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(img[..., ::-1])
    finally:
        cap.release()
    expected = sum(len(g) for g in groups) * frames_per_view
    if len(frames) != expected:
        raise InputError("video", f"{os.path.basename(path)} has {len(frames)} frames; expected {len(groups)} groups "
                                  f"x {len(groups[0])} views x {frames_per_view} frames = {expected} (the official "
                                  "CLI's layout)")
    num_views = max(max(g) for g in groups) + 1
    out = [None] * num_views
    k = 0
    for g in groups:
        for v in g:
            if out[v] is None:
                out[v] = np.stack(frames[k:k + frames_per_view])
            k += frames_per_view
    return np.ascontiguousarray(np.stack(out))

"""Multi-view videos with their cameras: the input of the 4D stage.

``MultiViewVideo(frames, rig, times)`` holds ``frames`` (V, T, H, W, 3) float32 in [0, 1] on a white background,
the ``CameraRig`` of the V views (its canvas is the frames' size) and the T frame times in [0, 1].

Folder layouts read by :func:`read_frames_dir`:

* ``view{k}.png`` (one frame per view, like the example fixture): a static multi-view set, T = 1;
* ``view{XX}/frame_{XXXXX}.png`` (the official 4D layout ``view00/frame_00001.png``): T frames per view.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np
import torch

from ..cameras import CameraRig
from ..errors import InputError

_VIEW_PNG = re.compile(r"^view(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
_VIEW_DIR = re.compile(r"^view(\d+)$", re.IGNORECASE)
_FRAME_PNG = re.compile(r"^frame_(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)


@dataclass
class MultiViewVideo:
    """V synchronised views of T frames each, with cameras and frame times."""

    frames: torch.Tensor  # (V, T, H, W, 3) float32 in [0, 1]
    rig: CameraRig
    times: list[float]

    def __post_init__(self):
        f = self.frames
        if isinstance(f, np.ndarray):
            f = torch.from_numpy(np.ascontiguousarray(f))
        if not isinstance(f, torch.Tensor):
            raise InputError("frames", f"expected a tensor of shape (V, T, H, W, 3), got {type(f).__name__}")
        if f.ndim == 4:  # (V, H, W, 3): one frame per view
            f = f[:, None]
        if f.ndim != 5 or f.shape[-1] != 3:
            raise InputError("frames", f"expected shape (views, frames, height, width, 3), got {tuple(f.shape)}")
        if f.dtype == torch.uint8:
            f = f.float() / 255.0
        f = f.detach().to("cpu", torch.float32)
        v, t, h, w, _ = f.shape
        if v == 0 or t == 0 or h == 0 or w == 0:
            raise InputError("frames", f"the multi-view video is empty (shape {tuple(f.shape)})")
        if v < 2:
            raise InputError("frames", f"expected at least 2 views to fit 3D/4D Gaussians, got {v}")
        if not bool(torch.isfinite(f).all()):
            raise InputError("frames", "the frames contain NaN or infinity")
        if not isinstance(self.rig, CameraRig):
            raise InputError("cameras", f"expected a CameraRig, got {type(self.rig).__name__}")
        if len(self.rig) != v:
            raise InputError("cameras", f"the rig has {len(self.rig)} cameras but there are {v} views")
        if (self.rig.width, self.rig.height) != (w, h):
            # the same cameras on a canvas of another resolution: fine if the aspect ratio matches
            if abs(self.rig.width / self.rig.height - w / h) > 0.02:
                raise InputError("frames", f"frames are {w}x{h} but the cameras' canvas is "
                                           f"{self.rig.width}x{self.rig.height} (a different aspect ratio)")
            self.rig = self.rig.resized(w, h)
        times = list(self.times) if self.times is not None else None
        if times is None or len(times) == 0:
            times = default_times(t)
        if len(times) != t:
            raise InputError("times", f"expected {t} frame times, got {len(times)}")
        times = [float(x) for x in times]
        if any(not math.isfinite(x) or x < 0.0 or x > 1.0 for x in times):
            raise InputError("times", f"frame times must lie in [0, 1], got {times}")
        if any(b <= a for a, b in zip(times, times[1:])):
            raise InputError("times", "frame times must increase strictly")
        self.frames, self.times = f.clamp(0, 1), times

    @property
    def num_views(self) -> int:
        return self.frames.shape[0]

    @property
    def num_frames(self) -> int:
        return self.frames.shape[1]

    @property
    def height(self) -> int:
        return self.frames.shape[2]

    @property
    def width(self) -> int:
        return self.frames.shape[3]

    @property
    def is_static(self) -> bool:
        return self.num_frames == 1

    def select_views(self, idx) -> "MultiViewVideo":
        idx = [int(i) for i in idx]
        return MultiViewVideo(self.frames[idx], self.rig.select(idx), self.times)

    def select_frames(self, idx) -> "MultiViewVideo":
        idx = [int(i) for i in idx]
        return MultiViewVideo(self.frames[:, idx], self.rig, [self.times[i] for i in idx])

    def scaled(self, factor: float) -> "MultiViewVideo":
        """Area-resized frames and matching intrinsics (``factor`` 0.25 turns 720x480 into 180x120)."""
        if factor == 1.0:
            return self
        rig = self.rig.scaled(factor)
        v, t, h, w, _ = self.frames.shape
        x = self.frames.reshape(v * t, h, w, 3).permute(0, 3, 1, 2)
        mode = "area" if factor < 1 else "bilinear"
        y = torch.nn.functional.interpolate(x, size=(rig.height, rig.width), mode=mode,
                                            **({} if mode == "area" else {"align_corners": False}))
        y = y.permute(0, 2, 3, 1).reshape(v, t, rig.height, rig.width, 3)
        return MultiViewVideo(y.clamp(0, 1), rig, self.times)


def default_times(num_frames: int) -> list[float]:
    """The official normalisation: frame i of T at i / (T - 1) (0 for a single frame)."""
    if num_frames <= 1:
        return [0.0]
    return [i / (num_frames - 1) for i in range(num_frames)]


def _read_image(path: str, what: str) -> np.ndarray:
    from ..opencv import cv2

    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(what, f"cannot read image {path}")
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.shape[-1] == 4:  # composite on white, as the official loader does
        a = img[..., 3:4].astype(np.float32) / 255.0
        rgb = img[..., :3].astype(np.float32) * a + 255.0 * (1 - a)
        img = rgb.round().astype(np.uint8)
    return np.ascontiguousarray(img[..., :3][..., ::-1])  # BGR -> RGB


def read_frames_dir(folder: str, input_name: str = "frames") -> np.ndarray:
    """Read ``view{k}.png`` or ``viewXX/frame_XXXXX.png`` into (V, T, H, W, 3) uint8, views in index order."""
    if not os.path.isdir(folder):
        raise InputError(input_name, f"folder not found: {folder}")
    entries = sorted(os.listdir(folder))
    files = {int(m.group(1)): fn for fn in entries if (m := _VIEW_PNG.match(fn))}
    dirs = {int(m.group(1)): fn for fn in entries if (m := _VIEW_DIR.match(fn)) and os.path.isdir(os.path.join(folder, fn))}
    if files and dirs:
        raise InputError(input_name, f"{folder} mixes view{{k}}.png files and viewXX/ folders; keep one layout")
    if not files and not dirs:
        raise InputError(input_name, f"{folder} holds no view{{k}}.png images and no viewXX/frame_XXXXX.png folders")
    found = files or dirs
    idx = sorted(found)
    if idx != list(range(len(idx))):
        missing = sorted(set(range(idx[-1] + 1)) - set(idx))
        raise InputError(input_name, f"views must be numbered 0..{len(idx) - 1} without gaps; missing {missing}")
    views = []
    if files:
        for k in idx:
            views.append([_read_image(os.path.join(folder, files[k]), input_name)])
    else:
        counts = None
        for k in idx:
            sub = os.path.join(folder, dirs[k])
            frames = sorted((int(m.group(1)), fn) for fn in os.listdir(sub) if (m := _FRAME_PNG.match(fn)))
            if not frames:
                raise InputError(input_name, f"{sub} holds no frame_XXXXX.png images")
            if counts is not None and len(frames) != counts:
                raise InputError(input_name, f"view {k} has {len(frames)} frames but view 0 has {counts}")
            counts = len(frames)
            views.append([_read_image(os.path.join(sub, fn), input_name) for _, fn in frames])
    shapes = {im.shape for v in views for im in v}
    if len(shapes) != 1:
        raise InputError(input_name, f"all frames must have the same size, found {sorted(s[:2] for s in shapes)} "
                                     "(height, width)")
    return np.stack([np.stack(v) for v in views])


def load_multiview(frames_dir: str, cameras_path: str) -> MultiViewVideo:
    """A folder of views (see :func:`read_frames_dir`) plus a rig JSON -> :class:`MultiViewVideo`."""
    arr = read_frames_dir(frames_dir)
    rig = CameraRig.load(cameras_path)
    v, t = arr.shape[:2]
    if len(rig) != v:
        raise InputError("cameras", f"{os.path.basename(cameras_path)} has {len(rig)} cameras but {frames_dir} "
                                    f"holds {v} views")
    times = rig.times if rig.times is not None and len(rig.times) == t and t > 1 else default_times(t)
    return MultiViewVideo(torch.from_numpy(arr), rig, times)


def write_png(path: str, image) -> None:
    """Write an (H, W, 3) float [0, 1] or uint8 image as PNG, atomically."""
    from ..opencv import cv2

    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255.0).round().astype(np.uint8)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr[..., ::-1]))
    if not ok:
        raise OSError(f"cannot encode {path}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.partial{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(buf.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

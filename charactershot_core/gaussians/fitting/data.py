"""Multi-view videos with their cameras: the input of the 4D stage.

``MultiViewVideo(frames, rig, times)`` holds the pixels (V, T, H, W, 3) as uint8 on a white background (float input
in [0, 1] is rounded to uint8 once), the ``CameraRig`` of the V views (its canvas is the frames' size) and the T
frame times in [0, 1]. Floats are made per selection (``images``) where they are used.

Folder layouts read by :func:`read_frames_dir`:

* ``view{k}.png`` (one frame per view, like the example fixture): a static multi-view set, T = 1;
* ``view{XX}/frame_{XXXXX}.png`` (the official 4D layout ``view00/frame_00001.png``): T frames per view.
"""

from __future__ import annotations

import math
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ...cameras import CameraRig
from ...errors import InputError

_VIEW_PNG = re.compile(r"^view(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
_VIEW_DIR = re.compile(r"^view(\d+)$", re.IGNORECASE)
_FRAME_PNG = re.compile(r"^frame_(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)


class MultiViewVideo:
    """V synchronised views of T frames each, with cameras and frame times.

    The pixels are kept as uint8 (``pixels``, (V, T, H, W, 3) on the CPU: 21 x 25 frames at 720x480 are 0.54 GB,
    float32 would be 2.2 GB); float input is rounded to the nearest of the 256 levels once. Whoever needs floats
    converts only what it uses: ``images(views, frames)`` gives a float32 selection in [0, 1], ``frames`` the whole
    video as float32 (a full copy; for small videos and old callers).
    """

    def __init__(self, frames, rig: CameraRig, times=None):
        self.rig = rig
        if isinstance(frames, (list, tuple)):
            frames = _stack_views(frames)
        f = frames
        if isinstance(f, np.ndarray):
            f = torch.from_numpy(np.ascontiguousarray(f))
        if not isinstance(f, torch.Tensor):
            raise InputError("frames", f"expected a tensor of shape (V, T, H, W, 3), got {type(f).__name__}")
        if f.ndim == 4:  # (V, H, W, 3): one frame per view
            f = f[:, None]
        if f.ndim != 5 or f.shape[-1] != 3:
            raise InputError("frames", f"expected shape (views, frames, height, width, 3), got {tuple(f.shape)}")
        v, t, h, w, _ = f.shape
        if v == 0 or t == 0 or h == 0 or w == 0:
            raise InputError("frames", f"the multi-view video is empty (shape {tuple(f.shape)})")
        if v < 2:
            raise InputError("frames", f"expected at least 2 views to fit 3D/4D Gaussians, got {v}")
        if f.dtype == torch.uint8:
            pixels = f.detach().to("cpu").contiguous()
        else:
            pixels = torch.empty((v, t, h, w, 3), dtype=torch.uint8)
            for k in range(v):  # one view at a time: no whole-video float temporaries
                x = f[k].detach().to("cpu", torch.float32)
                if not bool(torch.isfinite(x).all()):
                    raise InputError("frames", "the frames contain NaN or infinity")
                pixels[k] = to_uint8(x)
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
        times = list(times) if times is not None else None
        if times is None or len(times) == 0:
            times = default_times(t)
        if len(times) != t:
            raise InputError("times", f"expected {t} frame times, got {len(times)}")
        times = [float(x) for x in times]
        if any(not math.isfinite(x) or x < 0.0 or x > 1.0 for x in times):
            raise InputError("times", f"frame times must lie in [0, 1], got {times}")
        if any(b <= a for a, b in zip(times, times[1:])):
            raise InputError("times", "frame times must increase strictly")
        self.pixels, self.times = pixels, times

    def __repr__(self) -> str:
        v, t, h, w, _ = self.pixels.shape
        return f"MultiViewVideo({v} views x {t} frames at {w}x{h})"

    @property
    def frames(self) -> torch.Tensor:
        """The whole video as (V, T, H, W, 3) float32 in [0, 1]: a new full-size copy on every call."""
        return to_float(self.pixels)

    def images(self, views=None, frames=None) -> torch.Tensor:
        """float32 (V', T', H, W, 3) in [0, 1] of the given view and frame indices (all when None)."""
        return to_float(self.pixels_of(views, frames))

    def pixels_of(self, views=None, frames=None) -> torch.Tensor:
        """uint8 (V', T', H, W, 3) of the given view and frame indices (all when None; a view of ``pixels`` then).
        The metrics take uint8 as it is, so scoring needs no float copy of the ground truth."""
        x = self.pixels
        if views is not None:
            x = x[_index(views)]
        if frames is not None:
            x = x[:, _index(frames)]
        return x

    @property
    def num_views(self) -> int:
        return self.pixels.shape[0]

    @property
    def num_frames(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[2]

    @property
    def width(self) -> int:
        return self.pixels.shape[3]

    @property
    def is_static(self) -> bool:
        return self.num_frames == 1

    def select_views(self, idx) -> "MultiViewVideo":
        """The given views (sharing the pixels when that is all of them in order, else a copy of those views)."""
        idx = [int(i) for i in idx]
        px = self.pixels if idx == list(range(self.num_views)) else self.pixels[idx]
        return MultiViewVideo(px, self.rig.select(idx), self.times)

    def select_frames(self, idx) -> "MultiViewVideo":
        """The given frames (sharing the pixels when that is all of them in order, else a copy of those frames)."""
        idx = [int(i) for i in idx]
        px = self.pixels if idx == list(range(self.num_frames)) else self.pixels[:, idx]
        return MultiViewVideo(px, self.rig, [self.times[i] for i in idx])

    def scaled(self, factor: float) -> "MultiViewVideo":
        """Area-resized frames and matching intrinsics (``factor`` 0.25 turns 720x480 into 180x120), one view at a
        time."""
        if factor == 1.0:
            return self
        rig = self.rig.scaled(factor)
        v, t, h, w, _ = self.pixels.shape
        mode = "area" if factor < 1 else "bilinear"
        out = torch.empty((v, t, rig.height, rig.width, 3), dtype=torch.uint8)
        for k in range(v):
            x = to_float(self.pixels[k]).permute(0, 3, 1, 2)
            y = torch.nn.functional.interpolate(x, size=(rig.height, rig.width), mode=mode,
                                                **({} if mode == "area" else {"align_corners": False}))
            out[k] = to_uint8(y.permute(0, 2, 3, 1))
        return MultiViewVideo(out, rig, self.times)


def _index(idx):
    if isinstance(idx, int):
        return [idx]
    return [int(i) for i in idx]


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (on the tensor's device)."""
    return pixels.to(torch.float32) / 255.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] (clamped) -> the nearest uint8 level."""
    return (x.clamp(0, 1) * 255.0).round_().to(torch.uint8)


def _stack_views(frames) -> torch.Tensor:
    """A list of per-view (T, H, W, 3) or (H, W, 3) arrays -> one (V, T, H, W, 3) tensor; every frame the same size."""
    views = [torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x for x in frames]
    if not views or not all(isinstance(x, torch.Tensor) for x in views):
        raise InputError("frames", "expected one tensor or array per view")
    views = [x[None] if x.ndim == 3 else x for x in views]
    sizes = sorted({tuple(x.shape[-3:-1]) for x in views})
    if len(sizes) != 1:
        raise InputError("frames", f"all frames must have the same size, found {sizes} (height, width)")
    counts = sorted({x.shape[0] for x in views})
    if len(counts) != 1:
        raise InputError("frames", f"every view must have the same number of frames, found {counts}")
    dtypes = {x.dtype for x in views}
    if len(dtypes) != 1:
        views = [x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32) for x in views]
    return torch.stack(views)


#: a view whose every channel spans at most this many uint8 levels over all its frames is one flat colour
FLAT_LEVELS = 4


def check_character(video: "MultiViewVideo", input_name: str = "multiview") -> None:
    """Refuse a video that cannot show a character, before any work: a view that is one colour in every frame (all
    black, all white, all grey...) or that has no foreground pixel at all (the character is what is not white
    background: its smallest channel below ``init.FG_THRESHOLD``). Raises ``InputError(input_name, ...)`` naming
    the views."""
    from .init import FG_THRESHOLD

    fg_level = int(math.ceil(FG_THRESHOLD * 255.0)) - 1  # x / 255 < FG_THRESHOLD  <=>  x <= fg_level
    flat, empty = [], []
    for k in range(video.num_views):
        px = video.pixels[k]  # (T, H, W, 3) uint8
        lo = px.amin(dim=(0, 1, 2)).to(torch.int16)
        hi = px.amax(dim=(0, 1, 2)).to(torch.int16)
        if int((hi - lo).max()) <= FLAT_LEVELS:
            flat.append((k, tuple(int(c) for c in px[0, 0, 0])))
        elif not bool((px.amin(dim=-1) <= fg_level).any()):
            empty.append(k)
    if flat:
        k, rgb = flat[0]
        raise InputError(input_name, f"view{'s' if len(flat) > 1 else ''} {', '.join(str(x) for x, _ in flat)} of "
                                     f"{video.num_views} {'are' if len(flat) > 1 else 'is'} one flat colour in every "
                                     f"frame (view {k}: RGB {rgb}): no character can be fitted; expected a character "
                                     "on a white background in every view")
    if empty:
        raise InputError(input_name, f"view{'s' if len(empty) > 1 else ''} {', '.join(str(x) for x in empty)} of "
                                     f"{video.num_views} {'have' if len(empty) > 1 else 'has'} no foreground: every "
                                     f"pixel is white background (smallest channel >= {FG_THRESHOLD}); expected a "
                                     "character on a white background in every view")


def default_times(num_frames: int) -> list[float]:
    """The official normalisation: frame i of T at i / (T - 1) (0 for a single frame)."""
    if num_frames <= 1:
        return [0.0]
    return [i / (num_frames - 1) for i in range(num_frames)]


def _read_image(path: str, what: str) -> np.ndarray:
    from ...opencv import cv2

    try:  # read the bytes ourselves: cv2.imread cannot open non-ASCII paths on Windows
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(what, f"cannot read image {path}: {exc}") from exc
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
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
    paths = []
    if files:
        paths = [[os.path.join(folder, files[k])] for k in idx]
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
            paths.append([os.path.join(sub, fn) for _, fn in frames])
    first = _read_image(paths[0][0], input_name)
    out = np.empty((len(paths), len(paths[0])) + first.shape, np.uint8)  # filled in place: one copy of the video

    def put(item):
        k, i, path = item
        im = first if (k, i) == (0, 0) else _read_image(path, input_name)
        if im.shape != out.shape[2:]:
            raise InputError(input_name, f"all frames must have the same size, found "
                                         f"{sorted({out.shape[2:4], im.shape[:2]})} (height, width): {path}")
        out[k, i] = im

    items = [(k, i, path) for k, row in enumerate(paths) for i, path in enumerate(row)]
    # PNG decoding releases the GIL: a few threads decode a few frames at once (in order of the first error)
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for _ in pool.map(put, items):
            pass
    return out


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
    from ...opencv import cv2

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

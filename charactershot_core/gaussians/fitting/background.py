"""The background colour of each view and frame, estimated from the image border, and views brought back to white.

The fit assumes a pure white background: the silhouettes (``init.FG_THRESHOLD``: a pixel is character when its
smallest channel is below 0.97), the visual hull, the flow's foreground and the white the renders are composited on.
A video model's views drift in colour and exposure per view and flicker per frame, so their background is a little
off white (0.93 in a channel is enough to make every pixel "character" and the hull the whole frustum).

:func:`border_background` takes the median colour of a thin border of each image (the character sits inside the
frame; the median ignores the few border pixels it may touch), and :func:`whiten` divides each image by it, channel
by channel, so the background is white again and the character's colour is corrected by the same factor (a von
Kries white balance). An image whose border is not a uniform light colour (a real backdrop, the character cut by the
frame) is left as it is.
"""

from __future__ import annotations

import torch

from ...errors import InputError

MIN_LEVEL = 0.6      # a background darker than this in a channel is not a drifted white: left alone
MAX_SPREAD = 0.04    # the border's median absolute deviation above which it is not one uniform colour


def _border(frames: torch.Tensor, width: int) -> torch.Tensor:
    """(..., H, W, 3) -> (..., P, 3) the pixels of a border ``width`` wide."""
    h, w = frames.shape[-3], frames.shape[-2]
    b = max(1, min(width, h // 4, w // 4))
    top, bottom = frames[..., :b, :, :], frames[..., h - b:, :, :]
    left, right = frames[..., b:h - b, :b, :], frames[..., b:h - b, w - b:, :]
    lead = frames.shape[:-3]
    return torch.cat([x.reshape(*lead, -1, 3) for x in (top, bottom, left, right)], -2)


def border_background(frames: torch.Tensor, width: int = 3):
    """(..., H, W, 3) images in [0, 1] -> ``(colour (..., 3), usable (...) bool)``: the median colour of each
    image's border, and whether it looks like a drifted white background (every channel at least ``MIN_LEVEL``,
    the border uniform within ``MAX_SPREAD``)."""
    if frames.dim() < 3 or frames.shape[-1] != 3:
        raise InputError("frames", f"expected images of shape (..., H, W, 3), got {tuple(frames.shape)}")
    return _border_stats(_border(frames.float(), width))


def _border_stats(px: torch.Tensor):
    """Border pixels (..., P, 3) in [0, 1] -> ``(median colour, usable)`` (see :func:`border_background`)."""
    med = px.median(dim=-2).values
    spread = (px - med[..., None, :]).abs().amax(-1).median(dim=-1).values
    usable = (med.amin(-1) >= MIN_LEVEL) & (spread <= MAX_SPREAD)
    return med, usable


def whiten(frames: torch.Tensor, width: int = 3) -> torch.Tensor:
    """(..., H, W, 3) images -> the same divided channel by channel by their border colour (where it is usable),
    clamped to [0, 1]. A white background stays exactly as it was."""
    bg, usable = border_background(frames, width)
    bg = torch.where(usable[..., None], bg, torch.ones_like(bg)).clamp_min(1e-3)
    return (frames.float() / bg[..., None, None, :]).clamp(0.0, 1.0)


def whiten_video(video):
    """A ``MultiViewVideo`` whose every view and frame is :func:`whiten`-ed (the same object when nothing changes).

    From the uint8 pixels, never a float copy of the video: the border colours come from the border pixels alone,
    an image whose background is already white (or not usable) is left as it is, and each other image goes through
    a 256-entry table per channel holding exactly what :func:`whiten` and rounding to uint8 give for each level."""
    from .data import MultiViewVideo, to_float, to_uint8

    px = video.pixels
    bg, usable = _video_background(video)  # (V, T, 3), (V, T)
    bg = torch.where(usable[..., None], bg, torch.ones_like(bg)).clamp_min(1e-3)
    todo = (bg < 1.0).any(-1)
    if not bool(todo.any()):
        return video
    out = px.clone()
    levels = to_float(torch.arange(256, dtype=torch.uint8))
    for k, f in torch.nonzero(todo).tolist():
        lut = to_uint8((levels[:, None] / bg[k, f][None, :]).clamp(0.0, 1.0))  # (256, 3)
        img = px[k, f].long()
        out[k, f] = torch.stack([lut[img[..., c], c] for c in range(3)], -1)
    return MultiViewVideo(out, video.rig, video.times)


def white_balanced(video) -> torch.Tensor:
    """(V, T) bool: the images of ``video`` whose border shows a usable background below white in every channel, so
    :func:`whiten_video` divides their colour out; the others (a white border, or one that saturated at white, or no
    usable border) keep whatever gain their view had."""
    bg, usable = _video_background(video)
    return usable & (bg < 1.0 - 0.5 / 255).all(-1)


def _video_background(video):
    """``(colour (V, T, 3), usable (V, T))`` of every image of ``video``, from its uint8 border pixels alone."""
    from .data import to_float

    return _border_stats(to_float(_border(video.pixels, 3)))

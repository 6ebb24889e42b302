"""Character and pose canvases laid out exactly like the official CharacterShot training data.

The official data (``finetune/datasets/i2v_dataset.py``, ``prepare_multiview_cache.py``; spec §A.2) is a square
render of the character resized to 480x480 and pasted centred (x offset (720-480)/2 = 120) on a 720x480 canvas:
white (255) for character images, black (0) for pose drawings.

For an arbitrary character image we rebuild that layout: find the character (mask, alpha, or the non-background
box), cut a square around it so that the character's longer side fills ``fill`` of the square (the official renders:
about 0.73), resize the square to ``square`` pixels and paste it centred on the canvas. Images that are already on
the official canvas are passed through unchanged (``keep_prepared``).

All images here are numpy arrays: ``(B, H, W, C)`` uint8 (C = 1, 3 or 4) in, ``(B, H, W, 3)`` uint8 out; masks are
``(B, H, W)`` float32 in [0, 1] with 1 = character.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .opencv import cv2

CANVAS_W = 720
CANVAS_H = 480
SQUARE = 480

# Measured on the 21 official example views (views/view*.png): the character's box (pixels darker than 243) spans
# rows 28..379 and columns 299..420 of the 480x480 square, i.e. its longer side fills ~0.73 of the square and its
# centre sits at ~0.423 of the square's height (feet at ~0.79): the template camera looks at z = 0.7 m, not at the
# middle of a 1.8 m character.
TEMPLATE_FILL = 0.73
TEMPLATE_CENTER_Y = 0.423

WHITE_LEVEL = 243          # a pixel is "near white" when all channels are >= this (official renders: 247..255)
BACKGROUND_TOLERANCE = 12  # a pixel differs from an estimated background colour when a channel differs by more

ANCHORS = ("center", "template")
MASK_MEANINGS = ("auto", "character", "background")
BOX_MODES = ("shared", "per_image")
POSE_FITS = ("auto", "resize_full", "fit_square", "fit_content")


@dataclass
class CanvasResult:
    images: np.ndarray                   # (B, H, W, 3) uint8
    masks: np.ndarray                    # (B, H, W) float32, 1 = character
    kept: list[bool] = field(default_factory=list)      # per image: passed through unchanged (already on the canvas)
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------- checks

def _check_images(images, name: str) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        shape = getattr(images, "shape", type(images).__name__)
        raise InputError(name, f"expected a batch of images shaped (B, H, W, C), got {shape}")
    if images.shape[0] == 0:
        raise InputError(name, "the image batch is empty; expected at least 1 image")
    if images.shape[1] < 2 or images.shape[2] < 2:
        raise InputError(name, f"expected images of at least 2x2 pixels, got {images.shape[2]}x{images.shape[1]}")
    if images.shape[-1] not in (1, 3, 4):
        raise InputError(name, f"expected 1 (grey), 3 (RGB) or 4 (RGBA) channels, got {images.shape[-1]}")
    if images.dtype != np.uint8:
        raise InputError(name, f"expected uint8 pixels, got {images.dtype}")
    return images


def _check_size(width: int, height: int, square: int | None) -> int:
    if int(width) < 8 or int(height) < 8:
        raise InputError("width/height", f"expected a canvas of at least 8x8 pixels, got {width}x{height}")
    sq = min(width, height) if square is None else int(square)
    if sq < 8 or sq > min(width, height):
        raise InputError("square", f"expected the square side between 8 and min(width, height) = "
                                   f"{min(width, height)}, got {sq}")
    return sq


def _check_masks(masks, batch: int, h: int, w: int, name: str) -> np.ndarray:
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise InputError(name, f"expected masks shaped (B, H, W), got {m.shape}")
    if m.shape[0] not in (1, batch):
        raise InputError(name, f"expected 1 mask or one per image ({batch}), got {m.shape[0]}")
    if m.shape[1:] != (h, w):
        raise InputError(name, f"expected masks of the images' size {w}x{h}, got {m.shape[2]}x{m.shape[1]}")
    m = m.astype(np.float32)
    if m.dtype.kind == "f" and m.size and (np.nanmin(m) < -1e-3 or np.nanmax(m) > 1.0 + 1e-3):
        raise InputError(name, f"expected mask values in [0, 1], got {float(m.min()):.3g}..{float(m.max()):.3g}")
    m = np.clip(np.nan_to_num(m), 0.0, 1.0)
    return np.broadcast_to(m, (batch, h, w))


# ------------------------------------------------------------------------------------------------ character finding

def to_rgb(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split (B,H,W,C) uint8 into RGB and alpha in [0,1] (None when no alpha or fully opaque)."""
    c = images.shape[-1]
    if c == 1:
        return np.repeat(images, 3, axis=-1), None
    if c == 3:
        return images, None
    alpha = images[..., 3].astype(np.float32) / 255.0
    if alpha.min() >= 1.0:
        return images[..., :3], None
    return images[..., :3], alpha


def is_official_canvas(image: np.ndarray, width: int = CANVAS_W, height: int = CANVAS_H,
                       square: int | None = None, background: int = 255) -> bool:
    """True when ``image`` (H,W,3 uint8) is already laid out like the official data: ``width`` x ``height``, and
    everything outside the central ``square`` columns is background (near white for characters, near black for
    poses)."""
    sq = min(width, height) if square is None else square
    if image.shape[0] != height or image.shape[1] != width:
        return False
    x0 = (width - sq) // 2
    y0 = (height - sq) // 2
    outside = np.ones(image.shape[:2], dtype=bool)
    outside[y0:y0 + sq, x0:x0 + sq] = False
    if not outside.any():  # square canvas: nothing to check outside the square, accept only the exact size
        return True
    px = image[outside][:, :3].astype(np.int16)
    if background >= 128:
        off = (px < WHITE_LEVEL).any(-1)
    else:
        off = (px > 255 - WHITE_LEVEL).any(-1)
    return float(off.mean()) <= 1e-3


def estimate_background(rgb: np.ndarray) -> np.ndarray:
    """Background colour of one (H,W,3) image: the median of its one-pixel border."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]], axis=0)
    return np.median(border, axis=0)


def character_mask(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Estimate which pixels are the character in one (H,W,3) uint8 image without a mask.

    Returns (mask float32 in {0,1}, background colour, background_is_white). The background is near white when the
    border's median colour is near white (all channels >= 243, as in the official renders); otherwise the border's
    median colour is the background and pixels differing from it by more than 12 levels are the character.
    """
    bg = estimate_background(rgb)
    white = bool((bg >= WHITE_LEVEL).all())
    if white:
        fg = (rgb < WHITE_LEVEL).any(-1)
    else:
        fg = (np.abs(rgb.astype(np.int16) - bg.astype(np.int16)) > BACKGROUND_TOLERANCE).any(-1)
    # drop isolated specks (JPEG noise, dust) so they do not stretch the box
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    return fg.astype(np.float32), bg, white


def mask_box(mask: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1), exclusive end, of mask > threshold; None when empty."""
    on = mask > threshold
    rows = np.flatnonzero(on.any(1))
    cols = np.flatnonzero(on.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def union_box(boxes) -> tuple[int, int, int, int]:
    boxes = [b for b in boxes if b is not None]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def square_around(box, fill: float, anchor: str = "center") -> tuple[float, float, float]:
    """Square (x0, y0, side) in source pixels around ``box`` whose side is the box's longer side / fill.

    anchor "center": the box is centred in the square; "template": centred horizontally, and vertically placed
    like the official renders (box centre at 0.423 of the square's height).
    """
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) / fill
    cx = (x0 + x1) / 2.0
    cy = (y0 + y1) / 2.0
    sy = cy - side / 2.0 if anchor == "center" else cy - TEMPLATE_CENTER_Y * side
    return cx - side / 2.0, sy, side


def crop_square(img: np.ndarray, sq: tuple[float, float, float], out: int, pad_value: float) -> np.ndarray:
    """Cut the square (x0, y0, side) out of ``img`` (H,W[,C], uint8 or float32), padding outside the image with
    ``pad_value``, and resize it to out x out (area averaging when shrinking, bicubic when enlarging)."""
    x0, y0, side = sq
    s = max(1, int(round(side)))
    ix0, iy0 = int(round(x0)), int(round(y0))
    h, w = img.shape[:2]
    canvas = np.full((s, s) + img.shape[2:], pad_value, dtype=img.dtype)
    sx0, sy0 = max(ix0, 0), max(iy0, 0)
    sx1, sy1 = min(ix0 + s, w), min(iy0 + s, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - iy0:sy1 - iy0, sx0 - ix0:sx1 - ix0] = img[sy0:sy1, sx0:sx1]
    if s == out:
        return canvas
    interp = cv2.INTER_AREA if s > out else cv2.INTER_CUBIC
    res = cv2.resize(canvas, (out, out), interpolation=interp)
    if res.dtype == np.float32:
        res = np.clip(res, 0.0, 1.0)
    return res


def paste_centered(square_img: np.ndarray, width: int, height: int, background) -> np.ndarray:
    """Paste a square image centred on a width x height canvas filled with ``background``."""
    s = square_img.shape[0]
    out = np.full((height, width) + square_img.shape[2:], background, dtype=square_img.dtype)
    x0 = (width - s) // 2
    y0 = (height - s) // 2
    out[y0:y0 + s, x0:x0 + s] = square_img
    return out


# --------------------------------------------------------------------------------------------------- the character

def prepare_character(images: np.ndarray, masks: np.ndarray | None = None, *, width: int = CANVAS_W,
                      height: int = CANVAS_H, square: int | None = None, fill: float = TEMPLATE_FILL,
                      anchor: str = "center", box_mode: str = "shared", mask_meaning: str = "auto",
                      keep_prepared: bool = True, images_name: str = "images",
                      mask_name: str = "mask", progress=None) -> CanvasResult:
    """Lay a batch of character views out on the official white canvas.

    * ``masks`` (optional, (B|1, H, W) in [0,1]): where the character is. ``mask_meaning`` "character" (1 = the
      character, as background-removal nodes give), "background" (1 = background, as ComfyUI's LoadImage mask,
      which is 1 - alpha), or "auto" (background when the mask is mostly on along the image border).
    * otherwise the alpha channel of RGBA images, otherwise the non-background pixels (near-white background, or the
      border's median colour when it is not white).
    * ``box_mode`` "shared": one square for the whole batch (the union of the characters' boxes), so views of one
      character keep a common scale and height, as views rendered from one rig do; "per_image": one per image.
    * ``keep_prepared``: images already on the official canvas (size ``width`` x ``height``, nothing but white
      outside the central square) and without a mask are passed through unchanged.
    * ``progress()``, if given, is called once per output image (the nodes' progress bar and interrupt check).
    """
    images = _check_images(images, images_name)
    sq_out = _check_size(width, height, square)
    if not (0.05 <= float(fill) <= 1.0):
        raise InputError("fill", f"expected a fraction between 0.05 and 1.0, got {fill}")
    if anchor not in ANCHORS:
        raise InputError("anchor", f"expected one of {list(ANCHORS)}, got {anchor!r}")
    if box_mode not in BOX_MODES:
        raise InputError("box_mode", f"expected one of {list(BOX_MODES)}, got {box_mode!r}")
    if mask_meaning not in MASK_MEANINGS:
        raise InputError("mask_meaning", f"expected one of {list(MASK_MEANINGS)}, got {mask_meaning!r}")
    b, h, w = images.shape[:3]
    rgb, alpha = to_rgb(images)
    warnings: list[str] = []
    if masks is not None:
        mv = np.asarray(masks, dtype=np.float32)
        if mv.size and np.nanmax(mv) - np.nanmin(mv) < 1e-6:
            # e.g. LoadImage's MASK for an image without alpha: a 64x64 block of zeros; it outlines nothing
            warnings.append(f"{mask_name}: the mask is uniform (all {float(mv.flat[0]):g}), so it outlines no "
                            "character; it was ignored and the character found from the image instead")
            masks = None

    # 1. where is the character, per image; composite it on white where we know its silhouette
    fg = np.zeros((b, h, w), np.float32)
    comp = rgb.copy()
    kept = [False] * b
    if masks is not None:
        m = _check_masks(masks, b, h, w, mask_name)
        if mask_meaning == "background" or (mask_meaning == "auto" and _mostly_on_border(m)):
            m = 1.0 - m
            if mask_meaning == "auto":
                warnings.append(f"{mask_name}: the mask covers the image border, so it was read as the background "
                                "(1 = background, like LoadImage's alpha mask) and inverted; set mask_meaning "
                                "to 'character' if that is wrong")
        fg[:] = m
        comp = _composite_white(rgb, fg)
    elif alpha is not None:
        fg[:] = alpha
        comp = _composite_white(rgb, fg)
    else:
        for i in range(b):
            if keep_prepared and is_official_canvas(rgb[i], width, height, sq_out, 255):
                kept[i] = True
            m_i, bg, white = character_mask(rgb[i])
            fg[i] = m_i
            if not white:
                comp[i] = _composite_white(rgb[i:i + 1], m_i[None])[0]
                warnings.append(f"{images_name}: image {i} has a non-white background (about RGB "
                                f"{tuple(int(v) for v in bg)}); it was replaced by white using a colour key; "
                                "connect a MASK for clean edges")

    boxes = [mask_box(fg[i]) for i in range(b)]
    for i, box in enumerate(boxes):
        if box is None:
            where = f"{mask_name} {i} is empty" if masks is not None else f"image {i} looks like plain background"
            raise InputError(images_name if masks is None else mask_name,
                             f"no character found: {where}; expected a character on a plain background or a mask "
                             "of the character")

    # 2. square, resize, paste
    out_img = np.empty((b, height, width, 3), np.uint8)
    out_mask = np.empty((b, height, width), np.float32)
    todo = [i for i in range(b) if not kept[i]]
    shared = union_box([boxes[i] for i in todo]) if todo and box_mode == "shared" else None
    for i in range(b):
        if kept[i]:
            out_img[i] = rgb[i]
            out_mask[i] = fg[i]
            if progress is not None:
                progress()
            continue
        sq = square_around(shared if shared is not None else boxes[i], float(fill), anchor)
        img_sq = crop_square(comp[i], sq, sq_out, 255)
        m_sq = crop_square(fg[i], sq, sq_out, 0.0)
        out_img[i] = paste_centered(img_sq, width, height, 255)
        out_mask[i] = paste_centered(m_sq, width, height, 0.0)
        if progress is not None:
            progress()
    if any(kept) and not all(kept):
        warnings.append(f"{images_name}: images {[i for i in range(b) if kept[i]]} were already on the official "
                        f"canvas and kept unchanged; the others were re-laid out")
    return CanvasResult(out_img, out_mask, kept, warnings)


def _mostly_on_border(m: np.ndarray) -> bool:
    border = np.concatenate([m[:, 0], m[:, -1], m[:, :, 0], m[:, :, -1]], axis=1)
    return float(border.mean()) > 0.5


def _composite_white(rgb: np.ndarray, fg: np.ndarray) -> np.ndarray:
    a = fg[..., None].astype(np.float32)
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------ pose frames

def prepare_pose_frames(frames: np.ndarray, *, width: int = CANVAS_W, height: int = CANVAS_H,
                        square: int | None = None, fit: str = "auto", fill: float = TEMPLATE_FILL,
                        anchor: str = "center", name: str = "pose_frames") -> CanvasResult:
    """Lay already-drawn pose frames (skeletons on black) out on the official black canvas.

    ``fit``:
      * "resize_full": resize every frame to width x height (what the official CLI does with PIL);
      * "fit_square": pad each frame to a square (centred, black), resize it to ``square`` and paste it centred,
        like the character's square render;
      * "fit_content": one square around the union of the drawn pixels of all frames (``fill``, ``anchor`` as for
        the character), so a sequence lines up with a character prepared with the same settings;
      * "auto": frames already width x height pass unchanged; frames with the canvas's aspect ratio (within 1 %) are
        resized to it ("resize_full"); other frames use "fit_square".
    The same placement is used for every frame, so the motion is not distorted.
    """
    frames = _check_images(frames, name)
    sq_out = _check_size(width, height, square)
    if fit not in POSE_FITS:
        raise InputError("fit", f"expected one of {list(POSE_FITS)}, got {fit!r}")
    if anchor not in ANCHORS:
        raise InputError("anchor", f"expected one of {list(ANCHORS)}, got {anchor!r}")
    rgb, _ = to_rgb(frames)
    b, h, w = rgb.shape[:3]
    if fit == "auto":
        if (w, h) == (width, height):
            fit = "keep"
        elif abs((w / h) / (width / height) - 1.0) <= 0.01:
            fit = "resize_full"
        else:
            fit = "fit_square"
    out = np.empty((b, height, width, 3), np.uint8)
    if fit == "keep":
        out[:] = rgb
    elif fit == "resize_full":
        interp = cv2.INTER_AREA if w > width else cv2.INTER_LINEAR
        for i in range(b):
            out[i] = cv2.resize(rgb[i], (width, height), interpolation=interp)
    else:
        if fit == "fit_square":
            side = max(w, h)
            sq = ((w - side) / 2.0, (h - side) / 2.0, float(side))
        else:
            drawn = (rgb > 8).any(-1)
            box = mask_box(drawn.any(0).astype(np.float32))
            if box is None:
                raise InputError(name, "all frames are black; expected pose drawings (skeletons on black)")
            sq = square_around(box, float(fill), anchor)
        for i in range(b):
            out[i] = paste_centered(crop_square(rgb[i], sq, sq_out, 0), width, height, 0)
    masks = (out > 8).any(-1).astype(np.float32)
    return CanvasResult(out, masks, [fit == "keep"] * b, [])

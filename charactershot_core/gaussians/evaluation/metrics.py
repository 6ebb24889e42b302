"""Image metrics for held-out views: PSNR, SSIM, the character box, and a combined ``score``.

Images are float tensors or arrays ``(..., H, W, 3)`` in [0, 1] (channels last, as ComfyUI's IMAGE).

* ``psnr``: ``10 log10(1 / MSE)`` per image (data range 1), averaged over the leading dimensions.
* ``ssim``: the standard SSIM of Wang et al. with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  data range 1, computed per channel on the "valid" region (no padding) and averaged over pixels and channels, then
  over images. This is what torchmetrics' ``StructuralSimilarityIndexMeasure`` (gaussian kernel 11, sigma 1.5)
  and kornia's ``metrics.ssim`` followed by a crop of the padded border compute.
* ``fg_box(gt)``: the box around ground-truth pixels whose smallest channel is below 0.97, padded by 4 px and clipped
  to the image; the "_fg" metrics are measured on that box, since the white background dominates whole-image numbers.

Metrics that see motion (clips ``(V, T, H, W, 3)``: V views of T frames, frames in time order; docs/4d.md):

* ``clip_boxes(gt)``: one character box per view, ``fg_box`` of the union of that view's ground-truth foreground over
  all T frames (the same 0.97 threshold, dilated by ``FG_PAD`` px, grown to at least 11 px). One box for the whole
  clip, so a fit that leaves a limb where the ground truth no longer has it (a ghost) is inside the box and costs
  PSNR, and every frame of a view is scored on the same pixels.
* ``clip_scores(pred, gt)``: per frame, the mean over views of the box PSNR / SSIM; then the mean over frames and the
  worst frame (``box_psnr``, ``box_psnr_worst``, ``box_psnr_worst_frame``, the same for SSIM, and the per-frame lists).
* ``frame_scores(pred, gt)`` (merged into ``clip_scores``' result): what one box for the whole clip hides. Per
  frame and view, a tight box from that frame's own ground-truth silhouette (``fg_box``, grown to 11 px) gives
  ``tight_psnr`` / ``tight_ssim``; ``coverage`` is the share of ground-truth character pixels (smallest channel below
  ``FG_THRESHOLD``) that the prediction draws within ``COVERAGE_TOL`` (48/255, every channel) of the truth;
  ``moving_coverage`` the same share over the pixels where the ground truth differs from the clip's middle frame by
  more than ``MOVING_THRESHOLD`` (the limb where it is now and where it no longer is). Each per frame (pooled over
  views), with the mean over frames and the worst frame (value and label); ``tight_psnr_worst_view`` is the single
  worst view of the worst frame. A limb that is not drawn fails coverage in its frames even when the box PSNR of
  the clip stays high.
* ``motion_scores(pred, gt)``: how much the fit moves compared with the ground truth, on the same boxes.
  ``change(X) = mean over views v and t = 1..T-1 of mean over the box's pixels and channels of |X[v,t] - X[v,t-1]|``
  (0-255 scale); ``ratio = change(pred) / change(gt)`` (frame-to-frame). ``ratio_first`` uses
  ``|X[v,t] - X[v,0]|`` instead (the change from the first frame). A render that never changes scores 0, a perfect
  one 1; flicker raises ``ratio`` more than ``ratio_first``. ``None`` when the ground truth does not change.
  With it, ``moving_psnr``: PSNR on the pixels where the ground truth moves (``moving_psnr()``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError

FG_THRESHOLD = 0.97
FG_PAD = 4
MOVING_THRESHOLD = 0.1  # a ground-truth pixel "moves" when a channel changes by more than this between frames
COVERAGE_TOL = 48.0 / 255.0  # a pixel is drawn "close to the truth" when every channel is within this


def _as_tensor(x, name: str, convert: bool = True) -> torch.Tensor:
    """Validated ``(..., H, W, 3)`` tensor; float64 in [0, 1] when ``convert``, else in its own dtype (uint8 stays
    uint8: a whole clip is never copied to float64, only the image being scored)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputError(name, f"expected an image tensor or array (..., H, W, 3), got {type(x).__name__}")
    if x.dim() < 3 or x.shape[-1] != 3:
        raise InputError(name, f"expected images of shape (..., H, W, 3), got {tuple(x.shape)}")
    x = x.detach()
    return _f64(x) if convert else x


def _f64(x: torch.Tensor) -> torch.Tensor:
    """float64 in [0, 1] of an image tensor (uint8 / 255)."""
    if not x.is_floating_point():
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x.to(torch.float64)


def _pair(a, b, convert: bool = True):
    a = _as_tensor(a, "prediction", convert)
    b = _as_tensor(b, "ground_truth", convert)
    if a.shape != b.shape:
        raise InputError("prediction", f"shape {tuple(a.shape)} does not match the ground truth {tuple(b.shape)}")
    b = b.to(a.device)
    return a.reshape(-1, *a.shape[-3:]), b.reshape(-1, *b.shape[-3:])


def _crop(x: torch.Tensor, box) -> torch.Tensor:
    if box is None:
        return x
    y0, y1, x0, x1 = (int(v) for v in box)
    return x[..., y0:y1, x0:x1, :]


def psnr(a, b, mask_box=None) -> float:
    """Mean PSNR (dB, data range 1) over the images of ``a`` vs ``b``; ``mask_box=(y0, y1, x0, x1)`` crops first.

    Identical images give ``inf``.
    """
    a, b = _pair(a, b, convert=False)
    a, b = _crop(a, mask_box), _crop(b, mask_box)
    if a.numel() == 0:
        raise InputError("mask_box", f"the box {mask_box} selects no pixel")
    n = _chunk(a)
    mse = torch.cat([((_f64(a[i:i + n]) - _f64(b[i:i + n])) ** 2).mean(dim=(-3, -2, -1))
                     for i in range(0, a.shape[0], n)])
    vals = torch.where(mse > 0, -10.0 * torch.log10(mse.clamp(min=1e-300)), torch.full_like(mse, math.inf))
    return float(vals.mean())


def _gauss_kernel(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _blur_valid(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The 'valid' Gaussian blur of planes ``z`` (N, C, H, W) with the separable window ``g`` (1-D, normalised).

    float64 (the metric) runs as two 1-D passes with the planes in the batch dimension: a grouped float64
    convolution is many times slower on CPUs. Other dtypes (the fit's differentiable loss) keep the grouped 2-D
    window, whose backward pass is the faster one there."""
    n_, c, h, w = z.shape
    k = g.numel()
    if z.dtype == torch.float64:
        y = z.reshape(n_ * c, 1, h, w)
        y = F.conv2d(F.conv2d(y, g.view(1, 1, 1, k)), g.view(1, 1, k, 1))
        return y.reshape(n_, c, y.shape[-2], y.shape[-1])
    win = (g[:, None] * g[None, :])[None, None].expand(c, 1, k, k).contiguous()
    return F.conv2d(z, win, groups=c)


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM map of image batches (B, H, W, C) in [0, 1] -> (B, C, H - window + 1, W - window + 1) ('valid' region;
    Gaussian window 11, sigma 1.5). Differentiable, in the images' dtype: the fit's D-SSIM loss (float32) and the
    ``ssim`` metric (float64) both use it."""
    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    g = _gauss_kernel(window, sigma, x.device, x.dtype)
    mu_x = _blur_valid(x, g)
    mu_y = _blur_valid(y, g)
    sxx = _blur_valid(x * x, g) - mu_x * mu_x
    syy = _blur_valid(y * y, g) - mu_y * mu_y
    sxy = _blur_valid(x * y, g) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2))


def ssim(a, b, mask_box=None) -> float:
    """Mean SSIM (gaussian window 11, sigma 1.5) over the images of ``a`` vs ``b``; images must be >= 11 px.
    Computed a few images at a time (float64), so a batch of full-size frames needs little memory."""
    a, b = _pair(a, b, convert=False)
    a, b = _crop(a, mask_box), _crop(b, mask_box)
    if a.shape[-3] < 11 or a.shape[-2] < 11:
        raise InputError("images", f"SSIM needs images (or boxes) of at least 11x11 pixels, got "
                                   f"{a.shape[-2]}x{a.shape[-3]}")
    n = _chunk(a)
    per_image = [ssim_map(_f64(a[i:i + n]), _f64(b[i:i + n])).mean(dim=(1, 2, 3)) for i in range(0, a.shape[0], n)]
    return float(torch.cat(per_image).mean())


def _chunk(x: torch.Tensor, pixels: int = 500_000) -> int:
    """Images of ``x`` (B, H, W, 3) per float64 batch: about ``pixels`` pixels (one 720x480 frame at a time)."""
    return max(1, pixels // max(1, x.shape[-3] * x.shape[-2]))


def fg_box(gt, thresh: float = FG_THRESHOLD, pad: int = FG_PAD):
    """``(y0, y1, x0, x1)`` (end-exclusive) around ground-truth pixels whose smallest channel is below ``thresh``,
    padded by ``pad`` pixels and clipped to the image. Over a batch, the union of the images' boxes. ``None`` when no
    pixel is below the threshold (an all-white image)."""
    g = _as_tensor(gt, "ground_truth", convert=False)
    h, w = g.shape[-3], g.shape[-2]
    fg = g.amin(dim=-1)  # (..., H, W)
    fg = (fg.double() / 255.0 if fg.dtype == torch.uint8 else fg) < thresh
    fg = fg.reshape(-1, h, w).any(0)
    rows = torch.nonzero(fg.any(1)).squeeze(1)
    cols = torch.nonzero(fg.any(0)).squeeze(1)
    if rows.numel() == 0:
        return None
    y0 = max(0, int(rows[0]) - pad)
    y1 = min(h, int(rows[-1]) + 1 + pad)
    x0 = max(0, int(cols[0]) - pad)
    x1 = min(w, int(cols[-1]) + 1 + pad)
    return (y0, y1, x0, x1)


def score(pred, gt) -> dict:
    """``{psnr, ssim, psnr_fg, ssim_fg}`` averaged over the images of ``pred`` vs ``gt`` (..., H, W, 3).

    The ``_fg`` numbers use each image's own character box (``fg_box`` of its ground truth); an image whose ground
    truth has no foreground is scored on the whole image. Boxes smaller than the SSIM window are grown to 11 px.
    """
    a, b = _pair(pred, gt, convert=False)
    out = {"psnr": psnr(a, b), "ssim": ssim(a, b)}
    p_fg, s_fg = [], []
    for k in range(a.shape[0]):
        box = fg_box(b[k])
        if box is None:
            box = (0, b.shape[1], 0, b.shape[2])
        box = _grow_box(box, b.shape[1], b.shape[2], 11)
        p_fg.append(psnr(a[k], b[k], box))
        s_fg.append(ssim(a[k], b[k], box))
    out["psnr_fg"] = float(np.mean(p_fg))
    out["ssim_fg"] = float(np.mean(s_fg))
    return out


def _grow_box(box, h, w, minimum):
    y0, y1, x0, x1 = box
    if y1 - y0 < minimum:
        y0 = max(0, min(y0, h - minimum))
        y1 = min(h, y0 + minimum)
    if x1 - x0 < minimum:
        x0 = max(0, min(x0, w - minimum))
        x1 = min(w, x0 + minimum)
    return (y0, y1, x0, x1)


# ------------------------------------------------------------------------------------------ clips (motion)
def _clip_pair(pred, gt):
    a = _as_tensor(pred, "prediction", convert=False)
    b = _as_tensor(gt, "ground_truth", convert=False)
    if a.dim() != 5 or b.dim() != 5:
        raise InputError("prediction", f"expected clips of shape (views, frames, H, W, 3), got {tuple(a.shape)} and "
                                       f"{tuple(b.shape)}")
    if a.shape != b.shape:
        raise InputError("prediction", f"shape {tuple(a.shape)} does not match the ground truth {tuple(b.shape)}")
    return a, b.to(a.device)


def clip_boxes(gt, thresh: float = FG_THRESHOLD, pad: int = FG_PAD, minimum: int = 11) -> list:
    """One ``(y0, y1, x0, x1)`` box per view of the clip ``gt`` (V, T, H, W, 3): the dilated box around the union of
    that view's ground-truth foreground over all frames (the whole image for a view with no foreground), grown to at
    least ``minimum`` px (the SSIM window)."""
    g = _as_tensor(gt, "ground_truth", convert=False)
    if g.dim() != 5:
        raise InputError("ground_truth", f"expected a clip of shape (views, frames, H, W, 3), got {tuple(g.shape)}")
    h, w = g.shape[2], g.shape[3]
    out = []
    for v in range(g.shape[0]):
        box = fg_box(g[v], thresh, pad)
        if box is None:
            box = (0, h, 0, w)
        out.append(_grow_box(box, h, w, minimum))
    return out


def clip_scores(pred, gt, frames=None, boxes=None) -> dict:
    """Per-frame character-box PSNR and SSIM of the clip ``pred`` vs ``gt`` (V, T, H, W, 3): each frame's value is
    the mean over views (each view on its ``clip_boxes`` box); returns the mean over frames, the worst frame (its
    value and its label from ``frames``, default 0..T-1) and the per-frame lists."""
    a, b = _clip_pair(pred, gt)
    v, t = a.shape[:2]
    frames = list(range(t)) if frames is None else [int(f) for f in frames]
    if len(frames) != t:
        raise InputError("frames", f"expected {t} frame labels, got {len(frames)}")
    boxes = clip_boxes(b) if boxes is None else boxes
    p = np.zeros((v, t))
    s = np.zeros((v, t))
    for k in range(v):
        for f in range(t):
            p[k, f] = psnr(a[k, f], b[k, f], boxes[k])
            s[k, f] = ssim(a[k, f], b[k, f], boxes[k])
    pf, sf = p.mean(0), s.mean(0)
    wp, ws = int(np.argmin(pf)), int(np.argmin(sf))
    out = {"box_psnr": float(pf.mean()), "box_psnr_worst": float(pf[wp]), "box_psnr_worst_frame": frames[wp],
           "box_ssim": float(sf.mean()), "box_ssim_worst": float(sf[ws]), "box_ssim_worst_frame": frames[ws],
           "frames": frames, "box_psnr_per_frame": [round(float(x), 3) for x in pf],
           "box_ssim_per_frame": [round(float(x), 5) for x in sf]}
    out.update(frame_scores(a, b, frames))
    return out


def _worst(values: list, frames: list, name: str, digits: int) -> dict:
    """Mean, worst (lowest) value and its frame label of per-frame ``values`` (None entries skipped)."""
    known = [(v, f) for v, f in zip(values, frames) if v is not None]
    per_frame = [None if v is None else round(float(v), digits) for v in values]
    if not known:
        return {name: None, f"{name}_worst": None, f"{name}_worst_frame": None, f"{name}_per_frame": per_frame}
    v_worst, f_worst = min(known, key=lambda p: p[0])
    return {name: float(np.mean([v for v, _ in known])), f"{name}_worst": float(v_worst),
            f"{name}_worst_frame": f_worst, f"{name}_per_frame": per_frame}


def frame_scores(pred, gt, frames=None, tol: float = COVERAGE_TOL, tau: float = MOVING_THRESHOLD,
                 thresh: float = FG_THRESHOLD) -> dict:
    """Frame-by-frame scores of the clip ``pred`` vs ``gt`` (V, T, H, W, 3) that a missing limb cannot hide behind
    (module docstring): ``tight_psnr``, ``tight_ssim`` (each frame's own silhouette box, mean over views),
    ``coverage`` (character pixels drawn within ``tol``) and ``moving_coverage`` (the same over the pixels where
    the ground truth differs from the middle frame by more than ``tau``; None for a frame with no such pixel), each
    with ``_worst``, ``_worst_frame`` and ``_per_frame``; ``tight_psnr_worst_view``: the lowest single view of the
    worst frame."""
    a, b = _clip_pair(pred, gt)
    v, t, h, w = a.shape[:4]
    frames = list(range(t)) if frames is None else [int(f) for f in frames]
    if len(frames) != t:
        raise InputError("frames", f"expected {t} frame labels, got {len(frames)}")
    mid = t // 2
    tp = np.zeros((v, t))
    ts = np.zeros((v, t))
    cov_hit = np.zeros(t)
    cov_all = np.zeros(t)
    mov_hit = np.zeros(t)
    mov_all = np.zeros(t)
    for k in range(v):
        for f in range(t):
            box = fg_box(b[k, f], thresh)
            box = _grow_box((0, h, 0, w) if box is None else box, h, w, 11)
            ak, bk = _f64(a[k, f]), _f64(b[k, f])
            tp[k, f] = psnr(ak, bk, box)
            ts[k, f] = ssim(ak, bk, box)
            close = (ak - bk).abs().amax(-1) <= tol  # (H, W)
            sil = bk.amin(-1) < thresh
            cov_hit[f] += float((close & sil).sum())
            cov_all[f] += float(sil.sum())
            if f != mid:
                moving = (bk - _f64(b[k, mid])).abs().amax(-1) > tau
                mov_hit[f] += float((close & moving).sum())
                mov_all[f] += float(moving.sum())
    pf = tp.mean(0)
    out = {}
    out.update(_worst([float(x) for x in pf], frames, "tight_psnr", 3))
    out.update(_worst([float(x) for x in ts.mean(0)], frames, "tight_ssim", 5))
    out.update(_worst([(h_ / n) if n else None for h_, n in zip(cov_hit, cov_all)], frames, "coverage", 4))
    out.update(_worst([(h_ / n) if n else None for h_, n in zip(mov_hit, mov_all)], frames, "moving_coverage", 4))
    wf = int(np.argmin(pf))
    out["tight_psnr_worst_view"] = float(tp[:, wf].min())
    return out


def frame_change(clip, boxes, reference: str = "previous") -> float:
    """Mean absolute change between frames of ``clip`` (V, T, H, W, 3) inside each view's box, on the 0-255 scale:
    ``reference="previous"``: mean over t >= 1 of |X_t - X_{t-1}|; ``"first"``: of |X_t - X_0|. 0 for T < 2."""
    x = _as_tensor(clip, "clip", convert=False)
    if x.dim() != 5:
        raise InputError("clip", f"expected a clip of shape (views, frames, H, W, 3), got {tuple(x.shape)}")
    if reference not in ("previous", "first"):
        raise InputError("reference", f"expected previous or first, got {reference!r}")
    if x.shape[1] < 2:
        return 0.0
    vals = []
    for k in range(x.shape[0]):
        c = _f64(_crop(x[k], boxes[k]))
        ref = c[:-1] if reference == "previous" else c[:1]
        vals.append(float((c[1:] - ref).abs().mean()))
    return 255.0 * float(np.mean(vals))


def motion_scores(pred, gt, boxes=None) -> dict:
    """How much ``pred`` moves compared with ``gt`` (clips (V, T, H, W, 3), frames in time order, T >= 2):
    ``ratio`` = frame_change(pred) / frame_change(gt) (frame to frame), ``ratio_first`` the same against the first
    frame, with the changes themselves (``fit``, ``gt``, ``fit_first``, ``gt_first``; 0-255 scale). A ratio is None
    when the ground truth does not change."""
    a, b = _clip_pair(pred, gt)
    if a.shape[1] < 2:
        raise InputError("frames", f"a motion ratio needs at least 2 frames, got {a.shape[1]}")
    boxes = clip_boxes(b) if boxes is None else boxes
    out = {}
    for ref, suffix in (("previous", ""), ("first", "_first")):
        cf, cg = frame_change(a, boxes, ref), frame_change(b, boxes, ref)
        out[f"ratio{suffix}"] = (cf / cg) if cg > 1e-9 else None
        out[f"fit{suffix}"] = round(cf, 4)
        out[f"gt{suffix}"] = round(cg, 4)
    out.update(moving_psnr(a, b, boxes))
    return out


def moving_psnr(pred, gt, boxes=None, tau: float = MOVING_THRESHOLD) -> dict:
    """PSNR on the pixels the ground truth's motion touches: per view, the pixels of its box where some channel of
    the ground truth changes by more than ``tau`` between two consecutive frames; the squared error of every frame
    on those pixels is pooled over views and frames. ``moving_psnr`` (None when nothing moves) and
    ``moving_fraction`` (the share of the boxes' pixels that move). A fit that leaves a limb behind (a ghost) or
    does not move is judged on exactly the pixels where that shows, which the whole box dilutes."""
    a, b = _clip_pair(pred, gt)
    boxes = clip_boxes(b) if boxes is None else boxes
    se, n, area = 0.0, 0, 0
    for k in range(a.shape[0]):
        ca, cb = _f64(_crop(a[k], boxes[k])), _f64(_crop(b[k], boxes[k]))
        area += ca.shape[1] * ca.shape[2]
        if cb.shape[0] < 2:
            continue
        moving = ((cb[1:] - cb[:-1]).abs().amax(-1) > tau).any(0)  # (h, w)
        m = int(moving.sum())
        if m:
            se += float(((ca - cb) ** 2)[:, moving].sum())
            n += m * ca.shape[0] * 3
    if n == 0:
        return {"moving_psnr": None, "moving_fraction": 0.0}
    mse = se / n
    return {"moving_psnr": (-10.0 * math.log10(mse)) if mse > 0 else math.inf,
            "moving_fraction": round(n / (3 * a.shape[1] * area), 4)}


def _num(x, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100.0 * x:.1f} %"


def summary_text(m: dict) -> str:
    """A few human-readable lines from a metrics dict with sections (as ``fit4d`` writes): the whole-image and box
    numbers of each scored section, the worst frame, and the motion ratio."""
    lines = []
    names = {"heldout": "held-out views", "train": "training views", "heldout_intermediate": "held-out views, held-out times",
             "train_intermediate": "training views, held-out times"}
    for key, label in names.items():
        s = m.get(key)
        if not isinstance(s, dict) or s.get("psnr") is None:
            continue
        line = f"{label}: PSNR {_num(s.get('psnr'))} dB, SSIM {_num(s.get('ssim'), '.4f')}"
        if s.get("box_psnr") is not None:
            line += (f"; character box PSNR {_num(s['box_psnr'])} dB mean, {_num(s['box_psnr_worst'])} dB worst "
                     f"(frame {s['box_psnr_worst_frame']}), SSIM {_num(s['box_ssim'], '.4f')} mean, "
                     f"{_num(s['box_ssim_worst'], '.4f')} worst")
        elif s.get("psnr_fg") is not None:
            line += f"; character box PSNR {_num(s['psnr_fg'])} dB"
        lines.append(line)
        if s.get("tight_psnr") is not None:
            lines.append(f"  frame by frame: tight-box PSNR {_num(s['tight_psnr'])} dB mean, "
                         f"{_num(s['tight_psnr_worst'])} dB worst (frame {s['tight_psnr_worst_frame']}; worst view "
                         f"{_num(s.get('tight_psnr_worst_view'))} dB); character drawn {_pct(s.get('coverage'))} "
                         f"mean, {_pct(s.get('coverage_worst'))} worst (frame {s.get('coverage_worst_frame')}); "
                         f"moving parts drawn {_pct(s.get('moving_coverage'))} mean, "
                         f"{_pct(s.get('moving_coverage_worst'))} worst (frame {s.get('moving_coverage_worst_frame')})")
    mo = m.get("motion")
    if isinstance(mo, dict) and "ratio" in mo:
        lines.append(f"motion ratio ({mo.get('views', 'held-out')} views, {len(mo.get('frames', []))} frames): "
                     f"{_num(mo['ratio'])} frame to frame, {_num(mo['ratio_first'])} from the first frame "
                     f"(fit {_num(mo['fit'], '.3f')} vs ground truth {_num(mo['gt'], '.3f')} on the 0-255 scale); "
                     f"PSNR where the character moves {_num(mo.get('moving_psnr'))} dB")
    pc = m.get("pose_check")
    if isinstance(pc, dict) and pc.get("shift_px_mean") is not None:
        lines.append(f"camera refinement: {'kept' if pc.get('kept') else 'dropped, the views agree with the rig'} "
                     f"(the static stage's corrections moved the views' pictures by {_num(pc['shift_px_mean'])} px "
                     f"on average; limit {_num(pc.get('limit_px'))} px)")
    return "\n".join(lines)

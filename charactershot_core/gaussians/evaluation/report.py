"""What a fit can report about itself without held-out ground truth: box PSNR / SSIM per frame and the motion ratio
on (some of) its own training views. Used by the Fit 4D Gaussians node's ``summary`` output (docs/4d.md, Metrics).

Training views are what the fit was optimised on, so these numbers are optimistic about novel views; they still
show a fit that does not move (motion ratio near 0) or loses the ends of the clip (worst frame).
"""

from __future__ import annotations

from ..fitting.data import MultiViewVideo
from .metrics import clip_boxes, clip_scores, motion_scores


def spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread evenly over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)}) if k > 1 else [n // 2]


def training_report(model, video: MultiViewVideo, backend: str = "auto", device=None, max_views: int = 4,
                    max_frames: int = 9) -> dict:
    """Render up to ``max_views`` training views (spread over the rig) at up to ``max_frames`` frames (spread over
    the clip, ends included) and score them: ``clip_scores`` (per-frame box PSNR / SSIM, mean and worst) and, for
    a video, ``motion`` (``motion_scores``) on the same renders. Keys ``views`` and ``frames`` say what was scored."""
    from ..raster.views import render_views

    views = spread(video.num_views, max_views)
    frames = spread(video.num_frames, max_frames)
    times = [video.times[f] for f in frames] if (video.num_frames > 1 and model.is_dynamic) else None
    pred = render_views(model, video.rig.select(views), times, backend, device)
    if times is None:
        pred = pred.expand(-1, len(frames), -1, -1, -1)
    gt = video.pixels_of(views, frames)  # uint8: the metrics convert one image at a time
    boxes = [clip_boxes(video.pixels_of([k]))[0] for k in views]
    out = {"views": views, **clip_scores(pred, gt, frames, boxes)}
    if len(frames) > 1:
        out["motion"] = motion_scores(pred, gt, boxes)
    return out


def report_text(rep: dict, fit_line: str = "") -> str:
    """The node's text: the fit line, then the training-view figures, saying that they are training views."""
    lines = [fit_line] if fit_line else []
    fr = rep["frames"]
    lines.append(f"training views {rep['views']} (no held-out ground truth here), frames {fr[0]}..{fr[-1]} "
                 f"({len(fr)} scored, numbered from 0):")
    lines.append(f"  character box PSNR {rep['box_psnr']:.2f} dB mean, {rep['box_psnr_worst']:.2f} dB worst "
                 f"(frame {rep['box_psnr_worst_frame']}); SSIM {rep['box_ssim']:.4f} mean, "
                 f"{rep['box_ssim_worst']:.4f} worst (frame {rep['box_ssim_worst_frame']})")
    lines.append("  box PSNR per frame: " + ", ".join(f"{f}: {p:.1f}" for f, p in zip(fr, rep["box_psnr_per_frame"])))
    if rep.get("tight_psnr") is not None:
        def pct(x):
            return "n/a" if x is None else f"{100.0 * x:.1f} %"

        lines.append(f"  frame by frame (each frame's own box): PSNR {rep['tight_psnr']:.2f} dB mean, "
                     f"{rep['tight_psnr_worst']:.2f} dB worst (frame {rep['tight_psnr_worst_frame']}); character "
                     f"drawn {pct(rep.get('coverage'))} mean, {pct(rep.get('coverage_worst'))} worst; moving parts "
                     f"drawn {pct(rep.get('moving_coverage'))} mean, {pct(rep.get('moving_coverage_worst'))} worst "
                     f"(frame {rep.get('moving_coverage_worst_frame')})")
    mo = rep.get("motion")
    if mo is not None:
        r = "n/a (the input does not move)" if mo["ratio"] is None else f"{mo['ratio']:.2f}"
        rf = "n/a" if mo["ratio_first"] is None else f"{mo['ratio_first']:.2f}"
        mp = "n/a" if mo.get("moving_psnr") is None else f"{mo['moving_psnr']:.2f} dB"
        lines.append(f"  motion ratio {r} frame to frame, {rf} from the first frame (1 = moves as much as the input, "
                     f"0 = still); PSNR where the input moves {mp}")
    return "\n".join(lines)

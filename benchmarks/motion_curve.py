"""Motion ratio and character-box PSNR of a 4D fit over its iterations (docs/4d.md, "Why the HexPlane fit did not move").

The demo's data (synthetic 'wave', 21 views x 9 frames at 180x120, views 3, 10, 17 held out); every ``--every``
iterations the held-out views are rendered at every frame and scored:

* motion ratio = mean |F_t - F_1| of the renders / the same for the ground truth (t = 2..9, 0-255 scale);
* character-box PSNR per frame (mean and worst frame).

  python benchmarks/motion_curve.py --motion-model hexplane --iterations 1500 --every 100 --json curve_hex.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from charactershot_core.cameras import official_rig  # noqa: E402
from charactershot_core.gaussians.fitting.data import MultiViewVideo  # noqa: E402
from charactershot_core.gaussians.fitting.fit import FitConfig, fit  # noqa: E402
from charactershot_core.gaussians.raster.views import render_views  # noqa: E402
from charactershot_core.gaussians.evaluation.metrics import score  # noqa: E402
from charactershot_core.gaussians.synthetic import SyntheticCharacter  # noqa: E402

HOLDOUT = [3, 10, 17]


def demo_video(frames: int = 9, motion: str = "wave", scale: float = 0.25):
    rig = official_rig()
    times = [i / (frames - 1) for i in range(frames)]
    f = SyntheticCharacter(motion, seed=0, n_gaussians=20000).render_views(rig, times, scale=scale, backend="torch")
    return MultiViewVideo(torch.from_numpy(f), rig.scaled(scale), times)


def motion_scores(pred: torch.Tensor, gt: torch.Tensor) -> dict:
    """pred, gt (V, T, H, W, 3) in [0, 1] -> motion ratio, per-frame box PSNR/SSIM (mean over views)."""
    d_pred = (pred[:, 1:] - pred[:, :1]).abs().mean() * 255
    d_gt = (gt[:, 1:] - gt[:, :1]).abs().mean() * 255
    per = [score(pred[:, f], gt[:, f]) for f in range(pred.shape[1])]
    pf = [s["psnr_fg"] for s in per]
    sf = [s["ssim_fg"] for s in per]
    return {"motion_ratio": float(d_pred / d_gt), "motion_pred": float(d_pred), "motion_gt": float(d_gt),
            "psnr_fg_mean": sum(pf) / len(pf), "psnr_fg_worst": min(pf), "ssim_fg_mean": sum(sf) / len(sf),
            "ssim_fg_worst": min(sf), "psnr_fg_frames": pf}


@torch.no_grad()
def edge_length_cv(model, times, k: int = 8) -> float:
    """Limb rigidity: mean over the KNN edges (canonical centres) of std/mean of the edge's length over the frames."""
    from charactershot_core.gaussians.fitting.losses import knn_graph

    e = knn_graph(model.splats["means"], k)
    lengths = torch.stack([(model.means_at(t)[e[0]] - model.means_at(t)[e[1]]).norm(dim=-1) for t in times])
    return float((lengths.std(0) / lengths.mean(0).clamp_min(1e-9)).mean())


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--motion-model", default=None)
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="FitConfig field=value (python literal)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    video = demo_video()
    train_idx = [k for k in range(video.num_views) if k not in HOLDOUT]
    train, test = video.select_views(train_idx), video.select_views(HOLDOUT)
    cfg = FitConfig(iterations=args.iterations, seconds=args.seconds, backend="torch", seed=0)
    if args.motion_model:
        cfg.motion = args.motion_model
    import ast
    for kv in args.set:
        k, v = kv.split("=", 1)
        setattr(cfg, k, ast.literal_eval(v))
    curve = []
    paused = [0.0]

    def cb(state):
        if state.iteration % args.every == 0 or state.iteration == 1:
            t0 = time.perf_counter()
            was = state.model.training
            pred = render_views(state.model, test.rig, test.times, "torch")
            s = motion_scores(pred, test.frames)
            s.update(iteration=state.iteration, stage=state.stage, elapsed=round(state.elapsed - paused[0], 1))
            curve.append(s)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()
                              if k != "psnr_fg_frames"}), flush=True)
            state.model.train(was)
            paused[0] += time.perf_counter() - t0

    res = fit(train, cfg, cb)
    pred = render_views(res.model, test.rig, test.times, "torch")
    final = motion_scores(pred, test.frames)
    final["edge_length_cv"] = edge_length_cv(res.model, test.times)
    final.update(iteration=res.iterations, seconds=round(res.seconds, 1))
    print("final", json.dumps(final), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg.to_dict(), "curve": curve, "final": final}, f, indent=1)


if __name__ == "__main__":
    main()

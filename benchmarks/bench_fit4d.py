"""4D Gaussian fitting benchmarks: quality within a time budget, iterations per second.

  real     the 21 real views of shared/fixtures/charactershot_example (static, one frame per view), trained on 18
           with views 3, 10, 17 held out, at --scale (0.25: 180x120), within --seconds. Targets on the 2-core CPU at
           300 s: held-out character-box PSNR >= 35 dB and whole-image PSNR >= 43 dB (a plain 3DGS probe: 34.3/42.7).
  synth    the synthetic character, 21 views x --frames frames, views 3, 10, 17 held out: held-out PSNR/SSIM at the
           training times and at intermediate times (half-way between frames, never trained on), with and without
           the neighbour constraint (the ablation table), plus optional rigidity.

Examples:
  python benchmarks/bench_fit4d.py real --seconds 300 --threads 1
  python benchmarks/bench_fit4d.py synth --seconds 300 --frames 25 --threads 1
  python benchmarks/bench_fit4d.py real --scale 1 --seconds 120 --backend gsplat     # on a GPU
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
from charactershot_core.gaussians.data import MultiViewVideo, load_multiview  # noqa: E402
from charactershot_core.gaussians.fit import FitConfig, fit, render_views  # noqa: E402
from charactershot_core.gaussians.metrics import score  # noqa: E402

HOLDOUT = [3, 10, 17]
SHARED = os.environ.get("CHARSHOT_SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared"))


def _flat(x):
    return x.reshape(-1, *x.shape[2:])


def _fmt(s: dict) -> str:
    return f"{s['psnr']:6.2f} {s['ssim']:6.4f} {s['psnr_fg']:6.2f} {s['ssim_fg']:6.4f}"


def _cfg(args, **kw) -> FitConfig:
    cfg = FitConfig(iterations=args.iterations, seconds=args.seconds, backend=args.backend, seed=args.seed)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def run_real(args) -> dict:
    ex = os.path.join(SHARED, "fixtures", "charactershot_example")
    video = load_multiview(os.path.join(ex, "views"), os.path.join(ex, "cameras.json")).scaled(args.scale)
    train_idx = [k for k in range(video.num_views) if k not in HOLDOUT]
    train, test = video.select_views(train_idx), video.select_views(HOLDOUT)
    res = fit(train, _cfg(args))
    held = score(_flat(render_views(res.model, test.rig, None, args.backend)), _flat(test.frames))
    tr = score(_flat(render_views(res.model, train.rig, None, args.backend)), _flat(train.frames))
    out = {"case": "real static", "size": f"{video.width}x{video.height}", "iterations": res.iterations,
           "seconds": round(res.seconds, 1), "it_per_s": round(res.iterations / max(1e-9, res.seconds - res.init_seconds), 2),
           "gaussians": res.model.num_gaussians, "backend": res.backend, "heldout": held, "train": tr}
    print(f"\nreal data, static, {out['size']}, views {HOLDOUT} held out, budget {args.seconds}s, backend {res.backend}")
    print("                  psnr   ssim  psnr_fg ssim_fg")
    print(f"held-out views  {_fmt(held)}")
    print(f"training views  {_fmt(tr)}")
    print(f"iterations {res.iterations} in {res.seconds:.1f}s (init {res.init_seconds:.1f}s, "
          f"{out['it_per_s']} it/s), {res.model.num_gaussians} Gaussians")
    return out


def run_synth(args) -> list[dict]:
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = official_rig()
    nt = args.frames
    times = [i / (nt - 1) for i in range(nt)]
    mids = [(times[i] + times[i + 1]) / 2 for i in range(nt - 1)]
    ch = SyntheticCharacter(motion=args.motion, seed=args.seed, n_gaussians=args.synth_gaussians)
    t0 = time.perf_counter()
    frames = torch.from_numpy(ch.render_views(rig, times, scale=args.scale, backend=args.backend))
    gt_mid = torch.from_numpy(ch.render_views(rig.select(HOLDOUT), mids, scale=args.scale, backend=args.backend))
    print(f"ground truth rendered in {time.perf_counter() - t0:.1f}s")
    video = MultiViewVideo(frames, rig.scaled(args.scale), times)
    train_idx = [k for k in range(video.num_views) if k not in HOLDOUT]
    train, test = video.select_views(train_idx), video.select_views(HOLDOUT)
    variants = [("neighbour constraint on", {"neighbour_weight": args.neighbour_weight}),
                ("neighbour constraint off", {"neighbour_weight": 0.0})]
    if args.rigidity:
        variants.append((f"neighbour + rigidity {args.rigidity}", {"neighbour_weight": args.neighbour_weight,
                                                                    "rigidity_weight": args.rigidity}))
    if args.variant != "all":
        variants = [v for v in variants if v[0].endswith(args.variant) or (args.variant == "rigidity" and "rigidity" in v[0])]
    rows = []
    for name, kw in variants:
        res = fit(train, _cfg(args, **kw))
        at_train = score(_flat(render_views(res.model, test.rig, times, args.backend)), _flat(test.frames))
        at_mid = score(_flat(render_views(res.model, test.rig, mids, args.backend)), _flat(gt_mid))
        rows.append({"variant": name, "iterations": res.iterations, "seconds": round(res.seconds, 1),
                     "it_per_s": round(res.iterations / max(1e-9, res.seconds - res.init_seconds), 2),
                     "gaussians": res.model.num_gaussians, "backend": res.backend,
                     "heldout_train_times": at_train, "heldout_intermediate_times": at_mid})
        print(f"  {name}: {res.iterations} it in {res.seconds:.0f}s", flush=True)
    print(f"\nsynthetic '{args.motion}', 21 views x {nt} frames at {video.width}x{video.height}, views {HOLDOUT} held "
          f"out, budget {args.seconds}s per fit, backend {rows[0]['backend']}")
    print("variant                      | held-out, training times       | held-out, intermediate times   | it/s")
    print("                             |  psnr   ssim  psnr_fg ssim_fg  |  psnr   ssim  psnr_fg ssim_fg  |")
    for r in rows:
        print(f"{r['variant']:<28} | {_fmt(r['heldout_train_times'])} | {_fmt(r['heldout_intermediate_times'])} | "
              f"{r['it_per_s']}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case", choices=["real", "synth", "all"])
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--iterations", type=int, default=1_000_000)
    p.add_argument("--scale", type=float, default=0.25)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--motion", default="walk")
    p.add_argument("--synth-gaussians", type=int, default=20000)
    p.add_argument("--neighbour-weight", type=float, default=1.0)
    p.add_argument("--rigidity", type=float, default=0.0)
    p.add_argument("--variant", default="all", choices=["all", "on", "off", "rigidity"],
                   help="synth: which ablation rows")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")
    results = {}
    if args.case in ("real", "all"):
        results["real"] = run_real(args)
    if args.case in ("synth", "all"):
        results["synth"] = run_synth(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

"""Views like a video model's (issue 22): fit the synthetic character's multi-view video degraded as generated views
are (per-view colour and exposure, misalignment against the rig, flicker, details that disagree between views;
``charactershot_core.gaussians.synthetic.degrade``) at a few strengths, and score the held-out views against the CLEAN truth.

The demo's setting: the wave, 21 official views x 9 frames at 180x120, views 3, 10, 17 held out (never degraded,
never trained on: they are the clean truth), seed 0, the same degradation seed for every run. Reported per
strength: held-out frame-tight box PSNR (mean / worst frame), character coverage and moving-part coverage (worst
frame), clip-box PSNR, and ``outside``: the share of pixels outside the truth's silhouette (dilated by 2 px) that
the fit colours more than 48/255 away from white (floaters); each also ``aligned``: after each held-out camera is
registered to the frozen fit (``evaluation.align``: pan, tilt, roll, dolly; a fit that refines its cameras sits a
fraction of a pixel off the rig as a whole, by the mean of the views' unknown misalignments). ``--fit-args`` passes FitConfig fields
(``name=value,...``) to measure a robust-fit option on and off; ``--iterations`` fixes the work instead of the time;
``--effects`` picks the degradation's effects (one at a time: where the dB go); ``--misalign render`` (the default) draws the
misaligned training views through cameras off the rig (``degrade.misaligned_rig``), ``--misalign resample`` warps the
clean images instead (which blurs them as well). With the misalignment on,
``misalign_px`` / ``misalign_px_refined``: the mean distance over the character (every 20th ground-truth centre at the
middle time, all training views) between where a degraded view draws a point and where the rig / the fit's refined
camera puts it.

  python benchmarks/bench_degraded.py --strengths 0,0.5,1,2 --seconds 120 --out bench_out/degraded
  python benchmarks/bench_degraded.py --strengths 1 --iterations 300 --fit-args neighbour_weight=0
  python benchmarks/bench_degraded.py --strengths 1 --iterations 500 --effects misalign --fit-args pose_dof=rigid

Writes OUT/results.json (rewritten after every fit) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from charactershot_core.cameras import official_rig  # noqa: E402
from charactershot_core.gaussians.fitting.data import MultiViewVideo  # noqa: E402
from charactershot_core.gaussians.synthetic.degrade import EFFECTS, degrade, misaligned_rig, misplaced  # noqa: E402
from charactershot_core.gaussians.fitting.fit import FitConfig, fit  # noqa: E402
from charactershot_core.gaussians.raster.views import render_views  # noqa: E402
from charactershot_core.gaussians.evaluation.align import align_cameras  # noqa: E402
from charactershot_core.gaussians.evaluation.metrics import COVERAGE_TOL, FG_THRESHOLD, clip_scores  # noqa: E402
from charactershot_core.gaussians.synthetic import SyntheticCharacter  # noqa: E402

HOLDOUT = (3, 10, 17)


def outside_colour(pred: torch.Tensor, gt: torch.Tensor, dilate: int = 2) -> float:
    """Share of the pixels outside the truth's silhouette (dilated by ``dilate`` px) that ``pred`` draws more than
    48/255 away from white: floaters and smears the clean truth does not have."""
    sil = (gt.amin(-1) < FG_THRESHOLD).float().reshape(-1, 1, *gt.shape[-3:-1])
    sil = F.max_pool2d(sil, 2 * dilate + 1, stride=1, padding=dilate).reshape(gt.shape[:-1]) > 0
    coloured = (1.0 - pred).abs().amax(-1) > COVERAGE_TOL
    outside = ~sil
    return float((coloured & outside).sum()) / max(1, int(outside.sum()))


def misalignment_px(res, rig, points: torch.Tensor, strength: float, seed: int):
    """Mean distance (px) over the training views and ``points`` (world, N x 3) between where each degraded view
    draws them (``degrade.misplaced``) and where the fit's cameras put them: ``(rig, refined)``; refined is None
    without camera refinement."""
    vm, ks = rig.viewmats().float(), rig.Ks().float()

    def project(viewmats):
        cam = points @ viewmats[:, :3, :3].transpose(1, 2) + viewmats[:, None, :3, 3]
        uv = cam[..., :2] / cam[..., 2:]
        return torch.stack([ks[:, None, 0, 0] * uv[..., 0] + ks[:, None, 0, 2],
                            ks[:, None, 1, 1] * uv[..., 1] + ks[:, None, 1, 2]], -1)

    on_rig = project(vm)
    seen = torch.as_tensor(misplaced(on_rig.numpy(), rig.width, rig.height, strength, seed), dtype=torch.float32)
    before = float((on_rig - seen).norm(dim=-1).mean())
    corr = getattr(res, "view_corrections", None)
    if corr is None or corr.pose is None:
        return before, None
    with torch.no_grad():
        refined = project(corr.viewmats(vm.to(corr.pose.delta.device), range(len(rig))).cpu())
    return before, float((refined - seen).norm(dim=-1).mean())


def parse_fit_args(text: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, val = part.partition("=")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strengths", default="0,0.5,1,2")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--iterations", type=int, default=None, help="a fixed iteration count instead of --seconds")
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--motion", default="wave")
    ap.add_argument("--seed", type=int, default=0, help="the degradation's seed")
    ap.add_argument("--fit-seeds", default="0",
                    help="the fit's seeds (FitConfig.seed), e.g. 0,1,2: one fit each, and their mean per strength "
                         "(a fit at a few hundred iterations is chaotic: one seed's figure moves by tenths of a dB)")
    ap.add_argument("--effects", default=",".join(EFFECTS),
                    help="the degradation's effects, some of " + ", ".join(EFFECTS) + " (one at a time: where the dB go)")
    ap.add_argument("--misalign", choices=("render", "resample"), default="render",
                    help="how the misalignment is made: render the training views through cameras off the rig "
                         "(degrade.misaligned_rig, sharp), or resample the clean images (degrade's warp, which "
                         "also blurs them)")
    ap.add_argument("--true-cameras", action="store_true",
                    help="with --misalign render: fit with the cameras the misaligned views were drawn with, not the "
                         "rig's (what the fit could do if it knew them)")
    ap.add_argument("--fit-args", default="", help="FitConfig fields, name=value,...")
    ap.add_argument("--label", default="")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="bench_out/degraded")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    results = json.load(open(path, encoding="utf-8")) if os.path.isfile(path) else []

    rig = official_rig().scaled(args.scale)
    times = [i / (args.frames - 1) for i in range(args.frames)]
    character = SyntheticCharacter(args.motion, seed=0, n_gaussians=20000)
    clean = torch.as_tensor(np.asarray(character.render_views(rig, times, backend="torch")), dtype=torch.float32)
    centres = character.gaussians_at(0.5)["means"][::20]
    train = [k for k in range(clean.shape[0]) if k not in HOLDOUT]
    extra = parse_fit_args(args.fit_args)
    effects = tuple(e.strip() for e in args.effects.split(",") if e.strip())
    fit_seeds = [int(x) for x in args.fit_seeds.split(",") if x.strip()]
    runs = [(float(s), fs) for s in args.strengths.split(",") for fs in fit_seeds]
    for strength, fit_seed in runs:
        frames = clean.clone()
        source, rest = clean[train], effects
        if "misalign" in effects and args.misalign == "render" and strength > 0:
            off_rig = misaligned_rig(rig.select(train), strength, seed=args.seed)
            source = torch.as_tensor(np.asarray(character.render_views(off_rig, times, backend="torch")),
                                     dtype=torch.float32)
            rest = tuple(e for e in effects if e != "misalign")
        frames[train] = degrade(source, strength, seed=args.seed, effects=rest) if rest else source
        cams = rig.select(train)
        if args.true_cameras and "misalign" in effects and args.misalign == "render" and strength > 0:
            cams = off_rig
        video = MultiViewVideo(frames[train], cams, times)
        cfg = FitConfig(iterations=args.iterations or 10**9, seconds=None if args.iterations else args.seconds,
                        backend="torch", seed=fit_seed)
        for k, v in extra.items():
            if not hasattr(cfg, k):
                raise SystemExit(f"--fit-args: FitConfig has no field {k!r}")
            setattr(cfg, k, v)
        t0, c0 = time.perf_counter(), time.process_time()
        res = fit(video, cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        pred = render_views(res.model, rig.select(list(HOLDOUT)), times, "torch")
        gt = clean[list(HOLDOUT)]
        s = clip_scores(pred, gt)
        mis = misalignment_px(res, rig.select(train), centres, strength, args.seed) if "misalign" in effects else None
        # the same views after registering each held-out camera to the frozen fit (evaluation/align.py)
        aligned, shifts = align_cameras(res.model, rig.select(list(HOLDOUT)), times, gt)
        pred_a = render_views(res.model, aligned, times, "torch")
        sa = clip_scores(pred_a, gt)
        row = {"label": args.label or args.fit_args or "default", "strength": strength, "seed": args.seed,
               "fit_seed": fit_seed, "iterations": res.iterations, "gaussians": int(res.model.num_gaussians),
               "pose_check": getattr(res, "pose_check", None),
               "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
               "it_per_cpu_s": round(res.iterations / max(cpu, 1e-9), 2), "tight_psnr": round(s["tight_psnr"], 2),
               "tight_psnr_worst": round(s["tight_psnr_worst"], 2), "box_psnr": round(s["box_psnr"], 2),
               "coverage_worst": round(s["coverage_worst"], 4),
               "moving_coverage_worst": None if s["moving_coverage_worst"] is None else round(s["moving_coverage_worst"], 4),
               "outside": round(outside_colour(pred, gt), 5),
               "aligned": {"tight_psnr": round(sa["tight_psnr"], 2), "tight_psnr_worst": round(sa["tight_psnr_worst"], 2),
                           "box_psnr": round(sa["box_psnr"], 2), "coverage_worst": round(sa["coverage_worst"], 4),
                           "moving_coverage_worst": None if sa["moving_coverage_worst"] is None
                           else round(sa["moving_coverage_worst"], 4),
                           "outside": round(outside_colour(pred_a, gt), 5),
                           "shift_px": [round(float(x), 3) for x in shifts]},
               "fit_args": extra, "effects": list(effects),
               "misalign_px": None if mis is None else round(mis[0], 3),
               "misalign_px_refined": None if mis is None or mis[1] is None else round(mis[1], 3), "seconds": args.seconds,
               "fixed_iterations": args.iterations,
               "misalign_made_by": args.misalign if "misalign" in effects else None,
               "true_cameras": bool(args.true_cameras)}
        results.append(row)
        with open(path + ".partial", "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
        os.replace(path + ".partial", path)
        print(json.dumps(row), flush=True)
    print("| label | strength | iterations | it/CPU-s | tight PSNR mean / worst | box PSNR | coverage worst "
          "| moving coverage worst | outside | aligned: tight PSNR mean / worst, coverage worst, outside |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        a = r.get("aligned") or {}
        print(f"| {r['label']} | {r['strength']} | {r['iterations']} | {r.get('it_per_cpu_s', '')} | "
              f"{r['tight_psnr']} / {r['tight_psnr_worst']} | "
              f"{r['box_psnr']} | {r['coverage_worst']} | {r['moving_coverage_worst']} | {r['outside']} | "
              f"{a.get('tight_psnr', '')} / {a.get('tight_psnr_worst', '')}, {a.get('coverage_worst', '')}, "
              f"{a.get('outside', '')} |")
    groups = {}
    for r in results:
        groups.setdefault((r["label"], r["strength"], r.get("seed", 0)), []).append(r)
    print("\nmean over the fit's seeds (aligned held-out tight-box PSNR mean / worst frame; coverage worst):\n"
          "| label | strength | degradation seed | fit seeds | aligned tight PSNR mean / worst | coverage worst |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for (label, strength, seed), rows in groups.items():
        al = [r.get("aligned") or {} for r in rows]
        mean = lambda k: round(float(np.mean([a[k] for a in al if k in a])), 2) if all(k in a for a in al) else ""  # noqa: E731
        print(f"| {label} | {strength} | {seed} | {','.join(str(r.get('fit_seed', 0)) for r in rows)} | "
              f"{mean('tight_psnr')} / {mean('tight_psnr_worst')} | "
              f"{round(float(np.mean([a.get('coverage_worst', np.nan) for a in al])), 4)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""4D exports: time and file size per format, and the .splatv cubic-motion fit error.

The synthetic character (charactershot_core/gaussians/synthetic/character.py: a rigged figure with a known motion) is baked
at N Gaussians x T frames and written through ``formats.export_formats`` in every format (per-frame .ply and .spz,
one .splatv, the one-file .html, the .cs4d bundle). For each N it prints seconds (writing only; baking the frames is
listed once as ``bake``) and MB per format, and the .splatv fit figures (position error relative to the character's
size: mean, p95, max, share of Gaussians off by > 1 % at some frame; rotation error in degrees). With ``--psnr``
it also renders the ``.splatv`` as splaTV's shader moves it (decoded from the file) and the model itself at two
times from the same official-rig cameras with the pack's rasteriser, and reports the PSNR between the two (the loss
from the format alone: motion fit, no scale motion, DC colour only, quantisation).

Examples:
  python benchmarks/bench_exports.py                                # 20k, 50k, 100k Gaussians x 25 frames, "wave"
  python benchmarks/bench_exports.py --sizes 20000 --motions wave,walk,jump --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from charactershot_core.gaussians import formats as F
from charactershot_core.gaussians.synthetic import SyntheticModel

from charactershot_core.gaussians.model import SH_C0  # noqa: E402


def splatv_psnr(model, path: str, size: str, times=(0.25, 0.75), views=(0, 5, 10, 15)) -> dict:
    """PSNR (dB, whole image on white, mean over ``views``) of the decoded .splatv against the model at ``times``."""
    import numpy as np

    from charactershot_core.cameras import official_rig
    from charactershot_core.gaussians.raster.render import rasterize

    w, h = (int(x) for x in size.lower().split("x"))
    rig = official_rig().select(list(views)).resized(w, h)
    vm, ks = rig.viewmats(), rig.Ks()
    dec = F.read_splatv(path)
    white = torch.ones(len(views), 3)
    out = {}
    for t in times:
        b = model.baked(t)
        ref, _, _ = rasterize(b["means"], b["quats"], torch.exp(b["scales"]), torch.sigmoid(b["opacities"]),
                              (b["sh0"][:, 0] * SH_C0 + 0.5).clamp(0, 1), vm, ks, w, h, backend="torch",
                              backgrounds=white)
        st = F.splatv_state(dec, t)
        rgba = torch.as_tensor(dec["rgba"].astype(np.float32) / 255.0)
        got, _, _ = rasterize(torch.as_tensor(st["positions"], dtype=torch.float32),
                              torch.as_tensor(st["rotations"], dtype=torch.float32),
                              torch.as_tensor(dec["scale"], dtype=torch.float32),
                              rgba[:, 3] * torch.as_tensor(st["fade"], dtype=torch.float32), rgba[:, :3], vm, ks, w, h,
                              backend="torch", backgrounds=white)
        mse = ((ref.clamp(0, 1) - got.clamp(0, 1)) ** 2).mean(dim=(1, 2, 3))
        out[float(t)] = float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20000,50000,100000")
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--motions", default="wave")
    ap.add_argument("--formats", default=",".join(F.FORMATS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--psnr", action="store_true", help="PSNR of .splatv renders against the model's (2 times x 4 views)")
    ap.add_argument("--windows", type=int, default=0, help=".splatv time windows (0: automatic; formats.splatv_bytes)")
    ap.add_argument("--psnr-size", default="360x240", help="render size for --psnr")
    args = ap.parse_args()
    rows = []
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    for motion in args.motions.split(","):
        for n in [int(x) for x in args.sizes.split(",")]:
            model = SyntheticModel(motion, n, args.frames)
            out = tempfile.mkdtemp(prefix="bench_exports_")
            try:
                files, s = F.export_formats(model, out, model.times, args.formats,
                                              splatv_windows=args.windows)
                splatv = [f for f in files if f.endswith(".splatv")]
                psnr = splatv_psnr(model, splatv[0], args.psnr_size) if args.psnr and splatv else None
            finally:
                shutil.rmtree(out, ignore_errors=True)
            row = {"motion": motion, "count": n, "frames": args.frames, "bake_s": s["bake_seconds"],
                   "windows": args.windows}
            for fmt in s["formats"]:
                row[fmt] = {"seconds": s[fmt]["seconds"], "MB": s[fmt]["bytes"] / 1e6, "files": s[fmt]["files"]}
            if "splatv" in s:
                row["splatv_fit"] = s["splatv"]["fit"]
            if psnr is not None:
                row["splatv_psnr"] = psnr
            rows.append(row)
            parts = [f"{fmt} {row[fmt]['seconds']:.2f} s {row[fmt]['MB']:.2f} MB" for fmt in s["formats"]]
            print(f"{motion} N={n} T={args.frames} windows={args.windows}: bake {row['bake_s']:.2f} s; " + "; ".join(parts))
            if "splatv_fit" in row:
                r = row["splatv_fit"]
                print(f"   splatv fit: mean {100 * r['position_mean_rel']:.3f} %, p95 {100 * r['position_p95_rel']:.3f} %, "
                      f"max {100 * r['position_max_rel']:.2f} % of the size; {100 * r['gaussians_over_1pct']:.1f} % "
                      f"of Gaussians > 1 %; rotation mean {r['rotation_mean_deg']:.2f} deg, "
                      f"p95 {r['rotation_p95_deg']:.2f} deg" + (f"; temporal coverage {r['coverage_min']:.2f}-"
                                                                  f"{r['coverage_max']:.2f}" if "coverage_min" in r else ""))
            if psnr is not None:
                print("   splatv render vs model render, PSNR (dB): " +
                      ", ".join(f"t={t:g}: {v:.2f}" for t, v in psnr.items()))
            sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

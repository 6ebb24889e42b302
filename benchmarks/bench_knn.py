"""Nearest-neighbour search for the fit's KNN graphs: chunked brute force (``torch.cdist`` + ``topk``) against
scipy's ``cKDTree``, on the synthetic character's Gaussian centres (the shape the fit searches) at several sizes.

For each size it prints the seconds of each method (best of ``--repeat`` runs, after one warm-up), the speed-up,
and how many rows' neighbour sets differ between the two: ``cdist`` works in float32 through a matrix product, so on
the character's regular surface lattices it orders some near-equal distances differently from the float64 tree
(tests/test_gaussians_fit.py checks the tree against an exact float64 brute force).

Examples:
  python benchmarks/bench_knn.py                         # 20k and 100k points, k = 12 (flow init) and 8 (graph)
  python benchmarks/bench_knn.py --sizes 5000,20000 --k 8 --threads 1 --json knn.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from charactershot_core.gaussians.synthetic import SyntheticCharacter  # noqa: E402


@torch.no_grad()
def knn_cdist(points: torch.Tensor, k: int, chunk: int | None = None) -> torch.Tensor:
    """The brute-force search the fit used before (kept here as the reference of this benchmark)."""
    n = points.shape[0]
    if chunk is None:
        chunk = max(64, (1 << 24) // max(1, n))
    k = min(k, n - 1)
    pts = points.detach().float()
    out = torch.empty(n, k, dtype=torch.long)
    for s in range(0, n, chunk):
        d = torch.cdist(pts[s:s + chunk], pts)
        rows = torch.arange(d.shape[0])
        d[rows, rows + s] = float("inf")
        out[s:s + chunk] = d.topk(k, dim=1, largest=False).indices
    return out


def knn_kdtree(points: torch.Tensor, k: int) -> torch.Tensor:
    from scipy.spatial import cKDTree

    pts = points.detach().cpu().double().numpy()
    _, idx = cKDTree(pts).query(pts, k=k + 1, workers=-1)
    return torch.from_numpy(np.ascontiguousarray(idx[:, 1:]))


def best(fn, repeat: int, warmup: bool = True):
    """(best seconds of ``repeat`` runs, the last result); one untimed warm-up run first when ``warmup``."""
    if warmup:
        fn()
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20000,100000")
    ap.add_argument("--k", default="12,8", help="neighbour counts (comma-separated)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}")
    for n in [int(x) for x in args.sizes.split(",")]:
        pts = SyntheticCharacter("wave", seed=0, n_gaussians=n).gaussians_at(0.5)["means"].float()
        for k in [int(x) for x in args.k.split(",")]:
            small = n <= 20000  # the brute force at 100k takes minutes: one timed run, no warm-up
            t_cd, a = best(lambda: knn_cdist(pts, k), args.repeat if small else 1, warmup=small)
            t_kd, b = best(lambda: knn_kdtree(pts, k), args.repeat)
            differ = int((a.sort(1).values != b.sort(1).values).any(1).sum())
            row = {"n": n, "k": k, "cdist_s": round(t_cd, 4), "kdtree_s": round(t_kd, 4),
                   "speedup": round(t_cd / t_kd, 1), "rows_differing": differ}
            rows.append(row)
            print(f"N={n:>7} k={k:>2}: cdist {t_cd:8.3f} s   cKDTree {t_kd:7.3f} s   x{t_cd / t_kd:6.1f}   "
                  f"rows whose neighbour sets differ: {differ}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

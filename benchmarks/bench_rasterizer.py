"""Benchmark the rasteriser backends: forward and forward+backward time per iteration.

Scene: N Gaussians spread over a character-sized volume (0.6 x 0.4 x 1.8 m, standing on z = 0), isotropic-ish
scales chosen so that the typical splat radius is a few pixels at the chosen resolution, rendered from the official
21-view rig (or the first ``--cameras`` of it) scaled by ``--scale`` (0.25 = 180x120).

    python benchmarks/bench_rasterizer.py --gaussians 20000 --cameras 18 --scale 0.25 --backend torch
    python benchmarks/bench_rasterizer.py --sweep            # a small table over N and camera batch sizes

Prints one line per configuration: forward ms, forward+backward ms, ms per camera (wall clock, the minimum over the
repeats) and the process CPU time per camera of forward+backward (steadier than wall clock on a shared machine; with
one thread it is the single-core cost). On a machine shared with other busy processes, run with ``--threads 1`` or
``OMP_WAIT_POLICY=PASSIVE``: torch's spinning 2-thread pool can be 10x slower there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from charactershot_core.cameras import official_rig  # noqa: E402
from charactershot_core.gaussians.raster.render import rasterize  # noqa: E402


def make_scene(n: int, seed: int = 0, radius_px: float = 3.0, scale: float = 0.25, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 3, generator=g)
    means = torch.stack([(u[:, 0] - 0.5) * 0.6, (u[:, 1] - 0.5) * 0.4, u[:, 2] * 1.8], 1)
    # pixel footprint at the rig distance (3.5 m, f = 666.7 px at full resolution)
    m_per_px = 3.5 / (666.7 * scale)
    sigma_world = max(radius_px / 3.33, 0.35) * m_per_px * 0.8
    scales = sigma_world * torch.exp(torch.randn(n, 3, generator=g) * 0.3)
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.3 + 0.7 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    return [t.to(device) for t in (means, quats, scales, opacities, colors)]


def character_scene(n: int, device="cpu"):
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    g = SyntheticCharacter("walk", seed=0, n_gaussians=n).gaussians_at(0.3, device=device)
    return [g["means"], g["quats"], g["scales"], g["opacities"], g["colors"]]


def bench(n, cams, scale, backend, repeats, device="cpu", sh=False, scene="volume"):
    rig = official_rig().scaled(scale).select(list(range(cams)))
    if scene == "character":
        means, quats, scales, opac, colors = character_scene(n, device=device)
    else:
        means, quats, scales, opac, colors = make_scene(n, scale=scale, device=device)
    sh_degree = None
    if sh:
        sh_degree = 3
        c = torch.zeros(n, 16, 3, device=device)
        c[:, 0] = (colors - 0.5) / 0.28209479177387814
        colors = c
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    vm, ks = rig.viewmats(device=device), rig.Ks(device=device)
    bg = torch.ones(cams, 3, device=device)

    def sync():
        if device != "cpu":
            torch.cuda.synchronize()

    # warm-up
    img, alpha, info = rasterize(*params, vm, ks, rig.width, rig.height, sh_degree=sh_degree, backend=backend,
                                 backgrounds=bg)
    img.sum().backward()
    fwd, full, cpu = [], [], []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            rasterize(*params, vm, ks, rig.width, rig.height, sh_degree=sh_degree, backend=backend, backgrounds=bg)
        sync()
        t1 = time.perf_counter()
        c1 = time.process_time()
        img, alpha, info = rasterize(*params, vm, ks, rig.width, rig.height, sh_degree=sh_degree, backend=backend,
                                     backgrounds=bg)
        loss = (img - 0.5).abs().mean()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        cpu.append(time.process_time() - c1)
        fwd.append(t1 - t0)
        full.append(t2 - t1)
    visible = int((info["radii"] > 0).all(-1).sum())
    f, b = min(fwd) * 1000, min(full) * 1000
    print(f"scene={scene:9s} backend={info['backend']:6s} N={n:6d} cams={cams:2d} {rig.width}x{rig.height} sh={'3' if sh else '-'} "
          f"visible={visible:7d} fwd={f:8.1f} ms  fwd+bwd={b:8.1f} ms  per-camera fwd+bwd={b / cams:6.1f} ms "
          f"(process CPU time {min(cpu) * 1000 / cams:6.1f} ms)", flush=True)
    return f, b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gaussians", type=int, default=20000)
    ap.add_argument("--cameras", type=int, default=18)
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sh", action="store_true", help="SH degree 3 colours instead of RGB")
    ap.add_argument("--scene", choices=("volume", "character"), default="volume",
                    help="volume: Gaussians filling a character-sized box (many layers, pessimistic); character: "
                         "the synthetic character's surface Gaussians (like a fitted model)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    ap.add_argument("--sweep", action="store_true", help="run a small table of configurations")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {a.device}")
    if a.sweep:
        for n, cams in ((5000, 1), (20000, 1), (20000, 4), (20000, 18), (50000, 4)):
            bench(n, cams, a.scale, a.backend, a.repeats, a.device, a.sh, a.scene)
    else:
        bench(a.gaussians, a.cameras, a.scale, a.backend, a.repeats, a.device, a.sh, a.scene)


if __name__ == "__main__":
    main()

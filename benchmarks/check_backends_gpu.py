"""GPU-only check: the torch rasteriser against gsplat's CUDA rasteriser on seeded scenes, plus timings.

    python benchmarks/check_backends_gpu.py                 # parity on small scenes + timings at 720x480
    python benchmarks/check_backends_gpu.py --json out.json

For each scene it renders with both backends on the same CUDA tensors (float32) and reports the largest absolute
difference of the colours, the alphas, the projected means and radii, and the relative difference of the gradients
of a fixed random loss w.r.t. means, quats, scales, opacities and colours. It exits with status 1 when a difference
exceeds its tolerance (colours/alphas 2e-3, gradients 2e-2 relative), and prints a message and exits 0 on a machine
without CUDA (nothing to compare there; the JSON says so); it exits 1 when gsplat cannot be used on a CUDA machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from charactershot_core.cameras import official_rig  # noqa: E402
from charactershot_core.gaussians.raster.render import rasterize  # noqa: E402

TOL_IMAGE = 2e-3
TOL_GRAD = 2e-2


def scene(n, seed, device, sh_degree=None):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 3, generator=g)
    means = torch.stack([(u[:, 0] - 0.5) * 0.7, (u[:, 1] - 0.5) * 0.5, u[:, 2] * 1.8], 1)
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.4 - 4.0)
    opac = 0.1 + 0.85 * torch.rand(n, generator=g)
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.3
    return [t.to(device) for t in (means, quats, scales, opac, colors)]


def compare(n, cams, scale, seed, device, mode="classic", sh_degree=None, packed=False):
    rig = official_rig().scaled(scale).select(list(range(cams)))
    vm, ks = rig.viewmats(device=device), rig.Ks(device=device)
    bg = torch.ones(cams, 3, device=device)
    base = scene(n, seed, device, sh_degree)
    out = {}
    grads = {}
    for backend in ("torch", "gsplat"):
        params = [t.clone().requires_grad_(True) for t in base]
        img, alpha, info = rasterize(*params, vm, ks, rig.width, rig.height, sh_degree=sh_degree, backend=backend,
                                     backgrounds=bg, rasterize_mode=mode, packed=packed)
        g = torch.Generator(device=device).manual_seed(seed + 1)
        w_img = torch.randn(img.shape, generator=g, device=device)
        w_a = torch.randn(alpha.shape, generator=g, device=device)
        ((img * w_img).sum() + (alpha * w_a).sum()).backward()
        out[backend] = (img.detach(), alpha.detach(), info)
        grads[backend] = [p.grad.detach() for p in params]
    (it, at, ti), (ig, ag, gi) = out["torch"], out["gsplat"]
    res = {
        "scene": f"N={n} cams={cams} {rig.width}x{rig.height} mode={mode} sh={sh_degree} packed={packed}",
        "colors_max_abs": float((it - ig).abs().max()),
        "alphas_max_abs": float((at - ag).abs().max()),
    }
    if not packed:
        vis = (ti["radii"] > 0).all(-1) & (gi["radii"] > 0).all(-1)
        res["means2d_max_abs"] = float((ti["means2d"][vis] - gi["means2d"][vis]).abs().max()) if vis.any() else 0.0
        res["radii_mismatch"] = int((ti["radii"] != gi["radii"]).any(-1).sum())
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), grads["torch"], grads["gsplat"]):
        res[f"grad_{name}_rel"] = float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
    res["ok"] = (res["colors_max_abs"] < TOL_IMAGE and res["alphas_max_abs"] < TOL_IMAGE
                 and all(v < TOL_GRAD for k, v in res.items() if k.startswith("grad_")))
    return res


def timing(n, cams, scale, backend, device, repeats=10):
    rig = official_rig().scaled(scale).select(list(range(cams)))
    vm, ks = rig.viewmats(device=device), rig.Ks(device=device)
    bg = torch.ones(cams, 3, device=device)
    params = [t.requires_grad_(True) for t in scene(n, 0, device)]

    def step():
        img, alpha, info = rasterize(*params, vm, ks, rig.width, rig.height, backend=backend, backgrounds=bg)
        (img - 0.5).abs().mean().backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / repeats * 1000
    return {"backend": backend, "N": n, "cams": cams, "size": f"{rig.width}x{rig.height}", "fwd_bwd_ms": ms}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--skip-timing", action="store_true")
    a = ap.parse_args(argv)
    def write(obj):
        if a.json:
            with open(a.json, "w") as f:
                json.dump(obj, f, indent=1)

    if not torch.cuda.is_available():
        print("check_backends_gpu: no CUDA device here; this check needs a GPU (gsplat is CUDA-only). Nothing to do.")
        write({"cuda": False, "note": "no CUDA device: nothing compared"})
        return 0
    try:
        from charactershot_core.gaussians.raster.render import _load_gsplat

        _load_gsplat()  # the package and its CUDA extension (built on first use)
    except Exception as e:  # pragma: no cover - depends on the install
        print(f"check_backends_gpu: gsplat cannot be used ({e}); nothing to compare.")
        write({"cuda": True, "error": f"gsplat cannot be used: {e}"})
        return 1
    device = "cuda"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    results = {"parity": [], "timing": []}
    for kw in (dict(n=300, cams=2, scale=0.125, seed=0), dict(n=2000, cams=3, scale=0.25, seed=1),
               dict(n=2000, cams=3, scale=0.25, seed=2, mode="antialiased"),
               dict(n=1000, cams=2, scale=0.25, seed=3, sh_degree=3),
               dict(n=2000, cams=3, scale=0.25, seed=4, packed=True)):
        r = compare(device=device, **kw)
        results["parity"].append(r)
        print(json.dumps(r), flush=True)
    if not a.skip_timing:
        for backend in ("gsplat", "torch"):
            for n, cams in ((50000, 1), (50000, 21)):
                if backend == "torch" and cams > 1:
                    cams = 4
                r = timing(n, cams, 1.0, backend, device, repeats=10 if backend == "gsplat" else 3)
                results["timing"].append(r)
                print(json.dumps(r), flush=True)
    ok = all(r["ok"] for r in results["parity"])
    print("PARITY OK" if ok else "PARITY FAILED")
    results["ok"] = ok
    write(results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

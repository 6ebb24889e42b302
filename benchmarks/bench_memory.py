"""Peak memory and wall time of a full-size 4D fit and of the CLI demo (issue 20, item 5).

  fit    the sampler's full-size output: the demo's synthetic character (``--motion``, default wave) seen by the
         official 21-camera rig at 25 frames (times i/24) at 720x480 (scale 1.0), written once as PNG frames under
         ``--data`` (reused when present), then ``python -m charactershot_core fit4d --scale 1.0 --seconds 60``
         (``--seconds``) in a child process; every view trains (no held-out view).
  demo   ``python -m charactershot_core demo`` (its default 120 s budget unless ``--demo-seconds``) in a child.

Each child's peak resident set size is read from the kernel's accounting of that child (``os.wait4``'s
``ru_maxrss``, Linux and macOS) and also polled every 50 ms over the child's process tree (psutil, every platform);
the larger is reported. Wall time is the child's whole run (start of Python to exit: loading the PNGs, the fit,
the scoring renders, writing); ``wall_to_fit_end_s`` leaves out the scoring after the fit (``score_seconds``,
from metrics.json), which is what ``--seconds`` covers. The fit's own figures (``seconds``, ``init_seconds``, ``iterations``,
``gaussians``) come from its metrics.json. The budget of item 5 is printed with them: the uint8 video, plus the
Gaussians (parameters, gradients and the two Adam moments: 4 x float32 per value), plus 1.5 GB.

Prints one JSON object (and writes it to ``--json`` when given).

  python benchmarks/bench_memory.py --out bench_out/memory                # both
  python benchmarks/bench_memory.py fit --seconds 60 --out bench_out/memory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GB = 1024 ** 3


def make_frames(folder: str, motion: str, frames: int, scale: float) -> dict:
    """Render the synthetic character once per frame time (never the whole video in memory) as PNG frames."""
    from charactershot_core.cameras import official_rig
    from charactershot_core.gaussians.fitting.data import write_png
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    rig = official_rig()
    times = [i / (frames - 1) for i in range(frames)]
    done = os.path.join(folder, "done.json")
    info = {"motion": motion, "frames": frames, "scale": scale, "views": len(rig)}
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            if json.load(f) == info:
                return info
    character = SyntheticCharacter(motion, seed=0, n_gaussians=20000)
    t0 = time.perf_counter()
    for i, t in enumerate(times):
        video = character.render_views(rig, [t], scale=scale, backend="torch", device="cpu")
        for k in range(video.shape[0]):
            write_png(os.path.join(folder, "multiview", f"view{k:02d}", f"frame_{i + 1:05d}.png"), video[k, 0])
    rig.save(os.path.join(folder, "cameras.json"))
    with open(done, "w", encoding="utf-8") as f:
        json.dump(info, f)
    print(f"rendered {len(rig)} views x {frames} frames in {time.perf_counter() - t0:.0f} s -> {folder}",
          file=sys.stderr)
    return info


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], log_path: str, root: str = ROOT) -> dict:
    """Run ``cmd`` in ``root``; its wall time and peak RSS (kernel accounting and polling, the larger)."""
    import psutil

    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=root)
    with open(log_path, "w", encoding="utf-8") as log:
        child = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = [0]
        stop = threading.Event()

        def poll():
            try:
                proc = psutil.Process(child.pid)
            except psutil.Error:
                return
            while not stop.is_set():
                peak[0] = max(peak[0], _tree_rss(proc))
                stop.wait(0.05)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        kernel = None
        if hasattr(os, "wait4"):
            _, status, ru = os.wait4(child.pid, 0)
            rc = os.waitstatus_to_exitcode(status)
            child.returncode = rc
            # ru_maxrss: kilobytes on Linux, bytes on macOS
            kernel = ru.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        else:
            rc = child.wait()
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
    out = {"command": " ".join(cmd[1:]) if cmd[0] == sys.executable else " ".join(cmd), "rc": rc,
           "wall_s": round(wall, 1), "peak_rss_polled_gb": round(peak[0] / GB, 3)}
    if kernel is not None:
        out["peak_rss_kernel_gb"] = round(kernel / GB, 3)
    out["peak_rss_gb"] = round(max(peak[0], kernel or 0) / GB, 3)
    return out


def gaussian_bytes(n: int, frames: int, sh_degree: int = 0) -> int:
    """float32 values per Gaussian (means, scales, quats, opacity, sh0, shN, the trajectory table's 7 per frame),
    x4 for the parameter, its gradient and Adam's two moments."""
    per = 3 + 3 + 4 + 1 + 3 + 3 * ((sh_degree + 1) ** 2 - 1) + 7 * frames
    return 4 * 4 * per * n


def run_fit(args) -> dict:
    data = os.path.abspath(args.data)
    info = make_frames(data, args.motion, args.frames, 1.0)
    out = os.path.join(os.path.abspath(args.out), "fit")
    metrics = os.path.join(out, "metrics.json")
    if os.path.exists(metrics):
        os.remove(metrics)
    cmd = [sys.executable, "-m", "charactershot_core", "fit4d", "--frames", os.path.join(data, "multiview"),
           "--cameras", os.path.join(data, "cameras.json"), "--out", out, "--metrics", metrics,
           "--scale", "1.0", "--seconds", str(args.seconds), "--seed", "0", "--backend", args.backend]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    os.makedirs(out, exist_ok=True)
    res = measure(cmd, os.path.join(out, "log.txt"), args.root)
    res.update({"views": info["views"], "frames": info["frames"], "width": 720, "height": 480,
                "budget_s": args.seconds})
    video = info["views"] * info["frames"] * 480 * 720 * 3
    res["uint8_video_gb"] = round(video / GB, 3)
    if res["rc"] == 0 and os.path.isfile(metrics):
        with open(metrics, encoding="utf-8") as f:
            m = json.load(f)
        res.update({"fit_seconds": m.get("seconds"), "init_seconds": m.get("init_seconds"),
                    "iterations": m.get("iterations"), "gaussians": m.get("gaussians"),
                    "train_psnr": m.get("train.psnr")})
        g = gaussian_bytes(int(m.get("gaussians") or 0), info["frames"])
        res["gaussians_gb"] = round(g / GB, 3)
        res["rss_goal_gb"] = round((video + g) / GB + 1.5, 3)
        res["rss_goal_met"] = res["peak_rss_gb"] <= res["rss_goal_gb"]
        if m.get("seconds") is not None:
            res["fit_over_budget"] = round(float(m["seconds"]) / args.seconds - 1, 3)
        if m.get("score_seconds") is not None:
            # the budget covers the command up to the end of the fit (Python's start, imports, loading the frames,
            # the initialisation and the iterations); the scoring renders after it are timed on their own
            res["load_seconds"] = m.get("load_seconds")
            res["score_seconds"] = m["score_seconds"]
            res["wall_to_fit_end_s"] = round(res["wall_s"] - float(m["score_seconds"]), 1)
            res["run_over_budget"] = round(res["wall_to_fit_end_s"] / args.seconds - 1, 3)
    return res


def run_demo(args) -> dict:
    out = os.path.join(os.path.abspath(args.out), "demo")
    cmd = [sys.executable, "-m", "charactershot_core", "demo", "--out", out, "--backend", args.backend]
    if args.demo_seconds:
        cmd += ["--seconds", str(args.demo_seconds)]
    os.makedirs(out, exist_ok=True)
    return measure(cmd, os.path.join(os.path.abspath(args.out), "demo_log.txt"), args.root)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all", choices=["all", "fit", "demo"])
    ap.add_argument("--out", default="bench_out/memory", help="output folder (fits, logs)")
    ap.add_argument("--data", default=None, help="folder of the full-size frames (default: OUT/data; reused)")
    ap.add_argument("--seconds", type=float, default=60.0, help="the full-size fit's time budget")
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--motion", default="wave")
    ap.add_argument("--demo-seconds", type=float, default=None, help="the demo's budget (default: its own)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="fit4d --threads (0: torch's default)")
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--root", default=ROOT, help="the checkout whose code the children run (default: this one; "
                                                 "another one measures another version of the code)")
    args = ap.parse_args(argv)
    args.data = args.data or os.path.join(args.out, "data")
    import platform

    import psutil

    args.root = os.path.abspath(args.root)
    result = {"root": args.root, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "ram_gb": round(psutil.virtual_memory().total / GB, 1),
                          "available_gb_at_start": round(psutil.virtual_memory().available / GB, 1)}}
    if args.what in ("all", "fit"):
        result["fit"] = run_fit(args)
        print(json.dumps({"fit": result["fit"]}), file=sys.stderr)
    if args.what in ("all", "demo"):
        result["demo"] = run_demo(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

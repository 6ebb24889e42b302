"""The bundled demo: a synthetic animated character seen by the official 21-camera rig -> 4D Gaussians.

It runs the same commands a user runs (``fit4d``, ``render``, ``export``) on multi-view videos rendered from the
procedural character, so it needs no diffusion weights and no GPU (a GPU is used when there is one).
"""

from __future__ import annotations

import json
import os
import time

from ...cameras import official_rig
from ..cli import WEIGHTS_NAME
from ..fitting.data import write_png
from ..evaluation.metrics import summary_text
from .character import SyntheticCharacter


def run_demo(args) -> int:
    from ...__main__ import main as cli

    out = os.path.abspath(args.out)
    frames_dir = os.path.join(out, "multiview")
    rig = official_rig()
    scale, num_frames = 0.25, 9
    times = [i / (num_frames - 1) for i in range(num_frames)]
    t0 = time.time()
    motion = getattr(args, "motion", "wave") or "wave"
    character = SyntheticCharacter(motion, seed=0, n_gaussians=20000)  # checks the motion's name
    video = character.render_views(rig, times, scale=scale, backend=args.backend)
    for k in range(video.shape[0]):
        for i in range(video.shape[1]):
            write_png(os.path.join(frames_dir, f"view{k:02d}", f"frame_{i + 1:05d}.png"), video[k, i])
    cams = os.path.join(out, "cameras.json")
    rig.save(cams)
    print(f"rendered the synthetic character ({motion}): {video.shape[0]} views x {video.shape[1]} frames at "
          f"{video.shape[3]}x{video.shape[2]} in {time.time() - t0:.1f} s -> {frames_dir}")

    fit_dir = os.path.join(out, "fit")
    metrics = os.path.join(out, "metrics.json")
    rc = cli(["fit4d", "--frames", frames_dir, "--cameras", cams, "--out", fit_dir, "--metrics", metrics,
              "--holdout", "3,10,17", "--holdout-times", getattr(args, "holdout_times", "") or "",
              "--seconds", str(args.seconds), "--backend", args.backend, "--seed", "0",
              "--motion-model", getattr(args, "motion_model", "table")])
    if rc:
        return rc
    weights = os.path.join(fit_dir, WEIGHTS_NAME)
    rc = cli(["render", "--weights", weights, "--out", os.path.join(out, "orbit"), "--orbit", "8",
              "--scale", "0.5", "--backend", args.backend])
    if rc:
        return rc
    rc = cli(["export", "--weights", weights, "--out", os.path.join(out, "export")])
    if rc:
        return rc
    with open(metrics, encoding="utf-8") as f:
        m = json.load(f)
    print(f"fit: {m.get('iterations')} iterations in {m.get('seconds')} s, {m.get('gaussians')} Gaussians, "
          f"{m.get('backend')}; held-out views 3, 10, 17; frames numbered from 0")
    print(summary_text(m))
    print(f"outputs in {out}: multiview/ (input), fit/ (weights, held-out renders), orbit/ (8 new cameras x the training times), export/ (ply + 4D bundle)")
    return 0

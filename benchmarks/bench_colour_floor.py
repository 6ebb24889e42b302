"""What the degraded views' colours alone cost (issue 22): the synthetic character's TRUE Gaussians (positions,
shapes, opacities at every frame, exact), only their colours learned from the degraded training views, the held-out
views scored against the clean truth.

The setting of ``bench_degraded.py`` (the wave, 21 official views x 9 frames at 180x120, views 3, 10, 17 held out,
the degradation at ``--strength`` with seed ``--seed``); the misaligned views are drawn through their cameras off the
rig and learned through those same cameras, so what is left is the views' disagreement on colour (per-view colour
and exposure, flicker, details that disagree), after the fit's own background estimate (``whiten_video``). Adam on
the colours' logits, L1, 4 views of one frame per step, the learning rate falling from 0.02 to 0.001. If this
scores far above the full fit, the colours the views disagree on are not what limits the fit: its shapes are.

  python benchmarks/bench_colour_floor.py --strength 1 --steps 300
  python benchmarks/bench_colour_floor.py --strength 0 --steps 300     # clean views: the procedure's own floor
"""

from __future__ import annotations

import argparse
import os
import random
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from charactershot_core.cameras import official_rig  # noqa: E402
from charactershot_core.gaussians.evaluation.metrics import clip_scores  # noqa: E402
from charactershot_core.gaussians.fitting.background import whiten_video  # noqa: E402
from charactershot_core.gaussians.fitting.data import MultiViewVideo  # noqa: E402
from charactershot_core.gaussians.raster.render import rasterize  # noqa: E402
from charactershot_core.gaussians.synthetic import SyntheticCharacter  # noqa: E402
from charactershot_core.gaussians.synthetic.degrade import EFFECTS, degrade, misaligned_rig  # noqa: E402

HOLDOUT = (3, 10, 17)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0, help="the degradation's seed")
    ap.add_argument("--effects", default=",".join(EFFECTS))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    effects = tuple(e.strip() for e in args.effects.split(",") if e.strip())

    rig = official_rig().scaled(args.scale)
    times = [i / (args.frames - 1) for i in range(args.frames)]
    character = SyntheticCharacter("wave", seed=0, n_gaussians=20000)
    clean = torch.as_tensor(np.asarray(character.render_views(rig, times, backend="torch")), dtype=torch.float32)
    train = [k for k in range(clean.shape[0]) if k not in HOLDOUT]
    cams = rig.select(train)
    source = clean[train]
    if "misalign" in effects and args.strength > 0:
        cams = misaligned_rig(cams, args.strength, seed=args.seed)
        source = torch.as_tensor(np.asarray(character.render_views(cams, times, backend="torch")), dtype=torch.float32)
    rest = tuple(e for e in effects if e != "misalign")
    views = degrade(source, args.strength, args.seed, effects=rest) if rest and args.strength > 0 else source
    truth = whiten_video(MultiViewVideo(views, cams, times)).frames.float()  # what the fit trains on

    gauss = [character.gaussians_at(t) for t in times]
    logits = torch.nn.Parameter(torch.logit(gauss[0]["colors"].clamp(0.02, 0.98)).clone())
    opt = torch.optim.Adam([logits], lr=0.02)
    vm, ks = cams.viewmats().float(), cams.Ks().float()
    rng = random.Random(0)
    for step in range(args.steps):
        f = rng.randrange(len(times))
        pick = rng.sample(range(len(train)), 4)
        g = gauss[f]
        img, _, _ = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], torch.sigmoid(logits), vm[pick],
                              ks[pick], rig.width, rig.height, backend="torch", backgrounds=torch.ones(4, 3))
        loss = (img - truth[pick, f]).abs().mean()
        for group in opt.param_groups:
            group["lr"] = 0.02 * 0.05 ** (step / max(1, args.steps))
        opt.zero_grad()
        loss.backward()
        opt.step()

    held = rig.select(list(HOLDOUT))
    pred = torch.zeros(len(HOLDOUT), len(times), rig.height, rig.width, 3)
    with torch.no_grad():
        for f, g in enumerate(gauss):
            img, _, _ = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], torch.sigmoid(logits),
                                  held.viewmats().float(), held.Ks().float(), rig.width, rig.height, backend="torch",
                                  backgrounds=torch.ones(len(HOLDOUT), 3))
            pred[:, f] = img.clamp(0, 1)
    s = clip_scores(pred, clean[list(HOLDOUT)])
    print(f"strength {args.strength:g}, degradation seed {args.seed}, effects {','.join(effects)}, {args.steps} steps: "
          f"held-out tight-box PSNR {s['tight_psnr']:.2f} dB mean / {s['tight_psnr_worst']:.2f} dB worst frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The README's animation: a fitted 4D character seen from an orbit camera that turns once while the motion plays
(orbit camera k at time k/(N-1), forth and back), cropped to the character, as an animated GIF.

    python -m charactershot_core demo --out demo_out
    python scripts/make_readme_orbit.py demo_out/gaussians.safetensors docs/images/charactershot_demo_orbit.gif
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from charactershot_core.cameras import orbit_rig  # noqa: E402
from charactershot_core.gaussians.raster.views import render_views  # noqa: E402
from charactershot_core.gaussians.model import Gaussians4D  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="gaussians.safetensors of a fit")
    ap.add_argument("out", help="the .gif to write")
    ap.add_argument("--frames", type=int, default=36, help="orbit cameras, one per GIF frame")
    ap.add_argument("--width", type=int, default=360)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=float, default=12.0)
    args = ap.parse_args(argv)

    model = Gaussians4D.load(args.weights)
    rig = orbit_rig(num_views=args.frames, width=args.width, height=args.height,
                    square_size=min(args.width, args.height))
    n = args.frames
    # the motion plays forth and back once while the camera turns once
    times = [1.0 - abs(2.0 * k / n - 1.0) for k in range(n)]
    tiles = []
    for k in range(n):
        img = render_views(model, rig.select([k]), [times[k]], "torch")[0, 0]
        tiles.append((img.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8))
    fg = np.zeros(tiles[0].shape[:2], bool)
    for t in tiles:
        fg |= t.min(-1) < 245
    ys, xs = np.nonzero(fg)
    pad = 8
    y0, y1 = max(0, ys.min() - pad), min(fg.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(fg.shape[1], xs.max() + pad + 1)
    frames = [Image.fromarray(t[y0:y1, x0:x1]) for t in tiles]
    frames[0].save(args.out, save_all=True, append_images=frames[1:], duration=round(1000 / args.fps), loop=0,
                   optimize=True, disposal=1)
    print(f"wrote {args.out}: {len(frames)} frames of {x1 - x0}x{y1 - y0}, {os.path.getsize(args.out) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Render the pack's icon (docs/icon.png, named by pyproject.toml's [tool.comfy] Icon) from the synthetic character.

The character waving, three moments of the wave overlaid (earlier ones fainter: a 4D result is a 3D character in
time), on a rounded square. Deterministic; run from the repository root:

    .venv/bin/python scripts/make_icon.py [--out docs/icon.png] [--size 400]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from charactershot_core.cameras import orbit_rig  # noqa: E402
from charactershot_core.gaussians.raster.render import rasterize  # noqa: E402
from charactershot_core.gaussians.synthetic import SyntheticCharacter  # noqa: E402

BACKGROUND = (52, 48, 104)
RING = (150, 200, 255)  # the orbit of the cameras around the character
MOMENTS = ((0.30, 0.22), (0.40, 0.45), (0.50, 1.0))  # (time in the wave, weight of that moment)


def render_icon(size: int = 400) -> Image.Image:
    scale = 2  # render larger and downsample: smooth edges
    side = size * scale
    rig = orbit_rig(num_views=1, radius=4.2, elevation_deg=12.0, look_at_height=0.98, fov_deg=36.0,
                    start_azimuth_deg=-28.0, width=side, height=side, square_size=side)
    char = SyntheticCharacter("wave", seed=0, n_gaussians=30000)
    bg = Image.new("RGB", (side, side), BACKGROUND)
    # the cameras' orbit: an ellipse round the feet, seen from slightly above
    cx, cy, rx, ry = side * 0.5, side * 0.83, side * 0.40, side * 0.085
    ImageDraw.Draw(bg).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), outline=RING, width=max(2, side // 90))
    img = np.asarray(bg, np.float32) / 255.0
    with torch.no_grad():
        for t, weight in MOMENTS:
            g = char.gaussians_at(t)
            rgb, alpha, _ = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"],
                                      rig.viewmats(), rig.Ks(), side, side, backend="torch",
                                      backgrounds=torch.zeros(1, 3))
            a = alpha[0].clamp(0, 1).numpy() * weight
            fg = rgb[0].clamp(0, 1).numpy() / np.maximum(alpha[0].numpy(), 1e-6)  # un-premultiply
            img = img * (1 - a) + np.clip(fg, 0, 1) * a
    out = Image.fromarray(np.round(img * 255).astype(np.uint8)).resize((size, size), Image.LANCZOS)
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, side - 1, side - 1), radius=side // 7, fill=255)
    out.putalpha(mask.resize((size, size), Image.LANCZOS))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/icon.png")
    parser.add_argument("--size", type=int, default=400)
    args = parser.parse_args()
    icon = render_icon(args.size)
    # a 256-colour palette keeps the file small; the alpha of the rounded corners survives quantisation
    icon.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(args.out,
                                                                                                 optimize=True)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {args.size}x{args.size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Before/after strip for docs/4d.md: held-out renders of two demo runs beside the ground truth at chosen frames.

  python benchmarks/motion_strip.py --out docs/images/motion_before_after.png --view 3 --frames 1,5,9 \
      "ground truth=DEMO_A/multiview" "HexPlane (before)=DEMO_A/fit/heldout" "trajectory table=DEMO_B/fit/heldout"

``--crop x0,y0,x1,y1`` shows only that part of each frame (e.g. the character, zoomed). Each source is a demo
output folder holding view{k}/frame_XXXXX.png (``multiview`` uses view{k:02d}); frames are
1-based as in the file names. Rows are the sources, columns the frames, each labelled.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw


def _frame(folder: str, view: int, frame: int) -> Image.Image:
    for name in (f"view{view:02d}", f"view{view}"):
        path = os.path.join(folder, name, f"frame_{frame:05d}.png")
        if os.path.isfile(path):
            return Image.open(path).convert("RGB")
    raise FileNotFoundError(f"no view {view} frame {frame} in {folder}")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--view", type=int, default=3)
    p.add_argument("--frames", default="1,5,9")
    p.add_argument("--zoom", type=int, default=2)
    p.add_argument("--crop", default="", help="x0,y0,x1,y1: the part of each frame to show (default: all of it)")
    p.add_argument("rows", nargs="+", help="label=folder")
    a = p.parse_args(argv)
    frames = [int(x) for x in a.frames.split(",")]
    rows = [r.split("=", 1) for r in a.rows]
    tiles = [[_frame(folder, a.view, f) for f in frames] for _, folder in rows]
    if a.crop:
        box = tuple(int(x) for x in a.crop.split(","))
        tiles = [[t.crop(box) for t in row] for row in tiles]
    w, h = tiles[0][0].size
    w, h = w * a.zoom, h * a.zoom
    left, top = 130, 18
    img = Image.new("RGB", (left + w * len(frames), top + h * len(rows)), "white")
    d = ImageDraw.Draw(img)
    for j, f in enumerate(frames):
        d.text((left + j * w + w // 2 - 20, 3), f"frame {f}", fill=(0, 0, 0))
    for i, (label, _) in enumerate(rows):
        d.text((4, top + i * h + h // 2 - 6), label, fill=(0, 0, 0))
        for j, t in enumerate(tiles[i]):
            img.paste(t.resize((w, h), Image.NEAREST), (left + j * w, top + i * h))
    img.save(a.out)
    print(a.out, img.size)


if __name__ == "__main__":
    main()

"""A turntable strip from the CLI demo's orbit renders: orbit camera k at frame k (the camera turns while the motion
plays), for the README.

  python benchmarks/turntable_montage.py DEMO_OUT/orbit docs/images/charactershot_demo_result.jpg
"""

from __future__ import annotations

import os
import sys

from PIL import Image


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    src, out = argv[0], argv[1]
    views = sorted(d for d in os.listdir(src) if d.startswith("view"))
    views.sort(key=lambda d: int(d[4:]))
    tiles = []
    for k, d in enumerate(views):
        frames = sorted(os.listdir(os.path.join(src, d)))
        f = frames[min(len(frames) - 1, round(k * (len(frames) - 1) / max(1, len(views) - 1)))]
        tiles.append(Image.open(os.path.join(src, d, f)).convert("RGB"))
    # crop the empty margins shared by all tiles
    import numpy as np

    fg = np.zeros(np.asarray(tiles[0]).shape[:2], bool)
    for t in tiles:
        fg |= np.asarray(t).min(-1) < 245
    ys, xs = np.nonzero(fg)
    pad = 6
    box = (max(0, xs.min() - pad), max(0, ys.min() - pad), min(fg.shape[1], xs.max() + pad + 1),
           min(fg.shape[0], ys.max() + pad + 1))
    tiles = [t.crop(box) for t in tiles]
    w, h = tiles[0].size
    img = Image.new("RGB", (w * len(tiles), h), "white")
    for k, t in enumerate(tiles):
        img.paste(t, (k * w, 0))
    img.save(out, quality=90)
    print(out, img.size)


if __name__ == "__main__":
    main()

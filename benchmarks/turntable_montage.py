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
    w, h = tiles[0].size
    # crop the empty margins shared by all tiles
    img = Image.new("RGB", (w * len(tiles), h), "white")
    for k, t in enumerate(tiles):
        img.paste(t, (k * w, 0))
    img.save(out, quality=90)
    print(out, img.size)


if __name__ == "__main__":
    main()

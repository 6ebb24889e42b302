"""Draw motion ratio (and worst-frame character-box PSNR) over iterations from motion_curve.py JSON files (PIL only).

  python benchmarks/plot_motion_curve.py --out docs/images/motion_ratio_curve.png hexplane=curve_hex.json table=curve_table.json
"""

from __future__ import annotations

import argparse
import json

from PIL import Image, ImageDraw

COLOURS = [(200, 60, 40), (30, 110, 200), (40, 150, 70), (150, 80, 180)]


def plot(series: list[tuple[str, list[dict]]], out: str, w: int = 900, h: int = 380) -> None:
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    pads = (60, 20, 20, 40)  # left, top, right, bottom
    panels = [("motion ratio (held-out views)", "motion_ratio", 0.0, 1.2),
              ("worst-frame char-box PSNR (dB)", "psnr_fg_worst", 14.0, 32.0)]
    pw = (w - 20) // 2
    xmax = max(p["iteration"] for _, c in series for p in c)
    xmax = max(100, int(round(xmax / 100 + 0.5)) * 100)
    for k, (title, key, lo, hi) in enumerate(panels):
        x0, y0 = k * pw + pads[0], pads[1] + 14
        x1, y1 = (k + 1) * pw - pads[2], h - pads[3]
        d.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
        d.text((x0, 4), title, fill=(0, 0, 0))
        for j in range(5):
            v = lo + (hi - lo) * j / 4
            y = y1 - (y1 - y0) * j / 4
            d.line([x0 - 4, y, x0, y], fill=(0, 0, 0))
            d.text((x0 - 40, y - 6), f"{v:.1f}", fill=(0, 0, 0))
            xv = xmax * j / 4
            x = x0 + (x1 - x0) * j / 4
            d.line([x, y1, x, y1 + 4], fill=(0, 0, 0))
            d.text((x - 12, y1 + 8), f"{int(xv)}", fill=(0, 0, 0))
        d.text(((x0 + x1) // 2 - 25, y1 + 22), "iteration", fill=(0, 0, 0))
        if key == "motion_ratio":
            for ref in (0.8, 1.0, 1.2):
                y = y1 - (y1 - y0) * (ref - lo) / (hi - lo)
                d.line([x0, y, x1, y], fill=(210, 210, 210))
        for ci, (name, curve) in enumerate(series):
            col = COLOURS[ci % len(COLOURS)]
            pts = [(x0 + (x1 - x0) * p["iteration"] / xmax,
                    y1 - (y1 - y0) * (min(hi, max(lo, p[key])) - lo) / (hi - lo)) for p in curve]
            if len(pts) > 1:
                d.line(pts, fill=col, width=2)
            for x, y in pts:
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=col)
            d.text((x0 + 8, y0 + 6 + 14 * ci), name, fill=col)
    img.save(out)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("series", nargs="+", help="name=file.json")
    a = p.parse_args(argv)
    series = []
    for s in a.series:
        name, path = s.split("=", 1)
        with open(path) as f:
            series.append((name, json.load(f)["curve"]))
    plot(series, a.out)


if __name__ == "__main__":
    main()

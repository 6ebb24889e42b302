"""``info``: what the pack offers, and ``cameras``: write or inspect a camera rig."""

from __future__ import annotations

import json


def _info(args) -> int:
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print("CharacterShot for ComfyUI")
    try:
        import tomllib

        with open(os.path.join(root, "pyproject.toml"), "rb") as f:
            print("version", tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, ImportError):
        pass
    nodes_dir = os.path.join(root, "nodes")
    ids = []
    for fn in sorted(os.listdir(nodes_dir)):
        if fn.endswith(".py"):
            with open(os.path.join(nodes_dir, fn), encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line.startswith('node_id="'):
                        ids.append(line.split('"')[1])
    print(f"{len(ids)} nodes:")
    for i in ids:
        print("  ", i)
    return 0


def _cameras(args) -> int:
    from .cameras import CameraRig, official_rig, orbit_rig

    if args.official:
        rig = official_rig()
    elif args.input:
        rig = CameraRig.load(args.input)
    else:
        rig = orbit_rig(num_views=args.views, radius=args.radius, elevation_deg=args.elevation,
                        look_at_height=args.height, fov_deg=args.fov)
    if args.out:
        rig.save(args.out)
    else:
        print(json.dumps(rig.to_dict(), indent=1))
    return 0


def _demo(args) -> int:
    """The bundled demo: what the current build offers, run headless end to end."""
    import os

    from .cameras import official_rig, rig_preview

    os.makedirs(args.out, exist_ok=True)
    rig = official_rig()
    from PIL import Image

    Image.fromarray(rig_preview(rig)).save(os.path.join(args.out, "official_rig.png"))
    rig.save(os.path.join(args.out, "official_rig.json"))
    print(f"wrote {args.out}/official_rig.png and official_rig.json (21 template cameras)")
    from .gaussians.synthetic.demo import run_demo

    return run_demo(args)


def register(sub) -> None:
    p = sub.add_parser("info", help="print what the pack offers")
    p.set_defaults(func=_info)
    p = sub.add_parser("cameras", help="write the official or a custom orbit rig as JSON")
    p.add_argument("--official", action="store_true", help="the official 21-view template")
    p.add_argument("--input", help="read a rig JSON instead")
    p.add_argument("--views", type=int, default=21)
    p.add_argument("--radius", type=float, default=3.5)
    p.add_argument("--elevation", type=float, default=0.0)
    p.add_argument("--height", type=float, default=0.7, help="look-at height")
    p.add_argument("--fov", type=float, default=39.6)
    p.add_argument("--out", help="output JSON (default: print)")
    p.set_defaults(func=_cameras)
    p = sub.add_parser("demo", help="run the bundled demo (synthetic character -> 4D Gaussians -> renders)")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument("--seconds", type=float, default=120.0, help="time budget of the 4D fit")
    p.add_argument("--backend", default="auto", help="auto, torch or gsplat")
    p.add_argument("--motion", default="wave", help="the synthetic character's motion: wave (the arm raise, default), "
                                                    "walk, turn, jump or idle")
    p.add_argument("--holdout-times", default="", help="frames (0-based, of 9) withheld from training and scored as "
                                                       "held-out times, e.g. 2,6 (default: none)")
    p.add_argument("--motion-model", default="table", choices=["table", "hexplane"],
                   help="the fit's motion model: table (default, fast) or hexplane (the paper's field)")
    p.set_defaults(func=_demo)

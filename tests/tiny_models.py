"""Tiny CharacterShot checkpoints (21 camera embeddings) and small inputs installed into a running test host."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

H, W, F = 64, 96, 9
FIG = {0: (360, 60), 1: (360, 100), 2: (330, 100), 5: (390, 100), 8: (340, 200), 9: (342, 275), 10: (345, 350),
       11: (380, 200), 12: (377, 275), 13: (374, 350), 14: (352, 54), 15: (368, 54), 16: (344, 60), 17: (376, 60)}


def kp_frame(points, w=720, h=480):
    body = []
    for i in range(18):
        body += [points[i][0] / w, points[i][1] / h, 1.0] if i in points else [0.0, 0.0, 0.0]
    return {"people": [{"pose_keypoints_2d": body, "face_keypoints_2d": None, "hand_left_keypoints_2d": None,
                        "hand_right_keypoints_2d": None}], "canvas_width": w, "canvas_height": h}


def install(comfy, scratch) -> None:
    """Models under models/charactershot/{CharacterShot,Character2D}-tiny21/ and, in the input folder: 9 views
    (samp_views/), samp_view0.png, pose images (samp_poses/), a reference pose, keypoint JSONs."""
    from charactershot_core.models.tiny import make_tiny_set

    dst = comfy.models_dir / "charactershot"
    if not (dst / "CharacterShot-tiny21").exists():
        ts = make_tiny_set(str(scratch), views=21)
        for src, name in ((ts.official, "CharacterShot-tiny21"), (ts.official_2d, "Character2D-tiny21")):
            shutil.copytree(src, dst / name)
    inp = comfy.input_dir
    if (inp / "samp_ref.json").exists():
        return
    views = inp / "samp_views"
    views.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(9):
        img = np.full((H, W, 3), 255, np.uint8)
        img[10:58, 36 + k % 3:60] = rng.integers(0, 255, 3, dtype=np.uint8)
        Image.fromarray(img).save(views / f"view{k}.png")
    Image.open(views / "view0.png").save(inp / "samp_view0.png")
    poses = inp / "samp_poses"
    poses.mkdir(exist_ok=True)
    for t in range(F + 1):
        img = np.zeros((H, W, 3), np.uint8)
        img[8:56, 44 + t % 4:50 + t % 4] = (255, 0, 0)
        Image.fromarray(img).save(poses / f"{t}.png")
    Image.open(poses / "0.png").save(inp / "samp_ref_pose.png")
    ref = [kp_frame(FIG)]
    drv = [kp_frame({k: (x + 6 * t, y) for k, (x, y) in FIG.items()}) for t in range(F)]
    (inp / "samp_drv.json").write_text(json.dumps(drv))
    (inp / "samp_ref.json").write_text(json.dumps(ref))

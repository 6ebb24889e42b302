"""Write the pack's sample inputs in charactershot_core/data/samples/ from its own procedural character, so that the
flagship template (one picture -> 4D) needs only model files:

* ``character.png``: the synthetic character (charactershot_core/gaussians/synthetic.py) seen from view 0 of the
  official rig at t = 0, cut out (RGBA, transparent background), square;
* ``character_pose.json``: its pose in that picture as POSE_KEYPOINT (what DWPose on view 0 gives), on the 720x480
  canvas of the official rig;
* ``pose_wave.json``: a short driving pose sequence (the character's "wave" motion, 25 frames) as POSE_KEYPOINT.

The keypoints are the character's skeleton joints (forward kinematics) projected by the official rig's view 0 into
the COCO-18 body layout DWPose writes; face and hand points are left out (score 0). Run it after changing the
character or the rig, then check the files in:

    .venv/bin/python scripts/make_samples.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from charactershot_core.cameras import official_rig  # noqa: E402
from charactershot_core.gaussians.synthetic.character import _BONE_INDEX, SyntheticCharacter  # noqa: E402
from charactershot_core.poses.keypoints import (  # noqa: E402
    N_BODY,
    N_FACE,
    N_HAND,
    Pose,
    to_pose_keypoint,
)

SAMPLES = REPO / "charactershot_core" / "data" / "samples"
PICTURE_SIZE = 320  # pixels of the square picture
SEQUENCE_FRAMES = 25  # what the multi-view model was trained on
MOTION = "wave"

# COCO-18 (DWPose's body order): each point as a rest-pose position on one bone of the synthetic character
# (the character faces -y; its right side is at -x)
BODY_POINTS = [
    ("nose", "neck", (0.0, -0.1, 1.655)),
    ("neck", "spine", (0.0, 0.0, 1.45)),
    ("r_shoulder", "spine", (-0.2, 0.0, 1.42)),
    ("r_elbow", "r_upper_arm", (-0.22, 0.0, 1.14)),
    ("r_wrist", "r_forearm", (-0.23, 0.0, 0.86)),
    ("l_shoulder", "spine", (0.2, 0.0, 1.42)),
    ("l_elbow", "l_upper_arm", (0.22, 0.0, 1.14)),
    ("l_wrist", "l_forearm", (0.23, 0.0, 0.86)),
    ("r_hip", "pelvis", (-0.1, 0.0, 0.9)),
    ("r_knee", "r_thigh", (-0.1, 0.0, 0.49)),
    ("r_ankle", "r_shin", (-0.1, 0.0, 0.09)),
    ("l_hip", "pelvis", (0.1, 0.0, 0.9)),
    ("l_knee", "l_thigh", (0.1, 0.0, 0.49)),
    ("l_ankle", "l_shin", (0.1, 0.0, 0.09)),
    ("r_eye", "neck", (-0.035, -0.09, 1.69)),
    ("l_eye", "neck", (0.035, -0.09, 1.69)),
    ("r_ear", "neck", (-0.09, -0.005, 1.665)),
    ("l_ear", "neck", (0.09, -0.005, 1.665)),
]
assert len(BODY_POINTS) == N_BODY


def body_points_3d(char: SyntheticCharacter, t: float) -> np.ndarray:
    """World positions (18, 3) of the COCO-18 points at time ``t``."""
    rot, pos = char.bone_transforms(t)
    out = []
    for _, bone, rest in BODY_POINTS:
        b = _BONE_INDEX[bone]
        out.append(rot[b] @ (np.asarray(rest) - char._joint_rest[b]) + pos[b])
    return np.array(out)


def pose_at(char: SyntheticCharacter, rig, t: float) -> Pose:
    """The character's body keypoints at ``t`` as seen by view 0 of ``rig`` (normalised to its canvas)."""
    px, _ = rig.select([0]).project(body_points_3d(char, t))
    xy = px[0] / np.array([rig.width, rig.height])
    pose = Pose.empty(rig.width, rig.height)
    pose.body[:, :2] = xy
    pose.body[:, 2] = 1.0
    return pose


def character_picture(char: SyntheticCharacter, rig):
    """View 0 at t = 0, RGBA (alpha = the rendered coverage), cropped to a square around the character."""
    import torch
    from PIL import Image

    from charactershot_core.gaussians.raster.render import rasterize

    cam = rig.select([0])
    g = char.gaussians_at(0.0)
    with torch.no_grad():
        img, alpha, _ = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"], cam.viewmats(),
                                  cam.Ks(), cam.width, cam.height, backend="torch",
                                  backgrounds=torch.zeros(1, 3))
    a = alpha[0, ..., 0].clamp(0, 1).numpy()
    rgb = img[0].clamp(0, 1).numpy() / np.maximum(a[..., None], 1e-6)  # un-premultiply (black background)
    rgba = np.concatenate([np.clip(rgb, 0, 1), a[..., None]], axis=-1)
    ys, xs = np.nonzero(a > 0.02)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = int(max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 / 0.85)  # the character fills 85 %
    pad = np.zeros((rgba.shape[0] + 4 * half, rgba.shape[1] + 4 * half, 4), np.float32)
    pad[2 * half:2 * half + rgba.shape[0], 2 * half:2 * half + rgba.shape[1]] = rgba
    y0, x0 = int(cy) + 2 * half - half, int(cx) + 2 * half - half
    crop = pad[y0:y0 + 2 * half, x0:x0 + 2 * half]
    pic = Image.fromarray((crop * 255 + 0.5).astype(np.uint8), "RGBA")
    return pic.resize((PICTURE_SIZE, PICTURE_SIZE), Image.LANCZOS)


def write_json(path: Path, frames: list) -> None:
    def r(x):
        return [round(v, 4) for v in x] if isinstance(x, list) else x

    frames = [{"people": [{k: r(v) for k, v in p.items()} for p in f["people"]],
               "canvas_width": f["canvas_width"], "canvas_height": f["canvas_height"]} for f in frames]
    path.write_text(json.dumps(frames, separators=(",", ":")) + "\n")


def main() -> int:
    SAMPLES.mkdir(parents=True, exist_ok=True)
    rig = official_rig()
    char = SyntheticCharacter(MOTION, seed=0, n_gaussians=20000)
    pic = character_picture(char, rig)
    pic.save(SAMPLES / "character.png", optimize=True)
    write_json(SAMPLES / "character_pose.json", to_pose_keypoint([pose_at(char, rig, 0.0)]))
    times = [i / (SEQUENCE_FRAMES - 1) for i in range(SEQUENCE_FRAMES)]
    write_json(SAMPLES / "pose_wave.json", to_pose_keypoint([pose_at(char, rig, t) for t in times]))
    for p in sorted(SAMPLES.iterdir()):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    assert N_FACE and N_HAND  # face and hands stay empty (score 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

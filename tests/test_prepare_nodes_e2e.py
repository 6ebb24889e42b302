"""Preparation nodes through a real ComfyUI host: API-format workflows, saved PNGs checked on disk."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.comfy_host import WorkflowError

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "charactershot_example"


def _saved(comfy, hist, node):
    imgs = hist["outputs"][node]["images"]
    return [np.asarray(Image.open(io.BytesIO(comfy.view(r["filename"], r["subfolder"], r["type"]))).convert("RGB"))
            for r in imgs]


def _box(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def _texts(hist, node):
    return "\n".join(hist["outputs"].get(node, {}).get("text", []))


def test_prepare_character_from_loadimage(comfy):
    # a 400x300 photo-like input: a dark 60x200 character on white
    img = np.full((300, 400, 3), 255, np.uint8)
    img[50:250, 170:230] = (30, 60, 90)
    Image.fromarray(img).save(comfy.input_dir / "prep_char.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "prep_char.png"}},
        "2": {"class_type": "CharacterShotPrepareCharacter", "inputs": {"images": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "prep/char"}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 1]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "prep/charmask"}},
    }
    hist = comfy.run(prompt, timeout=120)
    (out,), (mask,) = _saved(comfy, hist, "3"), _saved(comfy, hist, "5")
    assert out.shape == (480, 720, 3)
    assert (out[:, :120] == 255).all() and (out[:, 600:] == 255).all(), "white canvas outside the square"
    # the 200 px tall character fills 0.73 of the 480 square, centred
    k = 480 * 0.73 / 200
    x0, y0, x1, y1 = _box((out < 200).any(-1))
    assert abs((y1 - y0) - 200 * k) <= 2 and abs((x1 - x0) - 60 * k) <= 2
    assert abs((x0 + x1) / 2 - 360) <= 1 and abs((y0 + y1) / 2 - 240) <= 1
    assert (np.abs(out[240, 360].astype(int) - [30, 60, 90]) <= 2).all()
    mx0, my0, mx1, my1 = _box(mask[..., 0] > 127)
    assert abs(mx0 - x0) <= 1 and abs(my1 - y1) <= 1, "the MASK output marks the character on the canvas"
    assert "1 image(s)" in _texts(hist, "2")


def test_prepare_character_with_loadimage_alpha_mask(comfy):
    # an RGBA cut-out: LoadImage gives the RGB (green under the transparent pixels) and MASK = 1 - alpha
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[..., :3] = (0, 255, 0)
    rgba[20:180, 80:120] = (200, 40, 40, 255)
    Image.fromarray(rgba, "RGBA").save(comfy.input_dir / "prep_cutout.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "prep_cutout.png"}},
        "2": {"class_type": "CharacterShotPrepareCharacter",
              "inputs": {"images": ["1", 0], "mask": ["1", 1], "fill": 1.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "prep/cutout"}},
    }
    hist = comfy.run(prompt, timeout=120)
    (out,) = _saved(comfy, hist, "3")
    assert out.shape == (480, 720, 3)
    assert not ((out[..., 1] > 200) & (out[..., 0] < 100)).any(), "no green from under the transparent pixels"
    x0, y0, x1, y1 = _box((out < 200).any(-1))  # width within 3 px: the 3x bicubic upscale softens the edges
    assert (y0, y1) == (0, 480) and abs((x0 + x1) / 2 - 360) <= 1 and abs((x1 - x0) - 120) <= 3
    assert "inverted" in _texts(hist, "2"), "the artist is told the mask was read as LoadImage's background mask"


def test_prepare_character_keeps_official_views(comfy):
    if not (EXAMPLE / "views" / "view5.png").is_file():
        pytest.skip(f"the official example views are not at {EXAMPLE}")
    shutil.copy(EXAMPLE / "views" / "view5.png", comfy.input_dir / "prep_view5.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "prep_view5.png"}},
        "2": {"class_type": "CharacterShotPrepareCharacter", "inputs": {"images": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "prep/view5"}},
    }
    hist = comfy.run(prompt, timeout=120)
    (out,) = _saved(comfy, hist, "3")
    orig = np.asarray(Image.open(EXAMPLE / "views" / "view5.png").convert("RGB"))
    assert np.array_equal(out, orig)
    assert "1 already prepared" in _texts(hist, "2")


def test_mask_of_the_wrong_size_is_rejected(comfy):
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(comfy.input_dir / "prep_small.png")
    other = np.full((32, 48, 3), 255, np.uint8)
    other[8:24, 16:32] = 0  # a real silhouette (uniform masks are ignored), but of another size
    Image.fromarray(other).save(comfy.input_dir / "prep_other.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "prep_small.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "prep_other.png"}},
        "3": {"class_type": "ImageToMask", "inputs": {"image": ["2", 0], "channel": "red"}},
        "4": {"class_type": "CharacterShotPrepareCharacter", "inputs": {"images": ["1", 0], "mask": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "prep/never"}},
    }
    with pytest.raises(WorkflowError) as e:
        comfy.run(prompt, timeout=120)
    assert "mask: expected masks of the images' size 64x64, got 48x32" in e.value.message
    assert not list((comfy.output_dir / "prep").glob("never*")), "nothing written"


def _pose_frame(dx):
    frame = np.zeros((240, 320, 3), np.uint8)  # 4:3 frames: placed on a square, then on the canvas
    frame[100:140, 100 + dx:110 + dx] = (255, 0, 0)
    return frame


def test_prepare_pose_images_sequence(comfy):
    for i, dx in enumerate((0, 100)):
        Image.fromarray(_pose_frame(dx)).save(comfy.input_dir / f"prep_pose{i}.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "prep_pose0.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "prep_pose1.png"}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {"class_type": "CharacterShotPreparePoseImages", "inputs": {"frames": ["3", 0], "num_frames": 5}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "prep/pose"}},
    }
    hist = comfy.run(prompt, timeout=120)
    frames = _saved(comfy, hist, "5")
    assert len(frames) == 5 and all(f.shape == (480, 720, 3) for f in frames)
    # 320x240 padded to 320x320 (40 px bars), scaled by 1.5, pasted at x 120: frame 0's bar at x 270, frame 1's at 420
    for f in frames:
        assert (f[:, :120] == 0).all() and (f[:, 600:] == 0).all(), "black canvas"
        x0, y0, x1, y1 = _box(f.max(-1) > 60)
        assert abs(y0 - (100 + 40) * 1.5) <= 1 and abs(y1 - (140 + 40) * 1.5) <= 1
        assert min(abs(x0 - (120 + 100 * 1.5)), abs(x0 - (120 + 200 * 1.5))) <= 1
    firsts = [_box(f.max(-1) > 60)[0] < 350 for f in frames]
    assert firsts == [True, True, False, False, False], "5 evenly spread instants over 2 frames: 0,0,1,1,1"
    # a count that is not 4k+1 is refused with the input's name
    prompt["4"]["inputs"]["num_frames"] = 24
    with pytest.raises(WorkflowError) as e:
        comfy.run(prompt, timeout=120)
    assert "num_frames: expected 4k+1" in e.value.message


def _kp_frame(points, w=720, h=480):
    body = []
    for i in range(18):
        if i in points:
            body += [points[i][0] / w, points[i][1] / h, 1.0]
        else:
            body += [0.0, 0.0, 0.0]
    return {"people": [{"pose_keypoints_2d": body, "face_keypoints_2d": None, "hand_left_keypoints_2d": None,
                        "hand_right_keypoints_2d": None}], "canvas_width": w, "canvas_height": h}


FIG = {0: (360, 60), 1: (360, 100), 2: (330, 100), 5: (390, 100), 8: (340, 200), 9: (342, 275), 10: (345, 350),
       11: (380, 200), 12: (377, 275), 13: (374, 350), 14: (352, 54), 15: (368, 54), 16: (344, 60), 17: (376, 60)}


def test_pose_from_keypoints_retargets_and_draws(comfy):
    ref = [_kp_frame(FIG)]
    # the driving motion: the same figure half the size and moved, on a 1280x720 video, sliding right
    drv = [_kp_frame({k: (x * 0.5 + 500 + 4 * t, y * 0.5 + 100) for k, (x, y) in FIG.items()}, 1280, 720)
           for t in range(9)]
    drv[4]["people"].append(_kp_frame({1: (10, 10), 8: (12, 20)}, 1280, 720)["people"][0])  # a small bystander
    (comfy.input_dir / "prep_ref.json").write_text(json.dumps(ref))
    (comfy.input_dir / "prep_drv.json").write_text(json.dumps(drv))
    prompt = {
        "1": {"class_type": "CharacterShotLoadPoseKeypoints", "inputs": {"json_file": "prep_drv.json"}},
        "2": {"class_type": "CharacterShotLoadPoseKeypoints", "inputs": {"json_file": "prep_ref.json"}},
        "3": {"class_type": "CharacterShotPoseFromKeypoints",
              "inputs": {"driving_pose": ["1", 0], "reference_pose": ["2", 0], "num_frames": 5, "retarget": True}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "prep/kp"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": "prep/kpref"}},
    }
    hist = comfy.run(prompt, timeout=120)
    frames, (ref_img,) = _saved(comfy, hist, "4"), _saved(comfy, hist, "5")
    assert len(frames) == 5 and ref_img.shape == (480, 720, 3)
    # the reference drawing: the neck - nose limb is red, the neck joint (0, 85, 255), on black
    assert ref_img[80, 360].tolist() == [153, 0, 0]
    assert ref_img[100, 360].tolist() == [0, 85, 255]
    assert ref_img[:, :250].max() == 0 and ref_img[:, 470:].max() == 0
    # retargeted with the official fit: one scale for the sequence, the x offset the mean residual over all frames,
    # so the middle frame (t = 4 of 0..8) lands on the reference and the slide (32 px of the half-size figure in
    # the 1280 video = 64 px on the reference) is kept around it
    mid = frames[2].astype(int)
    assert _box(mid.max(-1) > 0) == pytest.approx(_box(ref_img.max(-1) > 0), abs=1)
    assert (np.abs(mid - ref_img.astype(int)).max(-1) > 40).mean() < 0.002
    x_first = _box(frames[0].max(-1) > 0)[0]
    x_last = _box(frames[-1].max(-1) > 0)[0]
    x_ref = _box(ref_img.max(-1) > 0)[0]
    assert abs((x_last - x_first) - 64) <= 1 and abs(x_first - (x_ref - 32)) <= 1
    text = _texts(hist, "3")
    assert "frame 4 has 2 people; using the largest" in text and "retargeted" in text
    steps = [e["data"] for e in comfy.events if e.get("type") == "progress" and e["data"].get("node") == "3"]
    assert steps and steps[-1]["value"] == steps[-1]["max"] == 6, "a progress step per frame + the reference"


FIXTURES = Path(__file__).resolve().parent / "fixtures"  # written by fixtures/make_pose_fixtures.py


def test_pose_from_keypoints_reads_core_sdpose_keypoints(comfy):
    """SDPose-shaped keypoints (pixels, -1 marks, real scores, 70-point faces, feet) through Load Pose Keypoints and
    Pose From Keypoints draw exactly what the same detections as DWPose JSON draw."""
    for name in ("sdpose_keypoints.json", "sdpose_as_dwpose.json"):
        shutil.copy(FIXTURES / name, comfy.input_dir / f"prep_{name}")
    (comfy.input_dir / "prep_sd_ref.json").write_text(json.dumps([_kp_frame(FIG)]))
    pose = {"reference_pose": ["3", 0], "num_frames": 5, "retarget": True}
    prompt = {
        "1": {"class_type": "CharacterShotLoadPoseKeypoints", "inputs": {"json_file": "prep_sdpose_keypoints.json"}},
        "2": {"class_type": "CharacterShotLoadPoseKeypoints", "inputs": {"json_file": "prep_sdpose_as_dwpose.json"}},
        "3": {"class_type": "CharacterShotLoadPoseKeypoints", "inputs": {"json_file": "prep_sd_ref.json"}},
        "4": {"class_type": "CharacterShotPoseFromKeypoints", "inputs": {"driving_pose": ["1", 0], **pose}},
        "5": {"class_type": "CharacterShotPoseFromKeypoints", "inputs": {"driving_pose": ["2", 0], **pose}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "prep/sdpose"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "prep/sdpose_dw"}},
    }
    hist = comfy.run(prompt, timeout=120)
    sd, dw = _saved(comfy, hist, "6"), _saved(comfy, hist, "7")
    assert len(sd) == 5 and all(f.max() > 0 for f in sd)
    assert all(np.array_equal(a, b) for a, b in zip(sd, dw))
    assert all(f[:20, :20].max() == 0 for f in sd), "nothing drawn at the image corner"
    assert "3 frame(s) from prep_sdpose_keypoints.json (pixel coordinates, with foot points, 3 point(s) marked -1)" \
        in _texts(hist, "1")
    text = _texts(hist, "4")
    assert "coordinates read as pixels" in text and "58 point(s) scored below min_score 0.3" in text
    # a file of only not-found points is an error naming the input, and nothing is drawn
    (comfy.input_dir / "prep_sd_none.json").write_text(json.dumps(
        [{"people": [{"pose_keypoints_2d": [-1.0, -1.0, 0.7] * 18}], "canvas_width": 1280, "canvas_height": 720}]))
    bad = {"1": {"class_type": "CharacterShotLoadPoseKeypoints", "inputs": {"json_file": "prep_sd_none.json"}},
           "3": prompt["3"], "4": prompt["4"], "6": prompt["6"] | {"inputs": {"images": ["4", 0],
                                                                              "filename_prefix": "prep/sd_never"}}}
    with pytest.raises(WorkflowError) as e:
        comfy.run(bad, timeout=120)
    assert "json_file: no person detected in every frame" in e.value.message
    assert not list((comfy.output_dir / "prep").glob("sd_never*"))


def test_schema_uses_controlnet_aux_pose_keypoint_type(comfy):
    info = comfy.object_info("CharacterShotPoseFromKeypoints")["CharacterShotPoseFromKeypoints"]
    req = info["input"]["required"]
    assert req["driving_pose"][0] == "POSE_KEYPOINT" and req["reference_pose"][0] == "POSE_KEYPOINT"
    assert req["num_frames"][1]["default"] == 25
    opt = info["input"]["optional"]
    assert opt["min_score"][0] == "FLOAT" and opt["min_score"][1]["default"] == 0.3, "optional: templates unchanged"
    assert info["input_order"]["optional"][-1] == "min_score", "appended: saved workflows' widget values stay put"
    assert info["category"] == "CharacterShot/prepare"
    load = comfy.object_info("CharacterShotLoadPoseKeypoints")["CharacterShotLoadPoseKeypoints"]
    assert load["output"] == ["POSE_KEYPOINT"]

"""Pose keypoints: POSE_KEYPOINT parsing, DWPose-style drawing, retargeting and resampling."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from charactershot_core.errors import InputError
from charactershot_core.poses import (Pose, draw_pose, fit_into_canvas, parse_pose_keypoints, resample_indices,
                                      resample_poses, to_pose_keypoint)
from charactershot_core.poses.draw import COLORS, LIMBS, final_rgb, hand_edge_color
from charactershot_core.poses.retarget import REF_KEYPOINTS, check_frame_count, retarget

EXAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "charactershot_example"
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # written by fixtures/make_pose_fixtures.py
W, H = 720, 480


def _pose(points: dict, w=W, h=H, conf=1.0) -> Pose:
    """A pose from {index: (x_px, y_px)} on a w x h canvas."""
    p = Pose.empty(w, h)
    for i, (x, y) in points.items():
        p.body[i] = [(x + 0.5) / w, (y + 0.5) / h, conf]
    return p


# A standing figure (pixel coordinates on 720x480), all 18 body points
FIGURE = {0: (360, 60), 1: (360, 100), 2: (330, 100), 3: (315, 150), 4: (308, 190), 5: (390, 100), 6: (405, 150),
          7: (412, 190), 8: (340, 200), 9: (342, 275), 10: (345, 350), 11: (380, 200), 12: (377, 275),
          13: (374, 350), 14: (352, 54), 15: (368, 54), 16: (344, 60), 17: (376, 60)}


# ------------------------------------------------------------------------------------------------------- drawing

def test_limb_and_joint_colours_follow_the_official_bgr_drawing():
    img = draw_pose(_pose({1: (360, 100), 2: (300, 100), 0: (360, 40)}), W, H).astype(int)
    # the neck - right shoulder limb: table colour (255, 0, 0) on a BGR canvas -> blue in RGB, dimmed by 0.6
    assert final_rgb(COLORS[0]) == (0, 0, 255)
    assert img[100, 330].tolist() == [0, 0, 153]
    # the neck - nose limb (table (0, 0, 255)) is red, as in the official pose PNGs
    assert img[70, 360].tolist() == [153, 0, 0]
    # joint circles are not dimmed: the neck's colour (255, 85, 0) -> RGB (0, 85, 255), the shoulder (255, 170, 0)
    assert img[100, 360].tolist() == [0, 85, 255]
    assert img[100, 300].tolist() == [0, 170, 255]
    # the ear - shoulder limbs (18th and 19th) are never drawn
    only_ear = draw_pose(_pose({2: (300, 100), 16: (300, 40)}), W, H)
    assert only_ear[60:90, 295:305].max() == 0


def test_stroke_width_matches_the_2160_canvas():
    img = draw_pose(_pose({1: (360, 100), 2: (200, 100)}), W, H)
    col = img[:, 280, 2].astype(int)  # blue channel across the horizontal limb
    lit = np.flatnonzero(col > 0)
    # stick half-width 4 on the 4.5x canvas: a filled polygon 2 * 4 + 1 = 9 rows high there, 2 px after the resize
    assert 2 <= len(lit) <= 3 and abs(lit.mean() - 100) <= 1
    assert col.sum() == pytest.approx(153 * 9 / 4.5, rel=0.05)


def test_confidence_threshold_and_scaling():
    p = _pose({1: (360, 100), 2: (300, 100)})
    p.body[2, 2] = 0.5
    img = draw_pose(p, W, H).astype(int)
    assert img[100, 330].tolist() == [0, 0, int(int(255 * 0.5) * 0.6)]
    assert img[100, 300].tolist() == [0, int(170 * 0.5), int(255 * 0.5)]
    p.body[2, 2] = 0.29
    img = draw_pose(p, W, H)
    assert img[95:106, 290:350].max() == 0, "below 0.3: neither the limb nor the joint"


def test_hands_and_face():
    p = Pose.empty(W, H)
    p.right_hand[0] = [300.5 / W, 200.5 / H, 1.0]
    p.right_hand[1] = [300.5 / W, 260.5 / H, 1.0]
    p.face[0] = [500.5 / W, 100.5 / H, 1.0]
    p.face[1] = [0.0, 0.0, 0.0]  # missing: not drawn at the corner
    img = draw_pose(p, W, H).astype(int)
    # hand edge 0: hsv(0) = red on the BGR canvas -> blue in RGB, not dimmed
    assert np.allclose(hand_edge_color(0), [255, 0, 0])
    assert img[230, 300].tolist() == [0, 0, 255]
    # hand points: BGR (0, 0, 255) -> red; face points: white
    assert img[200, 300].tolist() == [255, 0, 0]
    assert img[100, 500].tolist() == [255, 255, 255]
    assert img[:3, :3].max() == 0
    no_face = draw_pose(p, W, H, face=False)
    assert no_face[100, 500].max() == 0


# Body keypoints measured on the official poses/0.png (brightest pixel of each joint's colour; the nose hidden under
# the face dots is read from the top of the red neck - nose limb)
REAL_POSE0 = {0: (361, 57), 1: (361, 102), 2: (330, 102.5), 3: (312, 151.5), 4: (307, 190), 5: (391, 102),
              6: (409, 152), 7: (412, 193), 8: (338, 197.5), 9: (341, 274), 10: (345, 349.5), 11: (380, 197.5),
              12: (375, 275), 13: (373, 349), 14: (352, 54), 15: (365, 54), 16: (345, 60), 17: (377, 60)}


def test_matches_an_official_pose_image():
    """Redraw the body of the official poses/0.png from its measured keypoints: every limb lands on the real limb
    with the same colour, and the limb intensity (stroke width x 0.6 dimming) matches within a few percent."""
    path = EXAMPLE / "poses" / "0.png"
    if not path.is_file():
        pytest.skip(f"the official example poses are not at {path.parent}")
    from PIL import Image

    real = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    ours = draw_pose(_pose(REAL_POSE0), W, H, hands=False, face=False).astype(np.float64)
    ratios = []
    for i in range(12):  # arms, torso, legs (the head limbs are covered by face dots in the real image)
        a, b = LIMBS[i]
        c = np.array(final_rgb(COLORS[i]), float)
        c /= np.linalg.norm(c)
        region = np.zeros((H, W), np.uint8)
        pa = tuple(int(v) for v in REAL_POSE0[a])
        pb = tuple(int(v) for v in REAL_POSE0[b])
        cv2.line(region, pa, pb, 1, thickness=7)
        cv2.circle(region, pa, 4, 0, -1)
        cv2.circle(region, pb, 4, 0, -1)
        region = region > 0

        def hue(img):
            n = np.linalg.norm(img, axis=-1) + 1e-9
            return ((img @ c) / n > 0.97) & (n > 40) & region

        mine, theirs = hue(ours), hue(real)
        near = cv2.dilate(theirs.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert mine.sum() > 20, f"limb {i} drawn"
        assert (mine & near).sum() / mine.sum() > 0.9, f"limb {i} lands on the real limb in the real colour"
        ratios.append((real[region] @ c).clip(0).sum() / (ours[region] @ c).clip(0).sum())
    assert 0.9 < float(np.median(ratios)) < 1.15, ratios


# ----------------------------------------------------------------------------------------------------- parsing

def _frame(people, w=W, h=H):
    return {"people": people, "canvas_width": w, "canvas_height": h}


def _person(points: dict, w=W, h=H, pixels=False):
    body = []
    for i in range(18):
        if i in points:
            x, y = points[i]
            body += [x, y, 1.0] if pixels else [x / w, y / h, 1.0]
        else:
            body += [0.0, 0.0, 0.0]
    return {"pose_keypoints_2d": body, "face_keypoints_2d": None, "hand_left_keypoints_2d": None,
            "hand_right_keypoints_2d": None}


def test_parse_normalised_and_pixel_coordinates():
    norm = parse_pose_keypoints([_frame([_person(FIGURE)])])
    pix = parse_pose_keypoints([_frame([_person(FIGURE, pixels=True)])])
    assert not norm.pixel_coords and pix.pixel_coords
    assert np.allclose(norm.poses[0].body, pix.poses[0].body)
    assert norm.poses[0].body[1].tolist() == pytest.approx([360 / W, 100 / H, 1.0])
    assert norm.poses[0].body[2, 2] == 1.0 and norm.poses[0].face.shape == (68, 3)
    # JSON text and a single frame dict are accepted too
    assert len(parse_pose_keypoints(json.dumps(_frame([_person(FIGURE)]))).poses) == 1
    # a forced reading
    forced = parse_pose_keypoints([_frame([_person(FIGURE)])], coords="pixels")
    assert forced.poses[0].body[1, 0] == pytest.approx(360 / W / W)


def test_parse_body25_and_70_point_faces():
    body25 = np.zeros((25, 3))
    body25[8] = [0.5, 0.5, 1]   # mid-hip: dropped
    body25[9] = [0.4, 0.5, 1]   # right hip -> COCO 8
    body25[1] = [0.5, 0.2, 1]
    face = np.tile([0.5, 0.1, 1.0], 70)
    seq = parse_pose_keypoints([_frame([{"pose_keypoints_2d": body25.ravel().tolist(),
                                         "face_keypoints_2d": face.tolist()}])])
    p = seq.poses[0]
    assert p.body[8].tolist() == [0.4, 0.5, 1.0] and p.body[1].tolist() == [0.5, 0.2, 1.0]
    assert p.face.shape == (68, 3)


def test_several_people_pick_the_largest_and_warn():
    small = _person({1: (100, 100), 8: (100, 150)})
    big = _person(FIGURE)
    seq = parse_pose_keypoints([_frame([small, big]), _frame([big])], name="driving_pose")
    assert np.allclose(seq.poses[0].body, seq.poses[1].body)
    assert len(seq.warnings) == 1 and "frame 0 has 2 people; using the largest (person 1" in seq.warnings[0]


def test_no_person_is_an_error_naming_the_frame_or_carries_the_previous_pose():
    frames = [_frame([_person(FIGURE)]), _frame([]), _frame([_person({1: (10, 10)})])]
    with pytest.raises(InputError, match=r"driving_pose: no person detected in frame 1"):
        parse_pose_keypoints(frames, name="driving_pose")
    seq = parse_pose_keypoints(frames, name="driving_pose", missing="repeat_previous")
    assert np.array_equal(seq.poses[1].body, seq.poses[0].body)
    assert any("no person in frames [1]" in w for w in seq.warnings)
    with pytest.raises(InputError, match="no person detected in every frame"):
        parse_pose_keypoints([_frame([]), _frame([])], missing="repeat_previous")


@pytest.mark.parametrize("bad, match", [
    ([], "the keypoint sequence is empty"),
    (42, "expected POSE_KEYPOINT"),
    ([{"people": [{"pose_keypoints_2d": [0.1, 0.2] * 3}]}], "has 2 points; expected 18"),
    ([{"people": [{"pose_keypoints_2d": [0.1] * 10}]}], "expected triples"),
    ([{"people": [{"pose_keypoints_2d": [1.0] * 54, "hand_left_keypoints_2d": [1.0] * 30}]}], "expected 21"),
    ([{"people": [{"pose_keypoints_2d": [300.0] * 54}]}], "pixel coordinates need canvas_width"),
    ("{not json", "not valid POSE_KEYPOINT JSON"),
    # an unexpected face length (neither DWPose's 68 nor the 70 of OpenPose / controlnet_aux / SDPose)
    ([{"people": [{"pose_keypoints_2d": [0.5] * 54, "face_keypoints_2d": [0.5] * 69 * 3}]}],
     "frame 0: face_keypoints_2d has 69 points; expected 68"),
    ([{"people": [{"pose_keypoints_2d": [0.5] * 54, "foot_keypoints_2d": [0.5] * 5 * 3}]}],
     "foot_keypoints_2d has 5 points; expected 6"),
    # a file of only not-found points, and an empty person list: no person, never a drawing at the corner
    ([{"people": [{"pose_keypoints_2d": [-1.0, -1.0, 0.6] * 18, "face_keypoints_2d": [-1.0, -1.0, -0.01] * 70}],
       "canvas_width": 1280, "canvas_height": 720}] * 2,
     r"no person detected in every frame; expected one person per frame \[36 point\(s\) are marked -1"),
    ([{"people": [], "canvas_width": 1280, "canvas_height": 720}], "no person detected in every frame"),
    ([{"people": [{"pose_keypoints_2d": [500.0, 300.0, 0.2] * 18}], "canvas_width": 1280, "canvas_height": 720}],
     r"no person detected in every frame.*18 point\(s\) scored below min_score 0.3 were left out"),
])
def test_bad_keypoints_name_the_input(bad, match):
    with pytest.raises(InputError, match="pose_keypoint: .*" + match):
        parse_pose_keypoints(bad)


def test_round_trip_through_pose_keypoint():
    seq = parse_pose_keypoints([_frame([_person(FIGURE)])])
    again = parse_pose_keypoints(to_pose_keypoint(seq.poses))
    assert np.allclose(again.poses[0].body, seq.poses[0].body)


def test_pixel_reading_warns_when_the_canvas_does_not_fit_the_points():
    ok = parse_pose_keypoints([_frame([_person(FIGURE, pixels=True)])], name="driving_pose")
    assert ok.pixel_coords and not ok.warnings
    # the figure's pixels (up to x = 412) on a canvas declared 10x smaller: points 5 canvases to the right
    wrong = parse_pose_keypoints([_frame([_person(FIGURE, pixels=True)], w=72, h=48)], name="driving_pose")
    assert wrong.pixel_coords and len(wrong.warnings) == 1
    assert "driving_pose: frame 0 has keypoints more than a whole canvas outside the frame (read as pixels on " \
           "72x48); check canvas_width / canvas_height" in wrong.warnings[0]


def test_bad_min_score_names_the_input():
    for bad in (-0.1, 1.5, "high"):
        with pytest.raises(InputError, match="min_score: expected a number from 0 to 1"):
            parse_pose_keypoints([_frame([_person(FIGURE)])], min_score=bad)


# ------------------------------------------------------------------------------ SDPose keypoints (core ComfyUI)

def _load(name):
    return json.loads((FIXTURES / name).read_text())


def test_sdpose_keypoints_read_as_pixels_with_marks_and_low_scores_dropped():
    sd = _load("sdpose_keypoints.json")
    raw = np.asarray(sd[0]["people"][0]["pose_keypoints_2d"]).reshape(-1, 3)
    assert raw[17].tolist() == [-1.0, -1.0, 0.412], "the fixture has a not-found point with a positive score"
    seq = parse_pose_keypoints(sd, name="driving_pose")
    assert seq.pixel_coords and seq.has_feet and not seq.warnings and len(seq.poses) == 3
    p0, p1 = seq.poses[0], seq.poses[1]
    assert (p0.width, p0.height) == (1280, 720)
    assert p0.body[1].tolist() == pytest.approx([604.0 / 1280, 180.0 / 720, raw[1, 2]])
    # -1 (not found) is missing whatever its score; so are scores <= 0 and below min_score (0.3)
    assert p0.body[17].tolist() == [0.0, 0.0, 0.0]
    assert (p0.face[0:3] == 0).all() and (p0.face[40] == 0).all() and (p0.face[3:40, 2] >= 0.55).all()
    assert (p0.left_hand == 0).all(), "an occluded hand: every score below 0.3 or not found"
    assert (p0.right_hand[:, 2] >= 0.45).all()
    assert (p1.body[10] == 0).all() and p0.body[10, 2] > 0.6, "the stray low-score ankle of frame 1"
    # the 70-point face: 68 landmarks kept, the two eye copies left out (the body draws the eyes)
    assert p0.face.shape == (68, 3)
    assert seq.n_not_found == 3 and seq.n_low_score == 3 * (1 + 21 - 3) + 1
    # no point of the person lands at or beyond the top-left corner
    for part in p0.parts():
        ok = part[:, 2] > 0
        assert (part[ok, :2] > 0.05).all()


def _draw_node_path(drv_frames, ref_frames, min_score=0.3, num_frames=5):
    """What CharacterShot Pose From Keypoints does (nodes/prepare.py), on the core functions."""
    drv = parse_pose_keypoints(drv_frames, name="driving_pose", min_score=min_score).poses
    ref = parse_pose_keypoints(ref_frames, name="reference_pose", min_score=min_score).poses[0]
    poses, _, _ = retarget(ref, drv)
    poses = [fit_into_canvas(p, W, H) for p in resample_poses(poses, num_frames, "linear")]
    return np.stack([draw_pose(p, W, H) for p in poses] + [draw_pose(fit_into_canvas(ref, W, H), W, H)])


def test_sdpose_keypoints_draw_the_same_skeleton_as_the_dwpose_json():
    sd, dw = _load("sdpose_keypoints.json"), _load("sdpose_as_dwpose.json")
    ref = [_frame([_person(FIGURE)])]  # the reference character on the 720x480 canvas
    ours = _draw_node_path(sd, ref)
    assert ours[:-1].max() > 0
    # the same detections as DWPose / OpenPose JSON with scores (normalised, [0, 0, 0] below 0.3, no feet):
    # pixel-identical, retargeted and resampled as the node does
    assert np.array_equal(ours, _draw_node_path(dw, ref))
    # as controlnet_aux writes them (c = 1.0 for every kept point): the same pixels are drawn, in the same hues;
    # only the brightness differs, since the official drawing scales colours by the scores
    for frame in dw:
        for person in frame["people"]:
            for key, values in person.items():
                a = np.asarray(values).reshape(-1, 3)
                a[a[:, 2] > 0, 2] = 1.0
                person[key] = a.reshape(-1).tolist()
    full = _draw_node_path(dw, ref)
    lit, lit_full = ours.max(-1) > 0, full.max(-1) > 0
    assert np.array_equal(lit, lit_full)
    a, b = ours[lit].astype(float), full[lit].astype(float)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.97


def test_not_found_points_are_never_drawn():
    """SDPose's [-1, -1, score] with a high score, in every part: nothing at the corner, the same drawing as
    without those points."""
    person = _person(FIGURE, pixels=True)
    body = np.asarray(person["pose_keypoints_2d"]).reshape(-1, 3)
    body[[0, 4, 16, 17], :] = [-1.0, -1.0, 0.95]
    hand = np.tile([300.0, 250.0, 0.9], (21, 1))
    hand[:5] = [-1.0, -1.0, 0.9]
    face = np.tile([355.0, 62.0, 0.9], (70, 1))
    face[:30] = [-1.0, -1.0, 0.9]
    marked = {"pose_keypoints_2d": body.ravel().tolist(), "hand_right_keypoints_2d": hand.ravel().tolist(),
              "face_keypoints_2d": face.ravel().tolist(), "foot_keypoints_2d": [-1.0, -1.0, 0.9] * 6}
    clean = {k: np.where(np.asarray(v).reshape(-1, 3)[:, :1] == -1, 0.0, np.asarray(v).reshape(-1, 3)).ravel().tolist()
             for k, v in marked.items()}
    for min_score in (0.0, 0.3):
        seq = parse_pose_keypoints([_frame([marked])], min_score=min_score)
        assert seq.pixel_coords and seq.n_not_found == 4 + 5 + 30
        img = draw_pose(seq.poses[0], W, H)
        assert img[:40, :40].max() == 0
        again = draw_pose(parse_pose_keypoints([_frame([clean])], min_score=min_score).poses[0], W, H)
        assert np.array_equal(img, again)


def test_min_score():
    sd = _load("sdpose_keypoints.json")
    left = [parse_pose_keypoints(sd, min_score=m).poses[0].left_hand for m in (0.0, 0.1, 0.3)]
    scores = np.asarray(sd[0]["people"][0]["hand_left_keypoints_2d"]).reshape(-1, 3)[:, 2]
    assert (left[0][:, 2] > 0).sum() == 18, "min_score 0: every point scored > 0 and not marked -1"
    assert (left[1][:, 2] > 0).sum() == int((scores >= 0.1).sum()) > 0
    assert (left[2][:, 2] > 0).sum() == 0
    # at or below DWPose's 0.3 the body drawing never changes (the official drawing skips body points below 0.3)
    low = _draw_node_path(sd, [_frame([_person(FIGURE)])], min_score=0.0)
    dflt = _draw_node_path(sd, [_frame([_person(FIGURE)])], min_score=0.3)
    body_only = [parse_pose_keypoints(sd, min_score=m).poses[1] for m in (0.0, 0.3)]
    assert body_only[0].body[10, 2] == pytest.approx(0.18) and body_only[1].body[10, 2] == 0
    assert np.array_equal(*(draw_pose(p, W, H, hands=False, face=False) for p in body_only))
    assert not np.array_equal(low, dflt), "the dim hand points appear at min_score 0"
    # a higher min_score leaves weaker limbs out
    high = parse_pose_keypoints(sd, min_score=0.9).poses[0]
    assert 0 < (high.body[:, 2] > 0).sum() < 17


def test_default_min_score_keeps_dwpose_json_unchanged():
    """controlnet_aux writes c = 1.0 for every kept point: the 0.3 default changes nothing there."""
    person = _person(FIGURE)
    person["face_keypoints_2d"] = np.tile([0.5, 0.12, 1.0], 70).tolist()
    person["hand_left_keypoints_2d"] = (np.tile([0.56, 0.4, 1.0], 21) * (np.arange(63) % 9 != 2)).tolist()
    frames = [_frame([person]), _frame([_person({k: (x + 5, y) for k, (x, y) in FIGURE.items()})])]
    a, b = parse_pose_keypoints(frames), parse_pose_keypoints(frames, min_score=0.0)
    assert a.n_low_score == 0
    for pa, pb in zip(a.poses, b.poses):
        for qa, qb in zip(pa.parts(), pb.parts()):
            assert np.array_equal(qa, qb)


# ------------------------------------------------------------------------------------------------- retargeting

def test_scaled_shifted_copy_maps_back_onto_the_reference():
    ref = _pose(FIGURE)
    ref.face[:5] = [[0.5, 0.12, 1.0]] * 5
    ref.left_hand[:3] = [[0.45, 0.4, 1.0]] * 3
    # the driving video: 1280x720, the figure 1.7x larger in pixels and moved; a second frame moves on
    fw, fh, s, t = 1280, 720, 1.7, np.array([-140.0, -90.0])
    frames = []
    for dx in (0.0, 25.0):
        d = Pose.empty(fw, fh)
        for part_ref, part_d in zip(ref.parts(), d.parts()):
            ok = part_ref[:, 2] > 0
            px = part_ref[ok, :2] * [W, H]
            part_d[ok, :2] = (px * s + t + [dx, 0.0]) / [fw, fh]
            part_d[ok, 2] = 1.0
        frames.append(d)
    out, a, b = retarget(ref, frames[:1])
    for part_ref, part_out in zip(ref.parts(), out[0].parts()):
        assert np.allclose(part_out, part_ref, atol=1e-9)
    assert out[0].width == W and out[0].height == H
    # y scale in normalised units: the figure's pixel scale 1/1.7 times the canvas ratio
    assert a[1] == pytest.approx(fh / H / s)
    assert a[0] == pytest.approx(fw / W / s)
    # with two frames the fit is shared: the motion (25 px in the driving video) survives, scaled by 1/1.7
    out2, _, _ = retarget(ref, frames)
    shift = (out2[1].body[:, 0] - out2[0].body[:, 0]) * W
    assert np.allclose(shift[ref.body[:, 2] > 0], 25.0 / s, atol=1e-6)


def test_retarget_ignores_missing_driving_points_and_needs_a_body():
    ref = _pose(FIGURE)
    d = _pose({k: (x * 0.5 + 100, y * 0.5 + 50) for k, (x, y) in FIGURE.items()})
    d.body[10] = 0.0  # a missing ankle at (0, 0) must not pull the fit
    out, _, _ = retarget(ref, [d])
    ok = d.body[:, 2] > 0
    assert np.allclose(out[0].body[ok, :2], ref.body[ok, :2], atol=1e-3)
    assert out[0].body[10, 2] == 0
    with pytest.raises(InputError, match="reference_pose: only 1 of the torso"):
        retarget(_pose({1: (360, 100), 4: (300, 200)}), [d])
    assert set(REF_KEYPOINTS) == {0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}


def test_fit_into_canvas_letterboxes():
    p = Pose.empty(1280, 720)
    p.body[1] = [0.5, 0.0, 1.0]
    p.body[2] = [0.0, 1.0, 1.0]
    q = fit_into_canvas(p, W, H)
    # 1280x720 scaled by 0.5625 -> 720x405, centred vertically (37.5 px bars)
    assert q.body[1, :2] * [W, H] == pytest.approx([360, 37.5])
    assert q.body[2, :2] * [W, H] == pytest.approx([0, 442.5])


# -------------------------------------------------------------------------------------------------- resampling

def test_resample_indices():
    assert resample_indices(26, 25, "first").tolist() == list(range(25))
    idx = resample_indices(49, 25, "nearest")
    assert idx.tolist() == list(range(0, 49, 2))
    idx = resample_indices(10, 25, "nearest")
    assert idx[0] == 0 and idx[-1] == 9 and len(idx) == 25 and (np.diff(idx) >= 0).all()
    assert resample_indices(1, 5, "nearest").tolist() == [0] * 5
    with pytest.raises(InputError, match="frames: has 10 frames but 'first' resampling needs at least 25"):
        resample_indices(10, 25, "first")
    with pytest.raises(InputError, match="frames: the sequence is empty"):
        resample_indices(0, 25)
    with pytest.raises(InputError, match=r"num_frames: expected 4k\+1 .* got 24; nearest valid: 21 or 25"):
        resample_indices(30, 24)
    with pytest.raises(InputError, match="num_frames"):
        check_frame_count(0)


def test_linear_resampling_interpolates_keypoints():
    a = _pose({1: (100, 100), 2: (50, 100)})
    b = _pose({1: (200, 300), 3: (60, 200)})
    out = resample_poses([a, b], 5, "linear")
    assert len(out) == 5
    mid = out[2].body[1, :2] * [W, H] - 0.5
    assert mid == pytest.approx([150, 200])
    assert out[1].body[2, 2] == 1.0 and out[3].body[2, 2] == 0.0, "a point seen on one side follows the nearer frame"
    assert out[3].body[3, 2] == 1.0 and out[1].body[3, 2] == 0.0
    near = resample_poses([a, b], 5, "nearest")
    assert np.array_equal(near[1].body, a.body) and np.array_equal(near[3].body, b.body)

"""Character and pose canvases: the official 720x480 layout with the character in the central 480 square."""

from pathlib import Path

import numpy as np
import pytest

from charactershot_core.canvas import (TEMPLATE_CENTER_Y, TEMPLATE_FILL, is_official_canvas, mask_box,
                                       prepare_character, prepare_pose_frames)
from charactershot_core.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "charactershot_example"


def _white_with_box(h, w, box, color=(40, 80, 120)):
    img = np.full((1, h, w, 3), 255, np.uint8)
    x0, y0, x1, y1 = box
    img[0, y0:y1, x0:x1] = color
    return img


def _box_close(got, want, tol=1.0):
    assert got is not None
    assert all(abs(g - w) <= tol for g, w in zip(got, want)), (got, want)


def test_known_box_lands_in_the_official_layout():
    # a 100x400 character in a 300x600 image: fill 0.73 -> square side 400/0.73, resized to 480, pasted at x 120
    res = prepare_character(_white_with_box(600, 300, (100, 100, 200, 500)))
    assert res.images.shape == (1, 480, 720, 3) and res.masks.shape == (1, 480, 720)
    k = 480 / (400 / TEMPLATE_FILL)
    h, w = 400 * k, 100 * k
    _box_close(mask_box(res.masks[0]), (360 - w / 2, 240 - h / 2, 360 + w / 2, 240 + h / 2))
    # the pixels agree with the mask: white outside the square and around the character, the colour inside
    img = res.images[0].astype(int)
    assert (img[:, :120] == 255).all() and (img[:, 600:] == 255).all()
    assert (np.abs(img[240, 360] - [40, 80, 120]) <= 1).all()
    assert (img[20, 360] == 255).all()


def test_tight_fill_and_template_anchor():
    img = _white_with_box(600, 300, (100, 100, 200, 500))
    tight = prepare_character(img, fill=1.0)
    _box_close(mask_box(tight.masks[0]), (360 - 60, 0, 360 + 60, 480))
    tmpl = prepare_character(img, anchor="template")
    k = 480 / (400 / TEMPLATE_FILL)
    cy = TEMPLATE_CENTER_Y * 480
    _box_close(mask_box(tmpl.masks[0]), (360 - 50 * k, cy - 200 * k, 360 + 50 * k, cy + 200 * k))


def test_other_canvas_size():
    res = prepare_character(_white_with_box(200, 200, (50, 50, 150, 150)), width=256, height=128, square=96,
                            fill=1.0)
    assert res.images.shape == (1, 128, 256, 3)
    _box_close(mask_box(res.masks[0]), (80, 16, 176, 112))


def test_shared_box_keeps_a_common_scale_and_per_image_does_not():
    a = _white_with_box(600, 600, (250, 100, 350, 500))
    b = _white_with_box(600, 600, (200, 300, 400, 500))  # shorter, wider: a crouching view
    both = np.concatenate([a, b])
    shared = prepare_character(both)
    ha = np.subtract(*mask_box(shared.masks[0])[3::-2])
    hb = np.subtract(*mask_box(shared.masks[1])[3::-2])
    assert abs(ha / hb - 2.0) < 0.03, "the second character keeps half the height of the first"
    per = prepare_character(both, box_mode="per_image")
    wb = np.subtract(*mask_box(per.masks[1])[2::-2])
    assert abs(wb - 480 * TEMPLATE_FILL) <= 1.5, "alone, the wide box fills 0.73 of the square"


def test_mask_input_composites_on_white_and_reads_loadimage_masks():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (1, 300, 300, 3), dtype=np.uint8)  # busy background
    fg = np.zeros((1, 300, 300), np.float32)
    fg[0, 50:250, 100:200] = 1.0
    res = prepare_character(img, fg, fill=1.0)
    out = res.images[0]
    box = mask_box(res.masks[0])
    _box_close(box, (360 - 120, 0, 360 + 120, 480))
    assert (out[:, 120:230] == 255).all(), "the background beside the character becomes white"
    # the same mask as LoadImage gives it (1 = background) is recognised and inverted, with a warning
    inv = prepare_character(img, 1.0 - fg, fill=1.0)
    assert np.array_equal(inv.images, res.images)
    assert any("inverted" in w for w in inv.warnings)
    forced = prepare_character(img, fg, fill=1.0, mask_meaning="background")
    assert not np.array_equal(forced.images, res.images)


def test_uniform_mask_is_ignored_with_a_warning():
    # LoadImage gives a 64x64 zero mask for images without alpha: it must not break or blank the character
    img = _white_with_box(600, 300, (100, 100, 200, 500))
    res = prepare_character(img, np.zeros((1, 64, 64), np.float32))
    assert np.array_equal(res.images, prepare_character(img).images)
    assert any("uniform" in w for w in res.warnings)


def test_alpha_channel_is_the_character():
    img = np.zeros((1, 200, 200, 4), np.uint8)
    img[..., :3] = (0, 200, 0)       # green under transparent pixels must not show
    img[0, 40:160, 80:120] = (200, 10, 10, 255)
    res = prepare_character(img, fill=1.0)
    out = res.images[0]
    assert (out[:, 120:260] == 255).all()
    assert (np.abs(out[240, 360].astype(int) - [200, 10, 10]) <= 1).all()


def test_non_white_background_is_keyed_out_with_a_warning():
    img = np.full((1, 300, 300, 3), 90, np.uint8)
    img[0, 100:200, 130:170] = (250, 30, 30)
    res = prepare_character(img)
    assert (res.images[0, :, :150] == 255).all()
    assert any("non-white background" in w for w in res.warnings)


def test_bad_inputs_name_the_input():
    ok = _white_with_box(100, 100, (40, 40, 60, 60))
    with pytest.raises(InputError, match="images: the image batch is empty"):
        prepare_character(np.zeros((0, 10, 10, 3), np.uint8))
    with pytest.raises(InputError, match="images: expected 1 .*channels, got 2"):
        prepare_character(np.zeros((1, 10, 10, 2), np.uint8))
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="mask: expected masks of the images' size 100x100, got 50x100"):
        prepare_character(ok, rng.random((1, 100, 50), np.float32))
    with pytest.raises(InputError, match="mask: expected 1 mask or one per image"):
        prepare_character(ok, rng.random((3, 100, 100), np.float32))
    with pytest.raises(InputError, match="no character found"):
        prepare_character(np.full((1, 100, 100, 3), 255, np.uint8))
    empty = np.zeros((1, 100, 100), np.float32)
    empty[0, 0, 0] = 0.2  # not uniform, but nothing above 0.5
    with pytest.raises(InputError, match="mask: no character found"):
        prepare_character(ok, empty, mask_meaning="character")
    with pytest.raises(InputError, match="square"):
        prepare_character(ok, width=720, height=480, square=600)
    with pytest.raises(InputError, match="fill"):
        prepare_character(ok, fill=0.0)


def _views():
    if not (EXAMPLE / "views").is_dir():
        pytest.skip(f"the official example views are not at {EXAMPLE}")
    from PIL import Image

    return np.stack([np.asarray(Image.open(EXAMPLE / "views" / f"view{k}.png").convert("RGB")) for k in range(21)])


def test_official_views_pass_unchanged():
    views = _views()
    assert all(is_official_canvas(v) for v in views)
    res = prepare_character(views)
    assert all(res.kept) and np.array_equal(res.images, views)
    for k in range(21):  # the mask finds the character inside the central square
        x0, y0, x1, y1 = mask_box(res.masks[k])
        assert 120 <= x0 and x1 <= 600 and 0 <= y0 and y1 <= 480


def test_official_views_relaid_out_keep_their_layout():
    # forced through the whole path (find, square, resize, paste), the template anchor reproduces the layout
    views = _views()[::4]
    res = prepare_character(views, keep_prepared=False, anchor="template")
    assert not any(res.kept)
    for k in range(len(views)):
        orig = mask_box(prepare_character(views[k:k + 1]).masks[0])
        _box_close(mask_box(res.masks[k]), orig, tol=4)
    assert np.abs(res.images.astype(int) - views).mean() < 3.0


def test_pose_frames_on_the_black_canvas():
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[300:420, 600:680] = 200
    out = prepare_pose_frames(frame[None])  # 16:9 -> padded to a square, 480, pasted at x 120
    k = 480 / 1280
    y_pad = (1280 - 720) / 2
    _box_close(mask_box(out.masks[0]), (120 + 600 * k, (300 + y_pad) * k, 120 + 680 * k, (420 + y_pad) * k), 1.5)
    assert (out.images[0, :, :120] == 0).all()
    same = np.zeros((2, 480, 720, 3), np.uint8)
    same[:, 10:20, 10:20] = 255
    kept = prepare_pose_frames(same)
    assert np.array_equal(kept.images, same) and all(kept.kept)
    half = prepare_pose_frames(same[:, ::2, ::2].copy())  # 360x240, same aspect: resized to the canvas
    _box_close(mask_box(half.masks[0]), (10, 10, 20, 20), 1.5)
    content = prepare_pose_frames(same, fit="fit_content", fill=1.0)
    _box_close(mask_box(content.masks[0]), (120, 0, 600, 480), 1.5)
    with pytest.raises(InputError, match="pose_frames: all frames are black"):
        prepare_pose_frames(np.zeros((2, 48, 72, 3), np.uint8), fit="fit_content")
    with pytest.raises(InputError, match="pose_frames: the image batch is empty"):
        prepare_pose_frames(np.zeros((0, 48, 72, 3), np.uint8))

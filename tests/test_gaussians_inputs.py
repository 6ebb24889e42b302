"""Inputs that cannot make a character are refused before any work, with a named error and nothing written:
views with no foreground (all black, all white, one colour, only background), a view count that does not match
the rig, frames of different sizes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from charactershot_core.__main__ import main
from charactershot_core.cameras import orbit_rig
from charactershot_core.errors import InputError
from charactershot_core.gaussians.fitting import fit as fit_mod
from charactershot_core.gaussians.fitting.data import MultiViewVideo, check_character, load_multiview, write_png
from charactershot_core.gaussians.fitting.fit import FitConfig, fit


def tiny_rig(views=4, w=64, h=48):
    return orbit_rig(num_views=views, width=w, height=h, square_size=h)


def character_frames(views=4, frames=2, h=48, w=64) -> torch.Tensor:
    """A dark blob in the middle of every view on white: a character the checks accept."""
    x = torch.ones(views, frames, h, w, 3)
    x[:, :, h // 3: 2 * h // 3, w // 3: 2 * w // 3] = torch.tensor([0.6, 0.3, 0.2])
    return x


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the fit starts any work (the initial Gaussians)."""
    def boom(*a, **k):
        raise AssertionError("the fit started working on an input it should have refused")

    monkeypatch.setattr(fit_mod, "initialize", boom)


def test_a_character_on_white_passes_the_check():
    check_character(MultiViewVideo(character_frames(), tiny_rig(), None))


@pytest.mark.parametrize("colour,what", [((0.0, 0.0, 0.0), "black"), ((1.0, 1.0, 1.0), "white"),
                                         ((0.4, 0.5, 0.6), "one colour")])
def test_views_of_one_colour_are_refused_before_any_work(no_work, colour, what):
    frames = torch.empty(4, 3, 48, 64, 3)
    frames[:] = torch.tensor(colour)
    video = MultiViewVideo(frames, tiny_rig(), None)
    calls = []
    with pytest.raises(InputError, match="one flat colour") as e:
        fit(video, FitConfig(iterations=5, backend="torch"), lambda s: calls.append(s))
    assert e.value.input_name == "multiview" and "views 0, 1, 2, 3 of 4" in str(e.value)
    assert not calls


def test_one_empty_view_among_good_ones_is_named(no_work):
    frames = character_frames()
    frames[2] = 1.0  # view 2: white only
    g = torch.Generator().manual_seed(0)
    frames[3] = 0.975 + 0.025 * torch.rand(frames[3].shape, generator=g)  # view 3: near-white noise, no character
    video = MultiViewVideo(frames, tiny_rig(), None)
    with pytest.raises(InputError, match="view 2 of 4 is one flat colour"):
        fit(video, FitConfig(iterations=5, backend="torch"))
    frames[2] = character_frames()[2]
    with pytest.raises(InputError, match="view 3 of 4 has no foreground"):
        fit(MultiViewVideo(frames, tiny_rig(), None), FitConfig(iterations=5, backend="torch"))


def test_view_count_that_does_not_match_the_rig_is_refused():
    with pytest.raises(InputError, match="rig has 5 cameras but there are 4 views") as e:
        MultiViewVideo(character_frames(views=4), tiny_rig(views=5), None)
    assert e.value.input_name == "cameras"


def test_frames_of_different_sizes_are_refused():
    a = character_frames(views=1, h=48, w=64)[0]
    b = character_frames(views=1, h=40, w=64)[0]
    with pytest.raises(InputError, match="same size") as e:
        MultiViewVideo([a, b, a, a], tiny_rig(), None)
    assert e.value.input_name == "frames"


def _write_views(folder, frames: torch.Tensor, rig):
    for k in range(frames.shape[0]):
        for i in range(frames.shape[1]):
            write_png(os.path.join(folder, "mv", f"view{k:02d}", f"frame_{i + 1:05d}.png"), frames[k, i])
    rig.save(os.path.join(folder, "cams.json"))


def _fit4d(folder):
    out = os.path.join(folder, "out")
    rc = main(["fit4d", "--frames", os.path.join(folder, "mv"), "--cameras", os.path.join(folder, "cams.json"),
               "--out", out, "--iterations", "5", "--backend", "torch", "--quiet"])
    return rc, out


def test_cli_refuses_black_views_different_sizes_and_wrong_rig_writing_nothing(tmp_path, capsys, no_work):
    black = tmp_path / "black"
    _write_views(str(black), torch.zeros(4, 2, 48, 64, 3), tiny_rig())
    rc, out = _fit4d(str(black))
    assert rc == 1 and not os.path.exists(out)
    assert "--frames: views 0, 1, 2, 3 of 4 are one flat colour" in capsys.readouterr().err

    sizes = tmp_path / "sizes"
    _write_views(str(sizes), character_frames(), tiny_rig())
    write_png(str(sizes / "mv" / "view01" / "frame_00002.png"), np.ones((40, 64, 3)))
    rc, out = _fit4d(str(sizes))
    assert rc == 1 and not os.path.exists(out)
    assert "same size" in capsys.readouterr().err
    with pytest.raises(InputError, match="same size"):
        load_multiview(str(sizes / "mv"), str(sizes / "cams.json"))

    rig = tmp_path / "rig"
    _write_views(str(rig), character_frames(), tiny_rig())
    tiny_rig(views=5).save(str(rig / "cams.json"))
    rc, out = _fit4d(str(rig))
    assert rc == 1 and not os.path.exists(out)
    assert "5 cameras" in capsys.readouterr().err


def test_frames_load_from_a_folder_with_non_ascii_name_in_order(tmp_path):
    """Frames are read by bytes (cv2.imread cannot open non-ASCII paths on Windows) and decoded on several threads:
    a folder named with accents and CJK letters loads, every frame lands at its own view and time."""
    from charactershot_core.gaussians.fitting.data import read_frames_dir

    root = tmp_path / "personnage_é_角色"
    want = np.zeros((3, 4, 10, 12, 3), np.uint8)
    for k in range(3):
        for i in range(4):
            want[k, i] = 10 * k + i  # each frame its own grey
            write_png(str(root / f"view{k:02d}" / f"frame_{i + 1:05d}.png"), want[k, i])
    assert np.array_equal(read_frames_dir(str(root)), want)
    (root / "view01" / "frame_00003.png").write_bytes(b"")  # an empty file is named, not a crash
    with pytest.raises(InputError, match="frame_00003.png"):
        read_frames_dir(str(root))

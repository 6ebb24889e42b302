"""4D nodes through the real ComfyUI host: synthetic character -> fit -> save -> load -> render, and Cancel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.comfy_host import WorkflowError

pytestmark = pytest.mark.e2e

RIG = {"class_type": "CharacterShotCameraRig",
       "inputs": {"preset": "custom_orbit", "num_views": 6, "radius": 3.5, "elevation": 0.0, "look_at_height": 0.7,
                  "fov": 39.6, "start_azimuth": 0.0, "direction": "counterclockwise", "width": 64, "height": 48}}
SYNTH = {"class_type": "CharacterShotSyntheticCharacter",
         "inputs": {"motion": "wave", "num_frames": 3, "scale": 1.0, "seed": 0, "num_gaussians": 800,
                    "cameras": ["1", 0], "backend": "torch"}}


def _fit(iterations, preview_every=4, source=("2", 0)):
    return {"class_type": "CharacterShotFit4DGaussians",
            "inputs": {"multiview": list(source), "iterations": iterations, "seconds": 0.0, "scale": 1.0, "sh_degree": 0,
                       "batch_views": 2, "initial_gaussians": 600, "neighbour_weight": 1.0, "densify": False,
                       "backend": "torch", "seed": 0, "preview_every": preview_every}}


def test_synthetic_fit_save_load_render(comfy, tmp_path):
    from plyfile import PlyData

    # the synthetic frames go through IMAGE -> Multi-View From Images, the path real views take
    prompt = {"1": RIG, "2": SYNTH,
              "9": {"class_type": "CharacterShotMultiViewFromImages",
                    "inputs": {"images": ["2", 1], "cameras": ["1", 0], "frames_per_view": 3}},
              "3": _fit(8, source=("9", 0)),
              "4": {"class_type": "CharacterShotSave4DGaussians",
                    "inputs": {"gaussians": ["3", 0], "filename_prefix": "charactershot/e2e4d", "times": "",
                               "save_ply": True, "save_bundle": True, "save_weights": True}}}
    hist = comfy.run(prompt, timeout=300)
    files = hist["outputs"]["4"]["charshot_4d"]
    names = sorted(f["filename"] for f in files)
    stem = next(n for n in names if n.endswith(".safetensors"))[: -len(".safetensors")]  # e2e4d_00001
    assert names == sorted([f"{stem}_frame_0000{i}.ply" for i in (1, 2, 3)] + [f"{stem}_bundle.cs4d",
                                                                                 f"{stem}.safetensors"])
    assert all(f["subfolder"] == "charactershot" and f["type"] == "output" for f in files)
    # progress and at least one preview image came over the websocket while fitting
    progress = [e for e in comfy.events if e.get("type") == "progress" and e["data"].get("node") == "3"]
    assert progress and progress[-1]["data"]["value"] == progress[-1]["data"]["max"] == 8
    assert any(e.get("type") == "binary" for e in comfy.events)
    # the node's text: training-view box PSNR per frame and the motion ratio (no held-out ground truth here)
    text = "".join(hist["outputs"]["3"]["text"])
    assert "training views [0, 2, 3, 5] (no held-out ground truth here), frames 0..2" in text
    assert "character box PSNR" in text and "worst (frame" in text and "motion ratio" in text
    # every per-frame .ply opens with plyfile and has the INRIA properties; frames differ (the field moves them)
    means = []
    for i in (1, 2, 3):
        path = tmp_path / f"f{i}.ply"
        path.write_bytes(comfy.view(f"{stem}_frame_0000{i}.ply", "charactershot", "output"))
        v = PlyData.read(str(path))["vertex"]
        props = [p.name for p in v.properties]
        for p in ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
                  "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]:
            assert p in props, p
        assert len(v) == 600
        means.append(np.stack([v["x"], v["y"], v["z"]], 1))
    assert np.isfinite(means[0]).all()

    # load the weights back (output folder) and render an orbit of 2 views at 2 times
    prompt2 = {"5": {"class_type": "CharacterShotLoad4DGaussians",
                     "inputs": {"file": f"charactershot/{stem}.safetensors [output]"}},
               "6": {"class_type": "CharacterShotRender4D",
                     "inputs": {"gaussians": ["5", 0], "mode": "orbit", "num_views": 2, "times": "0, 1",
                                "num_frames": 0, "elevation": 10.0, "radius": 3.5, "width": 64, "height": 48,
                                "backend": "torch"}},
               "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "e2e4d_render"}},
               "8": {"class_type": "CharacterShotRender4D",
                     "inputs": {"gaussians": ["5", 0], "mode": "turntable", "times": "", "num_frames": 5,
                                "width": 32, "height": 24, "backend": "torch"}},
               "10": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "e2e4d_turn"}}}
    hist = comfy.run(prompt2, timeout=300)
    imgs = hist["outputs"]["7"]["images"]
    assert len(imgs) == 4  # 2 views x 2 times
    assert len(hist["outputs"]["10"]["images"]) == 5  # turntable: one image per time
    arr = np.asarray(Image.open(io.BytesIO(comfy.view(imgs[0]["filename"], imgs[0]["subfolder"], "output"))).convert("RGB"))
    assert arr.shape == (48, 64, 3)
    assert arr.min() < 200 and (arr.reshape(-1, 3) == 255).all(1).mean() > 0.3  # a character on white

    # a missing file is a clear error naming the input
    bad = {"5": {"class_type": "CharacterShotLoad4DGaussians", "inputs": {"file": "nope.safetensors"}},
           "6": dict(prompt2["6"]), "7": dict(prompt2["7"])}
    with pytest.raises(WorkflowError, match="file: file not found"):
        comfy.run(bad, timeout=120)


def test_fit_stops_at_cancel(comfy):
    prompt = {"1": RIG, "2": SYNTH, "3": _fit(100000, preview_every=0),
              "4": {"class_type": "CharacterShotSave4DGaussians",
                    "inputs": {"gaussians": ["3", 0], "filename_prefix": "charactershot/cancelled", "times": "",
                               "save_ply": True, "save_bundle": False, "save_weights": False}}}
    sent = []

    def on_event(msg):
        if msg.get("type") == "progress" and msg["data"].get("node") == "3" and not sent:
            sent.append(msg["data"]["value"])
            comfy.interrupt()

    with pytest.raises(WorkflowError, match="interrupted"):
        comfy.run(prompt, timeout=300, on_event=on_event)
    values = [e["data"]["value"] for e in comfy.events if e.get("type") == "progress" and e["data"].get("node") == "3"]
    assert sent and max(values) <= sent[0] + 3  # stopped within a few iterations of the click, not 100000
    assert not list((comfy.output_dir / "charactershot").glob("cancelled*"))  # nothing saved


def test_fit_refuses_views_without_a_character_and_shows_budget_progress(comfy):
    """All-black views through Multi-View From Images: Fit 4D fails with the named error, nothing is saved. Then a
    fit with a time budget reports its iterations and the time left under the node."""
    black = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 6, "color": 0}}
    prompt = {"1": RIG, "2": black,
              "9": {"class_type": "CharacterShotMultiViewFromImages",
                    "inputs": {"images": ["2", 0], "cameras": ["1", 0], "frames_per_view": 1}},
              "3": _fit(8, source=("9", 0)),
              "4": {"class_type": "CharacterShotSave4DGaussians",
                    "inputs": {"gaussians": ["3", 0], "filename_prefix": "charactershot/black", "times": "",
                               "save_ply": True, "save_bundle": True, "save_weights": True}}}
    with pytest.raises(WorkflowError, match=r"multiview: views 0, 1, 2, 3, 4, 5 of 6 are one flat colour") as e:
        comfy.run(prompt, timeout=120)
    assert e.value.body.get("node_id") == "3"
    assert not list(comfy.output_dir.rglob("black*"))  # nothing saved
    assert not [ev for ev in comfy.events if ev.get("type") == "progress" and ev["data"].get("node") == "3"]

    fit = _fit(10000, preview_every=0)
    fit["inputs"]["seconds"] = 10.0
    save = {"class_type": "CharacterShotSave4DGaussians",
            "inputs": {"gaussians": ["3", 0], "filename_prefix": "charactershot/budget", "times": "",
                       "save_ply": False, "save_bundle": False, "save_weights": True}}
    hist = comfy.run({"1": RIG, "2": SYNTH, "3": fit, "4": save}, timeout=300)
    texts = [ev["text"] for ev in comfy.events if ev.get("event") == "text" and ev.get("node") == "3"]
    assert texts and texts[0].startswith("iteration 1 of at most 10000")
    assert all("s left of 10 s" in t for t in texts)
    assert "iterations in" in "".join(hist["outputs"]["3"]["text"])

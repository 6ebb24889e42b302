"""Preview 4D, the previews of Save/Load 4D Gaussians, the Load file list and Render 4D's framing, in a real ComfyUI."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from charactershot_core.gaussians.formats import read_bundle
from charactershot_core.gaussians.fitting.threads import chosen_threads, cpu_threads

pytestmark = pytest.mark.e2e

RIG = {"class_type": "CharacterShotCameraRig",
       "inputs": {"preset": "custom_orbit", "num_views": 6, "radius": 3.5, "elevation": 0.0, "look_at_height": 0.7,
                  "fov": 39.6, "start_azimuth": 0.0, "direction": "counterclockwise", "width": 64, "height": 48}}
SYNTH = {"class_type": "CharacterShotSyntheticCharacter",
         "inputs": {"motion": "wave", "num_frames": 3, "scale": 1.0, "seed": 0, "num_gaussians": 800,
                    "cameras": ["0", 0], "backend": "torch"}}
FIT = {"class_type": "CharacterShotFit4DGaussians",
       "inputs": {"multiview": ["1", 0], "iterations": 8, "seconds": 0.0, "scale": 1.0, "sh_degree": 0, "batch_views": 2,
                  "initial_gaussians": 600, "neighbour_weight": 1.0, "rigidity_weight": 0.0, "densify": False,
                  "backend": "torch", "seed": 0, "preview_every": 0}}


def _bundle(comfy, f) -> dict:
    path = comfy.root / "dl.cs4d"
    path.write_bytes(comfy.view(f["filename"], f["subfolder"], f["type"]))
    return read_bundle(path)


def test_preview_save_load_and_framing(comfy):
    prompt = {"0": RIG, "1": SYNTH, "2": FIT,
              "3": {"class_type": "CharacterShotPreview4D",
                    "inputs": {"gaussians": ["2", 0], "times": "", "turntable_frames": 2}},
              "4": {"class_type": "CharacterShotSave4DGaussians",
                    "inputs": {"gaussians": ["2", 0], "filename_prefix": "charactershot/pv", "times": "",
                               "save_ply": False, "save_bundle": True, "save_weights": True}}}
    out = comfy.run(prompt, timeout=300)["outputs"]

    # Preview 4D: a bundle in temp with the training cameras, and turntable frames for browsers without WebGL2
    pv = out["3"]["charshot_preview"][0]
    assert pv["type"] == "temp" and pv["filename"].endswith(".cs4d")
    b = _bundle(comfy, pv)
    assert b["header"]["frames"] == 3 and b["frames"]["positions"].shape[0] == 3
    cams = b["meta"]["cameras"]
    assert b["meta"]["cameras_source"] == "fit" and len(cams["views"]) == 6  # the rig the fit used
    assert cams["canvas_width"] == 64 and cams["canvas_height"] == 48
    turn = out["3"]["charshot_turntable"]
    assert len(turn) == 2
    img = np.asarray(Image.open(io.BytesIO(comfy.view(turn[0]["filename"], turn[0]["subfolder"], "temp"))).convert("RGB"))
    assert img.shape == (256, 256, 3) and img.min() < 200
    # nothing of the preview went to the output folder
    assert not any("preview4d" in f for _, _, fs in os.walk(comfy.output_dir) for f in fs)

    # Save 4D Gaussians previews what it saved (with the cameras too)
    saved = out["4"]["charshot_preview"][0]
    assert saved["type"] == "output" and saved["filename"].startswith("pv_") and saved["filename"].endswith("_bundle.cs4d")
    assert len(_bundle(comfy, saved)["meta"]["cameras"]["views"]) == 6
    stem = saved["filename"][: -len("_bundle.cs4d")]

    # Load 4D Gaussians lists the weights and the bundle found in the output folder
    spec = comfy.object_info("CharacterShotLoad4DGaussians")["CharacterShotLoad4DGaussians"]["input"]["required"]["file"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]  # V3 schema: ["COMBO", {"options": [...]}]
    assert f"charactershot/{stem}.safetensors [output]" in options
    assert f"charactershot/{stem}_bundle.cs4d [output]" in options

    # choosing the bundle loads the weights saved next to it and previews the bundle; Render 4D frames the character
    prompt2 = {"5": {"class_type": "CharacterShotLoad4DGaussians",
                     "inputs": {"file": f"charactershot/{stem}_bundle.cs4d [output]"}},
               "6": {"class_type": "CharacterShotRender4D",
                     "inputs": {"gaussians": ["5", 0], "mode": "orbit", "num_views": 4, "times": "", "num_frames": 0,
                                "elevation": 0.0, "radius": 1.0, "width": 64, "height": 64, "backend": "torch",
                                "framing": "fit character"}},
               "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "pv_orbit"}}}
    out2 = comfy.run(prompt2, timeout=300)["outputs"]
    assert out2["5"]["charshot_preview"][0]["filename"] == f"{stem}_bundle.cs4d"
    imgs = out2["7"]["images"]
    assert len(imgs) == 12  # 4 views x 3 times
    for f in imgs:
        a = np.asarray(Image.open(io.BytesIO(comfy.view(f["filename"], f["subfolder"], "output"))).convert("L")).astype(int)
        dark = a < 235
        rows, cols = np.nonzero(dark)
        assert len(rows) > 50, "nothing drawn"
        # the whole character is inside the image (radius 1.0 would cut it: 'fit character' ignores it)...
        border = np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]])
        assert border.mean() < 0.02, f"{f['filename']}: the character touches the border"
        # ...and fills it: its height spans most of the image
        assert rows.max() - rows.min() > 0.6 * a.shape[0], (rows.min(), rows.max())

    # the old typed value still works for API users, and a bundle without its weights is a clear error
    os.remove(comfy.output_dir / "charactershot" / f"{stem}.safetensors")
    bad = {"5": dict(prompt2["5"]), "6": prompt2["6"], "7": prompt2["7"]}
    from tests.comfy_host import WorkflowError

    with pytest.raises(WorkflowError, match="file: .*is a 4D bundle for viewing"):
        comfy.run(bad, timeout=120)


def test_cpu_threads_choice(monkeypatch):
    import torch

    monkeypatch.delenv("CHARSHOT_CPU_THREADS", raising=False)
    assert chosen_threads(2) == 1 and chosen_threads(4) == 3 and chosen_threads(1) == 1
    assert chosen_threads(64) is None  # big machines keep PyTorch's default
    monkeypatch.setenv("CHARSHOT_CPU_THREADS", "3")
    assert chosen_threads(2) == 3
    monkeypatch.setenv("CHARSHOT_CPU_THREADS", "0")
    assert chosen_threads(2) is None
    before = torch.get_num_threads()
    with cpu_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before

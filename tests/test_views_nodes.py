"""The views nodes: CharacterShotOrbitConditioning against core's SV3D_Conditioning (in a ComfyUI child process),
and CharacterShotViewsFromOrbit through the real host."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.comfy_host import REPO, WorkflowError, comfyui_dir


def test_orbit_conditioning_is_core_sv3d_with_the_rigs_angles():
    host = comfyui_dir()
    if not (host / "comfy_extras" / "nodes_stable3d.py").is_file():
        pytest.skip(f"no ComfyUI at {host}")
    child = Path(__file__).with_name("views_conditioning_child.py")
    proc = subprocess.run([sys.executable, str(child), str(REPO), str(host)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    # the same conditioning as core: CLIP vision embedding, VAE latent of the centre-cropped image, empty latent
    assert r["same_pooled"] and r["same_negative"] and r["same_concat"] and r["same_negative_concat"]
    assert r["same_keys"] and r["latent_shapes"] == [[21, 4, 72, 72], [21, 4, 72, 72]]
    # ... with the rig's azimuths instead of core's 360/20 spacing
    assert r["core_azimuths"][1] == 18.0 and r["core_azimuths"][20] == 360.0
    np.testing.assert_allclose(r["our_azimuths"], [k * 360 / 21 for k in range(21)], atol=0.1)
    assert r["our_negative_azimuths"] == r["our_azimuths"] and r["our_elevations"] == [0.0] * 21
    np.testing.assert_allclose(r["official_azimuths"], np.linspace(0, 360, 22)[1:] % 360, atol=0.1)
    np.testing.assert_allclose(r["custom_azimuths"], [45 * k for k in range(8)], atol=1e-6)
    np.testing.assert_allclose(r["custom_elevations"], 10.0, atol=1e-6)
    assert r["custom_latent"] == [8, 4, 32, 32]
    assert r["non_orbit_error"].startswith("cameras: not an orbit: views [4]")


def _views_prompt(rig_inputs: dict) -> dict:
    official = {"preset": "official_21_views", "num_views": 21, "radius": 3.5, "elevation": 0.0,
                "look_at_height": 0.7, "fov": 39.6, "start_azimuth": 0.0, "direction": "counterclockwise",
                "width": 720, "height": 480}
    return {
        "1": {"class_type": "CharacterShotCameraRig", "inputs": official},
        "2": {"class_type": "CharacterShotSyntheticCharacter",
              "inputs": {"motion": "wave", "num_frames": 1, "scale": 0.1, "seed": 0, "num_gaussians": 400,
                         "cameras": ["1", 0], "backend": "torch"}},
        "3": {"class_type": "CharacterShotCameraRig", "inputs": {**official, **rig_inputs}},
        "4": {"class_type": "CharacterShotViewsFromOrbit",
              "inputs": {"sv3d_frames": ["2", 1], "cameras": ["3", 0], "frame_order": "sv3d_official"}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


@pytest.mark.e2e
def test_views_from_orbit_node_runs_and_rejects_a_wrong_frame_count(comfy):
    info = comfy.object_info("CharacterShotOrbitConditioning")["CharacterShotOrbitConditioning"]
    assert info["input"]["required"]["clip_vision"][0] == "CLIP_VISION"
    assert info["output"] == ["CONDITIONING", "CONDITIONING", "LATENT"]
    hist = comfy.run(_views_prompt({}), timeout=300)
    images = hist["outputs"]["5"]["images"]
    assert len(images) == 21
    first = images[0]
    img = Image.open(io.BytesIO(comfy.view(first["filename"], first["subfolder"], first["type"]))).convert("RGB")
    arr = np.asarray(img)
    assert img.size == (720, 480) and arr[:, :110].min() >= 250 and (arr[:, 120:600].min(axis=2) < 200).any()
    with pytest.raises(WorkflowError, match=r"sv3d_frames: expected 8 frames, one per view of the 8-camera rig, "
                                            r"got 21"):
        comfy.run(_views_prompt({"preset": "custom_orbit", "num_views": 8}), timeout=300)

"""Camera rig nodes through a real ComfyUI host."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.comfy_host import WorkflowError

pytestmark = pytest.mark.e2e


def _rig_prompt(preset="official_21_views", **kw):
    inputs = {"preset": preset, "num_views": 21, "radius": 3.5, "elevation": 0.0, "look_at_height": 0.7,
              "fov": 39.6, "start_azimuth": 0.0, "direction": "counterclockwise", "width": 720, "height": 480}
    inputs.update(kw)
    return {
        "1": {"class_type": "CharacterShotCameraRig", "inputs": inputs},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 1], "filename_prefix": "rig_preview"}},
        "3": {"class_type": "CharacterShotSaveCameraRig", "inputs": {"cameras": ["1", 0],
                                                                       "filename_prefix": "charactershot/rig"}},
    }


def test_object_info_lists_nodes_with_tooltips(comfy):
    info = comfy.object_info()
    ours = {k: v for k, v in info.items() if k.startswith("CharacterShot")}
    assert "CharacterShotCameraRig" in ours
    for node_id, node in ours.items():
        assert node["display_name"].startswith("CharacterShot"), node_id
        assert node["category"].startswith("CharacterShot/"), node_id
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
        for t in node["output"]:
            if t.isupper() and "_" in t and t not in ("POSE_KEYPOINT",):
                assert t.startswith("CHARSHOT_") or t in ("IMAGE", "MASK", "LATENT", "STRING", "INT", "FLOAT"), t


def test_official_rig_saves_preview_and_json(comfy):
    hist = comfy.run(_rig_prompt())
    out = hist["outputs"]
    img_ref = out["2"]["images"][0]
    img = Image.open(io.BytesIO(comfy.view(img_ref["filename"], img_ref["subfolder"], img_ref["type"])))
    assert img.size == (384, 384)
    arr = np.asarray(img.convert("RGB"))
    assert (arr.reshape(-1, 3) == [255, 120, 80]).all(axis=1).any(), "view 0 is drawn in orange"
    ref = out["3"]["charshot_files"][0]
    assert ref["filename"].endswith(".json") and ref["type"] == "output"
    data = json.loads(comfy.view(ref["filename"], ref["subfolder"], ref["type"]))
    assert len(data["views"]) == 21
    assert abs(data["views"][0]["fl_x"] - 666.667) < 0.01
    assert data["canvas_width"] == 720 and data["canvas_height"] == 480
    # the saved rig loads back as the same cameras
    from charactershot_core.cameras import CameraRig, official_rig

    rig = CameraRig.from_dict(data)
    assert np.allclose(rig.c2w_gl, official_rig().c2w_gl)


def test_custom_orbit_and_json_roundtrip(comfy):
    hist = comfy.run(_rig_prompt("custom_orbit", num_views=8, elevation=20.0, radius=4.0))
    ref = hist["outputs"]["3"]["charshot_files"][0]
    data = json.loads(comfy.view(ref["filename"], ref["subfolder"], ref["type"]))
    assert len(data["views"]) == 8
    # feed the saved rig back through from_json_file
    (comfy.input_dir / "rigs").mkdir(exist_ok=True)
    (comfy.input_dir / "rigs" / "eight.json").write_text(json.dumps(data))
    hist2 = comfy.run(_rig_prompt("from_json_file", json_file="rigs/eight.json"))
    ref2 = hist2["outputs"]["3"]["charshot_files"][0]
    data2 = json.loads(comfy.view(ref2["filename"], ref2["subfolder"], ref2["type"]))
    assert np.allclose([v["transform_matrix"] for v in data2["views"]], [v["transform_matrix"] for v in data["views"]])


def test_bad_rig_parameters_are_named(comfy):
    with pytest.raises(WorkflowError) as e:
        comfy.run(_rig_prompt("from_json_file"))
    assert "json_file" in e.value.message
    # a value outside the declared range is rejected before running, naming the input
    with pytest.raises(WorkflowError) as e:
        comfy.run(_rig_prompt("custom_orbit", radius=-1.0))
    assert e.value.status == 400 and "radius" in json.dumps(e.value.body)


def test_web_extension_is_served(comfy):
    exts = json.loads(comfy.request("/extensions")[1])
    ours = [e for e in exts if e.endswith("/charactershot.js")]
    assert ours, exts
    body = comfy.request(ours[0])[1].decode()
    assert "registerExtension" in body
    assert "../../../scripts/app.js" in body  # served at /extensions/<pack>/js/

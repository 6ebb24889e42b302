"""The sampling example workflows' API twins (tests/workflows/) through the real host, with tiny checkpoints and
CI-sized values patched in; the graphs themselves are exactly the templates' (test_example_workflows checks that)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.tiny_models import F, H, W, install
from scripts.make_example_workflows import TWINS

pytestmark = pytest.mark.e2e

TINY = "CharacterShot-tiny21/"


@pytest.fixture(scope="module")
def tiny(comfy, tmp_path_factory):
    install(comfy, tmp_path_factory.mktemp("tiny_workflows"))


def _twin(name):
    prompt = json.loads((TWINS / name).read_text())
    prompt.pop("_title", None)
    return prompt


def _tiny_text(prompt, key):
    prompt[key]["inputs"].update(t5_folder=TINY)


def test_multiview_from_views_workflow(comfy, tiny):
    p = _twin("charactershot_multiview_from_views.json")
    p["1"]["inputs"].update(checkpoint=TINY, dtype="fp32")
    p["2"]["inputs"].update(vae=TINY, dtype="fp32")
    _tiny_text(p, "3")
    p["4"]["inputs"].update(preset="custom_orbit", num_views=9, width=W, height=H)
    p["5"]["inputs"].update(source="samp_views/")
    p["6"]["inputs"].update(folder="samp_poses/")
    p["7"]["inputs"].update(num_frames=F, width=W, height=H)
    p["8"]["inputs"].update(image="samp_ref_pose.png")
    p["9"]["inputs"].update(steps=2, num_frames=F, seed=11)
    p["11"]["inputs"].update(iterations=3, initial_gaussians=300, preview_every=0)
    p["12"]["inputs"].update(turntable_frames=2)
    hist = comfy.run(p, timeout=600)
    out = hist["outputs"]
    assert len(out["10"]["images"]) == 9
    saved = {f["filename"] for f in out["13"]["charshot_4d"]}
    assert any(f.endswith(".ply") for f in saved) and any(f.endswith(".cs4d") for f in saved)
    assert "12" in out  # the preview node reported its bundle to the page


def test_animate_2d_workflow(comfy, tiny):
    p = _twin("charactershot_animate_2d.json")
    p["1"]["inputs"].update(checkpoint="Character2D-tiny21/", dtype="fp32")
    p["2"]["inputs"].update(vae=TINY, dtype="fp32")
    _tiny_text(p, "3")
    p["4"]["inputs"].update(image="samp_view0.png")
    p["5"]["inputs"].update(folder="samp_poses/")
    p["6"]["inputs"].update(num_frames=F, width=W, height=H)
    p["7"]["inputs"].update(image="samp_ref_pose.png")
    p["8"]["inputs"].update(steps=2, num_frames=F)
    hist = comfy.run(p, timeout=600)
    (img,) = hist["outputs"]["9"]["images"]
    webp = Image.open(io.BytesIO(comfy.view(img["filename"], img["subfolder"], img["type"])))
    assert webp.size == (W, H) and webp.n_frames == F

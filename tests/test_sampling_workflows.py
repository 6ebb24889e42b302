"""The sampling example workflows' API twins (tests/workflows/) through the real host, with tiny checkpoints and
CI-sized values patched in; the graphs themselves are exactly the templates' (test_example_workflows checks that)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.tiny_models import F, H, W, install
from scripts.make_example_workflows import TWINS, read_twin

pytestmark = pytest.mark.e2e

TINY = "CharacterShot-tiny21/"


@pytest.fixture(scope="module")
def tiny(comfy, tmp_path_factory):
    install(comfy, tmp_path_factory.mktemp("tiny_workflows"))


def _twin(name):
    return read_twin(TWINS / name).for_test()


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


def _sv3d_like_frames(folder, size=144):
    """What SV3D would give for the official rig, with the synthetic character as the object (see test_views.py)."""
    import numpy as np

    from charactershot_core import views as vw
    from charactershot_core.cameras import official_rig
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    a = vw.orbit_conditioning_angles(official_rig(), "rig")
    distance = (1.9 / 0.85) / 2 / np.tan(np.radians(vw.SV3D_FOV_DEG / 2))
    cams = vw.sv3d_cameras(a.azimuths, a.elevations, np.array([0.0, 0.0, 0.9]), distance, size=size)
    frames = SyntheticCharacter("wave", seed=0, n_gaussians=1500).render_views(cams, [0.5], backend="torch")[:, 0]
    arr = np.clip(np.round(np.asarray(frames) * 255), 0, 255).astype(np.uint8)
    folder.mkdir(exist_ok=True)
    for k, im in enumerate(arr):
        Image.fromarray(im).save(folder / f"{k}.png")
    return arr


def test_one_picture_to_4d_workflow(comfy, tiny):
    """The full path with SV3D's sampler and DWPose replaced by fixtures (their outputs), the rest as templated."""
    frames = _sv3d_like_frames(comfy.input_dir / "one_picture_sv3d")
    Image.fromarray(frames[0]).save(comfy.input_dir / "charactershot_character.png")
    p = _twin("charactershot_one_picture_to_4d.json")
    assert p["8"]["class_type"] == "CharacterShotLoadImageSequence" and p["19"]["inputs"]["driving_pose"] == ["16", 0]
    p["2"]["inputs"].update(width=144, height=144, square=144)
    p["4"]["inputs"].update(width=W, height=H)
    p["10"]["inputs"].update(width=W, height=H, square=H)
    p["11"]["inputs"].update(checkpoint=TINY, dtype="fp32")
    p["12"]["inputs"].update(vae=TINY, dtype="fp32")
    _tiny_text(p, "13")
    p["19"]["inputs"].update(num_frames=F, width=W, height=H)
    p["20"]["inputs"].update(steps=2, num_frames=F)
    p["21"]["inputs"].update(iterations=3, initial_gaussians=300, preview_every=0)
    p["22"]["inputs"].update(turntable_frames=2)
    hist = comfy.run(p, timeout=900)
    out = hist["outputs"]
    text = "\n".join(out["20"]["text"])
    assert "21 views x 9 frames at 96x64; groups sampled [0, 1, 2, 3, 4]" in text
    saved = {f["filename"] for f in out["23"]["charshot_4d"]}
    assert any(f.endswith(".cs4d") for f in saved)


def test_a_template_whose_models_are_missing_names_them(comfy, tiny):
    """Queued as shipped but for the inputs (the official model folders are not installed here): ComfyUI refuses the
    prompt at once (nothing runs), and each loader's error names its input, what to download (the Hugging Face
    repository) and the folder it goes in."""
    p = _twin("charactershot_multiview_from_views.json")
    p["4"]["inputs"].update(preset="custom_orbit", num_views=9, width=W, height=H)
    p["5"]["inputs"].update(source="samp_views/")
    p["6"]["inputs"].update(folder="samp_poses/")
    p["7"]["inputs"].update(num_frames=F, width=W, height=H)
    p["8"]["inputs"].update(image="samp_ref_pose.png")
    p["9"]["inputs"].update(num_frames=F)
    status, body = comfy.queue(p)
    assert status == 400, body
    errors = {key: [e["details"] for e in node["errors"]] for key, node in body["node_errors"].items()}
    loaders = {key: p[key]["class_type"] for key in ("1", "2", "3")}
    assert sorted(loaders.values()) == ["CharacterShotModelLoader", "CharacterShotTextEncode",
                                        "CharacterShotVAELoader"], loaders
    folder = str(Path(comfy.models_dir) / "charactershot" / "CharacterShot")
    for key, cls in loaders.items():
        name = {"CharacterShotModelLoader": "checkpoint", "CharacterShotVAELoader": "vae",
                "CharacterShotTextEncode": "t5_folder"}[cls]
        mine = [d for d in errors.get(key, []) if d.startswith(f"{name} - 'CharacterShot/' is not in ComfyUI's "
                                                                f"models folders")]
        assert mine, (key, errors)
        assert "https://huggingface.co/Gaojunyao/CharacterShot" in mine[0], mine[0]
        assert "models/charactershot/CharacterShot/" in mine[0] and folder in mine[0], mine[0]

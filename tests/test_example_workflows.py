"""The templates in example_workflows/ are generated from the API twins in tests/workflows/, which run here
through a real ComfyUI. These tests fail when a template drifts from its twin or from the nodes' inputs."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from scripts.make_example_workflows import OUT, TWINS, read_twin

pytestmark = pytest.mark.e2e

TWIN_FILES = sorted(TWINS.glob("*.json"))


def _twin(name):
    return read_twin(TWINS / name).for_test()


@pytest.mark.parametrize("twin", TWIN_FILES, ids=[p.stem for p in TWIN_FILES])
def test_template_matches_its_twin_and_the_nodes(comfy, twin):
    template = OUT / twin.name
    assert template.is_file(), f"run scripts/make_example_workflows.py to write {template.name}"
    expected = read_twin(twin).template(comfy.object_info())
    assert json.loads(template.read_text()) == expected, f"{template.name} is stale: rerun scripts/make_example_workflows.py"


def test_synthetic_4d_workflow_runs(comfy):
    prompt = _twin("charactershot_4d_synthetic.json")
    # same graph, CI-sized: fewer frames, Gaussians and iterations
    prompt["2"]["inputs"].update(num_frames=3, num_gaussians=1500, scale=0.1)
    prompt["3"]["inputs"].update(iterations=10, seconds=0.0)
    prompt["4"]["inputs"].update(num_views=3, num_frames=2, width=96, height=64)
    hist = comfy.run(prompt, timeout=600)
    out = hist["outputs"]
    images = out["5"]["images"]
    assert len(images) == 3 * 2
    img = Image.open(io.BytesIO(comfy.view(images[0]["filename"], images[0]["subfolder"], images[0]["type"])))
    assert img.size == (96, 64)
    arr = np.asarray(img.convert("RGB")).astype(int)
    assert (arr.min(axis=2) < 200).any(), "the character is visible in the turntable"
    files = [f["filename"] for f in out["6"]["charshot_4d"]]
    assert any(f.endswith(".ply") for f in files) and any(f.endswith(".cs4d") for f in files)
    assert any(f.endswith(".safetensors") for f in files)


def test_demo_workflow_runs_and_reports_its_files(comfy, capsys):
    """The README's demo (scripts/demo.sh runs this twin through scripts/demo_workflow.py), CI-sized."""
    from scripts.demo_workflow import load_demo, report_outputs

    prompt = load_demo(seconds=None)
    prompt["2"]["inputs"].update(num_frames=3, num_gaussians=1500, scale=0.1)
    prompt["3"]["inputs"].update(iterations=10, seconds=0.0)
    prompt["5"]["inputs"].update(num_frames=4, width=96, height=64)
    prompt["7"]["inputs"].update(turntable_frames=2)
    hist = comfy.run(prompt, timeout=600)
    files = report_outputs(comfy, hist)
    assert len(files["ply"]) == 3 and all(p.is_file() for p in files["ply"])
    assert len(files["bundle"]) == 1 and files["bundle"][0].is_file()
    assert len(files["weights"]) == 1 and len(files["turntable"]) == 4
    assert all(p.is_file() for p in files["turntable"])
    assert "CharacterShotPreview4D" in {prompt[k]["class_type"] for k in hist["outputs"]}
    assert str(files["bundle"][0]) in capsys.readouterr().out


def test_4d_from_files_workflow_runs(comfy):
    """Workflow 4: multi-view frames on disk (the official layout view00/frame_00001.png, with our cameras.json)."""
    from charactershot_core.cameras import official_rig
    from charactershot_core.gaussians.data import write_png
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    folder = comfy.input_dir / "charactershot_views"
    rig = official_rig()
    frames = SyntheticCharacter("wave", seed=2, n_gaussians=800).render_views(rig, [0.0, 0.5, 1.0], scale=0.1,
                                                                             backend="torch")
    for v in range(frames.shape[0]):
        for i in range(frames.shape[1]):
            write_png(str(folder / f"view{v:02d}" / f"frame_{i + 1:05d}.png"), frames[v, i])
    rig.save(str(folder / "cameras.json"))
    prompt = _twin("charactershot_4d_from_files.json")
    prompt["2"]["inputs"].update(iterations=10, seconds=0.0)
    prompt["3"]["inputs"].update(turntable_frames=2)
    hist = comfy.run(prompt, timeout=600)
    files = [f["filename"] for f in hist["outputs"]["4"]["charshot_4d"]]
    assert sum(f.endswith(".ply") for f in files) == 3 and any(f.endswith(".cs4d") for f in files)
    assert "3" in hist["outputs"]  # Preview 4D showed it


def test_view_4d_workflow_opens_saved_gaussians(comfy):
    """The template that shows the demo's result in the widget (scripts/demo.sh --ui) loads saved weights."""
    import torch

    from charactershot_core.gaussians.model import make_gaussians

    g = torch.Generator().manual_seed(0)
    pts = torch.rand(300, 3, generator=g) * torch.tensor([0.4, 0.3, 1.7]) - torch.tensor([0.2, 0.15, 0.0])
    model = make_gaussians(pts, torch.rand(300, 3, generator=g), 0.03, 0, [0.0], None, 0.8)
    (comfy.output_dir / "charactershot").mkdir(parents=True, exist_ok=True)
    model.save(str(comfy.output_dir / "charactershot" / "view_4d_test.safetensors"))
    prompt = _twin("charactershot_view_4d.json")
    assert prompt["1"]["inputs"]["file"].startswith("charactershot/demo_")  # the demo's output by default
    prompt["1"]["inputs"]["file"] = "charactershot/view_4d_test.safetensors [output]"
    prompt["2"]["inputs"]["turntable_frames"] = 2
    hist = comfy.run(prompt, timeout=300)
    assert "2" in hist["outputs"], hist["outputs"]


def test_every_template_has_a_thumbnail():
    from scripts.make_example_workflows import THUMB_SIZE

    for template in sorted(OUT.glob("*.json")):
        thumb = template.with_suffix(".jpg")
        assert thumb.is_file(), f"{thumb.name} is missing: run scripts/make_example_workflows.py"
        with Image.open(thumb) as img:
            assert img.format == "JPEG" and img.size == THUMB_SIZE, (thumb.name, img.format, img.size)


def test_prepare_character_workflow_runs(comfy, example_dir):
    shutil.copy(example_dir / "reference_2d.png", comfy.input_dir / "charactershot_example_character.png")
    hist = comfy.run(_twin("charactershot_prepare_character.json"))
    ref = hist["outputs"]["3"]["images"][0]
    img = Image.open(io.BytesIO(comfy.view(ref["filename"], ref["subfolder"], ref["type"]))).convert("RGB")
    assert img.size == (720, 480)
    arr = np.asarray(img)
    # white outside the central 480 square, the character inside it
    assert arr[:, :120].min() >= 250 and arr[:, 600:].min() >= 250
    assert (arr[:, 120:600].min(axis=2) < 200).any()


def test_templates_are_listed_by_comfyui(comfy):
    listed = json.loads(comfy.request("/api/workflow_templates")[1])
    ours = next((v for k, v in listed.items() if "charactershot" in k.lower()), None)
    assert ours is not None, listed
    assert sorted(ours) == sorted(p.stem for p in TWIN_FILES)

"""The templates in example_workflows/ are generated from the API twins in tests/workflows/, which run here
through a real ComfyUI. These tests fail when a template drifts from its twin or from the nodes' inputs."""

import copy
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts.make_example_workflows import (
    OUT,
    PACK,
    TWINS,
    read_twin,
    template_path,
    twins,
)

pytestmark = pytest.mark.e2e

TWIN_FILES = sorted(TWINS.glob("*.json"))


def _twin(name):
    return read_twin(TWINS / name).for_test()


@pytest.mark.parametrize("twin", TWIN_FILES, ids=[p.stem for p in TWIN_FILES])
def test_template_matches_its_twin_and_the_nodes(comfy, twin):
    template = template_path(twin)
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
    hist = comfy.run(prompt, timeout=600)
    files = report_outputs(comfy, hist)
    assert len(files["ply"]) == 3 and all(p.is_file() for p in files["ply"])
    assert len(files["bundle"]) == 1 and files["bundle"][0].is_file()
    assert len(files["weights"]) == 1
    # the turntable is one animated WebP with a frame per turntable image
    assert [p.suffix for p in files["turntable"]] == [".webp"] and files["turntable"][0].is_file()
    with Image.open(files["turntable"][0]) as video:
        assert video.n_frames == 4 and video.size == (96, 64)
    # one 4D viewer: Save 4D Gaussians shows what it saved (no second, identical Preview 4D)
    viewers = [k for k, n in prompt.items() if n["class_type"] in ("CharacterShotPreview4D", "CharacterShotSave4DGaussians")]
    assert viewers == ["4"] and hist["outputs"]["4"]["charshot_preview"]
    out = capsys.readouterr().out
    assert str(files["bundle"][0]) in out and str(files["turntable"][0]) in out


def test_4d_from_files_workflow_runs(comfy):
    """Workflow 4: multi-view frames on disk (the official layout view00/frame_00001.png, with our cameras.json)."""
    from charactershot_core.cameras import official_rig
    from charactershot_core.gaussians.fitting.data import write_png
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
            # a picture of the result (the character on white), not a diagram of boxes on a dark canvas
            arr = np.asarray(img.convert("RGB"))[: THUMB_SIZE[1] - 40].astype(int)
            assert (arr.min(axis=2) > 235).mean() > 0.4, f"{thumb.name}: not a result on white"
            skin = (arr[..., 0] > 200) & (arr[..., 1] > 150) & (arr[..., 1] < 215) & (arr[..., 2] < 190)
            assert skin.sum() > 50, f"{thumb.name}: the character is not in the picture"


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
    assert sorted(ours) == sorted(template_path(p).stem for p in TWIN_FILES)


# ------------------------------------------------------------------------------------------------ guiding an artist
def _template(twin) -> dict:
    return json.loads(twin.template_path.read_text())


def test_template_cards_have_human_titles_and_the_demo_comes_first():
    """Both front-ends title a custom pack's template card (and describe it) with its file name, in the server's
    sorted order: the names are the titles, numbered, and the demo is the first, marked to start with."""
    ordered = [t.template_path.stem for t in twins()]
    assert ordered == sorted(ordered)
    assert ordered[0].startswith("1 Start here") and twins()[0].name == "charactershot_demo"
    for i, stem in enumerate(ordered, 1):
        assert stem.startswith(f"{i} ") and "_" not in stem and stem == stem.strip(), stem
        assert 12 <= len(stem) <= 64, stem
    assert not list(OUT.glob("charactershot_*")), "old template files left in example_workflows/"


@pytest.mark.parametrize("twin", twins(), ids=lambda t: t.name)
def test_every_template_has_a_note_that_guides(twin):
    notes = [n for n in _template(twin)["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1, f"{twin.template_path.name}: expected one Markdown note"
    text = notes[0]["widgets_values"][0]
    assert text == twin.note and text.startswith("## ")
    for part in ("**What it does.**", "**Needs", "How long"):
        assert part in text or (part == "**Needs" and "**Model files**" in text), (twin.name, part)
    if twin.name == "charactershot_demo":
        assert "Start here" in text.splitlines()[0]
    # the model files it needs are named with their folder
    classes = {n["class_type"] for n in twin.prompt.values()}
    if "CharacterShotModelLoader" in classes or "CharacterShotVAELoader" in classes:
        assert "models/charactershot/CharacterShot/" in text
    if "ImageOnlyCheckpointLoader" in classes:
        assert "sv3d_p.safetensors" in text and "models/checkpoints/" in text
    for node in twin.optional.values():  # an optional path is explained, with the pack it needs
        info = twin.ui_only.get(node["class_type"])
        if info:
            assert info["cnr_id"] in text


@pytest.mark.parametrize("twin", twins(), ids=lambda t: t.name)
def test_every_node_names_its_pack(twin):
    """The newest front-end names a missing node's pack from properties.cnr_id / aux_id (ver: the version)."""
    pack = {"name": PACK["name"]}
    for node in _template(twin)["nodes"]:
        if node["type"] == "MarkdownNote":
            continue
        props = node["properties"]
        assert props["Node name for S&R"] == node["type"]
        if node["type"].startswith("CharacterShot"):
            assert props["cnr_id"] == pack["name"] == "charactershot" and props["ver"] == PACK["version"]
        elif node["type"] in twin.ui_only:
            spec = twin.ui_only[node["type"]]
            assert props["cnr_id"] == spec["cnr_id"] and props["aux_id"] == spec["aux_id"] and props["ver"]
        else:
            assert props["cnr_id"] == "comfy-core", node


def test_pack_id_is_the_pyproject_name():
    import tomllib

    project = tomllib.loads((OUT.parent / "pyproject.toml").read_text())["project"]
    assert PACK == {"name": project["name"], "version": project["version"]}


def test_flagship_names_its_third_party_pack_and_keeps_it_optional():
    twin = read_twin(TWINS / "charactershot_one_picture_to_4d.json")
    ui = _template(twin)
    dw = [n for n in ui["nodes"] if n["type"] == "DWPreprocessor"]
    assert len(dw) == 2
    for n in dw:
        assert n["properties"]["cnr_id"] == "comfyui_controlnet_aux"
        assert n["properties"]["aux_id"] == "Fannovel16/comfyui_controlnet_aux"
        assert n["mode"] == 4, "DWPose is the optional path: bypassed in the template"
    # nothing the prompt runs needs the third-party pack or a file the pack does not ship
    assert not {n["class_type"] for n in twin.prompt.values()} & set(twin.ui_only)
    assert {n["class_type"] for n in twin.prompt.values()}.isdisjoint({"LoadVideo", "GetVideoComponents"})


def test_flagship_runs_on_the_shipped_samples(comfy):
    """The samples the pack ships reach ComfyUI's input folder when the pack loads, are in the lists the editor
    offers (so it flags nothing before a run) and load through the flagship's own loaders, up to the pose frames
    the multi-view sampler takes and the picture SV3D gets."""
    from charactershot_core.samples import FILES, SOURCE, sample_name

    total = sum((Path(SOURCE) / f).stat().st_size for f in FILES)
    assert total < 300_000, total
    for f in FILES:
        assert (comfy.input_dir / sample_name(f)).read_bytes() == (Path(SOURCE) / f).read_bytes()
    twin = read_twin(TWINS / "charactershot_one_picture_to_4d.json")
    p = twin.prompt
    info = comfy.object_info()

    def options(node_type, name):  # a combo's list as the editor gets it: [[...], {...}] or ["COMBO", {"options"}]
        spec = info[node_type]["input"]["required"][name]
        return spec[0] if isinstance(spec[0], list) else spec[1]["options"]

    assert p["1"]["inputs"]["image"] in options("LoadImage", "image")
    for key in ("16", "18"):
        assert p[key]["inputs"]["json_file"] in options("CharacterShotLoadPoseKeypoints", "json_file")
    # the flagship's nodes 1, 2 (the picture for SV3D), 16, 18, 19 (the poses), as templated
    sub = {k: copy.deepcopy(p[k]) for k in ("1", "2", "16", "18", "19")}
    sub["90"] = {"class_type": "PreviewImage", "inputs": {"images": ["19", 0]}}
    sub["91"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    hist = comfy.run(sub, timeout=300)
    poses = hist["outputs"]["90"]["images"]
    assert len(poses) == p["19"]["inputs"]["num_frames"] == 25
    frames = [np.asarray(Image.open(io.BytesIO(comfy.view(f["filename"], f["subfolder"], f["type"]))).convert("RGB"))
              for f in poses]
    assert frames[0].shape == (480, 720, 3)
    drawn = [(f.max(axis=2) > 40).sum() for f in frames]
    assert min(drawn) > 500, drawn  # a skeleton in every frame
    assert np.abs(frames[0].astype(int) - frames[12].astype(int)).max() > 100  # and it moves (the wave)
    pic = hist["outputs"]["91"]["images"][0]
    sq = np.asarray(Image.open(io.BytesIO(comfy.view(pic["filename"], pic["subfolder"], pic["type"]))).convert("RGB"))
    assert sq.shape == (576, 576, 3)
    assert sq[:20].min() >= 250 and (sq.min(axis=2) < 150).sum() > 5000  # the character on white


def test_samples_are_copied_once_and_never_overwrite(tmp_path):
    from charactershot_core.samples import FILES, install_samples, sample_name

    assert sorted(install_samples(str(tmp_path))) == sorted(sample_name(f) for f in FILES)
    edited = tmp_path / sample_name("pose_wave.json")
    edited.write_text("[]")
    assert install_samples(str(tmp_path)) == []  # all there: nothing copied, the edited file kept
    assert edited.read_text() == "[]"
    assert not list(tmp_path.glob("*.partial"))

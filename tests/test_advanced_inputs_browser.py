"""Advanced inputs in the newest front-end (NEWEST_FRONTEND, 1.58+), driven by headless Chromium: the Multi-View
Sampler and Fit 4D Gaussians show only their basic inputs, both on the classic canvas and under Nodes 2.0 (Vue
nodes), the node's own toggle shows the rest, and values set on folded inputs still reach the server: a fit queued
from the page runs with them, as its /history entry shows.

Chromium must be installed (``scripts/setup.sh``); without it these tests fail with the command to install it, unless
CHARSHOT_SKIP_BROWSER=1."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, INSTALL_HINT, Chromium

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
BASIC = {
    "CharacterShotMultiViewSampler": ["seed", "steps"],
    "CharacterShotFit4DGaussians": ["iterations", "seconds", "scale"],
}
FOLDED = {
    "CharacterShotMultiViewSampler": ["cfg", "scheduler", "num_frames", "dynamic_cfg", "group_size", "groups",
                                      "low_memory", "camera_source", "reuse_finished", "ray_address", "execution"],
    "CharacterShotFit4DGaussians": ["sh_degree", "batch_views", "initial_gaussians", "neighbour_weight",
                                    "rigidity_weight", "densify", "backend", "seed", "preview_every", "motion_model",
                                    "background_estimate", "appearance_correction", "camera_refinement",
                                    "robust_loss", "repair_lost_parts", "colour_field"],
}


@pytest.fixture(scope="module")
def page(comfy_newest):
    if not CHROMIUM:
        if os.environ.get("CHARSHOT_SKIP_BROWSER") == "1":
            pytest.skip(INSTALL_HINT)
        pytest.fail(f"{INSTALL_HINT}; or set CHARSHOT_SKIP_BROWSER=1 to skip the browser tests", pytrace=False)
    comfy_newest.request("/settings/Comfy.TutorialCompleted", data=b"true", method="POST")
    b = Chromium(comfy_newest.base)
    try:
        b.page.wait_for("!!(window.app && window.app.graph && window.app.extensions && window.app.extensions.length > 5)")
        b.page.eval("(() => { for (const x of document.querySelectorAll('.p-dialog-close-button')) x.click(); return true; })()")
        yield b.page
    finally:
        b.close()


def _setting(page, name: str, value) -> None:
    page.eval(f"(async () => {{ await window.app.extensionManager.setting.set({json.dumps(name)}, "
              f"{json.dumps(value)}); return true; }})()")


def _add_nodes(page) -> None:
    """A fresh graph: Synthetic Character -> Fit 4D Gaussians -> Preview Any (the fit's summary), and a sampler."""
    page.eval("""(async () => {
        window.app.graph.clear();
        const add = (type, x, y) => { const n = LiteGraph.createNode(type); n.pos = [x, y]; window.app.graph.add(n); return n; };
        const synth = add('CharacterShotSyntheticCharacter', 20, 40);
        const fit = add('CharacterShotFit4DGaussians', 420, 40);
        const show = add('PreviewAny', 820, 40);
        add('CharacterShotMultiViewSampler', 20, 520);
        synth.connect(0, fit, 0);
        fit.connect(1, show, 0);
        window.app.canvas.ds.offset = [0, 0]; window.app.canvas.ds.scale = 0.8;
        window.app.canvas.setDirty(true, true);
        return true; })()""")


def _surfaces(page, cls: str) -> dict[str, dict[str, str]]:
    """Where the front-end shows each input widget of the node: {name: {canvas, vueNode, panel}} -> shown / advanced
    (folded until the node's "Show advanced inputs") / never."""
    return page.eval(f"""(() => {{
        const n = window.app.graph._nodes.find(n => n.type === {json.dumps(cls)});
        const order = n.constructor.nodeData.input_order;
        const names = new Set((order.required || []).concat(order.optional || []));
        return Object.fromEntries(n.widgets.filter(w => names.has(w.name)).map(w => {{ const s = w.visibility.surfaces;
            return [w.name, {{canvas: s.canvas, vueNode: s.vueNode, panel: s.panel}}]; }})); }})()""")


def _in_view(surfaces: dict, surface: str) -> list[str]:
    return [name for name, s in surfaces.items() if s[surface] == "shown"]


@pytest.mark.parametrize("cls", sorted(BASIC))
def test_folded_inputs_are_marked_for_nodes_2_and_the_panel(page, cls):
    """The front-end's own record of each widget: basic ones shown, the others folded in Nodes 2.0 and in the
    properties panel. The classic canvas of this front-end draws every widget of every node (core's advanced inputs
    too), as before."""
    _setting(page, "Comfy.VueNodes.Enabled", False)
    _add_nodes(page)
    surfaces = _surfaces(page, cls)
    assert _in_view(surfaces, "vueNode") == BASIC[cls]
    assert _in_view(surfaces, "panel") == BASIC[cls]
    assert sorted(n for n, s in surfaces.items() if s["vueNode"] == "advanced") == sorted(FOLDED[cls])


@pytest.mark.parametrize("cls", sorted(BASIC))
def test_only_basic_inputs_are_in_view_under_nodes_2(page, cls):
    """Nodes 2.0 draws widgets as HTML: only the basic ones are in the node, with a button to show the rest."""
    _setting(page, "Comfy.Node.AlwaysShowAdvancedWidgets", False)
    _setting(page, "Comfy.VueNodes.Enabled", True)
    try:
        _add_nodes(page)
        node_id = page.eval(f"String(window.app.graph._nodes.find(n => n.type === {json.dumps(cls)}).id)")
        sel = f"document.querySelector('[data-node-id=\"{node_id}\"]')"
        page.wait_for(f"!!{sel}", timeout=30)
        time.sleep(1.0)
        text = page.eval(f"{sel}.innerText")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(ARTIFACTS / f"advanced_inputs_{cls}.png")
        for name in BASIC[cls]:
            assert name in text, (name, text)
        for name in FOLDED[cls]:
            assert f"\n{name}\n" not in f"\n{text}\n", (name, text)
        assert page.eval(f"!!{sel}.querySelector('[data-testid=\"advanced-inputs-button\"]')")
    finally:
        _setting(page, "Comfy.VueNodes.Enabled", False)


def test_folded_values_reach_the_server(page, comfy_newest):
    """Values given to folded inputs go into the queued prompt: the sampler's, as the page sends them, and a small
    fit queued from the page, which runs with them (its /history entry holds the prompt the server executed)."""
    _setting(page, "Comfy.VueNodes.Enabled", False)
    _add_nodes(page)
    folded_fit = {"batch_views": 3, "initial_gaussians": 600, "densify": False, "backend": "torch", "seed": 7,
                  "preview_every": 0, "motion_model": "table", "sh_degree": 1}
    basic_fit = {"iterations": 12, "seconds": 0.0, "scale": 1.0}
    folded_sampler = {"cfg": 4.5, "low_memory": True, "groups": "0, 2", "scheduler": "ddim"}
    page.eval(f"""(() => {{
        const node = (t) => window.app.graph._nodes.find(n => n.type === t);
        const set = (n, values) => {{ for (const [k, v] of Object.entries(values)) n.widgets.find(w => w.name === k).value = v; }};
        set(node('CharacterShotSyntheticCharacter'), {{num_frames: 2, scale: 0.1, num_gaussians: 600, backend: 'torch'}});
        set(node('CharacterShotFit4DGaussians'), {json.dumps({**folded_fit, **basic_fit})});
        set(node('CharacterShotMultiViewSampler'), {json.dumps(folded_sampler)});
        return true; }})()""")
    for cls, folded in (("CharacterShotFit4DGaussians", folded_fit), ("CharacterShotMultiViewSampler", folded_sampler)):
        assert not set(_in_view(_surfaces(page, cls), "vueNode")) & set(folded), cls
    sent = page.eval("(async () => (await window.app.graphToPrompt()).output)()")
    sampler = next(n for n in sent.values() if n["class_type"] == "CharacterShotMultiViewSampler")
    assert {k: sampler["inputs"][k] for k in folded_sampler} == folded_sampler

    # the sampler cannot run here (no models): take it out of the graph, queue the rest from the page
    before = set(comfy_newest.get_json("/history"))
    page.eval("""(async () => {
        const s = window.app.graph._nodes.find(n => n.type === 'CharacterShotMultiViewSampler');
        window.app.graph.remove(s);
        await window.app.queuePrompt(0, 1); return true; })()""")
    deadline = time.time() + 600
    entry = None
    while time.time() < deadline:
        new = {k: v for k, v in comfy_newest.get_json("/history").items() if k not in before}
        entry = next(iter(new.values()), None)
        if entry and entry.get("status", {}).get("completed") is not None:
            break
        time.sleep(0.2)
    assert entry and entry["status"]["status_str"] == "success", json.dumps(entry)[:3000] if entry else "not queued"
    executed = entry["prompt"][2]
    fit = next(n for n in executed.values() if n["class_type"] == "CharacterShotFit4DGaussians")
    assert {k: fit["inputs"][k] for k in folded_fit} == folded_fit
    summary = "\n".join(next(o["text"] for o in entry["outputs"].values() if "text" in o))
    assert "fit: 12 iterations" in summary, summary


def _missing_models_text(page, template: dict) -> str:
    page.eval("(() => { for (const x of document.querySelectorAll('.p-dialog-close-button')) x.click(); return true; })()")
    page.eval(f"(async () => {{ await window.app.loadGraphData({json.dumps(template)}); return true; }})()")
    page.wait_for("[...document.querySelectorAll('button')].some(b => b.innerText.includes('View details'))", timeout=60)
    page.eval("(() => { [...document.querySelectorAll('button')].find(b => b.innerText.includes('View details')).click(); "
              "return true; })()")
    page.wait_for("document.body.innerText.includes('Missing Models')", timeout=30)
    text = page.eval("document.body.innerText")
    start = text.index("Missing Models")
    end = text.find("Missing Inputs", start)
    return text[start:end if end > start else start + 600]


def test_model_metadata_lets_the_front_end_offer_the_download(page):
    """A template loader's ``properties.models`` (scripts/make_example_workflows.py add_model_metadata) gives the
    front-end what it needs to offer the missing file's download: without it, the same model is listed with no
    download. (1.58 checks only widget values that are file names: our loaders' folder values such as
    'CharacterShot/' are refused when the prompt is queued instead, naming the download and the folder.)"""
    from scripts.make_example_workflows import template_path

    _setting(page, "Comfy.VueNodes.Enabled", False)
    template = json.loads(template_path("charactershot_one_picture_to_4d.json").read_text())
    declared = [m for n in template["nodes"] for m in n.get("properties", {}).get("models", [])]
    assert {"name": "sv3d_p.safetensors", "directory": "checkpoints",
            "url": "https://huggingface.co/stabilityai/sv3d/resolve/main/sv3d_p.safetensors"} in declared
    assert any(m["name"] == "CharacterShot/" and m["url"] == "https://huggingface.co/Gaojunyao/CharacterShot"
               for m in declared)
    with_metadata = _missing_models_text(page, template)
    lines = with_metadata.splitlines()
    assert "sv3d_p.safetensors" in lines and "Download" in lines, with_metadata
    for n in template["nodes"]:
        n.get("properties", {}).pop("models", None)
    without = _missing_models_text(page, template)
    lines = without.splitlines()
    assert "sv3d_p.safetensors" in lines and "Download" not in lines, without

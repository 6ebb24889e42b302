"""The pack in ComfyUI's real front end, driven by headless Chromium: every test runs twice, on the front-end the host
bundles (1.32.9 for ComfyUI 0.3.75) and on the newest one (NEWEST_FRONTEND, served with --front-end-root).

Checks what only a browser can: the web extension loads, every template opens with no missing node and readable
(groups, no overlapping nodes before or after the demo's run, the saved zoom: tests/template_layout.py), the editor turns
each template back into exactly its tested API twin (widget order, seed control widgets), and the saved-file list
appears under a node without leaking into the prompt; and the inline 4D preview (docs/viewer.md): a small synthetic
fit queued from the page, the widget's drawing, frame slider, snap to a training camera, serialisation, keyboard,
hiding, bad files, the no-WebGL2 fallback and clean-up; the widget under Nodes 2.0 (Vue nodes: real clicks and drags,
kept out of 1.58's side panel) and Preview 4D inside a subgraph (execution id "12:5"). Chromium must be installed (``scripts/setup.sh`` installs it
when run as root); without it these tests fail with the command to install it, unless CHARSHOT_SKIP_BROWSER=1.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charactershot_core.gaussians.formats import read_bundle
from scripts.make_example_workflows import TWINS, read_twin, template_path
from tests.browser import CHROMIUM, INSTALL_HINT, Chromium
from tests.comfy_host import NEWEST_FRONTEND
from tests.template_layout import check_demo_after_a_run, check_opens_readable

pytestmark = pytest.mark.e2e


FRONTENDS = ("bundled", "newest")


@pytest.fixture(scope="module", params=FRONTENDS)
def frontend(request) -> str:
    """Which front-end the module's tests run on. Module scope: pytest runs all tests on one front-end, then all on
    the other, with one server, one browser and one fit each."""
    return request.param


@pytest.fixture(scope="module")
def host(frontend, request):
    """The server each browser test runs against: the host with its bundled front-end (``comfy``, 1.32.9 for ComfyUI
    0.3.75), or the same host with the newest front-end (``comfy_newest``, tests/comfy_host.py NEWEST_FRONTEND)."""
    return request.getfixturevalue("comfy" if frontend == "bundled" else "comfy_newest")


@pytest.fixture(scope="module")
def browser(host):
    if not CHROMIUM:
        if os.environ.get("CHARSHOT_SKIP_BROWSER") == "1":
            pytest.skip(INSTALL_HINT)
        pytest.fail(f"{INSTALL_HINT}; or set CHARSHOT_SKIP_BROWSER=1 to skip the browser tests", pytrace=False)
    # a first visit opens the template browser over the graph: mark the tutorial as seen first
    host.request("/settings/Comfy.TutorialCompleted", data=b"true", method="POST")
    b = Chromium(host.base)
    try:
        b.page.wait_for("!!(window.app && window.app.graph && window.app.extensions && window.app.extensions.length > 5)")
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def page(browser):
    return browser.page


def test_setup_installs_the_newest_frontend_the_tests_name():
    text = (Path(__file__).resolve().parent.parent / "scripts" / "setup.sh").read_text()
    assert f"frontend_version={NEWEST_FRONTEND}\n" in text, "scripts/setup.sh and tests/comfy_host.py pin different front-ends"


def test_web_extension_is_registered(page):
    page.wait_for("window.app.extensions.some(e => e.name === 'charactershot.savedFiles')", timeout=30)


@pytest.mark.parametrize("twin", sorted(TWINS.glob("*.json")), ids=lambda p: p.stem)
def test_template_opens_readable_and_serialises_to_its_twin(page, twin):
    template = json.loads(template_path(twin).read_text())
    loaded = page.eval(f"""(async () => {{
        await window.app.loadGraphData({json.dumps(template)});
        return window.app.graph._nodes.map(n => [String(n.id), n.type, !!LiteGraph.registered_node_types[n.type]]);
    }})()""")
    spec = read_twin(twin)
    # only the third-party nodes the twin declares (DWPose...) may be missing here: this host does not install them
    third_party = {k for k, n in {**spec.prompt, **spec.optional}.items() if n["class_type"] in spec.ui_only}
    assert loaded and all(known or key in third_party for key, _, known in loaded), f"missing node types: {loaded}"
    # readable: stages as groups, no overlapping nodes, the saved zoom with the note in sight (tests/template_layout.py)
    check_opens_readable(page, spec)
    prompt = page.eval("(async () => (await window.app.graphToPrompt()).output)()")
    expected = {k: n for k, n in spec.prompt.items() if k not in third_party}
    assert sorted(k for k in prompt if k not in third_party) == sorted(expected)
    for key, node in expected.items():
        got = prompt[key]
        assert got["class_type"] == node["class_type"]
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value and value[0] in third_party:
                continue  # a link from a node the editor cannot know
            assert got["inputs"].get(name) == value, f"node {key} {node['class_type']}.{name}: {got['inputs'].get(name)!r} != {value!r}"


def test_saved_files_appear_under_the_node_and_stay_out_of_the_prompt(page):
    template = json.loads(template_path("charactershot_4d_synthetic.json").read_text())
    names = page.eval(f"""(async () => {{
        await window.app.loadGraphData({json.dumps(template)});
        const n = window.app.graph._nodes.find(n => n.type === 'CharacterShotSave4DGaussians');
        const detail = {{node: String(n.id), display_node: String(n.id),
                         output: {{charshot_4d: [{{filename: '4d_00001_frame_00001.ply', subfolder: 'charactershot',
                                                  type: 'output'}}]}}}};
        window.app.api.dispatchCustomEvent('executed', detail);
        const w = (n.widgets || []).find(w => w.name === 'charshot_saved_files');
        const links = w ? [...w.element.querySelectorAll('a')].map(a => a.textContent + ' ' + a.getAttribute('href')) : [];
        const p = await window.app.graphToPrompt();
        return {{links, inputs: Object.keys(p.output[String(n.id)].inputs)}};
    }})()""")
    assert names["links"] and names["links"][0].startswith("charactershot/4d_00001_frame_00001.ply ")
    assert "/view?filename=4d_00001_frame_00001.ply" in names["links"][0]
    assert "charshot_saved_files" not in names["inputs"]


@pytest.mark.parametrize("old_value", ["", "10.0.0.5:6379"])
def test_a_workflow_saved_with_ray_address_keeps_its_widgets_in_place(page, comfy, old_value):
    """A Multi-View Sampler saved before 'execution' existed has one widget value fewer, the last one ray_address.
    The editor fills widgets by position: the old value must land on ray_address (so it is refused by name, never
    read as something else) and execution must take its default; a non-empty one is refused when queued."""
    info = comfy.object_info("CharacterShotMultiViewSampler")["CharacterShotMultiViewSampler"]
    assert info["input_order"]["optional"][-2:] == ["ray_address", "execution"]
    template = json.loads(template_path("charactershot_multiview_from_views.json").read_text())
    node = next(n for n in template["nodes"] if n["type"] == "CharacterShotMultiViewSampler")
    assert node["widgets_values"][-2:] == ["", "here"]
    node["widgets_values"] = node["widgets_values"][:-2] + [old_value]  # the old layout: ..., reuse_finished, ray_address
    prompt = page.eval(f"""(async () => {{
        await window.app.loadGraphData({json.dumps(template)});
        return (await window.app.graphToPrompt()).output;
    }})()""")
    got = prompt[str(node["id"])]["inputs"]
    assert (got["ray_address"], got["execution"], got["reuse_finished"]) == (old_value, "here", True), got
    status, body = comfy.queue(prompt)
    assert status == 400  # the template's full-size models are not on the test host anyway
    errors = [e["details"] for e in body.get("node_errors", {}).get(str(node["id"]), {}).get("errors", [])]
    refused = [d for d in errors if d.startswith("ray_address - this input is no longer used and must be empty")]
    assert bool(refused) == bool(old_value), errors


# ------------------------------------------------------------------------------------ the inline 4D preview
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FRAMES, VIEWS = 3, 21
PREVIEW_PROMPT = {
    "1": {"class_type": "CharacterShotSyntheticCharacter",
          "inputs": {"motion": "wave", "num_frames": FRAMES, "scale": 0.25, "seed": 0, "num_gaussians": 1500,
                     "backend": "torch"}},
    "2": {"class_type": "CharacterShotFit4DGaussians",
          "inputs": {"multiview": ["1", 0], "iterations": 80, "seconds": 0.0, "scale": 1.0, "sh_degree": 0,
                     "batch_views": 2, "initial_gaussians": 4000, "neighbour_weight": 1.0, "rigidity_weight": 0.0,
                     "densify": False, "backend": "torch", "seed": 0, "preview_every": 0}},
    "3": {"class_type": "CharacterShotPreview4D", "inputs": {"gaussians": ["2", 0], "times": "", "turntable_frames": 4}},
    "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 1]}},
}
JS_HELPERS = """
window.__cs = window.__cs || {
  node: (cls) => window.app.graph._nodes.find(n => n.comfyClass === cls),
  viewer: (cls) => window.__cs.node(cls)?._charshotPreview?.viewer,
  executed: [], errors: [],
  // pixels that differ from the background by more than 24 levels in some channel
  drawn: (cap, bg) => { let n = 0; const d = cap.data;
    for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - bg[0]) > 24 || Math.abs(d[i+1] - bg[1]) > 24 ||
        Math.abs(d[i+2] - bg[2]) > 24) n++; return n; },
  b64: (u8) => { let s = ''; for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000)); return btoa(s); },
  settle: async (v) => { for (let i = 0; i < 400; i++) { if (!v.scene) return false; if (v.displayedFrame === v.wantFrame && !v.inflight &&
      v.sortedViewId === v.viewId) return true; await new Promise(r => setTimeout(r, 25)); } return false; },
};
if (!window.__csHooked) {
  window.__csHooked = true;
  window.app.api.addEventListener('executed', e => window.__cs.executed.push(e.detail));
  window.app.api.addEventListener('execution_error', e => window.__cs.errors.push(e.detail));
}
true
"""


def _capture(page, expr: str) -> np.ndarray:
    r = page.eval(f"""(async () => {{ const v = {expr}; await window.__cs.settle(v); const c = v.capture();
        return {{w: c.width, h: c.height, data: window.__cs.b64(c.data)}}; }})()""")
    return np.frombuffer(base64.b64decode(r["data"]), np.uint8).reshape(r["h"], r["w"], 4)[..., :3]


@pytest.fixture(scope="module")
def fitted(page):
    """The small synthetic fit run through the page (queued from the editor), its preview loaded in the node."""
    return run_preview_fit(page)


def run_preview_fit(page) -> dict:
    page.eval(JS_HELPERS)
    # a first visit opens the template browser over the graph: close it
    page.eval("(() => { for (const b of document.querySelectorAll('.p-dialog-close-button')) b.click(); return true; })()")
    page.eval(f"""(async () => {{
        await window.app.loadApiJson({json.dumps(PREVIEW_PROMPT)}, 'preview4d.json');
        const n = window.__cs.node('CharacterShotPreview4D');
        window.app.canvas.ds.offset = [0, 0]; window.app.canvas.ds.scale = 1;
        n.pos = [130, 170]; n.setSize([470, 560]);
        let k = 0;
        for (const o of window.app.graph._nodes) if (o !== n) {{ o.pos = [680 + 360 * (k % 2), 170 + 330 * Math.floor(k / 2)]; k++; }}
        window.app.canvas.setDirty(true, true);
        await window.app.queuePrompt(0, 1);
        return true; }})()""")
    page.wait_for("window.__cs.errors.length > 0 || !!(window.__cs.viewer('CharacterShotPreview4D')?.scene && "
                  "window.__cs.viewer('CharacterShotPreview4D').displayedFrame >= 0)", timeout=400)
    errors = page.eval("window.__cs.errors")
    assert not errors, errors
    images = page.eval("window.__cs.executed.filter(d => d.output && d.output.images).flatMap(d => d.output.images)")
    turntable = page.eval("window.__cs.executed.flatMap(d => (d.output && d.output.charshot_turntable) || [])")
    assert len(images) == FRAMES * VIEWS, len(images)
    return {"images": images, "turntable": turntable}


def _training_image(comfy, fitted, view: int, frame: int) -> np.ndarray:
    f = fitted["images"][view * FRAMES + frame]
    return np.asarray(Image.open(io.BytesIO(comfy.view(f["filename"], f["subfolder"], f["type"]))).convert("RGB"))


def test_preview_widget_draws_the_character(page, fitted):
    V = "window.__cs.viewer('CharacterShotPreview4D')"
    info = page.eval(f"({{count: {V}.scene.count, frames: {V}.scene.frames, cams: {V}.cameras().views.length, "
                     f"msg: {V}.message, gl: !!{V}.gl}})")
    assert info["gl"] and info["frames"] == FRAMES and info["cams"] == VIEWS and info["count"] > 1000, info
    img = _capture(page, V)
    drawn = (np.abs(img.astype(int) - 255).max(-1) > 24).mean()
    assert 0.02 < drawn < 0.8, f"fraction of non-background pixels {drawn:.3f}"
    ARTIFACTS.mkdir(exist_ok=True)
    Image.fromarray(img).save(ARTIFACTS / "preview4d_canvas.png")
    rect = page.eval(f"(() => {{ const r = {V}.root.getBoundingClientRect(); return {{x: r.x, y: r.y, w: r.width, h: r.height}}; }})()")
    page.eval("window.app.canvas.setDirty(true, true); true")
    page.screenshot(ARTIFACTS / "preview4d_node.png",
                    {"x": max(0, rect["x"] - 50), "y": max(0, rect["y"] - 110), "width": rect["w"] + 100,
                     "height": rect["h"] + 130})
    page.screenshot(ARTIFACTS / "preview4d_page.png")


def _temp(comfy) -> Path:
    """ComfyUI's temp folder (``--temp-directory X`` serves X/temp)."""
    return comfy.temp_dir / "temp"


def synthetic_bundle(path, n: int = 4000, frames: int = 5, motion: str = "wave") -> str:
    """The synthetic character's exact Gaussians (known motion) as a 4D bundle with the official rig's cameras."""
    from charactershot_core.cameras import official_rig
    from charactershot_core.gaussians.formats import write_bundle
    from charactershot_core.gaussians.synthetic import SyntheticCharacter

    ch = SyntheticCharacter(motion, seed=0, n_gaussians=n)
    times = [i / max(1, frames - 1) for i in range(frames)]
    g = [ch.gaussians_at(t) for t in times]
    write_bundle(path, {"colors": g[0]["colors"], "opacities": g[0]["opacities"], "scales": g[0]["scales"]},
                 {"positions": np.stack([x["means"].numpy() for x in g]),
                  "rotations": np.stack([x["quats"].numpy() for x in g])}, times,
                 meta={"cameras": official_rig().to_dict()})
    return str(path)


STANDALONE = """(async () => {{
    const Viewer = window.__cs.viewer('CharacterShotPreview4D').constructor;
    const v = new Viewer(); v.root.style.cssText += 'position: fixed; left: 0; top: 0; width: {w}px; height: {h}px; z-index: 9999;';
    document.body.append(v.root); window.__csStandalone = v;
    await v.loadUrl(window.app.api.apiURL('/view?filename={name}&subfolder={sub}&type=temp'), '{name}');
    await window.__cs.settle(v);
    return {{message: v.message, count: v.scene ? v.scene.count : 0}}; }})()"""


def test_frame_slider_changes_the_picture(page, host, fitted):
    # the synthetic character's exact motion (the arm rises in the middle of the wave), so the change is known
    (_temp(host) / "charshot_gt").mkdir(exist_ok=True)
    synthetic_bundle(_temp(host) / "charshot_gt" / "wave.cs4d", n=4000, frames=5)
    r = page.eval(STANDALONE.format(w=384, h=384 + 60, name="wave.cs4d", sub="charshot_gt"))
    assert r["count"] == 4000 and not r["message"], r
    V = "window.__csStandalone"
    try:
        # the page's decoder agrees with the Python reader (docs/4d_bundle_format.md)
        ref = read_bundle(_temp(host) / "charshot_gt" / "wave.cs4d")
        got = page.eval(f"""(() => {{ const s = {V}.scene, p = s.pos, r = s.rot, out = [];
            for (let i = 0; i < s.count; i += 97) for (let c = 0; c < 3; c++) out.push(p.min[c] + p.q[(3 * s.count) * 3 + 3 * i + c] * p.step[c]);
            const rr = []; for (let i = 0; i < s.count; i += 97) for (let c = 0; c < 4; c++) rr.push(r.min[c] + r.q[(4 * s.count) * 3 + 4 * i + c] * r.step[c]);
            const col = []; for (let i = 0; i < s.count; i += 97) col.push(...s.rgba.subarray(4 * i, 4 * i + 4));
            return {{pos: out, rot: rr, rgba: col}}; }})()""")
        np.testing.assert_allclose(np.array(got["pos"]).reshape(-1, 3), ref["frames"]["positions"][3][::97], atol=1e-5)
        np.testing.assert_allclose(np.array(got["rot"]).reshape(-1, 4), ref["frames"]["rotations"][3][::97], atol=1e-5)
        rgba = np.array(got["rgba"]).reshape(-1, 4) / 255.0
        np.testing.assert_allclose(rgba[:, :3], ref["static"]["colors"][::97], atol=1e-6)
        np.testing.assert_allclose(rgba[:, 3], ref["static"]["opacities"][::97], atol=1e-6)
        first = _capture(page, V)
        page.eval(f"""(() => {{ const s = {V}.ui.slider; s.value = '2';
            s.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()""")
        page.wait_for(f"{V}.displayedFrame === 2", timeout=20)
        mid = _capture(page, V)
        changed = (np.abs(first.astype(int) - mid.astype(int)).max(-1) > 40).mean()
        assert changed > 0.005, f"only {changed:.4f} of the pixels changed between frame 1 and frame 3"
        assert page.eval(f"{V}.ui.label.textContent") == "3/5"
        assert (np.abs(first.astype(int) - 255).max(-1) > 24).mean() > 0.02  # and something was drawn
    finally:
        page.eval(f"{V}.dispose(); {V}.root.remove(); true")


@pytest.mark.parametrize("view", [0, 5])
def test_snap_to_training_camera_matches_its_image(page, host, fitted, view):
    V = "window.__cs.viewer('CharacterShotPreview4D')"
    frame = 1
    page.eval(f"{V}.setFrame({frame}); {V}.snapToCamera({view}); true")
    page.wait_for(f"{V}.displayedFrame === {frame}", timeout=20)
    img = _capture(page, V)
    r = page.eval(f"{V}.snapRect()")
    train = _training_image(host, fitted, view, frame)
    h, w = train.shape[:2]
    crop = Image.fromarray(img[int(round(r["y"])):int(round(r["y"] + r["h"])), int(round(r["x"])):int(round(r["x"] + r["w"]))])
    got = np.asarray(crop.resize((w, h), Image.BILINEAR)).astype(np.float32) / 255
    err = np.abs(got - train.astype(np.float32) / 255).mean()
    other = _training_image(host, fitted, (view + 5) % VIEWS, frame).astype(np.float32) / 255
    err_other = np.abs(got - other).mean()
    Image.fromarray((np.concatenate([got, train / 255.0], 1) * 255).astype(np.uint8)).save(
        ARTIFACTS / f"preview4d_snap_view{view}.png")
    print(f"snap to view {view}: mean abs error {err:.4f} (against view {(view + 5) % VIEWS}: {err_other:.4f})")
    assert err < 0.03 and err < 0.6 * err_other, f"snap to view {view}: error {err:.4f}, other view {err_other:.4f}"
    page.eval(f"{V}.unsnap(); true")


def test_preview_state_stays_out_of_prompt_and_workflow(page, fitted):
    r = page.eval("""(async () => {
        const n = window.__cs.node('CharacterShotPreview4D');
        const p = await window.app.graphToPrompt();
        const saved = window.app.graph.serialize();
        const sn = saved.nodes.find(x => String(x.id) === String(n.id)); // 1.58: node ids are strings, saved as numbers
        const named = (n.widgets || []).filter(w => w.name !== 'charshot_preview4d').map(w => w.name);
        return {inputs: Object.keys(p.output[String(n.id)].inputs), values: sn.widgets_values, named,
                text: JSON.stringify(saved), promptText: JSON.stringify(p.output),
                hasWidget: (n.widgets || []).some(w => w.name === 'charshot_preview4d')};
    })()""")
    assert r["hasWidget"]
    assert "charshot_preview4d" not in r["inputs"]
    assert sorted(r["inputs"]) == ["gaussians", "times", "turntable_frames"]
    assert r["values"] == ["", 4], r["values"]  # only the node's own widgets, in order
    for key in ("charshot_preview4d", "preview4d_", ".cs4d", "displayedFrame"):
        assert key not in r["text"] and key not in r["promptText"], key


def test_keys_in_the_widget_do_not_reach_the_graph(page, fitted):
    V = "window.__cs.viewer('CharacterShotPreview4D')"
    page.eval(f"""(() => {{ const n = window.__cs.node('CharacterShotPreview4D');
        window.app.canvas.selectNode(n); {V}.pause(); {V}.root.focus(); return document.activeElement === {V}.root; }})()""")
    page.key("Delete", "Delete", 46)
    page.key(" ", "Space", 32)
    assert page.eval("!!window.__cs.node('CharacterShotPreview4D')"), "Delete in the widget removed the node"
    assert page.eval(f"{V}.playing") is True, "space did not reach the widget"
    page.eval(f"{V}.pause(); true")


def test_hidden_widget_stops_drawing(page, fitted):
    V = "window.__cs.viewer('CharacterShotPreview4D')"
    page.eval(f"{V}.play(); true")
    page.wait_for(f"{V}.stats.draws > 5", timeout=10)
    page.eval(f"{V}.root.style.display = 'none'; true")
    page.wait_for(f"{V}.visible === false", timeout=5)
    before = page.eval(f"{V}.stats.draws")
    page.eval("new Promise(r => setTimeout(r, 600))")
    assert page.eval(f"{V}.stats.draws") == before
    page.eval(f"{V}.root.style.display = ''; true")
    page.wait_for(f"{V}.stats.draws > {before}", timeout=5)
    # collapsing the node in the editor hides the widget too
    page.eval("(() => { const n = window.__cs.node('CharacterShotPreview4D'); n.collapse(true); "
              "window.app.canvas.setDirty(true, true); return true; })()")
    page.wait_for(f"{V}.visible === false", timeout=5)
    before = page.eval(f"{V}.stats.draws")
    page.eval("new Promise(r => setTimeout(r, 600))")
    assert page.eval(f"{V}.stats.draws") == before
    page.eval("(() => { const n = window.__cs.node('CharacterShotPreview4D'); n.collapse(true); "
              "window.app.canvas.setDirty(true, true); return true; })()")
    page.wait_for(f"{V}.visible === true && {V}.stats.draws > {before}", timeout=5)
    page.eval(f"{V}.pause(); true")


@functools.cache  # the same bytes for both front-ends: written once
def _bundle_bytes(n: int, frames: int = 2, seed: int = 0, level: int = 6) -> bytes:
    from charactershot_core.gaussians.formats import write_bundle

    rng = np.random.default_rng(seed)
    pos = rng.normal(0, 0.3, (frames, n, 3)).astype(np.float32) + np.array([0, 0, 0.9], np.float32)
    rot = np.tile(np.array([1, 0, 0, 0], np.float32), (frames, n, 1))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "b.cs4d")
        write_bundle(path, {"colors": rng.random((n, 3)), "opacities": np.full(n, 0.8),
                            "scales": np.full((n, 3), 0.01)}, {"positions": pos, "rotations": rot},
                     [i / max(1, frames - 1) for i in range(frames)], level=level)
        return open(path, "rb").read()


def test_bad_files_show_clear_messages(page, host, fitted):
    good = _bundle_bytes(2000)
    bad = {
        "truncated.cs4d": good[: len(good) // 2],
        "corrupt.cs4d": good[:400] + bytes(b ^ 0x5A for b in good[400:900]) + good[900:],
        "newer.cs4d": good[:4] + (2).to_bytes(4, "little") + good[8:],
        "mesh.ply": b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                    b"property float z\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n" + bytes(12),
        "big.cs4d": _bundle_bytes(2_000_000, frames=1, level=1),
    }
    # a good static .ply with an extra element after the vertices and extra properties loads (splats: 300)
    from charactershot_core.gaussians.formats import ply_bytes

    rng = np.random.default_rng(1)
    n = 300
    ply = ply_bytes(rng.normal(0, 0.3, (n, 3)), np.tile([1.0, 0, 0, 0], (n, 1)), np.full((n, 3), -4.0),
                    np.zeros(n), rng.normal(0, 1, (n, 1, 3)))
    head, body = ply.split(b"end_header\n", 1)
    head = head.replace(b"property float x\n", b"property uchar flag\nproperty float x\n", 1)
    rows = np.frombuffer(body, "<f4").reshape(n, -1)
    body = b"".join(b"\x07" + r.tobytes() for r in rows)
    bad["gauss.ply"] = head + b"element camera 1\nproperty float fov\nend_header\n" + body + np.float32(0.7).tobytes()
    (_temp(host) / "charshot_bad").mkdir(exist_ok=True)
    for name, data in bad.items():
        (_temp(host) / "charshot_bad" / name).write_bytes(data)
    expect = {"truncated.cs4d": "truncated", "corrupt.cs4d": "corrupt", "newer.cs4d": "newer CharacterShot",
              "mesh.ply": "no 3D Gaussian properties", "missing.cs4d": "HTTP 404", "big.cs4d": "showing every",
              "gauss.ply": ""}
    for name, needle in expect.items():
        r = page.eval(f"""(async () => {{
            const Viewer = window.__cs.viewer('CharacterShotPreview4D').constructor;
            const v = new Viewer(); v.root.style.cssText += 'position: fixed; left: 0; top: 0; width: 256px; height: 256px;';
            document.body.append(v.root);
            const t0 = performance.now();
            let maxGap = 0, last = performance.now(), ticking = true;
            (function tick() {{ const now = performance.now(); maxGap = Math.max(maxGap, now - last); last = now;
                                if (ticking) setTimeout(tick, 10); }})();
            await v.loadUrl(window.app.api.apiURL('/view?filename={name}&subfolder=charshot_bad&type=temp'), '{name}');
            await window.__cs.settle(v);
            ticking = false;
            const out = {{message: v.message, kind: v.messageKind, count: v.scene ? v.scene.count : 0,
                         total: v.scene ? v.scene.total : 0, ms: performance.now() - t0, info: v.ui.info.textContent,
                         frame: v.displayedFrame, maxGap}};
            v.dispose(); v.root.remove();
            return out; }})()""")
        assert needle in r["message"], (name, r)
        if name == "gauss.ply":
            assert r["count"] == 300 and r["frame"] == 0 and not r["message"], r
        elif name == "big.cs4d":
            assert r["total"] == 2_000_000 and r["count"] <= 600_000 and r["frame"] == 0, r
            assert "decimated" in r["info"], r
            print(f"2M splats: loaded and sorted in {r['ms']:.0f} ms, longest main-thread gap {r['maxGap']:.0f} ms")
            assert r["maxGap"] < 3000, r  # the page keeps running while a huge preview loads
        else:
            assert r["kind"] == "error" and r["count"] == 0, (name, r)
    # the page and the workflow are untouched
    assert page.eval("(async () => !!(await window.app.graphToPrompt()).output)()")


def test_without_webgl2_the_node_shows_the_turntable(page, fitted):
    assert len(fitted["turntable"]) == 4
    r = page.eval(f"""(async () => {{
        const proto = HTMLCanvasElement.prototype, orig = proto.getContext;
        proto.getContext = function (type, opts) {{ return type === 'webgl2' ? null : orig.call(this, type, opts); }};
        let n;
        try {{ n = LiteGraph.createNode('CharacterShotPreview4D'); window.app.graph.add(n); }}
        finally {{ proto.getContext = orig; }}
        window.app.api.dispatchCustomEvent('executed', {{node: String(n.id), display_node: String(n.id),
            output: {{charshot_turntable: {json.dumps(fitted["turntable"])}, charshot_preview: []}}}});
        const v = n._charshotPreview.viewer;
        const out = {{noGL: !!v.noWebGL2, message: v.message, img: v.img.style.display, src: v.img.getAttribute('src')}};
        window.app.graph.remove(n);
        return out; }})()""")
    assert r["noGL"] and "WebGL2 is not available" in r["message"], r
    assert r["img"] == "block" and "turntable_00.png" in r["src"], r


def test_removing_the_node_frees_its_gl_context(page, fitted):
    r = page.eval("""(() => {
        const n = LiteGraph.createNode('CharacterShotPreview4D'); window.app.graph.add(n);
        const v = n._charshotPreview.viewer, gl = v.gl;
        const before = gl.isContextLost();
        window.app.graph.remove(n);
        return {before, after: gl.isContextLost(), disposed: v.disposed, worker: v.worker === null || v.worker === undefined};
    })()""")
    assert r == {"before": False, "after": True, "disposed": True, "worker": True}, r


# ------------------------------------------------------------------- Nodes 2.0, subgraphs (both front-ends)
def _rect(page, expr: str) -> dict:
    return page.eval(f"(() => {{ const r = ({expr}).getBoundingClientRect(); "
                     f"return {{x: r.x, y: r.y, w: r.width, h: r.height, cx: r.x + r.width / 2, cy: r.y + r.height / 2}}; }})()")


def _on_top(page, expr: str, r: dict) -> bool:
    """Whether a real click at the centre of ``r`` lands on the element ``expr`` (nothing of the editor covers it)."""
    return page.eval(f"(() => {{ const e = document.elementFromPoint({r['cx']}, {r['cy']}); "
                     f"return !!e && ({expr}).contains(e); }})()")


def _setting(page, name: str, value) -> None:
    page.eval(f"(async () => {{ await window.app.extensionManager.setting.set({json.dumps(name)}, "
              f"{json.dumps(value)}); return true; }})()")


def test_widget_works_under_vue_nodes(page, host, fitted, frontend):
    """Nodes 2.0 (``Comfy.VueNodes.Enabled``): the front-end moves the widget's element into a Vue node. It draws the
    character, and real clicks and drags on its controls play, scrub, orbit (without dragging the node) and a camera
    choice snaps to that training view; in a front-end with a properties side panel (1.58), the widget stays in the
    node and out of the panel."""
    V = "window.__cs.viewer('CharacterShotPreview4D')"
    N = "window.__cs.node('CharacterShotPreview4D')"
    page.eval(f"{V}.pause(); {V}.unsnap(); {N}.collapsed && {N}.collapse(true); true")
    _setting(page, "Comfy.VueNodes.Enabled", True)
    try:
        page.wait_for(f"!!{V}.root.closest('[data-node-id]') && {V}.visible === true", timeout=30)
        # bring the node into view and wait for the Vue node's layout
        page.eval(f"""(() => {{ const n = {N}; window.app.canvas.ds.offset = [-n.pos[0] + 130, -n.pos[1] + 120];
            window.app.canvas.ds.scale = 1; window.app.canvas.setDirty(true, true); return true; }})()""")
        page.wait_for(f"(() => {{ const r = {V}.stage.getBoundingClientRect(); return r.width > 150 && r.height >= 200 && "
                      f"r.x >= 0 && r.y >= 0 && r.bottom <= innerHeight; }})()", timeout=30)
        page.eval(f"{V}.fit(false); true")  # the front view, framed in the Vue node's own widget size
        img = _capture(page, V)
        Image.fromarray(img).save(ARTIFACTS / f"preview4d_canvas_vue_{frontend}.png")
        drawn = (np.abs(img.astype(int) - 255).max(-1) > 24).mean()
        assert 0.02 < drawn < 0.8, f"fraction of non-background pixels under Nodes 2.0: {drawn:.3f}"

        # play / pause: real clicks on the button
        play = _rect(page, f"{V}.ui.play")
        assert _on_top(page, f"{V}.ui.play", play), "the play button is covered under Nodes 2.0"
        shown = page.eval(f"{V}.stats.framesShown")
        page.click(play["cx"], play["cy"])
        page.wait_for(f"{V}.playing === true && {V}.stats.framesShown > {shown} + 1", timeout=30)
        page.click(play["cx"], play["cy"])
        page.wait_for(f"{V}.playing === false", timeout=5)

        # the frame slider: a real click at its right end shows the last frame
        slider = _rect(page, f"{V}.ui.slider")
        assert _on_top(page, f"{V}.ui.slider", slider)
        page.click(slider["x"] + slider["w"] - 2, slider["cy"])
        page.wait_for(f"{V}.displayedFrame === {FRAMES - 1} && {V}.ui.label.textContent === '{FRAMES}/{FRAMES}'",
                      timeout=20)

        # a drag on the picture orbits the camera and does not move the node
        stage = _rect(page, f"{V}.stage")
        before = page.eval(f"({{az: {V}.cam.az, pos: [...{N}.pos]}})")
        page.drag(stage["cx"] - 40, stage["cy"], stage["cx"] + 40, stage["cy"])
        after = page.eval(f"({{az: {V}.cam.az, pos: [...{N}.pos]}})")
        assert abs(after["az"] - before["az"]) > 0.05, (before, after)
        assert after["pos"] == before["pos"], f"dragging in the widget moved the node: {before} -> {after}"

        # camera snap from the camera list (a user's choice: the select's change event)
        view, frame = 5, FRAMES - 1
        page.eval(f"""(() => {{ const s = {V}.ui.camSel; s.value = '{view}';
            s.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()""")
        assert page.eval(f"{V}.snapped && {V}.snapped.k") == view
        img = _capture(page, V)
        r = page.eval(f"{V}.snapRect()")
        train = _training_image(host, fitted, view, frame)
        h, w = train.shape[:2]
        crop = Image.fromarray(img[int(round(r["y"])):int(round(r["y"] + r["h"])),
                                   int(round(r["x"])):int(round(r["x"] + r["w"]))])
        got = np.asarray(crop.resize((w, h), Image.BILINEAR)).astype(np.float32) / 255
        err = np.abs(got - train.astype(np.float32) / 255).mean()
        err_other = np.abs(got - _training_image(host, fitted, 0, frame).astype(np.float32) / 255).mean()
        assert err < 0.03 and err < 0.6 * err_other, f"snap under Nodes 2.0: error {err:.4f}, other view {err_other:.4f}"
        page.eval(f"{V}.unsnap(); {V}.fit(); true")
        page.eval(f"{V}.setFrame(1); true")
        page.wait_for(f"{V}.displayedFrame === 1", timeout=20)
        page.eval("new Promise(r => setTimeout(r, 300))")
        node = _rect(page, f"{V}.root.closest('[data-node-id]')")
        page.screenshot(ARTIFACTS / f"preview4d_widget_vue_{frontend}.png",
                        {"x": max(0, node["x"] - 20), "y": max(0, node["y"] - 20), "width": node["w"] + 40,
                         "height": node["h"] + 40})

        # the properties side panel (front-ends that have one): the node's own inputs are there, the widget is not
        has_panel = page.eval("window.app.extensionManager.setting.get('Comfy.RightSidePanel.IsOpen') !== undefined")
        if frontend == "newest":
            assert has_panel, "front-end 1.58 has a properties side panel (Comfy.RightSidePanel.IsOpen)"
        if has_panel:
            page.eval(f"window.app.canvas.deselectAll?.(); window.app.canvas.selectNode({N}); true")
            # Preview 4D's widgets are advanced inputs, which the panel folds away unless told to show them
            _setting(page, "Comfy.Node.AlwaysShowAdvancedWidgets", True)
            _setting(page, "Comfy.RightSidePanel.IsOpen", True)
            page.wait_for("(() => { const p = document.querySelector('[data-testid=\"properties-panel\"]'); "
                          "return !!p && p.innerText.includes('turntable_frames'); })()", timeout=20)
            page.eval("new Promise(r => setTimeout(r, 500))")
            r = page.eval(f"""(() => {{ const p = document.querySelector('[data-testid="properties-panel"]');
                return {{text: p.innerText, inPanel: p.contains({V}.root), inNode: !!{V}.root.closest('[data-node-id]'),
                         visible: {V}.visible}}; }})()""")
            assert "charshot_preview4d" not in r["text"] and not r["inPanel"], r
            assert r["inNode"] and r["visible"], r
            _setting(page, "Comfy.RightSidePanel.IsOpen", False)
            _setting(page, "Comfy.Node.AlwaysShowAdvancedWidgets", False)
    finally:
        _setting(page, "Comfy.VueNodes.Enabled", False)
    # back on the canvas, the widget still shows the character
    page.wait_for(f"!{V}.root.closest('[data-node-id]') && document.contains({V}.root)", timeout=30)


def test_preview_inside_a_subgraph(page, host, fitted, frontend):
    """Synthetic Character → [Fit 4D Gaussians → Preview 4D] with the bracket a subgraph: the run's ``executed``
    message names the preview by its execution id ``<subgraph node>:<inner node>``; the widget of the node inside
    the subgraph loads the result, and shows it when the subgraph is opened. Neither the saved workflow (with its
    subgraph definition) nor the API prompt holds the widget. Last in the module: it replaces the graph."""
    prompt = {k: dict(v) for k, v in PREVIEW_PROMPT.items() if k != "4"}
    # turntable_frames differs from the fitted run, so Preview 4D really runs (Synthetic and Fit may come from cache)
    prompt["3"] = {**prompt["3"], "inputs": {**prompt["3"]["inputs"], "turntable_frames": 0}}
    ids = page.eval(f"""(async () => {{
        await window.app.loadApiJson({json.dumps(prompt)}, 'preview4d_subgraph.json');
        const g = window.app.graph, byClass = (c) => g._nodes.find(n => n.comfyClass === c);
        const p = byClass('CharacterShotPreview4D'), f = byClass('CharacterShotFit4DGaussians');
        p.pos = [130, 170]; p.setSize([470, 560]); f.pos = [680, 170];
        byClass('CharacterShotSyntheticCharacter').pos = [-400, 170];
        const {{subgraph, node}} = g.convertToSubgraph(new Set([f, p]));
        const inner = subgraph.nodes.find(n => n.comfyClass === 'CharacterShotPreview4D');
        window.__cs.sub = {{subgraph, node, inner}};
        window.__cs.executed.length = 0; window.__cs.errors.length = 0;
        const out = (await window.app.graphToPrompt()).output;
        return {{outer: String(node.id), inner: String(inner.id), keys: Object.keys(out),
                 rootHasPreview: g._nodes.some(n => n.comfyClass === 'CharacterShotPreview4D')}}; }})()""")
    exec_id = f"{ids['outer']}:{ids['inner']}"
    assert not ids["rootHasPreview"] and exec_id in ids["keys"], ids
    V = "window.__cs.sub.inner._charshotPreview.viewer"
    page.eval("(async () => { await window.app.queuePrompt(0, 1); return true; })()")
    page.wait_for(f"window.__cs.errors.length > 0 || !!({V}.scene && {V}.displayedFrame >= 0)", timeout=400)
    assert not page.eval("window.__cs.errors")
    shown = page.eval("window.__cs.executed.filter(d => d.output && d.output.charshot_preview)"
                      ".map(d => String(d.display_node || d.node))")
    assert shown == [exec_id], shown
    # open the subgraph: the inner node's widget is on screen and draws the character
    page.eval("""(() => { const {subgraph, node, inner} = window.__cs.sub; window.app.canvas.openSubgraph(subgraph, node);
        window.app.canvas.ds.offset = [-inner.pos[0] + 130, -inner.pos[1] + 120]; window.app.canvas.ds.scale = 1;
        window.app.canvas.setDirty(true, true); return true; })()""")
    page.wait_for(f"window.app.canvas.graph === window.__cs.sub.subgraph && {V}.visible === true && "
                  f"(() => {{ const r = {V}.stage.getBoundingClientRect(); return r.width > 150 && r.height > 150 && "
                  f"r.x >= 0 && r.y >= 0; }})()", timeout=30)
    img = _capture(page, V)
    drawn = (np.abs(img.astype(int) - 255).max(-1) > 24).mean()
    assert 0.02 < drawn < 0.8, f"fraction of non-background pixels inside the subgraph: {drawn:.3f}"
    page.eval("new Promise(r => setTimeout(r, 300))")
    rect = _rect(page, f"{V}.root")
    page.screenshot(ARTIFACTS / f"preview4d_subgraph_{frontend}.png",
                    {"x": max(0, rect["x"] - 50), "y": max(0, rect["y"] - 110), "width": rect["w"] + 100,
                     "height": rect["h"] + 130})
    # the saved workflow (subgraph definitions included) and the API prompt hold no widget state
    r = page.eval(f"""(async () => {{
        const p = await window.app.graphToPrompt(), inner = window.__cs.sub.inner;
        const defs = (p.workflow.definitions && p.workflow.definitions.subgraphs) || [];
        const sn = defs.flatMap(d => d.nodes || []).find(x => String(x.id) === String(inner.id));
        return {{inputs: Object.keys(p.output['{exec_id}'].inputs), values: sn && sn.widgets_values,
                 text: JSON.stringify(p.workflow), promptText: JSON.stringify(p.output)}}; }})()""")
    assert sorted(r["inputs"]) == ["gaussians", "times", "turntable_frames"], r["inputs"]
    assert r["values"] == ["", 0], r["values"]
    for key in ("charshot_preview4d", "preview4d_", ".cs4d", "displayedFrame"):
        assert key not in r["text"] and key not in r["promptText"], key
    page.eval("window.app.canvas.setGraph(window.app.graph); true")


def test_demo_template_does_not_overlap_after_a_run(page):
    """The demo template run from the page (CI-sized through its widgets): what its nodes show afterwards (the 4D
    preview, the turntable video, the rig's picture, the saved files) covers no neighbour (tests/template_layout.py).
    Last in this module: it replaces the graph."""
    check_demo_after_a_run(page)

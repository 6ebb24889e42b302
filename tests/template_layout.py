"""Checks that a template opens readable in ComfyUI's real editor (used by tests/test_frontend_browser.py, on the
front-end the host bundles, 1.32.9 for ComfyUI 0.3.75, and on the newest): no node's box (node.pos / node.size from
the graph, title bar included, as the editor sized it after loading) overlaps another's, every node sits inside its
stage's group, the groups do not overlap, and the view opens at the saved zoom with the note in sight; and, after the
demo is run from the page (CI-sized through its widgets), that what the nodes show after a run (the 4D preview, the
turntable video, the saved files) covers no neighbour either.
"""

from __future__ import annotations

import json
import time

import pytest

from scripts.make_example_workflows import VIEW_SCALE, twins

TWINS = twins()
DEMO = next(t for t in TWINS if t.name == "charactershot_demo")


# the boxes as the editor holds them: node.pos is the body's top-left, the title bar is above it
BOXES_JS = """(() => {
  const th = LiteGraph.NODE_TITLE_HEIGHT;
  const nodes = window.app.graph._nodes.map(n => ({id: String(n.id), type: n.type, title: n.title, mode: n.mode,
    x: n.pos[0], y: n.pos[1] - th, w: n.size[0], h: n.size[1] + th}));
  const groups = (window.app.graph._groups || window.app.graph.groups || []).map(g => {
    const b = g._bounding || g.bounding; return {title: g.title, x: b[0], y: b[1], w: b[2], h: b[3]}; });
  const ds = window.app.canvas.ds;
  return {nodes, groups, scale: ds.scale, offset: [ds.offset[0], ds.offset[1]],
          canvas: [window.app.canvas.canvas.clientWidth, window.app.canvas.canvas.clientHeight]};
})()"""


def load(page, twin) -> dict:
    template = json.loads(twin.template_path.read_text())
    page.eval(f"(async () => {{ await window.app.loadGraphData({json.dumps(template)}); return true; }})()")
    # images load, DOM widgets size themselves on the next frames: measure once the boxes stop changing
    return settle(page)


def settle(page, timeout: float = 20.0) -> dict:
    last, deadline = None, time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.6)
        cur = page.eval(BOXES_JS)
        if cur == last:
            return cur
        last = cur
    return last


def _overlap(a: dict, b: dict) -> float:
    w = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
    h = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
    return w * h if w > 0 and h > 0 else 0.0


def overlaps(boxes: list) -> list:
    return [(a.get("title") or a.get("type"), b.get("title") or b.get("type"), a, b)
            for i, a in enumerate(boxes) for b in boxes[i + 1:] if _overlap(a, b) > 0]


def _inside(node: dict, group: dict) -> bool:
    return (node["x"] >= group["x"] and node["y"] >= group["y"] and node["x"] + node["w"] <= group["x"] + group["w"]
            and node["y"] + node["h"] <= group["y"] + group["h"])


def check_layout(twin, got: dict) -> None:
    nodes = got["nodes"]
    bad = overlaps(nodes)
    assert not bad, f"{twin.template_path.name}: overlapping nodes: {bad}"
    bad = overlaps(got["groups"])
    assert not bad, f"{twin.template_path.name}: overlapping groups: {bad}"
    for g in twin.groups:
        box = next(b for b in got["groups"] if b["title"] == g["title"])
        for key in (k for col in g["columns"] for k in col):
            node = next(n for n in nodes if n["id"] == key)
            assert _inside(node, box), f"{twin.template_path.name}: node {key} {node} sticks out of group {box}"


def check_opens_readable(page, twin) -> None:
    """After ``twin``'s template was loaded into ``page``."""
    got = settle(page)
    check_layout(twin, got)
    # opens at the saved zoom, with the note (top left) in sight
    assert got["scale"] == pytest.approx(VIEW_SCALE), got["scale"]
    note = next(n for n in got["nodes"] if n["type"] == "MarkdownNote")
    sx, sy = [(note[a] + got["offset"][i]) * got["scale"] for i, a in enumerate(("x", "y"))]
    # (the canvas runs under the editor's side bar, about 60 px, and its tabs and workflow menu, about 130 px)
    assert 60 <= sx < got["canvas"][0] / 2 and 130 <= sy < got["canvas"][1] / 2, (sx, sy, got)


def check_demo_after_a_run(page) -> None:
    load(page, DEMO)
    page.eval("""(() => {
      window.__layout = {done: false, errors: [], executed: []};
      if (!window.__layoutHooked) {
        window.__layoutHooked = true;
        window.app.api.addEventListener('execution_error', e => window.__layout.errors.push(e.detail));
        window.app.api.addEventListener('executed', e => window.__layout.executed.push(e.detail));
        window.app.api.addEventListener('executing', e => { if (e.detail === null) window.__layout.done = true; });
        window.app.api.addEventListener('execution_success', () => { window.__layout.done = true; });
      }
      return true; })()""")
    # the same graph, CI-sized through its widgets (as an artist would change them)
    sizes = {"CharacterShotSyntheticCharacter": {"num_frames": 3, "num_gaussians": 1500, "scale": 0.1},
             "CharacterShotFit4DGaussians": {"iterations": 10, "seconds": 0.0, "initial_gaussians": 2000},
             "CharacterShotRender4D": {"num_frames": 4, "width": 96, "height": 64}}
    page.eval(f"""(async () => {{
      const sizes = {json.dumps(sizes)};
      for (const n of window.app.graph._nodes) for (const [name, v] of Object.entries(sizes[n.type] || {{}})) {{
        const w = n.widgets.find(w => w.name === name); w.value = v; }}
      await window.app.queuePrompt(0, 1);
      return true; }})()""")
    page.wait_for("window.__layout.done || window.__layout.errors.length > 0", timeout=600)
    assert not page.eval("window.__layout.errors"), page.eval("window.__layout.errors")
    page.wait_for("(() => { const n = window.app.graph._nodes.find(n => n.type === 'CharacterShotSave4DGaussians');"
                  " const v = n._charshotPreview?.viewer; return !!(v && (v.scene || v.noWebGL2)); })()", timeout=120)
    got = settle(page)
    check_layout(DEMO, got)
    # the run really changed what the nodes show: the 4D preview and the video are there
    shown = page.eval("""(() => { const g = window.app.graph._nodes;
      const save = g.find(n => n.type === 'CharacterShotSave4DGaussians');
      const webp = String(g.find(n => n.type === 'SaveAnimatedWEBP').id);
      const video = window.__layout.executed.filter(d => String(d.node) === webp).flatMap(d => d.output.images || []);
      return {preview: !!save._charshotPreview, video: video.map(f => f.filename)}; })()""")
    assert shown["preview"] and [f for f in shown["video"] if f.endswith(".webp")], shown


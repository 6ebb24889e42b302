"""The pack in ComfyUI's real front end (frontend 1.32.9 of ComfyUI 0.3.75), driven by headless Chromium.

Checks what only a browser can: the web extension loads, every template opens with no missing node, the editor turns
each template back into exactly its tested API twin (widget order, seed control widgets), and the saved-file list
appears under a node without leaking into the prompt. Skipped where Chromium is not installed
(``apt-get install chromium``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest

from tests.comfy_host import free_port
from scripts.make_example_workflows import OUT, TWINS

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """A minimal Chrome DevTools Protocol client for one page."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                return msg

    def eval(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        result = r.get("result", {})
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript error: {json.dumps(result['exceptionDetails'])[:1500]}")
        return result.get("result", {}).get("value")

    def wait_for(self, expr: str, timeout: float = 90.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.eval(expr) is True:
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {expr}")


@pytest.fixture(scope="module")
def page(comfy):
    if not CHROMIUM:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="charshot-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "--window-size=1400,900", comfy.base],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tabs = None
        for _ in range(120):
            try:
                tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5))
                if any(t["type"] == "page" for t in tabs):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert tabs, "Chromium did not open its debugging port"
        p = Page(next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"])
        p.wait_for("!!(window.app && window.app.graph && window.app.extensions && window.app.extensions.length > 5)")
        yield p
    finally:
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def test_web_extension_is_registered(page):
    page.wait_for("window.app.extensions.some(e => e.name === 'charactershot.savedFiles')", timeout=30)


@pytest.mark.parametrize("twin", sorted(TWINS.glob("*.json")), ids=lambda p: p.stem)
def test_template_opens_and_serialises_to_its_twin(page, twin):
    template = json.loads((OUT / twin.name).read_text())
    loaded = page.eval(f"""(async () => {{
        await window.app.loadGraphData({json.dumps(template)});
        return window.app.graph._nodes.map(n => [String(n.id), n.type, !!LiteGraph.registered_node_types[n.type]]);
    }})()""")
    assert loaded and all(known for _, _, known in loaded), f"missing node types: {loaded}"
    prompt = page.eval("(async () => (await window.app.graphToPrompt()).output)()")
    expected = json.loads(twin.read_text())
    expected.pop("_title", None)
    assert sorted(prompt) == sorted(expected)
    for key, node in expected.items():
        got = prompt[key]
        assert got["class_type"] == node["class_type"]
        for name, value in node["inputs"].items():
            assert got["inputs"].get(name) == value, f"node {key} {node['class_type']}.{name}: {got['inputs'].get(name)!r} != {value!r}"


def test_saved_files_appear_under_the_node_and_stay_out_of_the_prompt(page):
    template = json.loads((OUT / "charactershot_4d_synthetic.json").read_text())
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

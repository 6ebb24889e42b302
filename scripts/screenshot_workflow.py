"""Screenshot an example workflow as the ComfyUI editor shows it (headless Chromium, a temporary ComfyUI with the
pack), for the docs; the workflow is named by its twin in tests/workflows/:

    .venv/bin/python scripts/screenshot_workflow.py charactershot_demo docs/images/charactershot_demo_workflow.png

Needs Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.browser import Chromium  # noqa: E402
from tests.comfy_host import ComfyHost, stop_on_signals  # noqa: E402

# large enough that the editor keeps drawing text (it drops it below ~60 % zoom)
WIDTH, HEIGHT = 2400, 1500
OUT_WIDTH = 1600


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    name, out = args
    from scripts.make_example_workflows import template_path

    template = json.loads(template_path(f"{name}.json").read_text())  # by its twin's name
    stop_on_signals()
    host = ComfyHost()
    # a returning user: no first-run template browser over the canvas
    settings = host.user_dir / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    browser = None
    try:
        host.start()
        browser = Chromium(host.base, WIDTH, HEIGHT)
        page = browser.page
        page.wait_for("!!(window.app && window.app.graph && window.app.canvas)", timeout=180)
        page.eval(f"(async () => {{ await window.app.loadGraphData({json.dumps(template)}); return true; }})()")
        time.sleep(2.0)
        page.key("Escape", "Escape", 27)
        # the release banner above the canvas is not part of the workflow
        page.eval("""(() => { for (const el of document.querySelectorAll('body *')) {
            if (el.children.length === 0 && /Introducing Nodes/.test(el.textContent || '')) {
                let top = el; while (top.parentElement && top.parentElement.getBoundingClientRect().height < 80)
                    top = top.parentElement;
                top.remove(); return true; } } return false; })()""")
        page.eval("""(() => { const b = [...document.querySelectorAll('button')].find(
            e => e.closest('.p-panel, .minimap-container, [class*=minimap]')
                 && /close/i.test(e.getAttribute('aria-label') || e.className));
            if (b) b.click(); return !!b; })()""")
        time.sleep(1.0)
        # fit the whole graph into the window (the nodes' real sizes come from the editor)
        page.eval("""(() => {
            const ns = window.app.graph._nodes;
            const x0 = Math.min(...ns.map(n => n.pos[0])), y0 = Math.min(...ns.map(n => n.pos[1] - 30));
            const x1 = Math.max(...ns.map(n => n.pos[0] + n.size[0]));
            const y1 = Math.max(...ns.map(n => n.pos[1] + n.size[1]));
            const ds = window.app.canvas.ds;
            const left = 80, top = 100;  // the side bar and the tab/run bars
            const s = Math.min((window.innerWidth - left - 20) / (x1 - x0),
                               (window.innerHeight - top - 20) / (y1 - y0));
            ds.scale = s;
            ds.offset = [-x0 + left / s, -y0 + top / s];
            window.app.canvas.setDirty(true, true);
            return s;
        })()""")
        time.sleep(2.0)
        path = Path(page.screenshot(REPO / out if not Path(out).is_absolute() else out))
        from PIL import Image

        with Image.open(path) as img:
            small = img.convert("RGB").resize((OUT_WIDTH, round(img.height * OUT_WIDTH / img.width)), Image.LANCZOS)
        small.save(path)
        print(path)
    finally:
        if browser is not None:
            browser.close()
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

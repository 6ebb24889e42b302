"""The inline 4D preview in headless Chromium: sort time, steady frame time and playback speed.

Serves web/js/ and synthetic-character bundles from a local HTTP server, opens a page in headless Chromium
(SwiftShader WebGL2, the software renderer: no GPU needed) and measures, for each splat count:

  sort      the worker's 16-bit counting sort (ms per sort, median over orbit steps; timed inside the worker) and
            the same sort on the page's main thread (median of 30 runs)
  frame     a steady frame on a 512x512 canvas: one draw of all splats, finished (ms, mean of 30 draws)
  playback  frames shown per second while playing at the widget's fastest setting (each frame shown only once its
            own depth order has arrived), over 4 s

Examples:
  python benchmarks/bench_viewer.py                       # 100k and 300k splats, 5 frames
  python benchmarks/bench_viewer.py --sizes 100000 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import platform
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.browser import CHROMIUM, Chromium  # noqa: E402

PAGE = """<!doctype html><html><body style="margin:0;background:#111">
<div id="host" style="width:512px;height:560px"></div>
<script type="module">
import { SplatViewer } from './js/splat4d_viewer.js';
import { DepthSorter } from './js/splat4d_sort_worker.js';
window.SplatViewer = SplatViewer; window.DepthSorter = DepthSorter; window.ready = true;
</script></body></html>"""

MEASURE = """(async () => {
  const v = new SplatViewer({fps: 60});
  document.getElementById('host').style.width = '%(px)dpx';
  document.getElementById('host').replaceChildren(v.root);
  v.stage.style.flex = 'none'; v.stage.style.height = '%(px)dpx'; v.root.style.width = '%(px)dpx';
  const settle = async () => { for (let i = 0; i < 2000; i++) { if (v.scene && v.displayedFrame === v.wantFrame &&
      !v.inflight && v.sortedViewId === v.viewId) return; await new Promise(r => setTimeout(r, 5)); } };
  const t0 = performance.now();
  await v.loadUrl('./%(name)s');
  await settle();
  const loadMs = performance.now() - t0;
  // worker sorts: orbit in 40 steps, each waits for its order
  v.stats.sortMsAll.length = 0;
  for (let i = 0; i < 40; i++) { v.orbit(9, 0); await settle(); }
  const ws = v.stats.sortMsAll.slice().sort((a, b) => a - b);
  // the same sort on the main thread
  const s = v.scene, sorter = new DepthSorter(s.count, s.frames, s.pos.q, s.pos.min, s.pos.step);
  let order = new Uint32Array(s.count); const ms = [];
  for (let i = 0; i < 33; i++) { const view = v._viewMatrix(); const a = performance.now();
    order = sorter.sort(i %% s.frames, view, order); if (i >= 3) ms.push(performance.now() - a); v.orbit(5, 0); }
  ms.sort((a, b) => a - b);
  // the order really is near to far (depth buckets never decrease along it)
  const view = v._viewMatrix(); order = sorter.sort(0, view, order);
  let sortedOk = true;
  for (let k = 1; k < s.count; k++) if (sorter.buckets[order[k]] < sorter.buckets[order[k - 1]]) { sortedOk = false; break; }
  await settle();
  const frameMs = v.timeDraws(30);
  // playback at the fastest setting
  v.setFrame(0); await settle();
  const shown0 = v.stats.framesShown, p0 = performance.now();
  v.fps = 60; v.play();
  await new Promise(r => setTimeout(r, 4000));
  v.pause();
  const fps = (v.stats.framesShown - shown0) / ((performance.now() - p0) / 1000);
  const cap = v.capture(); let drawn = 0;
  for (let i = 0; i < cap.data.length; i += 4) if (cap.data[i] < 230 || cap.data[i+1] < 230 || cap.data[i+2] < 230) drawn++;
  const out = {splats: s.count, frames: s.frames, canvas: [v.canvas.width, v.canvas.height], load_ms: loadMs,
    worker_sort_ms_median: ws[ws.length >> 1], worker_sort_ms_p90: ws[Math.floor(ws.length * 0.9)],
    main_sort_ms_median: ms[ms.length >> 1], sorted_ok: sortedOk, frame_ms: frameMs, steady_fps: 1000 / frameMs, playback_fps: fps,
    drawn_fraction: drawn / (cap.width * cap.height), renderer: (() => { const gl = v.gl;
      const e = gl.getExtension('WEBGL_debug_renderer_info'); return e ? gl.getParameter(e.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER); })()};
  v.dispose();
  return out;
})()"""


def make_bundle(path: str, n: int, frames: int) -> None:
    from tests.test_frontend_browser import synthetic_bundle

    synthetic_bundle(path, n=n, frames=frames, motion="wave")


def serve(folder: str):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    handler.log_message = lambda *a, **k: None
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--canvas", type=int, default=512, help="canvas side in pixels")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if not CHROMIUM:
        print("Chromium is not installed (scripts/setup.sh as root, or apt-get install chromium)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="charshot-bench-viewer-")
    httpd = None
    browser = None
    try:
        shutil.copytree(os.path.join(ROOT, "web", "js"), os.path.join(work, "js"))
        with open(os.path.join(work, "index.html"), "w") as f:
            f.write(PAGE)
        for n in args.sizes:
            t = time.time()
            make_bundle(os.path.join(work, f"s{n}.cs4d"), n, args.frames)
            print(f"bundle {n} splats x {args.frames} frames: {os.path.getsize(os.path.join(work, f's{n}.cs4d')) / 1e6:.1f} MB "
                  f"({time.time() - t:.1f} s)", file=sys.stderr)
        httpd = serve(work)
        browser = Chromium(f"http://127.0.0.1:{httpd.server_address[1]}/index.html", 800, 700)
        page = browser.page
        page.wait_for("window.ready === true", timeout=60)
        results = []
        for n in args.sizes:
            r = page.eval(MEASURE % {"name": f"s{n}.cs4d", "px": args.canvas})
            results.append(r)
            print(json.dumps(r), file=sys.stderr)
        version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
        info = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}", "browser": version,
                "flags": "headless, --use-angle=swiftshader (software WebGL2)", "results": results}
        print(f"\n{info['machine']}\n{version} ({info['flags']}); renderer: {results[0]['renderer'] if results else ''}")
        print("| splats | frames | worker sort median (p90) | main-thread sort | steady frame 512x512 | playback |")
        print("|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['splats']:,} | {r['frames']} | {r['worker_sort_ms_median']:.1f} ms ({r['worker_sort_ms_p90']:.1f}) | "
                  f"{r['main_sort_ms_median']:.1f} ms | {r['frame_ms']:.1f} ms ({r['steady_fps']:.1f} fps) | "
                  f"{r['playback_fps']:.1f} fps |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(info, f, indent=2)
    finally:
        if browser:
            browser.close()
        if httpd:
            httpd.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fit 4D Gaussians in ComfyUI with and without a browser drawing its page on the same machine.

Issue 8: on the 2-core machine, with ComfyUI started by hand and its page open in Chromium, Fit 4D Gaussians on a
5-frame synthetic character crawled (2 iterations in 30 s) while the same fit without the browser, or with
OMP_WAIT_POLICY=PASSIVE in the server's environment, ran at about 2.2 iterations/s. The pack now picks its CPU
thread count while fitting and rendering (charactershot_core/gaussians/fitting/threads.py); this script measures
iterations per second for each combination of

  threads   'pack' (the pack's choice; CHARSHOT_CPU_THREADS unset) or 'torch' (CHARSHOT_CPU_THREADS=0: PyTorch's
            default, one thread per core, as before the change), or a number
  browser   none, or headless Chromium showing the ComfyUI page; the fit is then queued from the page (so the page
            receives the progress and preview images and redraws the graph, as for a user)

The server runs like a user's: no OMP_WAIT_POLICY in its environment (the variable is removed), `main.py --cpu`.
Each run: a fresh server, Synthetic Character (5 frames, scale 0.25) -> Fit 4D Gaussians (preview every 100
steps, the node's default), iterations counted from the progress messages over --seconds after the first 3, then
Cancel.

Examples:
  python benchmarks/bench_fit_browser.py                           # pack/torch threads x no browser/browser
  python benchmarks/bench_fit_browser.py --threads pack --seconds 40 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.browser import CHROMIUM, Chromium  # noqa: E402
from tests.comfy_host import ComfyHost, WorkflowError  # noqa: E402


ITERATIONS = 100000


def prompt(iterations: int = ITERATIONS) -> dict:
    return {
        "1": {"class_type": "CharacterShotSyntheticCharacter",
              "inputs": {"motion": "walk", "num_frames": 5, "scale": 0.25, "seed": 0, "num_gaussians": 4000,
                         "backend": "torch"}},
        "2": {"class_type": "CharacterShotFit4DGaussians",
              "inputs": {"multiview": ["1", 0], "iterations": iterations, "seconds": 0.0, "scale": 1.0,
                         "sh_degree": 0, "batch_views": 2, "initial_gaussians": 20000, "neighbour_weight": 1.0,
                         "rigidity_weight": 0.0, "densify": True, "backend": "torch", "seed": 0,
                         "preview_every": 100}},
        "3": {"class_type": "CharacterShotSave4DGaussians",  # an output node (the run is cancelled before it)
              "inputs": {"gaussians": ["2", 0], "filename_prefix": "charactershot/bench", "times": "",
                         "save_ply": False, "save_bundle": False, "save_weights": True}},
    }


def rate(samples: list[tuple[float, int]], skip: int = 3) -> dict:
    """Iterations per second from (time, iteration) progress samples, after the first ``skip`` messages."""
    s = samples[skip:] if len(samples) > skip + 1 else samples
    if len(s) < 2:
        return {"iterations": samples[-1][1] if samples else 0, "seconds": 0.0, "it_per_s": 0.0}
    its, dt = s[-1][1] - s[0][1], s[-1][0] - s[0][0]
    return {"iterations": its, "seconds": round(dt, 2), "it_per_s": round(its / dt, 3) if dt > 0 else 0.0}


def run_variant(threads: str, browser: bool, seconds: float) -> dict:
    saved = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "CHARSHOT_CPU_THREADS")}
    os.environ.pop("OMP_WAIT_POLICY", None)  # as a user starts ComfyUI
    if threads == "pack":
        os.environ.pop("CHARSHOT_CPU_THREADS", None)
    elif threads == "torch":
        os.environ["CHARSHOT_CPU_THREADS"] = "0"
    else:
        os.environ["CHARSHOT_CPU_THREADS"] = str(int(threads))
    host = ComfyHost()
    chrome = None
    samples: list[tuple[float, int]] = []
    try:
        host.start()
        for k, v in saved.items():  # the benchmark's own process keeps its settings
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if browser:
            host.request("/settings/Comfy.TutorialCompleted", data=b"true", method="POST")
            chrome = Chromium(host.base)
            page = chrome.page
            page.wait_for("!!(window.app && window.app.graph && window.app.extensions && window.app.extensions.length > 5)")
            page.eval("(() => { for (const b of document.querySelectorAll('.p-dialog-close-button')) b.click(); "
                      "window.__prog = []; window.app.api.addEventListener('progress', e => "
                      "window.__prog.push([Date.now() / 1000, e.detail.value, e.detail.max])); return true; })()")
            page.eval(f"(async () => {{ await window.app.loadApiJson({json.dumps(prompt())}, 'fit.json'); "
                      "await window.app.queuePrompt(0, 1); return true; })()")
            t_end, t_start = None, time.time()
            while True:
                # the fit's progress bar counts to its iteration limit (node ids change when the page loads it)
                prog = [(t, v) for t, v, total in page.eval("window.__prog") if total == ITERATIONS]
                if prog and t_end is None:
                    t_end = time.time() + seconds + 5
                if t_end is not None and time.time() > t_end:
                    break
                if time.time() - t_start > seconds + 600:
                    raise RuntimeError("the fit did not report progress")
                time.sleep(1.0)
            samples = prog
            host.interrupt()
        else:
            start: list[float] = []

            def on_event(msg):
                if msg.get("type") == "progress" and msg["data"].get("max") == ITERATIONS:
                    samples.append((time.time(), int(msg["data"]["value"])))
                    if not start:
                        start.append(time.time())
                    elif time.time() - start[0] > seconds + 5:
                        threading.Thread(target=host.interrupt, daemon=True).start()

            try:
                host.run(prompt(), timeout=seconds + 600, on_event=on_event)
            except WorkflowError as e:
                if "interrupted" not in e.message:
                    raise
    finally:
        if chrome:
            chrome.close()
        host.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"threads": threads, "browser": browser, **rate(samples)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", nargs="+", default=["pack", "torch"], help="pack, torch or numbers")
    ap.add_argument("--browser", nargs="+", default=["no", "yes"], choices=["no", "yes"])
    ap.add_argument("--seconds", type=float, default=30.0, help="measuring window per run")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if "yes" in args.browser and not CHROMIUM:
        print("Chromium is not installed (scripts/setup.sh as root, or apt-get install chromium)", file=sys.stderr)
        return 2
    results = []
    for th in args.threads:
        for br in args.browser:
            r = run_variant(th, br == "yes", args.seconds)
            print(json.dumps(r), file=sys.stderr, flush=True)
            results.append(r)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    print(f"\n{machine}; load average at the end: {os.getloadavg()[0]:.2f}")
    print("| threads | browser drawing the page | iterations | seconds | iterations/s |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['threads']} | {'yes' if r['browser'] else 'no'} | {r['iterations']} | {r['seconds']} | {r['it_per_s']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

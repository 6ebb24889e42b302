"""The demo as a ComfyUI workflow: run ``tests/workflows/charactershot_demo.json`` headless through a real ComfyUI
with this pack loaded (the same graph as the demo template, "1 Start here - ..."), or serve ComfyUI to look at it.

    .venv/bin/python scripts/demo_workflow.py            # run the demo workflow on the CPU, print where the files are
    .venv/bin/python scripts/demo_workflow.py --ui       # start ComfyUI with the pack; Ctrl-C (or SIGTERM) stops it

Both use ``demo_out/comfyui/`` as ComfyUI's input/output/user folders, so the browser shows the demo's files.
``scripts/demo.sh`` sets everything up first and then runs this.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.comfy_host import ComfyHost, WorkflowError, serve, stop_on_signals  # noqa: E402

DEMO = REPO / "tests" / "workflows" / "charactershot_demo.json"
DEFAULT_ROOT = REPO / "demo_out" / "comfyui"
DEFAULT_PORT = 8199


def load_demo(seconds: float | None) -> dict:
    from scripts.make_example_workflows import read_twin

    prompt = read_twin(DEMO).prompt  # the graph alone (the twin also holds the template's title, stages, note)
    if seconds is not None:
        fit = next(n for n in prompt.values() if n["class_type"] == "CharacterShotFit4DGaussians")
        fit["inputs"]["seconds"] = float(seconds)
    return prompt


class Reporter:
    """Prints which node runs and its progress, at most every few seconds."""

    def __init__(self, prompt: dict):
        self.prompt = prompt
        self.t0 = time.time()
        self.last = 0.0

    def __call__(self, msg: dict) -> None:
        kind, data = msg.get("type"), msg.get("data", {})
        now = time.time() - self.t0
        if kind == "executing" and data.get("node"):
            node = self.prompt.get(str(data["node"]), {})
            print(f"[{now:6.1f} s] {node.get('class_type', data['node'])}", flush=True)
        elif kind == "progress" and now - self.last >= 10:
            self.last = now
            print(f"[{now:6.1f} s]   {data.get('value')}/{data.get('max')}", flush=True)


def report_outputs(host: ComfyHost, hist: dict) -> dict:
    """Print where the demo's files are; returns them: {"ply": [...], "bundle": [...], "weights": [...],
    "turntable": [...]} (paths; the turntable is one animated WebP)."""
    out = hist.get("outputs", {})
    files = [f for node in out.values() for f in node.get("charshot_4d", [])]
    images = [f for node in out.values() for f in node.get("images", []) if f.get("type") == "output"]

    def path(f):
        return host.output_dir / f.get("subfolder", "") / f["filename"]

    plys = sorted(path(f) for f in files if f["filename"].endswith(".ply"))
    bundles = [path(f) for f in files if f["filename"].endswith(".cs4d")]
    weights = [path(f) for f in files if f["filename"].endswith(".safetensors")]
    turntable = sorted(path(f) for f in images)
    print("\nDemo outputs:")
    if plys:
        print(f"  per-frame .ply files ({len(plys)}): {plys[0].parent}/  ({plys[0].name} ... {plys[-1].name})")
    for b in bundles:
        print(f"  4D bundle (.cs4d):         {b}")
    for w in weights:
        print(f"  reloadable weights:        {w}")
    for t in turntable:
        print(f"  turntable video:           {t}")
    return {"ply": plys, "bundle": bundles, "weights": weights, "turntable": turntable}


def run(args) -> int:
    prompt = load_demo(args.seconds)
    stop_on_signals()
    host = ComfyHost(root=args.root, port=args.port or None)
    t0 = time.time()
    try:
        print(f"starting ComfyUI (CPU) with the pack; folders under {host.root}", flush=True)
        host.start()
        print(f"ComfyUI ready in {time.time() - t0:.1f} s at {host.base}; running the demo workflow", flush=True)
        t1 = time.time()
        hist = host.run(prompt, timeout=args.timeout, on_event=Reporter(prompt))
        print(f"workflow finished in {time.time() - t1:.1f} s (total {time.time() - t0:.1f} s with start-up)")
        report_outputs(host, hist)
    except WorkflowError as e:
        print(f"the demo workflow failed: {e}\nComfyUI log: {host.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    finally:
        host.stop()
    print("\nTo look at it in ComfyUI (template '6 Look at saved 4D Gaussians' shows them in the 4D preview; "
          "the files above are in its output folder):\n  scripts/demo.sh --ui")
    return 0


def ui(args) -> int:
    host = ComfyHost(root=args.root, port=args.port or DEFAULT_PORT)
    banner = ("ComfyUI with CharacterShot at {host.base} (pid {host.proc.pid}): open it in a browser, then "
              "Workflow -> Browse Templates -> charactershot -> '6 Look at saved 4D Gaussians' (Run: the first demo "
              "run's 4D Gaussians, demo_00001, in the 4D preview) or '1 Start here' (the whole demo). Output "
              "folder: {host.output_dir}. Ctrl-C stops ComfyUI.")
    return serve(host, banner)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ui", action="store_true", help="start ComfyUI with the pack and wait (Ctrl-C stops it)")
    p.add_argument("--seconds", type=float, default=None,
                   help="time budget of the 4D fit (default: the workflow's, 180 s)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="ComfyUI's folders (default: demo_out/comfyui)")
    p.add_argument("--port", type=int, default=0, help=f"port (default: free for the run, {DEFAULT_PORT} for --ui)")
    p.add_argument("--timeout", type=float, default=1800, help="give up on the workflow after this many seconds")
    args = p.parse_args(argv)
    return ui(args) if args.ui else run(args)


if __name__ == "__main__":
    sys.exit(main())

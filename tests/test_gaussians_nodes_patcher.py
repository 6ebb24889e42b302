"""Render 4D on a cached fit: every run reuses the one ModelPatcher kept with the Gaussians (ComfyUI's memory manager
sees one model, already loaded) instead of wrapping the fit in a new patcher each time; the renders are the same.
Runs the node's ``execute`` in a child process with the real ComfyUI host's model management (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.comfy_host import REPO

COMFY = REPO / ".comfyui"

CHILD = r"""
import importlib, json, sys, types
repo, comfy_dir = sys.argv[1:3]
sys.path.insert(0, comfy_dir)
import torch
from comfy.cli_args import args
args.cpu = True
import comfy.model_patcher

made = []
original = comfy.model_patcher.ModelPatcher.__init__
def counting(self, *a, **k):
    made.append(1)
    original(self, *a, **k)
comfy.model_patcher.ModelPatcher.__init__ = counting

pkg = types.ModuleType("charshot_pack")
pkg.__path__ = [repo]
sys.modules["charshot_pack"] = pkg
nodes_g = importlib.import_module("charshot_pack.nodes.gaussians")
model_mod = importlib.import_module("charshot_pack.charactershot_core.gaussians.model")
torch.manual_seed(0)
model = model_mod.make_gaussians(torch.randn(200, 3) * 0.3, torch.rand(200, 3), 0.03, 0, [0.0, 1.0], None,
                                 motion="table")
outs = []
for _ in range(3):
    res = nodes_g.Render4D.execute(model, "orbit", num_views=2, width=48, height=32, backend="torch",
                                   framing="fixed")
    outs.append(res.args[0] if hasattr(res, "args") else res.result[0])
same = all(torch.equal(o, outs[0]) for o in outs)
print(json.dumps({"patchers": len(made), "same": same, "shape": list(outs[0].shape),
                  "kept": getattr(model, "_charshot_patcher", None) is not None}))
"""


def test_render_4d_reuses_one_patcher_per_fit():
    if not (COMFY / "comfy" / "model_patcher.py").is_file():
        pytest.skip(f"no ComfyUI host at {COMFY}")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(COMFY)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["patchers"] == 1 and r["kept"], r  # three runs, one patcher
    assert r["same"] and r["shape"] == [4, 32, 48, 3], r  # 2 views x 2 times

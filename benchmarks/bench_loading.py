"""Time and peak RAM of loading the 4D transformer on the CPU from memory-mapped safetensors.

Writes a synthetic checkpoint with the full-size block width (CogVideoX-5B-I2V: 48 heads x 64, text 4096, time
512) but only ``--layers`` blocks (the real model has 42; memory and time scale with the block count), tensor by
tensor in bf16 (never the whole model in memory), then loads it in a fresh subprocess per case and reports wall
time and the peak resident memory above the interpreter's baseline, next to the size of the weights.

    .venv/bin/python benchmarks/bench_loading.py --layers 2 [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def write_checkpoint(path: str, layers: int) -> dict:
    import torch

    from charactershot_core.models.checkpoints import StreamingSafetensorsWriter
    from charactershot_core.models.config import FULL_CONFIG_4D
    from charactershot_core.models.loading import KIND_4D, build_transformer_on_meta

    cfg = dict(FULL_CONFIG_4D, num_layers=layers)
    shapes = {k: tuple(v.shape) for k, v in build_transformer_on_meta(KIND_4D, cfg).state_dict().items()}
    plan = [(k, torch.bfloat16, s) for k, s in shapes.items()]
    g = torch.Generator().manual_seed(0)
    with StreamingSafetensorsWriter(path, plan, {"config": json.dumps(cfg)}) as w:
        for k, s in shapes.items():
            w.write(k, (torch.randn(s, generator=g) * 0.02).to(torch.bfloat16))
    return cfg


CHILD = r"""
import resource, sys, time, json
sys.path.insert(0, {repo!r})
import torch
from charactershot_core.models import loading as L
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
model, cfg, src = L.load_transformer({path!r}, L.KIND_4D, {dtype!r}, {storage!r})
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
held = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
print(json.dumps({{"seconds": dt, "peak_above_baseline_mib": (peak - base) / 1024, "held_mib": held / 2**20}}))
"""


def run_case(path: str, dtype: str, storage: str) -> dict:
    code = CHILD.format(repo=REPO, path=path, dtype=dtype, storage=storage)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2, help="transformer blocks in the synthetic checkpoint (real: 42)")
    ap.add_argument("--keep", default=None, help="folder to keep the synthetic file in (default: a temp folder)")
    args = ap.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="charshot-bench-")
    path = os.path.join(folder, f"synthetic_4d_{args.layers}layers_bf16.safetensors")
    t0 = time.perf_counter()
    if not os.path.isfile(path):
        write_checkpoint(path, args.layers)
    size = os.path.getsize(path) / 2**20
    print(f"checkpoint: {path}  {size:.0f} MiB bf16, {args.layers} of 42 blocks (written in "
          f"{time.perf_counter() - t0:.1f} s)")
    print(f"{'dtype':>6} {'storage':>11} {'load s':>8} {'peak RSS above baseline MiB':>28} {'weights held MiB':>17}")
    for dtype, storage in (("bf16", "default"), ("bf16", "fp8_e4m3fn"), ("fp32", "default")):
        r = run_case(path, dtype, storage)
        print(f"{dtype:>6} {storage:>11} {r['seconds']:8.2f} {r['peak_above_baseline_mib']:28.0f} "
              f"{r['held_mib']:17.0f}")
    per_block = size / args.layers
    print(f"full 42-block model ≈ {per_block * 42 / 1024:.1f} GiB in bf16 (from {per_block:.0f} MiB per block, "
          "embeddings included in the per-block figure)")
    if not args.keep:
        os.remove(path)
        os.rmdir(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())

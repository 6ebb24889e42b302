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
import resource, sys, threading, time, json
sys.path.insert(0, {repo!r})
import torch
from charactershot_core.models import loading as L
from charactershot_core.models.convert import convert_folder

def anon_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0

peak_anon = [anon_kib()]
base_anon = peak_anon[0]
stop = False
def poll():
    while not stop:
        peak_anon[0] = max(peak_anon[0], anon_kib())
        time.sleep(0.005)
th = threading.Thread(target=poll, daemon=True); th.start()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if {case!r} == "convert":
    convert_folder({path!r}, {out!r}, dtype="keep", fp8={fp8!r})
    held = 0
else:
    model, cfg, src = L.load_transformer({path!r}, L.KIND_4D, {dtype!r}, {storage!r})
    held = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
dt = time.perf_counter() - t0
stop = True; th.join()
peak_anon[0] = max(peak_anon[0], anon_kib())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": dt, "peak_rss_mib": (peak - base) / 1024,
                  "peak_anon_mib": (peak_anon[0] - base_anon) / 1024, "held_mib": held / 2**20}}))
"""


def run_case(path: str, dtype: str = "bf16", storage: str = "default", case: str = "load", out: str = "",
             fp8: bool = False) -> dict:
    code = CHILD.format(repo=REPO, path=path, dtype=dtype, storage=storage, case=case, out=out, fp8=fp8)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_official_folder(folder: str, single: str, shards: int = 2) -> None:
    """An official-layout transformer/ folder (sharded + index) from the synthetic single file, for the converter."""
    from charactershot_core.models.checkpoints import StreamingSafetensorsWriter, open_safetensors

    tdir = os.path.join(folder, "transformer")
    os.makedirs(tdir, exist_ok=True)
    with open_safetensors(single) as st:
        cfg = json.loads(st.metadata["config"])
        keys = list(st)
        per = -(-len(keys) // shards)
        weight_map = {}
        for i in range(shards):
            part = keys[i * per:(i + 1) * per]
            name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
            with StreamingSafetensorsWriter(os.path.join(tdir, name),
                                            [(k, st.info(k).dtype, st.info(k).shape) for k in part]) as w:
                for k in part:
                    w.write(k, st[k])
                    weight_map[k] = name
    with open(os.path.join(tdir, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(tdir, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"weight_map": weight_map}, f)
    import torch

    from charactershot_core.models.camera_guider import CameraGuider

    torch.save(CameraGuider(out_dim=3072).state_dict(), os.path.join(folder, "camera_guider.pt"))
    os.makedirs(os.path.join(folder, "camera_embs"), exist_ok=True)
    for i in range(2):
        torch.save(torch.zeros(6, 480, 720), os.path.join(folder, "camera_embs", f"{i}.pt"))


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
    print("peak RSS counts the memory-mapped file pages read (reclaimable page cache); peak anon is the private "
          "memory the process allocated (sampled every 5 ms)")
    print(f"{'case':>24} {'seconds':>8} {'peak RSS MiB':>13} {'peak anon MiB':>14} {'weights held MiB':>17}")
    for dtype, storage in (("bf16", "default"), ("bf16", "fp8_e4m3fn"), ("fp32", "default")):
        r = run_case(path, dtype, storage)
        print(f"{'load ' + dtype + ' ' + storage:>24} {r['seconds']:8.2f} {r['peak_rss_mib']:13.0f} "
              f"{r['peak_anon_mib']:14.0f} {r['held_mib']:17.0f}")
    official = os.path.join(folder, "official")
    make_official_folder(official, path)
    for fp8 in (False, True):
        out = os.path.join(folder, "converted_fp8" if fp8 else "converted")
        r = run_case(official, case="convert", out=out, fp8=fp8)
        name = "convert " + ("--fp8" if fp8 else "keep bf16")
        print(f"{name:>24} {r['seconds']:8.2f} {r['peak_rss_mib']:13.0f} {r['peak_anon_mib']:14.0f} {'-':>17}")
    per_block = size / args.layers
    print(f"full 42-block model ≈ {per_block * 42 / 1024:.1f} GiB in bf16 (from {per_block:.0f} MiB per block, "
          "embeddings included in the per-block figure)")
    if not args.keep:
        import shutil

        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the multi-view sampler (not a test): one view group and the whole character.

Modes
-----
* default (GPU): the FULL-size CharacterShot transformer (7.55 B parameters) and the full CogVideoX VAE with random
  weights, bf16 (``--fp8``: fp8 block weights), one 5-view group at 480x720 x 25 frames through the real pipeline
  code (``MultiViewWorker.run_group``): per-step time (median after the first step), peak VRAM
  (``torch.cuda.max_memory_allocated``, weights included), VAE encode and decode times; the whole character (5
  groups x ``--steps``) is extrapolated from the group, or run with ``--whole``.
  Official reference on an H200: 7.6 s per CFG step, 25.8 GiB peak.  Targets: <= 3.8 s/step and <= 20 GiB (bf16),
  fp8 weights <= 12 GiB.
* ``--tiny`` (CPU): the tiny checkpoint set, the official 21-view rig and groups at 64x96, to time the whole
  pipeline on a CPU (model load, 5 groups, decoding) and prove the script works.

Examples::

    python benchmarks/bench_sampler.py                      # CUDA, bf16, 10 steps of one group + extrapolation
    python benchmarks/bench_sampler.py --fp8 --low-memory
    python benchmarks/bench_sampler.py --steps 50 --whole   # the whole character for real
    python benchmarks/bench_sampler.py --tiny --steps 50    # CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

GIB = 1024 ** 3


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _full_models(dev, dtype, fp8: bool):
    from diffusers import AutoencoderKLCogVideoX

    from charactershot_core.models import FULL_CONFIG_4D, CameraGuider, build_on_meta, random_init_
    from charactershot_core.models.fp8 import quantize_fp8_
    from charactershot_core.models.loading import DEFAULT_VAE_CONFIG, LoadedModel4D, LoadedVAE

    model = build_on_meta(FULL_CONFIG_4D).to(dtype)
    model.to_empty(device=dev)
    random_init_(model, seed=0, std=0.02)
    if fp8:
        quantize_fp8_(model)
    model.eval().requires_grad_(False)
    guider = CameraGuider(out_dim=3072)
    guider.reset_parameters(torch.Generator().manual_seed(1))
    embs = torch.randn(21, 6, 480, 720, generator=torch.Generator().manual_seed(2))
    m = LoadedModel4D(model, guider.eval(), embs, dict(FULL_CONFIG_4D), dtype,
                      "fp8_e4m3fn" if fp8 else "default", source="random-full")
    kwargs = {k: v for k, v in DEFAULT_VAE_CONFIG.items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        vae = AutoencoderKLCogVideoX(**kwargs).to(device=dev, dtype=dtype).eval().requires_grad_(False)
    vae.enable_tiling()
    vae.enable_slicing()
    return m, LoadedVAE(vae, dict(DEFAULT_VAE_CONFIG), dtype, "random-full")


def _tiny_models(dev):
    from charactershot_core.models.loading import load_model_4d, load_vae
    from charactershot_core.models.tiny import make_tiny_set

    ts = make_tiny_set(tempfile.mkdtemp(prefix="bench-sampler-"), views=21)
    return load_model_4d(ts.official, None, torch.float32, device=dev), load_vae(ts.official, torch.float32,
                                                                                device=dev)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny checkpoints on the CPU")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--fp8", action="store_true", help="fp8 e4m3fn transformer block weights")
    ap.add_argument("--steps", type=int, default=10, help="denoising steps of the measured group")
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--low-memory", action="store_true", help="CFG halves one after the other")
    ap.add_argument("--whole", action="store_true", help="run all 5 groups instead of extrapolating")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: run on a GPU machine, or use --tiny on the CPU")
        return 0

    from charactershot_core.cameras import official_rig
    from charactershot_core.sampling import MultiViewJob, MultiViewWorker
    from charactershot_core.sampling import pipeline as P

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    t0 = time.perf_counter()
    if args.tiny:
        model, vae = _tiny_models(dev)
        h, w, d_text = 64, 96, model.config["text_embed_dim"]
    else:
        model, vae = _full_models(dev, dtype, args.fp8)
        h, w, d_text = 480, 720, 4096
    load_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    views = (torch.rand(21, h, w, 3, generator=g) * 255).to(torch.uint8)
    poses = (torch.rand(args.frames, h, w, 3, generator=g) * 255).to(torch.uint8)
    pos, neg = torch.randn(1, 226, d_text, generator=g), torch.randn(1, 226, d_text, generator=g)
    job = MultiViewJob(views, poses, poses[0], pos, neg, seed=42, steps=args.steps, low_memory=args.low_memory,
                       rig=official_rig().resized(w, h))
    worker = MultiViewWorker(model, vae, dev)

    # time the VAE passes and the denoising steps inside the real pipeline code
    timings = {"encode": [], "decode": [], "steps": []}
    orig_enc, orig_dec = P.vae_encode, P.vae_decode

    def timed(fn, key):
        def wrapper(*a, **k):
            _sync(dev)
            t = time.perf_counter()
            out = fn(*a, **k)
            _sync(dev)
            timings[key].append(time.perf_counter() - t)
            return out
        return wrapper

    P.vae_encode, P.vae_decode = timed(orig_enc, "encode"), timed(orig_dec, "decode")
    last = [time.perf_counter()]

    def on_step(i, n, x0):
        _sync(dev)
        now = time.perf_counter()
        timings["steps"].append(now - last[0])
        last[0] = now

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    groups = range(len(job.groups)) if args.whole else [0]
    t_groups = []
    for gi in groups:
        t = time.perf_counter()
        last[0] = t
        worker.run_group(job, gi, on_step)
        _sync(dev)
        t_groups.append(time.perf_counter() - t)
    P.vae_encode, P.vae_decode = orig_enc, orig_dec
    steps = timings["steps"]
    # the first step of a group also includes its VAE encoding and set-up; later steps are pure denoising
    per_step = statistics.median(steps[1:] if len(steps) > 1 else steps)
    group_other = t_groups[0] - sum(steps[:args.steps])
    res = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "mode": "tiny" if args.tiny else "full", "dtype": "fp32" if args.tiny else args.dtype, "fp8": args.fp8,
        "low_memory": args.low_memory, "frames": args.frames, "size": f"{w}x{h}", "steps": args.steps,
        "model_build_or_load_s": round(load_s, 2),
        "per_step_s": round(per_step, 4),
        "vae_encode_s_total": round(sum(timings["encode"]), 3), "vae_encode_calls": len(timings["encode"]),
        "vae_decode_s_per_view": round(statistics.mean(timings["decode"]), 3) if timings["decode"] else None,
        "group_s": round(t_groups[0], 2),
        "group_overhead_s": round(group_other, 2),
        "peak_vram_gib": round(torch.cuda.max_memory_allocated(dev) / GIB, 2) if dev.type == "cuda" else None,
    }
    if args.whole:
        res["character_s"] = round(sum(t_groups), 2)
        res["groups_s"] = [round(x, 2) for x in t_groups]
    else:
        # 5 groups x 50 steps: per-step time x 250 plus 5 x (encode + decode + set-up) of a group
        res["character_50_steps_s_extrapolated"] = round(5 * (50 * per_step + group_other), 1)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

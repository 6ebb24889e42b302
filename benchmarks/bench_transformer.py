"""Benchmark of our CharacterShot 4D transformer (not a test).

Modes
-----
* default (GPU): one CFG forward (batch 2) of the FULL-size transformer (CogVideoX-5B-I2V dual attention,
  7.55 B parameters, random weights) for a 5-view group at 480×720, 25 frames (L+1 = 8 latent frames of 60×90),
  in bf16 and, with ``--fp8``, with fp8 weights.  Reports seconds per step (median of ``--steps`` after
  ``--warmup``) and peak VRAM (``torch.cuda.max_memory_allocated``, weights included).
  Targets: ≤ 3.8 s/step and ≤ 20 GiB (bf16), ≤ 12 GiB (fp8); the official code takes 7.6 s and 25.8 GiB on an H200.
* ``--device cpu --tiny``: the same code path with a tiny config and tiny sizes, to prove the script works.
* ``--load-ram``: peak RAM and time to load a checkpoint on CPU from memory-mapped safetensors into a model built
  on the meta device.  A test file of a mid-size config (``--load-layers`` blocks, default 4, at full width, bf16)
  is written first (streamed, in a separate process), then a fresh process loads it and reports its RSS.

Examples::

    python benchmarks/bench_transformer.py                       # CUDA, bf16, full size
    python benchmarks/bench_transformer.py --fp8                 # CUDA, fp8 weights
    python benchmarks/bench_transformer.py --device cpu --tiny
    python benchmarks/bench_transformer.py --load-ram --load-layers 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from charactershot_core.models import FULL_CONFIG_4D, build_on_meta, random_init_  # noqa: E402
from charactershot_core.models.fp8 import quantize_fp8_  # noqa: E402

TINY_CONFIG = dict(FULL_CONFIG_4D, num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4,
                   time_embed_dim=16, text_embed_dim=32, num_layers=2, sample_height=8, sample_width=12,
                   max_text_seq_length=16)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GIB = 1024 ** 3


def _rss_gib() -> float:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------------------
def bench_forward(args) -> dict:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available: run with --device cpu --tiny, or on a GPU machine")
    config = TINY_CONFIG if args.tiny else FULL_CONFIG_4D
    height, width = (64, 96) if args.tiny else (args.height, args.width)
    views, frames = (3, 9) if args.tiny else (args.views, args.frames)
    latent_frames = (frames - 1) // 4 + 1 + 1  # + reference frame
    lh, lw = height // 8, width // 8

    t0 = time.perf_counter()
    model = build_on_meta(config).to(dtype)  # dtype chosen on meta: no fp32 copy is ever allocated
    model.to_empty(device=device)
    random_init_(model, seed=0, std=0.02)
    if args.fp8:
        quantize_fp8_(model)
    model.eval().set_speed_options(ff_chunk_size=args.ff_chunk or None, attention_seq_chunk=args.attn_chunk or None)
    _sync(device)
    setup_s = time.perf_counter() - t0

    c = model.config
    g = torch.Generator(device=device).manual_seed(0)
    b = 2  # CFG batch: [negative, positive]
    hidden = torch.randn(b, views, latent_frames, c.in_channels, lh, lw, generator=g, device=device, dtype=dtype)
    text = torch.randn(b, views, c.max_text_seq_length, c.text_embed_dim, generator=g, device=device, dtype=dtype)
    n = (lh // c.patch_size) * (lw // c.patch_size)
    camera = torch.randn(b, views, n, c.inner_dim, generator=g, device=device, dtype=dtype) * 0.1
    timestep = torch.tensor([999, 999], device=device)
    rope_t, rope_v = model.rotary_embeddings(latent_frames, views, lh // c.patch_size, lw // c.patch_size, device)

    weights_gib = sum(t.numel() * t.element_size() for t in model.parameters()) / GIB
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            _sync(device)
            t = time.perf_counter()
            out = model(hidden, text, timestep, camera, rope_t, rope_v)
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
            finite = bool(torch.isfinite(out).all())
            del out
    result = {
        "mode": "forward", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "config": "tiny" if args.tiny else "full (CogVideoX-5B-I2V dual attention)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": "fp8 (transformer blocks) + " + args.dtype if args.fp8 else args.dtype,
        "batch_views_frames_latent": [b, views, latent_frames, lh, lw],
        "ff_chunk": model.ff_chunk_size, "attention_seq_chunk": model.attention_seq_chunk,
        "setup_s": round(setup_s, 2), "weights_gib": round(weights_gib, 3),
        "step_s_median": round(statistics.median(times), 4), "step_s_all": [round(x, 4) for x in times],
        "output_finite": finite,
    }
    if device.type == "cuda":
        result["peak_vram_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 3)
        result["peak_vram_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / GIB, 3)
    else:
        result["peak_rss_gib"] = round(_rss_gib(), 3)
    return result


# ----------------------------------------------------------------------------------------------------------------
_ST_DTYPE = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def write_random_safetensors(path: Path, shapes: dict, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> int:
    """Write a safetensors file of random tensors one tensor at a time (never the whole state dict in memory)."""
    g = torch.Generator().manual_seed(seed)
    header, offset = {}, 0
    itemsize = torch.empty((), dtype=dtype).element_size()
    for name in sorted(shapes):
        nbytes = itemsize
        for s in shapes[name]:
            nbytes *= s
        header[name] = {"dtype": _ST_DTYPE[dtype], "shape": list(shapes[name]), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name in sorted(shapes):
            t = (torch.randn(shapes[name], generator=g) * 0.02).to(dtype)
            fh.write(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            del t
    os.replace(tmp, path)
    return offset


def _load_child(path: str, config: dict) -> dict:
    """Run in a fresh process: build on meta, load the memory-mapped file with assign=True, report RSS and time."""
    from safetensors.torch import load_file

    base = _rss_gib()
    t0 = time.perf_counter()
    model = build_on_meta(config)
    sd = load_file(path)  # memory-mapped read; tensors keep the file's dtype
    model.load_state_dict(sd, strict=True, assign=True)
    del sd
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_gib()
    # read every weight once (as a forward or a copy to the GPU would): all pages become resident
    t1 = time.perf_counter()
    total = 0.0
    with torch.no_grad():
        for p in model.parameters():
            total += float(torch.sum(p, dtype=torch.float32))
    touch_s = time.perf_counter() - t1
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    return {"load_s": round(load_s, 3), "read_all_s": round(touch_s, 3), "rss_after_imports_gib": round(base, 3),
            "peak_rss_after_load_gib": round(rss_loaded, 3), "peak_rss_gib": round(_rss_gib(), 3), "param_dtypes": dtypes,
            "parameters": sum(p.numel() for p in model.parameters()),
            "all_on_cpu": all(p.device.type == "cpu" for p in model.parameters())}


def bench_load_ram(args) -> dict:
    config = dict(FULL_CONFIG_4D, num_layers=args.load_layers)
    folder = Path(args.load_dir or tempfile.mkdtemp(prefix="charshot_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"transformer4d_{args.load_layers}layers_bf16.safetensors"
    if not path.is_file():
        shapes = {k: tuple(v.shape) for k, v in build_on_meta(config).state_dict().items()}
        t0 = time.perf_counter()
        # write in a separate process so that this process's memory stays small as well
        code = ("import sys, json; sys.path.insert(0, %r); from benchmarks.bench_transformer import "
                "write_random_safetensors as w; from pathlib import Path; import torch; "
                "w(Path(%r), {k: tuple(v) for k, v in json.loads(sys.stdin.read()).items()}, torch.bfloat16)"
                % (str(REPO), str(path)))
        subprocess.run([sys.executable, "-c", code], input=json.dumps(shapes), text=True, check=True, cwd=REPO)
        write_s = time.perf_counter() - t0
    else:
        write_s = None
    size_gib = path.stat().st_size / GIB
    code = ("import sys, json; sys.path.insert(0, %r); from benchmarks.bench_transformer import _load_child; "
            "print(json.dumps(_load_child(%r, json.loads(sys.stdin.read()))))" % (str(REPO), str(path)))
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(config), text=True, capture_output=True,
                          check=True, cwd=REPO)
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {"mode": "load-ram", "file": str(path), "num_layers": args.load_layers, "file_gib": round(size_gib, 3),
              "write_s": None if write_s is None else round(write_s, 1), **child,
              "peak_rss_minus_imports_gib": round(child["peak_rss_gib"] - child["rss_after_imports_gib"], 3),
              "fp32_materialised_would_be_gib": round(child["parameters"] * 4 / GIB, 3)}
    if not args.keep_file and args.load_dir is None:
        path.unlink()
        folder.rmdir()
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--fp8", action="store_true", help="fp8 (e4m3fn) weights for the transformer blocks")
    ap.add_argument("--tiny", action="store_true", help="tiny config and sizes (CPU smoke run)")
    ap.add_argument("--views", type=int, default=5)
    ap.add_argument("--frames", type=int, default=25, help="pixel frames ((F-1) % 4 == 0)")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=720)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--ff-chunk", type=int, default=16384, help="tokens per FF chunk (0: unchunked)")
    ap.add_argument("--attn-chunk", type=int, default=0, help="sequences per SDPA call (0: all at once)")
    ap.add_argument("--load-ram", action="store_true", help="measure CPU load time and peak RSS instead")
    ap.add_argument("--load-layers", type=int, default=4)
    ap.add_argument("--load-dir", default=None, help="where to write/keep the test checkpoint (default: temp)")
    ap.add_argument("--keep-file", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    if (args.frames - 1) % 4:
        ap.error("--frames must satisfy (F - 1) % 4 == 0")
    result = bench_load_ram(args) if args.load_ram else bench_forward(args)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

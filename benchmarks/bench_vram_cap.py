"""Smaller cards emulated on a big one (not a test): one real-size view-group step under a VRAM cap.

For each weights variant (bf16 with the CFG batch of 2; bf16 with low-memory CFG, the two halves one after the
other; fp8 block weights with low-memory CFG) the FULL-size transformer (7.55 B parameters, random weights) is built
once, then for each cap, largest first, the process is capped with ``torch.cuda.set_per_process_memory_fraction``
(cap / the card's memory) and one denoising step of a 5-view group at 480x720 x 25 frames (8 + 1 latent frames of
60x90, 226 text tokens) runs: does it fit, the peak (``max_memory_allocated``, weights included), seconds per
step. A variant stops at its first cap that does not fit (smaller caps cannot fit either).

The cap bounds what PyTorch's caching allocator may hold; a real card of that size also holds the CUDA context
(~0.5 GiB) and whatever else runs on it (a desktop, another model in ComfyUI): read the figures as an upper bound
of what fits. ComfyUI's partial loading (weights streamed from the CPU) is not modelled: a variant whose weights
alone exceed the cap does not fit here.

    python benchmarks/bench_vram_cap.py --caps none,24,16,12 --json caps.json            # CUDA
    python benchmarks/bench_vram_cap.py --device cpu --tiny --caps 12 --json caps.json   # the same code on the CPU

``--deadline-s``: start no new measurement after this many seconds (the JSON is rewritten after every cap, so a
run stopped from outside keeps what it measured).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.bench_transformer import TINY_CONFIG  # noqa: E402
from charactershot_core.models import FULL_CONFIG_4D, build_on_meta, random_init_  # noqa: E402
from charactershot_core.models.fp8 import quantize_fp8_  # noqa: E402

GIB = 1024 ** 3
VARIANTS = {  # name: (fp8 weights, low-memory CFG)
    "bf16": (False, False),
    "bf16_low_memory": (False, True),
    "fp8_low_memory": (True, True),
}


def _is_oom(e: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(e, oom) or "out of memory" in str(e).lower()


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _inputs(model, dev, dtype, tiny: bool, batch: int):
    c = model.config
    height, width, views, frames = (64, 96, 3, 9) if tiny else (480, 720, 5, 25)
    latent_frames = (frames - 1) // 4 + 1 + 1  # + the reference frame
    lh, lw = height // 8, width // 8
    g = torch.Generator(device=dev).manual_seed(0)
    hidden = torch.randn(batch, views, latent_frames, c.in_channels, lh, lw, generator=g, device=dev, dtype=dtype)
    text = torch.randn(batch, views, c.max_text_seq_length, c.text_embed_dim, generator=g, device=dev, dtype=dtype)
    n = (lh // c.patch_size) * (lw // c.patch_size)
    camera = torch.randn(batch, views, n, c.inner_dim, generator=g, device=dev, dtype=dtype) * 0.1
    timestep = torch.full((batch,), 999, device=dev)
    rope_t, rope_v = model.rotary_embeddings(latent_frames, views, lh // c.patch_size, lw // c.patch_size, dev)
    return (hidden, text, timestep, camera, rope_t, rope_v), [batch, views, latent_frames, lh, lw]


def _step(model, inputs, low_memory: bool):
    """One denoising step's transformer work: the CFG batch of 2 at once, or its halves one after the other."""
    with torch.inference_mode():
        if not low_memory:
            out = model(*inputs)
            ok = bool(torch.isfinite(out).all())
            del out
            return ok
        ok = True
        for _ in range(2):
            out = model(*inputs)
            ok = ok and bool(torch.isfinite(out).all())
            del out
        return ok


def measure_cap(model, dev, dtype, tiny, low_memory, cap_gib, steps, warmup) -> dict:
    row = {"cap_gib": cap_gib}
    enforced = dev.type == "cuda" and cap_gib is not None
    if dev.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(dev).total_memory
        frac = 1.0 if cap_gib is None else min(1.0, cap_gib * GIB / total)
        torch.cuda.set_per_process_memory_fraction(frac, dev)
        torch.cuda.reset_peak_memory_stats(dev)
        row["fraction"] = round(frac, 4)
    row["enforced"] = enforced
    inputs, shape = None, None
    times = []
    try:
        inputs, shape = _inputs(model, dev, dtype, tiny, 1 if low_memory else 2)
        row["batch_views_frames_latent"] = shape
        for i in range(warmup + steps):
            _sync(dev)
            t = time.perf_counter()
            finite = _step(model, inputs, low_memory)
            _sync(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t)
        row.update(fits=True, output_finite=finite, step_s=round(statistics.median(times), 4),
                   step_s_all=[round(x, 4) for x in times])
    except Exception as e:  # noqa: BLE001 - out of memory is the answer "does not fit"; anything else is reported
        if not _is_oom(e):
            raise
        row.update(fits=False, error=str(e).splitlines()[0][:300])
    finally:
        del inputs
        if dev.type == "cuda":
            row["peak_gib"] = round(torch.cuda.max_memory_allocated(dev) / GIB, 3)
            row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(dev) / GIB, 3)
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0, dev)
    return row


def build(dev, dtype, tiny: bool, fp8: bool):
    config = TINY_CONFIG if tiny else FULL_CONFIG_4D
    model = build_on_meta(config).to(dtype)
    model.to_empty(device=dev)
    random_init_(model, seed=0, std=0.02)
    if fp8:
        quantize_fp8_(model)
    model.eval().requires_grad_(False).set_speed_options()
    return model


def parse_caps(text: str) -> list:
    caps = []
    for part in (text or "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part in ("none", "full", "0"):
            caps.append(None)
            continue
        try:
            v = float(part)
        except ValueError:
            raise SystemExit(f"--caps: expected GiB numbers (or 'none') separated by commas, got {part!r}") from None
        if v <= 0:
            raise SystemExit(f"--caps: expected positive GiB, got {part!r}")
        caps.append(v)
    if not caps:
        raise SystemExit("--caps: expected at least one cap, e.g. 12,16,24")
    # largest first; None (no cap) before every number
    return sorted(set(caps), key=lambda c: float("inf") if c is None else c, reverse=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caps", default="none,24,16,12", help="GiB caps, comma-separated ('none': uncapped)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--tiny", action="store_true", help="tiny config and sizes (CPU smoke run)")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--deadline-s", type=float, default=0.0, help="start nothing new after this many seconds")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available: run with --device cpu --tiny, or on a GPU machine")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    caps = parse_caps(a.caps)
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    for n in names:
        if n not in VARIANTS:
            raise SystemExit(f"--variants: unknown {n!r}; expected some of {', '.join(VARIANTS)}")
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "card_gib": round(torch.cuda.get_device_properties(dev).total_memory / GIB, 2) if dev.type == "cuda"
              else None, "config": "tiny" if a.tiny else "full (CogVideoX-5B-I2V dual attention, 7.55 B)",
              "dtype": a.dtype, "caps_gib": caps, "variants": {}, "complete": False}

    def write():
        if a.json:
            tmp = a.json + ".partial"
            Path(tmp).write_text(json.dumps(result, indent=1))
            os.replace(tmp, a.json)

    def out_of_time() -> bool:
        return bool(a.deadline_s) and time.perf_counter() - t_start > a.deadline_s

    for name in names:
        if out_of_time():
            result["variants"][name] = {"skipped": "deadline"}
            continue
        fp8, low = VARIANTS[name]
        t0 = time.perf_counter()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        model = build(dev, dtype, a.tiny, fp8)
        _sync(dev)
        weights = sum(t.numel() * t.element_size() for t in model.parameters()) / GIB
        entry = {"fp8": fp8, "low_memory": low, "build_s": round(time.perf_counter() - t0, 2),
                 "weights_gib": round(weights, 3), "caps": []}
        result["variants"][name] = entry
        write()
        for cap in caps:
            if out_of_time():
                entry["caps"].append({"cap_gib": cap, "skipped": "deadline"})
                continue
            row = measure_cap(model, dev, dtype, a.tiny, low, cap, a.steps, a.warmup)
            entry["caps"].append(row)
            print(json.dumps({"variant": name, **row}), flush=True)
            write()
            if not row["fits"]:
                break  # smaller caps cannot fit either
        del model
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    result["complete"] = not out_of_time()
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    write()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

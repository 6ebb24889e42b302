"""Time of ``GET /object_info`` through a real ComfyUI server whose output folder holds many files.

ComfyUI builds the node list (every node's schema, with the file lists of its combo inputs) on each
``/object_info`` request, which the front-end makes on every page load.  This fills a fresh output folder with
``--files`` files laid out like a used ComfyUI's (images at the top level and in subfolders, LoRAs and checkpoints
saved by other nodes as .safetensors, a few CharacterShot saves under ``charactershot/``), starts a real server with
the pack linked in, and reports the median of ``--repeats`` requests of ``/object_info`` and of the two CharacterShot
nodes that list files (Load 4D Gaussians, Load Multi-View).  The files are in the OS cache after the first request,
so these are warm figures: a cold disk only makes a walk slower.

    .venv/bin/python benchmarks/bench_object_info.py [--files 2000] [--repeats 7] [--pack DIR] [--json OUT]

``--pack`` links another copy of the pack (e.g. an older commit unpacked with ``git archive``) to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LORA_TENSORS = 400  # an SD 1.5 LoRA has about 400 tensors: a header of about 56 KB
PNG_1PX = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                        "0000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082")


def _safetensors(path: Path, metadata: dict, tensors: int = 1) -> None:
    """A valid safetensors file with ``tensors`` one-float tensors named like a LoRA's and ``metadata`` in its header
    (the header is what a listing that checks files has to read and parse; the data is kept tiny)."""
    header = {"__metadata__": metadata}
    for i in range(tensors):
        name = f"lora_unet_down_blocks_{i // 24}_attentions_{i % 3}_transformer_blocks_{i % 8}_attn1_to_q.lora_{i}"
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(4 * tensors))


def fill_output(out: Path, files: int) -> dict:
    """``files`` files: 55 % images at the top level, 25 % images in 40 subfolders (two levels), 15 % .safetensors
    of other nodes (loras/, checkpoints/, and some at the top; LoRA-sized headers), 5 % CharacterShot saves (weights +
    bundle pairs)."""
    counts = {"top_images": int(files * 0.55), "sub_images": int(files * 0.25), "other_safetensors": int(files * 0.15)}
    counts["charactershot"] = files - sum(counts.values())
    for i in range(counts["top_images"]):
        (out / f"ComfyUI_{i:05d}_.png").write_bytes(PNG_1PX)
    for i in range(counts["sub_images"]):
        d = out / f"project_{i % 20:02d}" / ("shots" if i % 2 else "drafts")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img_{i:05d}_.png").write_bytes(PNG_1PX)
    for i in range(counts["other_safetensors"]):
        where = ("loras", "checkpoints", ".")[i % 3]
        _safetensors(out / where / f"trained_{i:05d}.safetensors", {"format": "pt", "ss_network_dim": "16"},
                     tensors=LORA_TENSORS)
    for i in range(counts["charactershot"] // 2):
        _safetensors(out / "charactershot" / f"4d_{i + 1:05d}.safetensors",
                     {"format": "charactershot-4dgs", "config": "{}"})
        (out / "charactershot" / f"4d_{i + 1:05d}_bundle.cs4d").write_bytes(b"CS4D" + bytes(60))
    if counts["charactershot"] % 2:
        (out / "charactershot" / "notes.txt").write_text("not a 4D file")
    total = sum(1 for _, _, fs in os.walk(out) for _ in fs)
    return dict(counts, total=total)


def timed(host, path: str, repeats: int) -> dict:
    times = []
    size = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, body = host.request(path, timeout=300)
        times.append(time.perf_counter() - t0)
        size = len(body)
    return {"median_ms": round(1000 * statistics.median(times), 1), "min_ms": round(1000 * min(times), 1),
            "max_ms": round(1000 * max(times), 1), "bytes": size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000, help="files in the output folder")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--pack", default=str(REPO), help="the pack folder to link into the server")
    ap.add_argument("--json", default=None, help="write the results here as JSON")
    args = ap.parse_args()

    from tests.comfy_host import ComfyHost

    root = Path(tempfile.mkdtemp(prefix="charshot-objinfo-"))
    (root / "custom_nodes").mkdir()
    (root / "custom_nodes" / "charactershot").symlink_to(Path(args.pack).resolve(), target_is_directory=True)
    (root / "output").mkdir()
    layout = fill_output(root / "output", args.files)
    host = ComfyHost(root=root)
    try:
        host.start()
        t0 = time.perf_counter()
        info = host.object_info()
        first_ms = round(1000 * (time.perf_counter() - t0), 1)
        spec = info["CharacterShotLoad4DGaussians"]["input"]["required"]["file"]
        options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
        result = {
            "files_in_output": layout, "pack": str(Path(args.pack).resolve()),
            "object_info_first_ms": first_ms,
            "object_info": timed(host, "/object_info", args.repeats),
            "load_4d_gaussians": timed(host, "/object_info/CharacterShotLoad4DGaussians", args.repeats),
            "load_multiview": timed(host, "/object_info/CharacterShotLoadMultiView", args.repeats),
            "load_4d_options": len(options),
            "cpu_count": os.cpu_count(),
        }
    finally:
        host.stop()
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

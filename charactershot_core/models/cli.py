"""``convert``: pack an official folder into ComfyUI single files; ``make-tiny``: write a tiny checkpoint set."""

from __future__ import annotations

import sys


def _convert(args) -> int:
    from .convert import convert_folder

    def progress(i, n):
        if sys.stderr.isatty() and (i == n or i % 50 == 0):
            print(f"\r  transformer tensors {i}/{n}", end="\n" if i == n else "", file=sys.stderr)

    result = convert_folder(args.src, args.out, dtype=args.dtype, fp8=args.fp8, comfy_layout=args.comfy_layout,
                            progress=progress)
    print(result.describe())
    return 0


def _make_tiny(args) -> int:
    from .tiny import make_tiny_set

    ts = make_tiny_set(args.out, seed=args.seed, views=args.views, with_t5=not args.no_t5)
    print(f"tiny checkpoint set written under {ts.root} (a ComfyUI models folder layout):")
    for name in ("official", "official_2d", "camera_pack", "single", "single_prefixed", "single_fp8", "single_2d",
                 "vae_single"):
        print(f"  {name:>15}: {getattr(ts, name)}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="pack an official CharacterShot/Character2D folder into ComfyUI single files",
        description="Streams the official Hugging Face folder (transformer shards, camera_guider.pt, camera_embs/, "
                    "vae/) into single .safetensors files: transformer (models/diffusion_models), camera pack "
                    "(models/charactershot) and VAE (models/vae). Never holds the whole model in memory; every "
                    "file is written to a temporary name and renamed when complete.")
    p.add_argument("--src", required=True, help="the official folder (e.g. a download of Gaojunyao/CharacterShot)")
    p.add_argument("--out", required=True, help="output folder (with --comfy-layout: a ComfyUI models folder)")
    p.add_argument("--dtype", default="keep", choices=["keep", "bf16", "fp16", "fp32"],
                   help="weight dtype of the transformer and VAE files (default: keep the source dtype)")
    p.add_argument("--fp8", action="store_true",
                   help="store the transformer blocks' Linear weights as float8_e4m3fn with per-tensor scales")
    p.add_argument("--comfy-layout", action="store_true",
                   help="write into diffusion_models/, charactershot/ and vae/ subfolders of --out")
    p.set_defaults(func=_convert)

    t = subparsers.add_parser("make-tiny", help="write a tiny random checkpoint set in every supported layout",
                              description="For tests and CPU runs of whole graphs: official folders (4D with tiny "
                                          "T5 + tokenizer, 2D), single files with/without prefix, fp8, camera pack, "
                                          "VAE; laid out like a ComfyUI models folder.")
    t.add_argument("--out", required=True, help="output folder (use it as, or copy it into, ComfyUI's models folder)")
    t.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    t.add_argument("--views", type=int, default=21, help="number of camera embeddings (official: 21)")
    t.add_argument("--no-t5", action="store_true", help="skip the tiny T5 text encoder and tokenizer")
    t.set_defaults(func=_make_tiny)

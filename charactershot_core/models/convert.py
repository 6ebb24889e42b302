"""Pack an official CharacterShot / Character2D folder into ComfyUI-friendly single files.

Streaming: every output is planned from the source headers, then written tensor by tensor from the memory-mapped
source, so the whole model is never in memory at once; each file is written to a temporary name and renamed into
place only when complete.

Outputs (names use the stored weight type, e.g. ``bf16`` or ``fp8_e4m3fn``):

* ``charactershot_transformer_<type>.safetensors``: the 4D transformer, official key names without prefix, the
  diffusers config in the ``config`` metadata entry (goes in ``models/diffusion_models``);
* ``charactershot_camera_pack.safetensors``: camera guider under ``camera_guider.`` + ``camera_embs`` (V, 6, H, W)
  (goes in ``models/charactershot``);
* ``charactershot_vae_<type>.safetensors``: the CogVideoX VAE in diffusers layout + config (goes in ``models/vae``);
* ``character2d_transformer_<type>.safetensors`` for a Character2D folder (``models/diffusion_models``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError
from .checkpoints import StreamingSafetensorsWriter, TensorStore
from .loading import (
    CAMERA_PACK_FORMAT,
    FP8_SCALE_SUFFIX,
    IGNORED_TRANSFORMER_KEYS,
    KIND_2D,
    KIND_4D,
    load_camera,
    open_transformer,
    open_vae,
    parse_dtype,
    quantize_tensor_fp8,
)

DTYPE_TAGS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def fp8_candidate(name: str, shape: tuple[int, ...]) -> bool:
    """Linear weights inside the transformer blocks are stored in fp8; everything else keeps its dtype."""
    return name.startswith("transformer_blocks.") and name.endswith(".weight") and len(shape) == 2


@dataclass
class ConvertResult:
    outputs: dict[str, str] = field(default_factory=dict)   # role -> path

    def describe(self) -> str:
        where = {"transformer": "models/diffusion_models", "transformer2d": "models/diffusion_models",
                 "camera_pack": "models/charactershot", "vae": "models/vae"}
        return "\n".join(f"{role:>13}: {path}  (put it in ComfyUI's {where.get(role, 'models')})"
                         for role, path in self.outputs.items())


def write_transformer(src_path: str, out_path: str, dtype: torch.dtype | None = None, fp8: bool = False,
                      prefix: str = "", with_config: bool = True, progress=None) -> str:
    """One transformer (4D or 2D, any layout we read) -> one single-file safetensors, streamed."""
    src = open_transformer(src_path)
    try:
        store = src.store
        keys = [k for k in sorted(store) if k not in IGNORED_TRANSFORMER_KEYS
                and not k.endswith("." + FP8_SCALE_SUFFIX)]
        plan = []
        for k in keys:
            info = store.info(k)
            src_dt = info.dtype
            if src_dt in (torch.float8_e4m3fn, torch.float8_e5m2):
                src_dt = torch.bfloat16
            if fp8 and fp8_candidate(k, info.shape):
                plan.append((prefix + k, torch.float8_e4m3fn, info.shape))
                plan.append((prefix + k[: -len("weight")] + FP8_SCALE_SUFFIX, torch.float32, ()))
            else:
                target = dtype if (dtype is not None and src_dt.is_floating_point) else src_dt
                plan.append((prefix + k, target, info.shape))
        meta = {"format": "charactershot-transformer", "kind": src.kind,
                "source": os.path.basename(os.path.normpath(src.source))}
        if with_config:
            meta["config"] = json.dumps(src.config)
        if fp8:
            meta["fp8"] = "e4m3fn"
        targets = {n: d for n, d, _ in plan}
        with StreamingSafetensorsWriter(out_path, plan, meta) as w:
            for i, k in enumerate(keys):
                t = _read_plain(store, k)
                if fp8 and fp8_candidate(k, tuple(t.shape)):
                    q, s = quantize_tensor_fp8(t)
                    w.write(prefix + k, q)
                    w.write(prefix + k[: -len("weight")] + FP8_SCALE_SUFFIX, s)
                else:
                    w.write(prefix + k, t.to(targets[prefix + k]))
                del t
                if progress:
                    progress(i + 1, len(keys))
    finally:
        src.store.close()
    return out_path


def _read_plain(store: TensorStore, k: str) -> torch.Tensor:
    t = store[k]
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        scale = store[k[: -len("weight")] + FP8_SCALE_SUFFIX]
        t = (t.to(torch.float32) * scale.to(torch.float32)).to(torch.bfloat16)
    return t


def write_camera_pack(folder_or_pack: str, out_path: str) -> str:
    """Guider (strictly loaded, prefixes stripped) + all camera embeddings -> one safetensors camera pack."""
    guider, embs, src = load_camera(folder_or_pack)
    tensors = {f"camera_guider.{k}": v.detach().to(torch.float32).contiguous() for k, v in guider.state_dict().items()}
    tensors["camera_embs"] = embs.contiguous()
    meta = {"format": CAMERA_PACK_FORMAT, "version": "1", "views": str(embs.shape[0]),
            "height": str(embs.shape[2]), "width": str(embs.shape[3]), "out_dim": str(guider.out_dim),
            "source": os.path.basename(os.path.normpath(src))}
    plan = [(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    with StreamingSafetensorsWriter(out_path, plan, meta) as w:
        for k, v in tensors.items():
            w.write(k, v)
    return out_path


def write_vae(src_path: str, out_path: str, dtype: torch.dtype | None = None) -> str:
    store, config, source = open_vae(src_path)
    try:
        keys = sorted(store)
        plan = []
        for k in keys:
            info = store.info(k)
            target = dtype if (dtype is not None and info.dtype.is_floating_point) else info.dtype
            plan.append((k, target, info.shape))
        meta = {"format": "charactershot-vae", "config": json.dumps(config),
                "source": os.path.basename(os.path.normpath(source))}
        with StreamingSafetensorsWriter(out_path, plan, meta) as w:
            for (k, target, _) in plan:
                t = store[k]
                w.write(k, t.to(target))
                del t
    finally:
        store.close()
    return out_path


def convert_folder(src: str, out: str, dtype: str | torch.dtype | None = None, fp8: bool = False,
                   comfy_layout: bool = False, progress=None) -> ConvertResult:
    """Convert an official CharacterShot (or Character2D) folder; ``comfy_layout`` puts each file into the
    ``diffusion_models`` / ``charactershot`` / ``vae`` subfolder of ``out`` (a ComfyUI models folder)."""
    src = os.fspath(src)
    if not os.path.isdir(src):
        raise CheckpointError(f"{src}: not a folder; expected the official CharacterShot or Character2D folder")
    if not os.path.isfile(os.path.join(src, "transformer", "config.json")):
        raise CheckpointError(f"{src}: no transformer/config.json; expected the official CharacterShot folder "
                              "(transformer/, camera_guider.pt, camera_embs/, vae/, ...)")
    tdtype = None if dtype in (None, "keep") else parse_dtype(dtype)
    kind, src_dtype = _transformer_kind_dtype(src)
    tag = "fp8_e4m3fn" if fp8 else DTYPE_TAGS.get(tdtype or src_dtype, "orig")

    def target(sub: str, name: str) -> str:
        d = os.path.join(out, sub) if comfy_layout else out
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, name)

    result = ConvertResult()
    if kind == KIND_4D:
        result.outputs["transformer"] = write_transformer(
            src, target("diffusion_models", f"charactershot_transformer_{tag}.safetensors"), tdtype, fp8,
            progress=progress)
        result.outputs["camera_pack"] = write_camera_pack(
            src, target("charactershot", "charactershot_camera_pack.safetensors"))
    else:
        result.outputs["transformer2d"] = write_transformer(
            src, target("diffusion_models", f"character2d_transformer_{tag}.safetensors"), tdtype, fp8=False,
            progress=progress)
    if os.path.isdir(os.path.join(src, "vae")):
        vtag = DTYPE_TAGS.get(tdtype or _vae_dtype(src), "orig")
        result.outputs["vae"] = write_vae(src, target("vae", f"charactershot_vae_{vtag}.safetensors"), tdtype)
    return result


def _transformer_kind_dtype(path: str) -> tuple[str, torch.dtype]:
    src = open_transformer(path)
    try:
        return src.kind, src.store.info("patch_embed.proj.weight").dtype
    finally:
        src.store.close()


def _vae_dtype(path: str) -> torch.dtype:
    store, _, _ = open_vae(path)
    try:
        return store.info("encoder.conv_in.conv.weight").dtype
    finally:
        store.close()


__all__ = ["convert_folder", "write_transformer", "write_camera_pack", "write_vae", "quantize_tensor_fp8",
           "fp8_candidate", "KIND_2D", "KIND_4D"]

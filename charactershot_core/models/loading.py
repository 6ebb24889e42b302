"""Loading the CharacterShot checkpoints: official Hugging Face folders, ComfyUI-style single files, camera packs.

Everything here avoids pickle (safetensors, or ``torch.load(weights_only=True)`` for the official ``.pt`` files),
builds models on the meta device and assigns the memory-mapped tensors in the requested dtype
(``load_state_dict(assign=True)``), so a 7.55 B transformer is never materialised in fp32 on the CPU.

Layouts understood (see docs/checkpoints.md):

* official folder (``Gaojunyao/CharacterShot``): ``transformer/config.json`` + ``diffusion_pytorch_model*.safetensors``
  (+ ``.index.json``), ``camera_guider.pt``, ``camera_embs/{0..20}.pt``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
  ``scheduler/``; ``Gaojunyao/Character2D`` for the 2D model;
* a bare ``transformer/`` folder (``config.json`` + shards);
* a single ``.safetensors`` transformer with or without a key prefix (``transformer.``, ``model.diffusion_model.``,
  ``diffusion_model.``, ...), its config read from the file's metadata (our converter writes it) or inferred from
  tensor shapes; 4D vs 2D told apart by the ``attn2``/``view_norm1`` weights;
* fp8 single files (``float8_e4m3fn`` Linear weights + ``<layer>.scale_weight``);
* a camera pack: one ``.safetensors`` with the guider under ``camera_guider.`` and ``camera_embs`` (V, 6, H, W).

Every failure is a :class:`CheckpointError` naming the file, what was found and what was expected.
"""

from __future__ import annotations

import gc
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..errors import CheckpointError
from .checkpoints import (
    TensorInfo,
    TensorStore,
    load_pt_tensors,
    open_safetensors,
    open_sharded,
    store_from_tensors,
    strip_common_prefixes,
    unwrap_state_dict,
)
from .config import CLASS_NAME_2D, CLASS_NAME_4D, FULL_CONFIG_2D, FULL_CONFIG_4D

KIND_4D = "4d"
KIND_2D = "2d"
ANCHOR_KEY = "patch_embed.proj.weight"
IGNORED_TRANSFORMER_KEYS = ("patch_embed.pos_embedding", "scaled_fp8")
TRANSFORMER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "module.", "model.")
GUIDER_PREFIXES = ("module.", "camera_guider.", "model.")
GUIDER_KEYS = tuple(f"layer.{i}.{p}" for i in range(0, 13, 2) for p in ("weight", "bias"))
FP8_SCALE_SUFFIX = "scale_weight"
CAMERA_PACK_FORMAT = "charactershot-camera-pack"
WEIGHT_STORAGES = ("default", "fp8_e4m3fn")
TEXT_MODES = ("faithful", "per_sample")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
          "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
MAX_LISTED = 5


def parse_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise CheckpointError(f"dtype: expected one of bf16, fp16, fp32, got {dtype!r}")


def _few(items: Iterable[str], n: int = MAX_LISTED) -> str:
    items = sorted(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


# --------------------------------------------------------------------------------------------- loaded objects
@dataclass
class LoadedModel4D:
    """What ``CHARSHOT_MODEL`` carries: the multi-view transformer, its camera guider and camera embeddings."""

    transformer: nn.Module
    camera_guider: nn.Module            # fp32, evaluated on the CPU as officially
    camera_embs: torch.Tensor | None    # (V, 6, H, W) float32, the shipped per-view camera maps (view order)
    config: dict                        # diffusers-style transformer config
    dtype: torch.dtype                  # compute dtype
    weight_storage: str = "default"     # "default" or "fp8_e4m3fn"
    text_mode: str = "faithful"         # "faithful" (per-frame text from batch element 0) or "per_sample"
    source: str = ""
    camera_source: str = ""
    patcher: Any = None                 # comfy ModelPatcher around ``transformer`` (set by the node)

    @property
    def per_sample_text(self) -> bool:
        return self.text_mode == "per_sample"

    def describe(self) -> str:
        c = self.config
        n = sum(p.numel() for p in self.transformer.parameters())
        views = "none" if self.camera_embs is None else f"{self.camera_embs.shape[0]} views " \
            f"{self.camera_embs.shape[2]}x{self.camera_embs.shape[3]}"
        return (f"4D transformer: {c['num_layers']} blocks, {c['num_attention_heads']}x{c['attention_head_dim']} "
                f"heads, in {c['in_channels']} / out {c['out_channels']} channels, text {c['text_embed_dim']}, "
                f"{n:,} parameters, {_dtype_name(self.dtype)}, weights {self.weight_storage}, text "
                f"{self.text_mode}; camera guider -> {self.camera_guider.out_dim}, camera embeddings {views}; "
                f"from {os.path.basename(os.path.normpath(self.source))}")


@dataclass
class LoadedModel2D:
    """What ``CHARSHOT_MODEL2D`` carries: the Character2D pose transformer (diffusers CogVideoXTransformer3DModel)."""

    transformer: nn.Module
    config: dict
    dtype: torch.dtype
    source: str = ""
    patcher: Any = None

    def describe(self) -> str:
        c = self.config
        n = sum(p.numel() for p in self.transformer.parameters())
        return (f"2D transformer: {c['num_layers']} blocks, {c['num_attention_heads']}x{c['attention_head_dim']} "
                f"heads, in {c['in_channels']} / out {c['out_channels']} channels, {n:,} parameters, "
                f"{_dtype_name(self.dtype)}; from {os.path.basename(os.path.normpath(self.source))}")


@dataclass
class LoadedVAE:
    """What ``CHARSHOT_VAE`` carries: a diffusers AutoencoderKLCogVideoX."""

    vae: nn.Module
    config: dict
    dtype: torch.dtype
    source: str = ""
    tiling: bool = True
    slicing: bool = True
    patcher: Any = None

    @property
    def scaling_factor(self) -> float:
        return float(self.config.get("scaling_factor", 1.15258426))

    def describe(self) -> str:
        c = self.config
        return (f"VAE: {c.get('latent_channels')} latent channels, blocks {c.get('block_out_channels')}, scaling "
                f"factor {self.scaling_factor}, {_dtype_name(self.dtype)}, tiling {'on' if self.tiling else 'off'}, "
                f"slicing {'on' if self.slicing else 'off'}; from {os.path.basename(os.path.normpath(self.source))}")


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


# --------------------------------------------------------------------------------------------- layouts
def is_official_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "transformer", "config.json"))


def is_transformer_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        f.endswith(".safetensors") for f in os.listdir(path))


def open_model_folder(folder: str, what: str, weights_name: str = "diffusion_pytorch_model") -> tuple[TensorStore, dict]:
    """A diffusers-style component folder: ``config.json`` + single or sharded ``*.safetensors`` (+ index)."""
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{folder}: no config.json; expected a diffusers {what} folder "
                              f"(config.json + {weights_name}*.safetensors)")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    index_path = os.path.join(folder, f"{weights_name}.safetensors.index.json")
    single = os.path.join(folder, f"{weights_name}.safetensors")
    if os.path.isfile(index_path):
        try:
            with open(index_path, encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{index_path}: not valid JSON ({e})") from None
        shards = sorted(set((index.get("weight_map") or {}).values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
        if missing:
            raise CheckpointError(f"{folder}: shard file(s) missing: {_few(missing)}; expected every file the index "
                                  f"{os.path.basename(index_path)} names")
        store = open_sharded([os.path.join(folder, s) for s in shards], folder, index)
    elif os.path.isfile(single):
        store = open_safetensors(single)
    else:
        found = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
        if not found:
            bins = [f for f in os.listdir(folder) if f.endswith((".bin", ".pt", ".ckpt", ".pth"))]
            extra = f" (found pickled {_few(bins)}: convert them to safetensors)" if bins else ""
            raise CheckpointError(f"{folder}: no .safetensors weights for the {what}{extra}")
        store = open_sharded([os.path.join(folder, f) for f in found], folder)
    return store, config


# --------------------------------------------------------------------------------------------- config inference
def find_transformer_prefix(keys: Iterable[str], source: str) -> str:
    """The key prefix in front of the transformer's weights (``''``, ``'model.diffusion_model.'``...)."""
    hits = [k[: -len(ANCHOR_KEY)] for k in keys if k.endswith(ANCHOR_KEY)]
    hits = [h for h in hits if h == "" or h.endswith(".")]
    if not hits:
        raise CheckpointError(
            f"{source}: no CogVideoX/CharacterShot transformer weights found (no '{ANCHOR_KEY}'); "
            f"found keys like {_few(keys)}. Expected a transformer checkpoint (is this a VAE, a text encoder or a "
            "camera pack?)")
    if len(hits) > 1:
        raise CheckpointError(f"{source}: holds {len(hits)} transformers (prefixes {hits}); expected one")
    return hits[0]


def detect_kind(keys: Iterable[str]) -> str:
    for k in keys:
        if ".attn2." in k or ".view_norm1." in k:
            return KIND_4D
    return KIND_2D


def infer_transformer_config(infos: dict[str, TensorInfo], kind: str | None = None, source: str = "") -> dict:
    """A diffusers-style transformer config from tensor names and shapes (official key names, no prefix).

    Sizes come from the shapes; what shapes cannot tell (sample sizes, text length, RoPE flags...) comes from the
    CogVideoX-5B-I2V configuration the CharacterShot checkpoints use.
    """
    kind = kind or detect_kind(infos)
    base = dict(FULL_CONFIG_4D if kind == KIND_4D else FULL_CONFIG_2D)

    def shape(name: str) -> tuple[int, ...]:
        if name not in infos:
            raise CheckpointError(f"{source}: cannot infer the transformer configuration: '{name}' is missing")
        return infos[name].shape

    pe = shape("patch_embed.proj.weight")
    if len(pe) != 4:
        raise CheckpointError(f"{source}: patch_embed.proj.weight has shape {list(pe)}: this is a CogVideoX 1.5 "
                              "(temporal patch) transformer; CharacterShot uses CogVideoX 1.0 (a 4-D conv weight)")
    inner, in_ch, p, p2 = pe
    if p != p2:
        raise CheckpointError(f"{source}: non-square patch {p}x{p2} in patch_embed.proj.weight")
    head_dim = shape("transformer_blocks.0.attn1.norm_q.weight")[0]
    if inner % head_dim:
        raise CheckpointError(f"{source}: inner size {inner} is not a multiple of the head size {head_dim}")
    blocks = set()
    for k in infos:
        m = re.match(r"transformer_blocks\.(\d+)\.", k)
        if m:
            blocks.add(int(m.group(1)))
    n_layers = max(blocks) + 1
    if blocks != set(range(n_layers)):
        missing = sorted(set(range(n_layers)) - blocks)
        raise CheckpointError(f"{source}: transformer blocks {missing[:MAX_LISTED]} are missing (found blocks "
                              f"0..{n_layers - 1} with gaps); the file is incomplete")
    out_rows = shape("proj_out.weight")[0]
    if out_rows % (p * p):
        raise CheckpointError(f"{source}: proj_out.weight rows {out_rows} are not a multiple of patch {p}x{p}")
    cfg = dict(base)
    cfg.update(
        num_attention_heads=inner // head_dim,
        attention_head_dim=head_dim,
        in_channels=in_ch,
        out_channels=out_rows // (p * p),
        patch_size=p,
        patch_size_t=None,
        text_embed_dim=shape("patch_embed.text_proj.weight")[1],
        time_embed_dim=shape("time_embedding.linear_1.weight")[0],
        num_layers=n_layers,
        attention_bias="transformer_blocks.0.attn1.to_q.bias" in infos,
        patch_bias="patch_embed.proj.bias" in infos,
        norm_elementwise_affine="transformer_blocks.0.norm1.norm.weight" in infos,
        ofs_embed_dim=infos["ofs_embedding.linear_1.weight"].shape[1] if "ofs_embedding.linear_1.weight" in infos
        else None,
    )
    ff = infos.get("transformer_blocks.0.ff.net.0.proj.weight")
    if ff is not None and ff.shape[0] != 4 * inner:
        raise CheckpointError(f"{source}: feed-forward width {ff.shape[0]} is not 4x the inner size {inner}; not a "
                              "CogVideoX transformer")
    return cfg


def config_from_metadata(metadata: dict[str, str], source: str) -> dict | None:
    raw = metadata.get("config")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
        if not isinstance(cfg, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise CheckpointError(f"{source}: its 'config' metadata is not a JSON object ({e})") from None
    return cfg


def kind_of_class(class_name: str | None) -> str | None:
    if class_name == CLASS_NAME_4D:
        return KIND_4D
    if class_name == CLASS_NAME_2D:
        return KIND_2D
    return None


# --------------------------------------------------------------------------------------------- building
def build_transformer_on_meta(kind: str, config: dict) -> nn.Module:
    """The empty (meta) model for ``config``: ours for 4D, diffusers' CogVideoXTransformer3DModel for 2D."""
    from . import build_on_meta, build_transformer_2d

    if kind == KIND_4D:
        return build_on_meta(config)

    # The official pipelines switch the learned positional embedding off before sampling (spec §A.7): only RoPE.
    # Built without it, so checkpoints with or without the unused pos_embedding buffer load alike.
    return build_transformer_2d({**config, "use_learned_positional_embeddings": False}, device="meta")


def _dequantize(store: TensorStore, name: str, dtype: torch.dtype) -> torch.Tensor:
    t = store[name]
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        scale_key = name[: -len("weight")] + FP8_SCALE_SUFFIX if name.endswith("weight") else None
        if scale_key is None or scale_key not in store:
            raise CheckpointError(f"{store.source}: fp8 tensor {name!r} has no scale '{scale_key}'")
        return (t.to(torch.float32) * store[scale_key].to(torch.float32)).to(dtype)
    return t.to(dtype) if t.is_floating_point() else t


def check_keys(model_keys: dict[str, tuple[int, ...]], store: TensorStore, what: str,
               ignored: Iterable[str] = (), expected_hint: str = "", scales_expected: bool = False) -> None:
    """Raise a CheckpointError listing the first missing / unexpected / mismatched keys, if any.

    fp8 scales (``*.scale_weight``) in the file are consumed with their weights unless the model itself has them
    (``scales_expected``: fp8 storage kept as is)."""
    ignored = set(ignored)
    avail = {k for k in store if k not in ignored
             and (scales_expected or not k.endswith("." + FP8_SCALE_SUFFIX))}
    missing = [k for k in model_keys if k not in avail]
    extra = [k for k in avail if k not in model_keys]
    wrong = [f"{k} {list(store.info(k).shape)} (expected {list(model_keys[k])})"
             for k in model_keys if k in avail and tuple(store.info(k).shape) != tuple(model_keys[k])]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
        if extra:
            parts.append(f"{len(extra)} unexpected key(s): {_few(extra)}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es): {_few(wrong)}")
        hint = f" {expected_hint}" if expected_hint else ""
        raise CheckpointError(f"{store.source}: does not match the {what}: " + "; ".join(parts) + "." + hint)


FP8_MAX = 448.0  # largest finite float8_e4m3fn


def quantize_tensor_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled float8_e4m3fn, the rule of :class:`~charactershot_core.models.fp8.FP8Linear`:
    ``scale = max|w| / 448`` (1 for an all-zero w), ``w ≈ q.float() * scale``."""
    w32 = w.detach().to(torch.float32, copy=True)  # one float32 temporary, divided and clamped in place
    amax = w32.abs().amax() if w32.numel() < (1 << 20) else _chunked_amax(w32)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = w32.div_(scale).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale.reshape(())


def _chunked_amax(w: torch.Tensor, rows: int = 1024) -> torch.Tensor:
    flat = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
    return torch.stack([flat[i:i + rows].abs().amax() for i in range(0, flat.shape[0], rows)]).amax()


def _fp8_layers(model: nn.Module, store: TensorStore) -> tuple[list[str], set[str]]:
    """Layers to hold in fp8: those the file stores in fp8 plus the Linear layers fp8 storage converts."""
    import fnmatch

    from . import fp8

    in_file = set(fp8.fp8_layer_names(store))
    eligible = {n for n, m in model.named_modules() if type(m) is nn.Linear
                and any(fnmatch.fnmatchcase(n, p) for p in fp8.DEFAULT_INCLUDE)}
    return sorted(in_file | eligible), in_file


def assign_weights(model: nn.Module, store: TensorStore, dtype: torch.dtype, what: str,
                   ignored: Iterable[str] = (), fp8_storage: bool = False, expected_hint: str = "",
                   device: str | torch.device = "cpu") -> nn.Module:
    """Fill a meta-device ``model`` from ``store``, tensor by tensor, in ``dtype`` (strict, after the key check).

    fp8 weights of the file are dequantised to ``dtype``; with ``fp8_storage`` the transformer blocks' Linear
    layers become :class:`~charactershot_core.models.fp8.FP8Linear`, fp8 weights of the file are kept as they are
    and the others are quantised as they are read, so the full-precision model never exists in memory.
    """
    quant_on_load: set[str] = set()
    if fp8_storage:
        from . import fp8

        layers, in_file = _fp8_layers(model, store)
        try:
            fp8.prepare_fp8_(model, [f"{n}.{FP8_SCALE_SUFFIX}" for n in layers])
        except KeyError as e:
            raise CheckpointError(f"{store.source}: {e.args[0]}") from None
        quant_on_load = {n for n in layers if n not in in_file}
    expected = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    synthesized = {f"{n}.{FP8_SCALE_SUFFIX}" for n in quant_on_load}
    check_keys({k: v for k, v in expected.items() if k not in synthesized}, store, what, ignored, expected_hint,
               scales_expected=fp8_storage)
    sd: dict[str, torch.Tensor] = {}
    try:
        for k in expected:
            if k in synthesized:
                continue
            layer = k[: -len(".weight")] if k.endswith(".weight") else None
            if layer in quant_on_load:
                q, scale = quantize_tensor_fp8(_dequantize(store, k, dtype))
                sd[k] = q.to(device)
                sd[f"{layer}.{FP8_SCALE_SUFFIX}"] = scale.to(device)
            elif fp8_storage and (store.info(k).dtype == torch.float8_e4m3fn or k.endswith("." + FP8_SCALE_SUFFIX)):
                sd[k] = store[k].to(device)
            else:
                sd[k] = _dequantize(store, k, dtype).to(device)
        model.load_state_dict(sd, strict=True, assign=True)
    except CheckpointError:
        sd.clear()
        gc.collect()
        raise
    except Exception as e:  # noqa: BLE001 - anything torch raises while assigning
        sd.clear()
        gc.collect()
        raise CheckpointError(f"{store.source}: cannot load the {what}: {type(e).__name__}: {e}") from None
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise CheckpointError(f"{store.source}: the {what} still has unloaded tensors after loading: "
                              f"{_few(leftovers)}")
    model.requires_grad_(False)
    model.train(False)  # eval mode
    return model


# --------------------------------------------------------------------------------------------- transformers
@dataclass
class TransformerSource:
    store: TensorStore
    config: dict
    kind: str
    source: str
    fp8: bool = False
    config_inferred: bool = False


def open_transformer(path: str) -> TransformerSource:
    """Open the transformer of an official folder, a bare ``transformer/`` folder or a single safetensors file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        folder = os.path.join(path, "transformer") if is_official_folder(path) else path
        store, config = open_model_folder(folder, "transformer")
        class_kind = kind_of_class(config.get("_class_name"))
        prefix_map = strip_common_prefixes(store, TRANSFORMER_PREFIXES)
        store = store.renamed(prefix_map)
        key_kind = detect_kind(store)
        kind = class_kind or key_kind
        if class_kind and class_kind != key_kind:
            raise CheckpointError(
                f"{folder}: config.json names {config.get('_class_name')} but the weights are those of a "
                f"{'4D (attn2/view_norm1 present)' if key_kind == KIND_4D else '2D (no attn2/view_norm1)'} "
                "transformer")
        return TransformerSource(store, config, kind, folder, fp8=_has_fp8(store))
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: file or folder not found")
    store = open_safetensors(path)
    prefix = find_transformer_prefix(store, path)
    store_t = store.with_prefix_removed(prefix) if prefix else store.subset(
        [k for k in store if not k.startswith(("vae.", "first_stage_model.", "text_encoder", "cond_stage_model.",
                                               "camera_guider.", "camera_embs"))])
    kind = detect_kind(store_t)
    meta_cfg = config_from_metadata(store.metadata, path)
    inferred = meta_cfg is None
    config = meta_cfg if meta_cfg is not None else infer_transformer_config(store_t.infos(), kind, path)
    class_kind = kind_of_class(config.get("_class_name"))
    if class_kind and class_kind != kind:
        raise CheckpointError(f"{path}: its metadata names {config.get('_class_name')} but the weights are those of "
                              f"a {'4D' if kind == KIND_4D else '2D'} transformer")
    return TransformerSource(store_t, config, kind, path, fp8=_has_fp8(store_t), config_inferred=inferred)


def _has_fp8(store: TensorStore) -> bool:
    return any(store.info(k).dtype in (torch.float8_e4m3fn, torch.float8_e5m2) for k in store)


def _wrong_kind_message(src: TransformerSource, wanted: str) -> str:
    if wanted == KIND_4D:
        return (f"{src.source}: this is a 2D transformer (a Character2D / stock CogVideoX model: no attn2 or "
                "view_norm1 weights); expected the CharacterShot multi-view 4D transformer "
                "(CogVideoXTransformer4DModel). Load it with CharacterShot 2D Model Loader instead.")
    return (f"{src.source}: this is the CharacterShot multi-view 4D transformer (attn2/view_norm1 weights present); "
            "expected a 2D pose transformer (Character2D, CogVideoXTransformer3DModel). Load it with CharacterShot "
            "Model Loader instead.")


def load_transformer(path: str, kind: str, dtype: Any = torch.bfloat16, weight_storage: str = "default",
                     device: str | torch.device = "cpu") -> tuple[nn.Module, dict, TransformerSource]:
    """Load a 4D or 2D transformer from any supported layout; ``(model, config, source)``."""
    dtype = parse_dtype(dtype)
    if weight_storage not in WEIGHT_STORAGES:
        raise CheckpointError(f"weight_storage: expected one of {WEIGHT_STORAGES}, got {weight_storage!r}")
    src = open_transformer(path)
    try:
        if src.kind != kind:
            raise CheckpointError(_wrong_kind_message(src, kind))
        try:
            model = build_transformer_on_meta(kind, src.config)
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{src.source}: {e}") from None
        what = "CharacterShot 4D transformer" if kind == KIND_4D else "Character2D transformer"
        hint = ("The configuration was inferred from tensor shapes." if src.config_inferred else "")
        assign_weights(model, src.store, dtype, what, IGNORED_TRANSFORMER_KEYS,
                       fp8_storage=weight_storage == "fp8_e4m3fn", expected_hint=hint, device=device)
    finally:
        src.store.close()
    return model, dict(src.config), src


# --------------------------------------------------------------------------------------------- camera guider
def infer_guider_sizes(infos: dict[str, TensorInfo], source: str) -> dict:
    first, last = infos.get("layer.0.weight"), infos.get("layer.12.weight")
    if first is None or last is None or len(first.shape) != 4 or len(last.shape) != 4:
        raise CheckpointError(f"{source}: not a camera guider: expected keys layer.{{0,2,...,12}}.{{weight,bias}} "
                              f"with 4-D conv weights; found {_few(infos)}")
    return {"out_dim": last.shape[0], "hidden": first.shape[0], "in_channels": first.shape[1]}


def load_camera_guider_store(store: TensorStore) -> nn.Module:
    """Strictly load a CameraGuider (fp32): prefixes ``module.``/``camera_guider.`` stripped, nothing else."""
    from .camera_guider import CameraGuider

    store = store.renamed(strip_common_prefixes(store, GUIDER_PREFIXES))
    sizes = infer_guider_sizes(store.infos(), store.source)
    with torch.device("meta"):
        guider = CameraGuider(**sizes)
    return assign_weights(guider, store, torch.float32, "camera guider (layer.{0,2,...,12}.{weight,bias})")


def load_camera_guider(path: str) -> nn.Module:
    """``camera_guider.pt`` (weights-only torch file) or a safetensors guider / camera pack."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        with open_safetensors(path) as store:
            keys = [k for k in store if k != "camera_embs"]
            return load_camera_guider_store(store.subset(keys))
    sd = unwrap_state_dict(load_pt_tensors(path, "the camera guider"), path, "the camera guider")
    return load_camera_guider_store(store_from_tensors(sd, path))


def load_camera_embs(folder: str, views: int | None = None) -> torch.Tensor:
    """``camera_embs/{0..V-1}.pt`` of an official folder -> (V, 6, H, W) float32 (all of them unless ``views``)."""
    if os.path.isdir(os.path.join(folder, "camera_embs")):
        d = os.path.join(folder, "camera_embs")
    elif os.path.basename(os.path.normpath(folder)) == "camera_embs":
        d = folder
    else:
        raise CheckpointError(f"{folder}: camera embeddings missing: expected a camera_embs/ folder with "
                              "0.pt ... 20.pt (each a (6, 480, 720) tensor)")
    found = {}
    for fn in os.listdir(d):
        m = re.fullmatch(r"(\d+)\.pt", fn)
        if m:
            found[int(m.group(1))] = os.path.join(d, fn)
    if not found:
        raise CheckpointError(f"{d}: camera embeddings missing: no 0.pt ... 20.pt files")
    n = views if views is not None else max(found) + 1
    missing = [str(i) + ".pt" for i in range(n) if i not in found]
    if missing:
        raise CheckpointError(f"{d}: camera embeddings missing: {_few(missing)} (expected 0.pt ... {n - 1}.pt)")
    embs = []
    for i in range(n):
        obj = load_pt_tensors(found[i], f"camera embedding {i}")
        if isinstance(obj, dict) and len(obj) == 1:
            obj = next(iter(obj.values()))
        if not isinstance(obj, torch.Tensor):
            raise CheckpointError(f"{found[i]}: expected a (6, H, W) tensor, found {type(obj).__name__}")
        t = obj.squeeze(0) if obj.ndim == 4 and obj.shape[0] == 1 else obj
        if t.ndim != 3 or t.shape[0] != 6:
            raise CheckpointError(f"{found[i]}: expected a (6, H, W) camera embedding, found shape {list(obj.shape)}")
        if embs and t.shape != embs[0].shape:
            raise CheckpointError(f"{found[i]}: shape {list(t.shape)} differs from 0.pt {list(embs[0].shape)}")
        embs.append(t.float())
    return torch.stack(embs)


def load_camera_pack(path: str) -> tuple[nn.Module, torch.Tensor]:
    """Our camera pack (.safetensors): guider under ``camera_guider.`` + ``camera_embs`` (V, 6, H, W)."""
    path = os.fspath(path)
    with open_safetensors(path) as store:
        if "camera_embs" not in store:
            what = "a transformer" if any(k.endswith(ANCHOR_KEY) for k in store) else "no camera_embs tensor"
            raise CheckpointError(f"{path}: not a CharacterShot camera pack ({what}); expected 'camera_embs' "
                                  "(V, 6, H, W) and the guider under 'camera_guider.'")
        info = store.info("camera_embs")
        if len(info.shape) != 4 or info.shape[1] != 6:
            raise CheckpointError(f"{path}: camera_embs has shape {list(info.shape)}; expected (V, 6, H, W)")
        guider_keys = [k for k in store if k.startswith("camera_guider.")]
        if not guider_keys:
            raise CheckpointError(f"{path}: camera pack without guider weights (no 'camera_guider.*' keys)")
        extra = [k for k in store if k != "camera_embs" and not k.startswith("camera_guider.")]
        if extra:
            raise CheckpointError(f"{path}: unexpected keys in the camera pack: {_few(extra)}")
        guider = load_camera_guider_store(store.subset(guider_keys))
        embs = store["camera_embs"].float().clone()
    return guider, embs


def load_camera(path: str) -> tuple[nn.Module, torch.Tensor, str]:
    """Camera guider + embeddings from an official folder or a camera pack file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        pt = os.path.join(path, "camera_guider.pt")
        st = os.path.join(path, "camera_guider.safetensors")
        if os.path.isfile(st):
            guider = load_camera_guider(st)
        elif os.path.isfile(pt):
            guider = load_camera_guider(pt)
        else:
            raise CheckpointError(f"{path}: no camera_guider.pt; expected the official CharacterShot folder "
                                  "(camera_guider.pt + camera_embs/0..20.pt) or a camera pack file")
        return guider, load_camera_embs(path), path
    guider, embs = load_camera_pack(path)
    return guider, embs, path


# --------------------------------------------------------------------------------------------- top level
def load_model_4d(checkpoint: str, camera: str | None = None, dtype: Any = torch.bfloat16,
                  weight_storage: str = "default", text_mode: str = "faithful",
                  device: str | torch.device = "cpu") -> LoadedModel4D:
    """The multi-view model: transformer from ``checkpoint``; guider and embeddings from ``camera`` or, when
    ``camera`` is None, from the checkpoint's official folder."""
    if text_mode not in TEXT_MODES:
        raise CheckpointError(f"text_mode: expected one of {TEXT_MODES}, got {text_mode!r}")
    dtype = parse_dtype(dtype)
    if camera is None:
        if os.path.isdir(checkpoint) and os.path.isfile(os.path.join(checkpoint, "transformer", "config.json")):
            camera = checkpoint
        else:
            raise CheckpointError(f"{checkpoint}: a single-file transformer carries no camera guider or camera "
                                  "embeddings; choose a camera pack (or the official CharacterShot folder) as camera")
    guider, embs, cam_src = load_camera(camera)
    model, config, src = load_transformer(checkpoint, KIND_4D, dtype, weight_storage, device)
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    if guider.out_dim != inner:
        del model
        gc.collect()
        raise CheckpointError(f"{cam_src}: the camera guider outputs {guider.out_dim} channels but the transformer "
                              f"{src.source} has width {inner}; they are not from the same model")
    return LoadedModel4D(model, guider, embs, config, dtype, weight_storage, text_mode, src.source, cam_src)


def load_model_2d(checkpoint: str, dtype: Any = torch.bfloat16, device: str | torch.device = "cpu") -> LoadedModel2D:
    dtype = parse_dtype(dtype)
    model, config, src = load_transformer(checkpoint, KIND_2D, dtype, "default", device)
    return LoadedModel2D(model, config, dtype, src.source)


# --------------------------------------------------------------------------------------------- VAE
VAE_ANCHOR = "encoder.conv_in.conv.weight"
VAE_PREFIXES = ("vae.", "first_stage_model.", "model.")

DEFAULT_VAE_CONFIG = {
    "_class_name": "AutoencoderKLCogVideoX",
    "in_channels": 3, "out_channels": 3,
    "down_block_types": ["CogVideoXDownBlock3D"] * 4, "up_block_types": ["CogVideoXUpBlock3D"] * 4,
    "block_out_channels": [128, 256, 256, 512], "latent_channels": 16, "layers_per_block": 3, "act_fn": "silu",
    "norm_eps": 1e-6, "norm_num_groups": 32, "temporal_compression_ratio": 4, "sample_height": 480,
    "sample_width": 720, "scaling_factor": 0.7, "force_upcast": True, "use_quant_conv": False,
    "use_post_quant_conv": False,
}


def open_vae(path: str) -> tuple[TensorStore, dict, str]:
    path = os.fspath(path)
    if os.path.isdir(path):
        folder = os.path.join(path, "vae") if os.path.isdir(os.path.join(path, "vae")) else path
        store, config = open_model_folder(folder, "VAE")
        if config.get("_class_name", "AutoencoderKLCogVideoX") != "AutoencoderKLCogVideoX":
            raise CheckpointError(f"{folder}: config.json names {config.get('_class_name')}; expected "
                                  "AutoencoderKLCogVideoX (the CogVideoX VAE)")
        return store, config, folder
    store = open_safetensors(path)
    hits = [k[: -len(VAE_ANCHOR)] for k in store if k.endswith(VAE_ANCHOR)]
    if len(hits) != 1:
        kind = "a transformer" if any(k.endswith(ANCHOR_KEY) for k in store) else f"keys like {_few(store)}"
        store.close()
        raise CheckpointError(f"{path}: not a CogVideoX VAE in diffusers layout (found {kind}); expected keys such as "
                              f"'{VAE_ANCHOR}'")
    store_v = store.with_prefix_removed(hits[0]) if hits[0] else store
    config = config_from_metadata(store.metadata, path)
    if config is None:
        config = infer_vae_config(store_v.infos(), path)
    return store_v, config, path


def infer_vae_config(infos: dict[str, TensorInfo], source: str) -> dict:
    cfg = dict(DEFAULT_VAE_CONFIG)
    try:
        downs = sorted({int(m.group(1)) for k in infos if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))})
        cfg["block_out_channels"] = [infos[f"encoder.down_blocks.{i}.resnets.0.conv2.conv.weight"].shape[0]
                                     for i in downs]
        cfg["down_block_types"] = ["CogVideoXDownBlock3D"] * len(downs)
        cfg["up_block_types"] = ["CogVideoXUpBlock3D"] * len(downs)
        cfg["layers_per_block"] = len({int(m.group(1)) for k in infos
                                       if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k))})
        cfg["latent_channels"] = infos["encoder.conv_out.conv.weight"].shape[0] // 2
        cfg["in_channels"] = infos["encoder.conv_in.conv.weight"].shape[1]
        cfg["out_channels"] = infos["decoder.conv_out.conv.weight"].shape[0]
        cfg["norm_num_groups"] = DEFAULT_VAE_CONFIG["norm_num_groups"] if cfg["block_out_channels"][0] % 32 == 0 \
            else 1
    except (KeyError, IndexError, ValueError):
        raise CheckpointError(f"{source}: cannot infer the VAE configuration from its tensors; expected a "
                              "diffusers AutoencoderKLCogVideoX state dict") from None
    return cfg


def load_vae(path: str, dtype: Any = torch.bfloat16, tiling: bool = True, slicing: bool = True,
             device: str | torch.device = "cpu") -> LoadedVAE:
    from diffusers import AutoencoderKLCogVideoX

    dtype = parse_dtype(dtype)
    store, config, source = open_vae(path)
    try:
        import inspect

        names = set(inspect.signature(AutoencoderKLCogVideoX.__init__).parameters) - {"self"}
        kwargs = {k: v for k, v in config.items() if k in names}
        try:
            with torch.device("meta"):
                vae = AutoencoderKLCogVideoX(**kwargs)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: unusable VAE configuration ({e})") from None
        assign_weights(vae, store, dtype, "CogVideoX VAE (AutoencoderKLCogVideoX)", device=device)
    finally:
        store.close()
    if tiling:
        vae.enable_tiling()
    if slicing:
        vae.enable_slicing()
    return LoadedVAE(vae, config, dtype, source, tiling, slicing)

"""Text conditioning exactly as the official pipeline feeds the transformer (spec §A.4).

The official path tokenizes with the T5 v1.1 tokenizer, ``padding="max_length", max_length=226, truncation=True,
add_special_tokens=True`` (content truncated to 225 tokens, then ``</s>``, then ``<pad>`` up to 226), and runs the
T5 encoder on those 226 ids **without an attention mask**: the pad positions are encoded and used as they are.
The result is (1, 226, 4096) per prompt; under CFG the batch is ``[negative, positive]``.

Two encoders give that:

* :class:`T5FolderEncoder`: the official ``text_encoder/`` + ``tokenizer/`` folders (transformers, local files only,
  safetensors only);
* :class:`ComfyClipEncoder`: ComfyUI's own T5-XXL ``CLIP`` object (``CLIPLoader`` type ``sd3``; duck-typed here, no
  ComfyUI import), fed the official 226 ids (ComfyUI's own tokenization pads differently).

:class:`TextCache` keeps results on disk (safetensors) keyed by a hash of prompt, negative prompt and encoder
identity, so T5 need not be loaded again for a prompt already encoded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..errors import CheckpointError, InputError
from .checkpoints import open_safetensors, save_safetensors_atomic

MAX_SEQUENCE_LENGTH = 226
CACHE_VERSION = "1"
OFFICIAL_NEGATIVE_PROMPT = ("low quality, blurry, distorted face, deformed hands, extra fingers, missing limbs, "
                            "cropped, bad anatomy, bad proportions, watermark")
OFFICIAL_PROMPT = "smooth motion or in the wind"


@dataclass
class TextEmbeddings:
    """What ``CHARSHOT_TEXT`` carries: positive and negative embeddings, each (1, 226, D)."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    prompt: str
    negative_prompt: str
    encoder: str = ""
    from_cache: bool = False

    def describe(self) -> str:
        src = "cache" if self.from_cache else "encoder"
        return (f"text: prompt {self.prompt!r}, negative {self.negative_prompt!r}, embeddings "
                f"{list(self.prompt_embeds.shape)} {str(self.prompt_embeds.dtype).replace('torch.', '')} from {src}")

    def cfg_batch(self, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        """``cat([negative, positive])`` -> (2, 226, D), the official CFG order."""
        out = torch.cat([self.negative_prompt_embeds, self.prompt_embeds], dim=0)
        return out.to(device=device, dtype=dtype or out.dtype)


# ------------------------------------------------------------------------------------------------- token ids
def official_input_ids(tokenizer, texts: Sequence[str], max_length: int = MAX_SEQUENCE_LENGTH) -> torch.Tensor:
    """(B, max_length) int64 ids exactly as the official ``_get_t5_prompt_embeds`` builds them."""
    enc = tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=True,
                    add_special_tokens=True, return_tensors="pt")
    ids = enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "__getitem__") else enc.input_ids
    return torch.as_tensor(ids, dtype=torch.long)


def pad_token_ids(content_ids: Sequence[int], eos_id: int = 1, pad_id: int = 0,
                  max_length: int = MAX_SEQUENCE_LENGTH) -> list[int]:
    """Content ids (no special tokens) -> the official layout: truncated to ``max_length - 1``, ``</s>``, pads."""
    ids = [int(i) for i in content_ids][: max_length - 1] + [eos_id]
    return ids + [pad_id] * (max_length - len(ids))


# ------------------------------------------------------------------------------------------------- T5 folder
def _find_t5_dirs(path: str) -> tuple[str, str]:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: folder not found; expected the official folder with text_encoder/ and "
                              "tokenizer/")
    if os.path.isdir(os.path.join(path, "text_encoder")):
        enc = os.path.join(path, "text_encoder")
        tok = os.path.join(path, "tokenizer")
    elif os.path.basename(os.path.normpath(path)) == "text_encoder":
        enc = path
        tok = os.path.join(os.path.dirname(os.path.normpath(path)), "tokenizer")
    else:
        raise CheckpointError(f"{path}: no text_encoder/ folder; expected the official CharacterShot (or "
                              "CogVideoX) folder with text_encoder/ (T5 v1.1 XXL) and tokenizer/")
    if not os.path.isdir(tok):
        raise CheckpointError(f"{path}: no tokenizer/ folder next to text_encoder/; expected the T5 tokenizer files")
    return enc, tok


def check_t5_config(enc_dir: str) -> dict:
    cfg_path = os.path.join(enc_dir, "config.json")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{enc_dir}: no config.json; expected a transformers T5EncoderModel folder") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    mt = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if mt != "t5" or (archs and not any(a.startswith("T5") for a in archs)):
        raise CheckpointError(f"{cfg_path}: this text encoder is not T5 (model_type={mt!r}, architectures={archs}); "
                              "expected the T5 v1.1 XXL encoder (model_type 't5', T5EncoderModel) the official "
                              "pipeline uses")
    return cfg


def folder_identity(path: str) -> str:
    """A cheap identity for a T5 folder: real path, config and the sizes/mtimes of its weight files."""
    enc, tok = _find_t5_dirs(path)
    h = hashlib.sha256()
    h.update(os.path.realpath(enc).encode())
    for d in (enc, tok):
        for fn in sorted(os.listdir(d)):
            p = os.path.join(d, fn)
            if os.path.isfile(p):
                st = os.stat(p)
                h.update(f"{fn}:{st.st_size}:{int(st.st_mtime)}".encode())
    return "t5folder:" + h.hexdigest()[:32]


class T5FolderEncoder:
    """The official ``text_encoder/`` + ``tokenizer/`` pair, loaded from local files only."""

    def __init__(self, path: str, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu"):
        self.path = os.fspath(path)
        enc_dir, tok_dir = _find_t5_dirs(self.path)
        check_t5_config(enc_dir)
        if not any(fn.endswith(".safetensors") for fn in os.listdir(enc_dir)):
            raise CheckpointError(f"{enc_dir}: no .safetensors weights (pickled .bin files are not loaded); expected "
                                  "model*.safetensors")
        from transformers import AutoTokenizer, T5EncoderModel

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{tok_dir}: cannot load the T5 tokenizer ({type(e).__name__}: {e})") from None
        if self.tokenizer.eos_token_id is None or self.tokenizer.pad_token_id is None:
            raise CheckpointError(f"{tok_dir}: the tokenizer has no </s> or <pad> token; expected the T5 tokenizer")
        try:
            self.model = T5EncoderModel.from_pretrained(enc_dir, dtype=dtype, local_files_only=True,
                                                        use_safetensors=True)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{enc_dir}: cannot load the T5 encoder ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
        self.model.requires_grad_(False).train(False).to(device)  # eval mode
        self.device = torch.device(device)
        self.identity = folder_identity(self.path)

    def input_ids(self, texts: Sequence[str]) -> torch.Tensor:
        return official_input_ids(self.tokenizer, texts)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.input_ids(texts).to(self.device)
        return self.model(ids)[0]


# ------------------------------------------------------------------------------------------------- ComfyUI CLIP
def _comfy_t5_sdtokenizer(clip) -> Any:
    tok = getattr(clip, "tokenizer", None)
    if tok is None:
        return None
    for v in vars(tok).values():
        if getattr(v, "embedding_key", None) == "t5xxl" and hasattr(v, "tokenizer"):
            return v
    return None


def _comfy_t5_models(clip) -> list:
    """The SDClipModel(s) of ComfyUI's T5 inside ``clip.cond_stage_model`` (to run them without a mask)."""
    found = []
    root = getattr(clip, "cond_stage_model", None)
    if root is None or not hasattr(root, "modules"):
        return found
    for m in root.modules():
        if hasattr(m, "enable_attention_masks") and "t5" in type(m).__name__.lower():
            found.append(m)
    return found


class ComfyClipEncoder:
    """ComfyUI's T5-XXL CLIP object, fed the official 226 ids without an attention mask."""

    def __init__(self, clip, input_name: str = "clip"):
        if clip is None or not hasattr(clip, "tokenize") or not hasattr(clip, "encode_from_tokens"):
            raise InputError(input_name, "expected a CLIP from ComfyUI's Load CLIP node (T5-XXL, type sd3)")
        probe = clip.tokenize("")
        if not isinstance(probe, dict) or "t5xxl" not in probe:
            keys = list(probe) if isinstance(probe, dict) else type(probe).__name__
            raise InputError(input_name, f"this CLIP has no T5-XXL encoder (it tokenizes for {keys}); load "
                                         "t5xxl_fp16/t5xxl_fp8 .safetensors with Load CLIP, type 'sd3'")
        self.clip = clip
        self.input_name = input_name
        self.keys = list(probe)
        self.sdtok = _comfy_t5_sdtokenizer(clip)
        self.identity = "comfyclip:" + fingerprint_module(getattr(clip, "cond_stage_model", None))

    def input_ids(self, texts: Sequence[str]) -> torch.Tensor:
        if self.sdtok is not None:
            return official_input_ids(self.sdtok.tokenizer, texts)
        rows = []
        for text in texts:  # fallback: ComfyUI's own tokens, re-laid out like the official ones
            toks = self.clip.tokenize(text)["t5xxl"]
            content = [t[0] for chunk in toks for t in chunk if isinstance(t[0], int) and t[0] not in (0, 1)]
            rows.append(pad_token_ids(content))
        return torch.tensor(rows, dtype=torch.long)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.input_ids(texts)
        t5s = _comfy_t5_models(self.clip)
        saved = [(m, m.enable_attention_masks, getattr(m, "zero_out_masked", None)) for m in t5s]
        outs = []
        try:
            for m in t5s:  # the official encoder runs unmasked: pads are encoded and kept
                m.enable_attention_masks = False
                if hasattr(m, "zero_out_masked"):
                    m.zero_out_masked = False
            for row in ids.tolist():
                tokens = {k: [] for k in self.keys}
                tokens["t5xxl"] = [[(int(i), 1.0) for i in row]]
                out = self.clip.encode_from_tokens(tokens)
                if isinstance(out, (tuple, list)):
                    out = out[0]
                if out.ndim != 3 or out.shape[1] != MAX_SEQUENCE_LENGTH:
                    raise InputError(self.input_name, f"the CLIP returned embeddings of shape {list(out.shape)}; "
                                                      f"expected (1, {MAX_SEQUENCE_LENGTH}, 4096) from T5-XXL")
                outs.append(out)
        finally:
            for m, mask, zero in saved:
                m.enable_attention_masks = mask
                if zero is not None:
                    m.zero_out_masked = zero
        return torch.cat(outs, dim=0)


def fingerprint_module(module) -> str:
    """A cheap but weight-sensitive identity of a module: names, shapes, small tensors and strided samples."""
    h = hashlib.sha256()
    if module is None or not hasattr(module, "state_dict"):
        h.update(repr(type(module)).encode())
        return h.hexdigest()[:32]
    with torch.no_grad():
        for name, t in sorted(module.state_dict().items()):
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            if t.is_meta or t.numel() == 0:
                continue
            flat = t.detach().reshape(-1)
            if flat.numel() > 4096:
                flat = flat[:: max(1, flat.numel() // 4096)][:4096]
            h.update(flat.to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


# ------------------------------------------------------------------------------------------------- cache
class TextCache:
    """Embeddings on disk: ``<root>/<sha256>.safetensors`` with both tensors and the texts in the metadata."""

    def __init__(self, root: str):
        self.root = os.fspath(root)

    @staticmethod
    def key(prompt: str, negative_prompt: str, encoder_identity: str,
            max_length: int = MAX_SEQUENCE_LENGTH) -> str:
        payload = json.dumps({"v": CACHE_VERSION, "prompt": prompt, "negative": negative_prompt,
                              "encoder": encoder_identity, "max_length": max_length}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def path(self, key: str) -> str:
        return os.path.join(self.root, f"{key}.safetensors")

    def get(self, prompt: str, negative_prompt: str, encoder_identity: str) -> TextEmbeddings | None:
        p = self.path(self.key(prompt, negative_prompt, encoder_identity))
        if not os.path.isfile(p):
            return None
        try:
            with open_safetensors(p) as store:
                meta = store.metadata
                if meta.get("prompt") != prompt or meta.get("negative_prompt") != negative_prompt:
                    return None
                pos = store["prompt_embeds"].clone()
                neg = store["negative_prompt_embeds"].clone()
        except (CheckpointError, KeyError):
            return None  # a damaged cache entry is recomputed (and overwritten)
        return TextEmbeddings(pos, neg, prompt, negative_prompt, encoder_identity, from_cache=True)

    def put(self, emb: TextEmbeddings) -> str:
        os.makedirs(self.root, exist_ok=True)
        p = self.path(self.key(emb.prompt, emb.negative_prompt, emb.encoder))
        save_safetensors_atomic(p, {"prompt_embeds": emb.prompt_embeds.detach().cpu().contiguous(),
                                    "negative_prompt_embeds": emb.negative_prompt_embeds.detach().cpu().contiguous()},
                                {"prompt": emb.prompt, "negative_prompt": emb.negative_prompt,
                                 "encoder": emb.encoder, "version": CACHE_VERSION})
        return p


def encode_prompts(prompt: str, negative_prompt: str, identity: str,
                   make_encoder: Callable[[], Any], cache: TextCache | None = None) -> TextEmbeddings:
    """Positive and negative embeddings, from ``cache`` when present, else from ``make_encoder()`` (only then
    called, so a cache hit never loads T5)."""
    if cache is not None:
        hit = cache.get(prompt, negative_prompt, identity)
        if hit is not None:
            return hit
    encoder = make_encoder()
    out = encoder.encode([prompt, negative_prompt])
    emb = TextEmbeddings(out[0:1].detach().cpu(), out[1:2].detach().cpu(), prompt, negative_prompt, identity)
    if cache is not None:
        cache.put(emb)
    return emb

"""A complete tiny CharacterShot checkpoint set with random weights, in every layout the loaders read.

For tests and for running whole graphs on a CPU.  ``make_tiny_set(out)`` lays the files out like a ComfyUI
``models`` folder::

    charactershot/CharacterShot-tiny/        official Hugging Face layout (sharded transformer + index,
        transformer/ vae/ text_encoder/      camera_guider.pt, camera_embs/{0..V-1}.pt, tiny T5 + tokenizer,
        tokenizer/ scheduler/ camera_embs/   scheduler config, model_index.json)
    charactershot/Character2D-tiny/          the 2D pose model folder (transformer/ + vae/)
    charactershot/charactershot_camera_tiny.safetensors   camera pack
    diffusion_models/charactershot_tiny.safetensors       4D single file, no prefix, config in metadata
    diffusion_models/charactershot_tiny_comfy.safetensors 4D single file, 'model.diffusion_model.' prefix, no config
    diffusion_models/charactershot_tiny_fp8.safetensors   4D single file, fp8 e4m3fn block weights + scales
    diffusion_models/character2d_tiny.safetensors         2D single file
    vae/charactershot_vae_tiny.safetensors               CogVideoX VAE single file

Sizes are like the parity fixtures' (2 heads of 16, 2 layers, text width 32, 8 latent channels in, 4 out, a
4-channel VAE with 8-wide blocks); the tokenizer is a small unigram vocabulary built offline with ``tokenizers``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from .checkpoints import atomic_write_bytes, save_safetensors_atomic
from .config import FULL_CONFIG_2D, FULL_CONFIG_4D

TINY_TRANSFORMER = {
    "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 8, "out_channels": 4, "time_embed_dim": 16,
    "text_embed_dim": 32, "num_layers": 2, "sample_width": 12, "sample_height": 8, "sample_frames": 49,
    "patch_size": 2, "temporal_compression_ratio": 4, "max_text_seq_length": 16,
}
TINY_VAE = {
    "_class_name": "AutoencoderKLCogVideoX", "in_channels": 3, "out_channels": 3,
    "down_block_types": ["CogVideoXDownBlock3D"] * 4, "up_block_types": ["CogVideoXUpBlock3D"] * 4,
    "block_out_channels": [8, 8, 8, 8], "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 2,
    "temporal_compression_ratio": 4, "sample_height": 64, "sample_width": 96, "scaling_factor": 0.7,
}
TINY_SCHEDULER = {
    "_class_name": "CogVideoXDPMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "clip_sample": False, "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "set_alpha_to_one": True,
    "snr_shift_scale": 1.0, "steps_offset": 0, "timestep_spacing": "trailing",
}
TINY_WORDS = ("smooth motion or in the wind low quality blurry distorted face deformed hands extra fingers missing "
              "limbs cropped bad anatomy proportions watermark a an of and character dancing walking running "
              "jumping turning waving arms legs with is on at to").split()


@dataclass
class TinySet:
    root: str
    official: str = ""
    official_2d: str = ""
    camera_pack: str = ""
    single: str = ""
    single_prefixed: str = ""
    single_fp8: str = ""
    single_2d: str = ""
    vae_single: str = ""
    config_4d: dict = field(default_factory=dict)
    config_2d: dict = field(default_factory=dict)
    views: int = 0
    height: int = 0
    width: int = 0


def tiny_config_4d() -> dict:
    return {**FULL_CONFIG_4D, **TINY_TRANSFORMER}


def tiny_config_2d() -> dict:
    return {**FULL_CONFIG_2D, **TINY_TRANSFORMER}


def _json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def _pos_embedding(config: dict, seed: int) -> torch.Tensor:
    """The persistent ``patch_embed.pos_embedding`` buffer official checkpoints carry (unused at inference)."""
    p = config["patch_size"]
    frames = (config["sample_frames"] - 1) // config["temporal_compression_ratio"] + 1
    n = config["max_text_seq_length"] + frames * (config["sample_height"] // p) * (config["sample_width"] // p)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, n, config["num_attention_heads"] * config["attention_head_dim"], generator=g)


def tiny_transformer_4d_state(seed: int = 0) -> dict[str, torch.Tensor]:
    from .transformer4d import build_on_meta, random_init_

    model = build_on_meta(tiny_config_4d()).to_empty(device="cpu")
    random_init_(model, seed=seed, std=0.2)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def tiny_transformer_2d_state(seed: int = 1) -> dict[str, torch.Tensor]:
    from . import build_transformer_2d
    from .transformer4d import random_init_

    model = build_transformer_2d(tiny_config_2d(), device="meta").to_empty(device="cpu")
    random_init_(model, seed=seed, std=0.2)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if k != "patch_embed.pos_embedding"}
    return sd


def _write_transformer_folder(folder: str, config: dict, state: dict[str, torch.Tensor], shards: int) -> None:
    os.makedirs(folder, exist_ok=True)
    _json(os.path.join(folder, "config.json"), {**config, "_diffusers_version": "0.33.1"})
    keys = list(state)
    if shards <= 1:
        save_safetensors_atomic(os.path.join(folder, "diffusion_pytorch_model.safetensors"), state,
                                {"format": "pt"})
        return
    per = -(-len(keys) // shards)
    weight_map = {}
    total = 0
    for i in range(shards):
        part = keys[i * per:(i + 1) * per]
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_safetensors_atomic(os.path.join(folder, name), {k: state[k] for k in part}, {"format": "pt"})
        for k in part:
            weight_map[k] = name
            total += state[k].numel() * state[k].element_size()
    _json(os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json"),
          {"metadata": {"total_size": total}, "weight_map": weight_map})


def write_tiny_tokenizer(folder: str, words=TINY_WORDS) -> None:
    """A T5-style unigram tokenizer (``<pad>``=0, ``</s>``=1, ``<unk>``=2, ``</s>`` appended), built offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    seen = {v for v, _ in vocab}
    for w in words:
        piece = "\u2581" + w
        if piece not in seen:
            vocab.append((piece, -4.0))
            seen.add(piece)
    for ch in "\u2581abcdefghijklmnopqrstuvwxyz0123456789,.!?'-":
        if ch not in seen:
            vocab.append((ch, -9.0))
            seen.add(ch)
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    os.makedirs(folder, exist_ok=True)
    atomic_write_bytes(os.path.join(folder, "tokenizer.json"), tok.to_str().encode("utf-8"))
    _json(os.path.join(folder, "tokenizer_config.json"),
          {"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
           "model_max_length": 226, "extra_ids": 0, "additional_special_tokens": []})
    _json(os.path.join(folder, "special_tokens_map.json"),
          {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})


def write_tiny_t5(folder: str, vocab_size: int, d_model: int, seed: int = 3) -> None:
    """A 1-layer T5 v1.1-style encoder (gated-gelu, no bias) saved as safetensors with transformers."""
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=2,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
                   feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                   tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(cfg)
    model.config.architectures = ["T5EncoderModel"]
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)


def _tiny_vae_state(seed: int) -> dict[str, torch.Tensor]:
    from diffusers import AutoencoderKLCogVideoX

    kwargs = {k: v for k, v in TINY_VAE.items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLCogVideoX(**kwargs)
    return {k: v.detach().clone().contiguous() for k, v in vae.state_dict().items()}


def make_tiny_set(out: str, seed: int = 0, views: int = 21, height: int = 64, width: int = 96,
                  with_t5: bool = True, with_vae: bool = True) -> TinySet:
    """Write the whole tiny set under ``out`` (a ComfyUI-style models folder) and return where everything is."""
    from .camera_guider import CameraGuider
    from .convert import write_camera_pack, write_transformer, write_vae

    out = os.path.abspath(out)
    ts = TinySet(root=out, views=views, height=height, width=width)
    ts.config_4d, ts.config_2d = tiny_config_4d(), tiny_config_2d()
    cs = os.path.join(out, "charactershot")
    dm = os.path.join(out, "diffusion_models")
    vd = os.path.join(out, "vae")
    for d in (cs, dm, vd):
        os.makedirs(d, exist_ok=True)

    # ---- official 4D folder
    ts.official = off = os.path.join(cs, "CharacterShot-tiny")
    state4d = tiny_transformer_4d_state(seed)
    state4d["patch_embed.pos_embedding"] = _pos_embedding(ts.config_4d, seed + 10)
    _write_transformer_folder(os.path.join(off, "transformer"), ts.config_4d, state4d, shards=2)
    inner = ts.config_4d["num_attention_heads"] * ts.config_4d["attention_head_dim"]
    guider = CameraGuider(out_dim=inner)
    guider.reset_parameters(torch.Generator().manual_seed(seed + 20))
    tmp = os.path.join(off, "camera_guider.pt.partial")
    torch.save({k: v.detach().clone() for k, v in guider.state_dict().items()}, tmp)
    os.replace(tmp, os.path.join(off, "camera_guider.pt"))
    emb_dir = os.path.join(off, "camera_embs")
    os.makedirs(emb_dir, exist_ok=True)
    g = torch.Generator().manual_seed(seed + 30)
    for i in range(views):
        tmp = os.path.join(emb_dir, f"{i}.pt.partial")
        torch.save(torch.randn(6, height, width, generator=g), tmp)
        os.replace(tmp, os.path.join(emb_dir, f"{i}.pt"))
    if with_vae:
        vae_dir = os.path.join(off, "vae")
        os.makedirs(vae_dir, exist_ok=True)
        _json(os.path.join(vae_dir, "config.json"), TINY_VAE)
        save_safetensors_atomic(os.path.join(vae_dir, "diffusion_pytorch_model.safetensors"),
                                _tiny_vae_state(seed + 40), {"format": "pt"})
    if with_t5:
        tok_dir = os.path.join(off, "tokenizer")
        write_tiny_tokenizer(tok_dir)
        from tokenizers import Tokenizer

        vocab_size = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json")).get_vocab_size()
        write_tiny_t5(os.path.join(off, "text_encoder"), vocab_size, ts.config_4d["text_embed_dim"], seed + 50)
    os.makedirs(os.path.join(off, "scheduler"), exist_ok=True)
    _json(os.path.join(off, "scheduler", "scheduler_config.json"), TINY_SCHEDULER)
    _json(os.path.join(off, "model_index.json"),
          {"_class_name": "CogVideoXImageToVideo4DPipeline", "transformer": ["charactershot",
                                                                             "CogVideoXTransformer4DModel"],
           "vae": ["diffusers", "AutoencoderKLCogVideoX"], "text_encoder": ["transformers", "T5EncoderModel"],
           "tokenizer": ["transformers", "T5Tokenizer"], "scheduler": ["diffusers", "CogVideoXDPMScheduler"]})

    # ---- official 2D folder
    ts.official_2d = off2 = os.path.join(cs, "Character2D-tiny")
    state2d = tiny_transformer_2d_state(seed + 1)
    state2d["patch_embed.pos_embedding"] = _pos_embedding(ts.config_2d, seed + 11)
    _write_transformer_folder(os.path.join(off2, "transformer"), ts.config_2d, state2d, shards=1)
    _json(os.path.join(off2, "model_index.json"),
          {"_class_name": "CogVideoXImageToVideo2DPipeline",
           "transformer": ["diffusers", "CogVideoXTransformer3DModel"]})

    # ---- single files (through the converter, as users would make them)
    ts.single = write_transformer(off, os.path.join(dm, "charactershot_tiny.safetensors"))
    ts.single_prefixed = write_transformer(off, os.path.join(dm, "charactershot_tiny_comfy.safetensors"),
                                           prefix="model.diffusion_model.", with_config=False)
    ts.single_fp8 = write_transformer(off, os.path.join(dm, "charactershot_tiny_fp8.safetensors"), fp8=True)
    ts.single_2d = write_transformer(off2, os.path.join(dm, "character2d_tiny.safetensors"))
    ts.camera_pack = write_camera_pack(off, os.path.join(cs, "charactershot_camera_tiny.safetensors"))
    if with_vae:
        ts.vae_single = write_vae(off, os.path.join(vd, "charactershot_vae_tiny.safetensors"))
    return ts

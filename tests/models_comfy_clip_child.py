"""Child process of test_comfy_clip_t5_matches_official_encoder: a real ComfyUI CLIP (ComfyUI's own T5
implementation, tiny config) fed through ComfyClipEncoder, against the official-path T5FolderEncoder."""
import json
import os
import sys
repo, comfy_dir, tiny_root = sys.argv[1:4]
sys.path.insert(0, comfy_dir)
sys.path.insert(0, repo)
import torch
from comfy.cli_args import args
args.cpu = True
import comfy.model_management, comfy.sd, comfy.sd1_clip as sd1, comfy.text_encoders.t5 as t5mod
from transformers import AutoTokenizer
from charactershot_core.models.text import ComfyClipEncoder, T5FolderEncoder
off = os.path.join(tiny_root, "charactershot", "CharacterShot-tiny")
hf_cfg = json.load(open(os.path.join(off, "text_encoder", "config.json")))
cfg = {k: hf_cfg[k] for k in ("d_ff", "d_kv", "d_model", "num_heads", "num_layers", "vocab_size", "layer_norm_epsilon")}
cfg.update(model_type="t5", dense_act_fn="gelu_pytorch_tanh", is_gated_act=True)
cfg_path = os.path.join(tiny_root, "comfy_t5_tiny.json")
json.dump(cfg, open(cfg_path, "w"))
tok_dir = os.path.join(off, "tokenizer")

class TinyT5(sd1.SDClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__(device=device, dtype=dtype, textmodel_json_config=cfg_path, special_tokens={"end": 1, "pad": 0},
                         model_class=t5mod.T5, enable_attention_masks=True, return_attention_masks=True,
                         model_options={**model_options, "model_name": "t5xxl"})

class TinyTok(sd1.SDTokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(tok_dir, embedding_directory=embedding_directory, pad_with_end=False, embedding_size=cfg["d_model"],
                         embedding_key="t5xxl", tokenizer_class=AutoTokenizer, has_start_token=False, pad_to_max_length=False,
                         max_length=99999999, min_length=77, tokenizer_data=tokenizer_data)

class Clip(sd1.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}, **kw):
        super().__init__(device=device, dtype=dtype, model_options=model_options, clip_name="t5xxl", clip_model=TinyT5, name="t5xxl")

class Tok(sd1.SD1Tokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data, clip_name="t5xxl", tokenizer=TinyTok, name="t5xxl")

class Target:
    clip = Clip
    tokenizer = Tok
    params = {}

clip = comfy.sd.CLIP(Target(), model_options={"dtype": torch.float32})
ref = T5FolderEncoder(off, dtype=torch.float32)
missing, unexpected = clip.load_sd(ref.model.state_dict())
prompts = ["a character dancing in the wind", "low quality, blurry"]
enc = ComfyClipEncoder(clip)
got = enc.encode(prompts).float()
want = ref.encode(prompts).float()
native = clip.encode_from_tokens(clip.tokenize(prompts[0])).float()
ids = enc.input_ids(prompts[:1])[0].tolist()
masked = clip.encode_from_tokens({"t5xxl": [[(i, 1.0) for i in ids]]}).float()  # ComfyUI's mask left on
print(json.dumps({"max_diff": (got - want).abs().max().item(), "shape": list(got.shape),
                  "ids_equal": enc.input_ids(prompts).tolist() == ref.input_ids(prompts).tolist(),
                  "native_shape": list(native.shape), "masked_diff": (masked - want[:1]).abs().max().item(), "unexpected": [k for k in unexpected][:5],
                  "missing": [k for k in missing][:5],
                  "mask_restored": clip.cond_stage_model.t5xxl.enable_attention_masks}))

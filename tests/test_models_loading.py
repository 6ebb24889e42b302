"""Checkpoint loading, converter, tiny checkpoint set and text conditioning (issue 3).

A tiny checkpoint set (every layout) is written once per module; each test loads through the public loaders and
compares outputs, or breaks a copy of a file and checks the error names the file and says what was expected.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from charactershot_core.errors import CheckpointError, InputError
from charactershot_core.models import loading as L
from charactershot_core.models.camera_guider import camera_tokens
from charactershot_core.models.checkpoints import (StreamingSafetensorsWriter, open_safetensors,
                                                   save_safetensors_atomic)
from charactershot_core.models.config import FULL_CONFIG_4D
from charactershot_core.models.convert import convert_folder
from charactershot_core.models.rope import rotary_embeddings
from charactershot_core.models.text import (MAX_SEQUENCE_LENGTH, ComfyClipEncoder, T5FolderEncoder, TextCache,
                                            encode_prompts, official_input_ids, pad_token_ids)
from charactershot_core.models.tiny import make_tiny_set
from tests.parity_utils import fixture_names, load_fixture, max_abs_diff, parity_root

REPO = Path(__file__).resolve().parent.parent
COMFY_T5_TOKENIZER = REPO / ".comfyui" / "comfy" / "text_encoders" / "t5_tokenizer"
V, F, H_LAT, W_LAT = 3, 3, 8, 12  # tiny call: 3 views, 3 latent frames, 8x12 latents (64x96 pixels)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    return make_tiny_set(str(tmp_path_factory.mktemp("tiny_models")), seed=0, views=V)


@pytest.fixture(scope="module")
def call_inputs(tiny):
    g = torch.Generator().manual_seed(1)
    cfg = tiny.config_4d
    hidden = torch.randn(2, V, F, cfg["in_channels"], H_LAT, W_LAT, generator=g)
    text = torch.randn(2, V, 10, cfg["text_embed_dim"], generator=g)
    t = torch.tensor([700, 700])
    base = (cfg["sample_height"] // cfg["patch_size"], cfg["sample_width"] // cfg["patch_size"])
    gh, gw = H_LAT // cfg["patch_size"], W_LAT // cfg["patch_size"]
    rope = (rotary_embeddings(F, gh, gw, cfg["attention_head_dim"], base, "cpu"),
            rotary_embeddings(V, gh, gw, cfg["attention_head_dim"], base, "cpu"))
    return hidden, text, t, rope


def run_4d(m: L.LoadedModel4D, inputs) -> torch.Tensor:
    hidden, text, t, (rope_t, rope_v) = inputs
    with torch.no_grad():
        tokens = camera_tokens(m.camera_guider(m.camera_embs[:V]))[None].expand(hidden.shape[0], -1, -1, -1)
        return m.transformer(hidden, text, t, tokens, rope_t, rope_v).float()


@pytest.fixture(scope="module")
def reference_out(tiny, call_inputs):
    return run_4d(L.load_model_4d(tiny.official, dtype="fp32"), call_inputs)


# ---------------------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("layout", ["single", "single_prefixed"])
def test_single_file_layouts_match_official_folder(tiny, call_inputs, reference_out, layout):
    m = L.load_model_4d(getattr(tiny, layout), tiny.camera_pack, dtype="fp32")
    out = run_4d(m, call_inputs)
    assert torch.equal(out, reference_out)
    assert out.abs().max() > 0.1  # a real signal, not zeros


def test_official_folder_is_sharded_and_pos_embedding_ignored(tiny):
    folder = Path(tiny.official) / "transformer"
    assert len(list(folder.glob("diffusion_pytorch_model-*-of-*.safetensors"))) == 2
    src = L.open_transformer(tiny.official)
    assert "patch_embed.pos_embedding" in src.store  # the official buffer is in the files ...
    m = L.load_model_4d(tiny.official, dtype="fp32")
    assert "patch_embed.pos_embedding" not in m.transformer.state_dict()  # ... and not loaded
    assert m.camera_embs.shape == (V, 6, tiny.height, tiny.width)


def test_camera_pack_equals_official_guider_and_embeddings(tiny):
    g1, e1, _ = L.load_camera(tiny.official)
    g2, e2, _ = L.load_camera(tiny.camera_pack)
    assert torch.equal(e1, e2)
    with torch.no_grad():
        assert torch.equal(g1(e1), g2(e2))
    assert g1.layer[0].weight.dtype == torch.float32


def test_dtype_is_applied_on_load(tiny):
    m = L.load_model_4d(tiny.single, tiny.camera_pack, dtype="bf16")
    dtypes = {p.dtype for p in m.transformer.parameters()}
    assert dtypes == {torch.bfloat16}
    assert m.camera_guider.layer[0].weight.dtype == torch.float32  # the guider stays fp32 as officially


def test_fp8_single_file_loads_close(tiny, call_inputs, reference_out):
    from charactershot_core.models.fp8 import FP8Linear

    with open_safetensors(tiny.single_fp8) as st:
        assert st.info("transformer_blocks.0.attn1.to_q.weight").dtype == torch.float8_e4m3fn
        assert "transformer_blocks.0.attn1.to_q.scale_weight" in st
    rel = lambda a: ((a - reference_out).norm() / reference_out.norm()).item()  # noqa: E731
    m = L.load_model_4d(tiny.single_fp8, tiny.camera_pack, dtype="fp32")  # dequantised
    assert isinstance(m.transformer.transformer_blocks[0].attn1.to_q, torch.nn.Linear)
    assert rel(run_4d(m, call_inputs)) < 0.08
    m8 = L.load_model_4d(tiny.single_fp8, tiny.camera_pack, dtype="fp32", weight_storage="fp8_e4m3fn")
    assert isinstance(m8.transformer.transformer_blocks[0].attn1.to_q, FP8Linear)
    assert m8.transformer.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    out8 = run_4d(m8, call_inputs)
    assert rel(out8) < 0.08
    # fp8 storage from a full-precision file quantises the same way as the converter did
    mq = L.load_model_4d(tiny.single, tiny.camera_pack, dtype="fp32", weight_storage="fp8_e4m3fn")
    assert torch.equal(run_4d(mq, call_inputs), out8)
    # quantised while reading == the model core's quantize_fp8_ applied after a full-precision load
    from charactershot_core.models.fp8 import quantize_fp8_

    post = L.load_model_4d(tiny.single, tiny.camera_pack, dtype="fp32")
    assert quantize_fp8_(post.transformer) > 0
    a, b = mq.transformer.state_dict(), post.transformer.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k].float(), b[k].float()) for k in a)


def test_2d_layouts_match(tiny):
    a = L.load_model_2d(tiny.official_2d, "fp32")
    b = L.load_model_2d(tiny.single_2d, "fp32")
    assert type(a.transformer).__name__ == "CogVideoXTransformer3DModel"
    g = torch.Generator().manual_seed(2)
    cfg = tiny.config_2d
    x = torch.randn(1, 3, cfg["in_channels"], H_LAT, W_LAT, generator=g)
    e = torch.randn(1, 7, cfg["text_embed_dim"], generator=g)
    sa, sb = a.transformer.state_dict(), b.transformer.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.no_grad():
        oa = a.transformer(x, e, torch.tensor([300])).sample
        ob = b.transformer(x, e, torch.tensor([300])).sample
    # the same weights, but memory-mapped at other offsets: CPU kernels may take other (aligned/unaligned) paths
    assert (oa - ob).abs().max().item() <= 1e-5


def test_vae_layouts_match(tiny):
    a = L.load_vae(tiny.official, "fp32")
    b = L.load_vae(tiny.vae_single, "fp32")
    sa, sb = a.vae.state_dict(), b.vae.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.scaling_factor == 0.7 and a.vae.use_tiling and a.vae.use_slicing


def test_inferred_config_matches_the_written_one(tiny):
    src = L.open_transformer(tiny.single_prefixed)
    assert src.config_inferred
    for k in ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "text_embed_dim",
              "time_embed_dim", "num_layers", "patch_size", "attention_bias"):
        assert src.config[k] == tiny.config_4d[k], k
    assert src.kind == L.KIND_4D
    src2 = L.open_transformer(tiny.single_2d)
    assert src2.kind == L.KIND_2D


# ---------------------------------------------------------------------------------------------- full size
def spec_b4_key_shapes(with_4d: bool = True) -> dict[str, tuple[int, ...]]:
    """The official key/shape list of spec §B.4, written out from the spec (not from our model)."""
    D, T, FF = 3072, 512, 12288
    ks = {
        "patch_embed.pos_embedding": (1, 17776, D),
        "patch_embed.proj.weight": (D, 32, 2, 2), "patch_embed.proj.bias": (D,),
        "patch_embed.text_proj.weight": (D, 4096), "patch_embed.text_proj.bias": (D,),
        "time_embedding.linear_1.weight": (T, D), "time_embedding.linear_1.bias": (T,),
        "time_embedding.linear_2.weight": (T, T), "time_embedding.linear_2.bias": (T,),
        "norm_final.weight": (D,), "norm_final.bias": (D,),
        "norm_out.linear.weight": (2 * D, T), "norm_out.linear.bias": (2 * D,),
        "norm_out.norm.weight": (D,), "norm_out.norm.bias": (D,),
        "proj_out.weight": (64, D), "proj_out.bias": (64,),
    }
    norms = ["norm1", "norm2"] + (["view_norm1"] if with_4d else [])
    attns = ["attn1"] + (["attn2"] if with_4d else [])
    for i in range(42):
        b = f"transformer_blocks.{i}."
        for n in norms:
            ks[b + n + ".linear.weight"] = (6 * D, T)
            ks[b + n + ".linear.bias"] = (6 * D,)
            ks[b + n + ".norm.weight"] = (D,)
            ks[b + n + ".norm.bias"] = (D,)
        for a in attns:
            for p in ("to_q", "to_k", "to_v", "to_out.0"):
                ks[f"{b}{a}.{p}.weight"] = (D, D)
                ks[f"{b}{a}.{p}.bias"] = (D,)
            for p in ("norm_q", "norm_k"):
                ks[f"{b}{a}.{p}.weight"] = (64,)
                ks[f"{b}{a}.{p}.bias"] = (64,)
        ks[b + "ff.net.0.proj.weight"] = (FF, D)
        ks[b + "ff.net.0.proj.bias"] = (FF,)
        ks[b + "ff.net.2.weight"] = (D, FF)
        ks[b + "ff.net.2.bias"] = (D,)
    return ks


def test_full_size_config_inferred_from_official_key_list():
    from charactershot_core.models.checkpoints import TensorInfo

    shapes = spec_b4_key_shapes()
    assert len(shapes) == 1697  # the count the spec gives
    infos = {k: TensorInfo(torch.bfloat16, s) for k, s in shapes.items()}
    prefixed = {"model.diffusion_model." + k: v for k, v in infos.items()}
    assert L.find_transformer_prefix(prefixed, "x") == "model.diffusion_model."
    assert L.detect_kind(infos) == L.KIND_4D
    cfg = L.infer_transformer_config(infos, source="spec-B4")
    assert cfg == FULL_CONFIG_4D
    model = L.build_transformer_on_meta(L.KIND_4D, cfg)  # meta device: no memory
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {k: v for k, v in shapes.items() if k != "patch_embed.pos_embedding"}
    assert got == expected
    assert sum(v.numel() for v in model.state_dict().values()) == 7_553_847_360


def test_full_size_2d_key_list_is_detected_as_2d():
    from charactershot_core.models.checkpoints import TensorInfo

    shapes = spec_b4_key_shapes(with_4d=False)
    infos = {k: TensorInfo(torch.bfloat16, s) for k, s in shapes.items()}
    assert L.detect_kind(infos) == L.KIND_2D
    cfg = L.infer_transformer_config(infos, source="spec-2d")
    model = L.build_transformer_on_meta(L.KIND_2D, cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == {k: v for k, v in shapes.items() if k != "patch_embed.pos_embedding"}


# ---------------------------------------------------------------------------------------------- bad input
def _expect_error(fn, *phrases):
    with pytest.raises(CheckpointError) as ei:
        fn()
    msg = str(ei.value)
    for p in phrases:
        assert p in msg, f"{p!r} not in: {msg}"
    return msg


def test_not_safetensors(tmp_path, tiny):
    bad = tmp_path / "notes.safetensors"
    bad.write_text("this is not a checkpoint at all, just some text that is long enough")
    _expect_error(lambda: L.load_model_4d(str(bad), tiny.camera_pack, "fp32"), str(bad), "not a safetensors file")


def test_truncated_file(tmp_path, tiny):
    bad = tmp_path / "cut.safetensors"
    data = Path(tiny.single).read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])
    _expect_error(lambda: L.load_model_4d(str(bad), tiny.camera_pack, "fp32"), str(bad), "truncated")


def test_2d_checkpoint_given_to_4d_loader_and_reverse(tiny):
    msg = _expect_error(lambda: L.load_model_4d(tiny.single_2d, tiny.camera_pack, "fp32"), tiny.single_2d,
                        "2D transformer", "2D Model Loader")
    assert "4D" in msg
    _expect_error(lambda: L.load_model_2d(tiny.single, "fp32"), tiny.single, "4D transformer", "expected a 2D")
    _expect_error(lambda: L.load_model_2d(tiny.official, "fp32"), "4D transformer")


def test_missing_and_mismatched_keys_are_listed(tmp_path, tiny):
    with open_safetensors(tiny.single) as st:
        sd = {k: st[k].clone() for k in st}
        meta = st.metadata
    broken = dict(sd)
    del broken["transformer_blocks.1.attn2.to_k.weight"]
    broken["transformer_blocks.0.ff.net.2.bias"] = torch.zeros(7)
    broken["transformer_blocks.0.lambda_param"] = torch.zeros(())
    p = tmp_path / "broken.safetensors"
    save_safetensors_atomic(str(p), broken, meta)
    msg = _expect_error(lambda: L.load_model_4d(str(p), tiny.camera_pack, "fp32"), str(p),
                        "transformer_blocks.1.attn2.to_k.weight", "transformer_blocks.0.lambda_param",
                        "transformer_blocks.0.ff.net.2.bias [7]", "missing", "unexpected")
    assert "shape" in msg


def test_missing_camera_embeddings(tmp_path, tiny):
    folder = tmp_path / "official_copy"
    shutil.copytree(tiny.official, folder)
    os.remove(folder / "camera_embs" / "1.pt")
    _expect_error(lambda: L.load_model_4d(str(folder), dtype="fp32"), "camera embeddings missing", "1.pt")
    shutil.rmtree(folder / "camera_embs")
    _expect_error(lambda: L.load_model_4d(str(folder), dtype="fp32"), str(folder), "camera_embs")
    # a single file needs a camera source
    _expect_error(lambda: L.load_model_4d(tiny.single, None, "fp32"), tiny.single, "camera pack")
    # a transformer given as camera pack
    _expect_error(lambda: L.load_camera_pack(tiny.single), tiny.single, "not a CharacterShot camera pack")


def test_camera_guider_strict_with_prefixes(tmp_path, tiny):
    sd = torch.load(Path(tiny.official) / "camera_guider.pt", weights_only=True)
    ref = L.load_camera_guider(str(Path(tiny.official) / "camera_guider.pt"))
    for prefix in ("module.", "camera_guider.", "module.camera_guider."):
        p = tmp_path / f"guider_{prefix.replace('.', '_')}.pt"
        torch.save({prefix + k: v for k, v in sd.items()}, p)
        g = L.load_camera_guider(str(p))
        assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), ref.state_dict().values()))
    missing = {k: v for k, v in sd.items() if k != "layer.4.bias"}
    p = tmp_path / "guider_missing.pt"
    torch.save(missing, p)
    _expect_error(lambda: L.load_camera_guider(str(p)), str(p), "layer.4.bias", "missing")
    extra = dict(sd, **{"layer.14.weight": torch.zeros(3)})
    p = tmp_path / "guider_extra.pt"
    torch.save(extra, p)
    _expect_error(lambda: L.load_camera_guider(str(p)), str(p), "layer.14.weight", "unexpected")


def test_pickled_objects_are_refused(tmp_path):
    p = tmp_path / "camera_guider.pt"
    torch.save({"layer.0.weight": torch.zeros(1), "opt": torch.optim.SGD([torch.zeros(1, requires_grad=True)],
                                                                          lr=0.1)}, p)
    _expect_error(lambda: L.load_camera_guider(str(p)), str(p), "without unpickling")


def test_t5_that_is_not_t5(tmp_path, tiny):
    folder = tmp_path / "not_t5"
    shutil.copytree(Path(tiny.official) / "text_encoder", folder / "text_encoder")
    shutil.copytree(Path(tiny.official) / "tokenizer", folder / "tokenizer")
    cfg_path = folder / "text_encoder" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(model_type="umt5", architectures=["UMT5EncoderModel"])
    cfg_path.write_text(json.dumps(cfg))
    _expect_error(lambda: T5FolderEncoder(str(folder)), str(cfg_path), "not T5", "umt5")


def test_vae_loader_rejects_a_transformer(tiny):
    _expect_error(lambda: L.load_vae(tiny.single, "fp32"), tiny.single, "not a CogVideoX VAE", "a transformer")


def test_streaming_writer_leaves_nothing_on_failure(tmp_path):
    p = tmp_path / "out.safetensors"
    with pytest.raises(RuntimeError):
        with StreamingSafetensorsWriter(str(p), [("a", torch.float32, (2,)), ("b", torch.float32, (3,))]) as w:
            w.write("a", torch.ones(2))
            raise RuntimeError("boom")
    assert not p.exists() and not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- converter
def test_converter_round_trip(tmp_path, tiny, call_inputs, reference_out):
    out = tmp_path / "models"
    res = convert_folder(tiny.official, str(out), dtype="keep", comfy_layout=True)
    assert set(res.outputs) == {"transformer", "camera_pack", "vae"}
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    t_path = res.outputs["transformer"]
    assert Path(t_path).parent.name == "diffusion_models"
    with open_safetensors(t_path) as st:
        assert "patch_embed.pos_embedding" not in st
        assert json.loads(st.metadata["config"])["num_layers"] == tiny.config_4d["num_layers"]
    m = L.load_model_4d(t_path, res.outputs["camera_pack"], dtype="fp32")
    assert torch.equal(run_4d(m, call_inputs), reference_out)
    a, b = L.load_vae(tiny.official, "fp32").vae.state_dict(), L.load_vae(res.outputs["vae"], "fp32").vae.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # bf16 conversion stores bf16 and loads to the same values as loading the folder in bf16
    res16 = convert_folder(tiny.official, str(tmp_path / "bf16"), dtype="bf16")
    with open_safetensors(res16.outputs["transformer"]) as st:
        assert {st.info(k).dtype for k in st} == {torch.bfloat16}
    m16 = L.load_model_4d(res16.outputs["transformer"], res16.outputs["camera_pack"], dtype="bf16")
    ref16 = L.load_model_4d(tiny.official, dtype="bf16")
    assert all(torch.equal(x, y) for x, y in zip(m16.transformer.state_dict().values(),
                                                 ref16.transformer.state_dict().values()))


def test_cli_convert(tmp_path, tiny, capsys):
    from charactershot_core.__main__ import main

    assert main(["convert", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "nope" in capsys.readouterr().err
    out = tmp_path / "models"
    assert main(["convert", "--src", tiny.official, "--out", str(out), "--fp8", "--comfy-layout"]) == 0
    fp8_file = out / "diffusion_models" / "charactershot_transformer_fp8_e4m3fn.safetensors"
    with open_safetensors(str(fp8_file)) as st:
        assert st.info("transformer_blocks.0.ff.net.0.proj.weight").dtype == torch.float8_e4m3fn
        assert st.info("proj_out.weight").dtype == torch.float32  # outside the blocks: kept
    assert (out / "charactershot" / "charactershot_camera_pack.safetensors").is_file()
    assert str(fp8_file) in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- text
def test_t5_folder_pads_to_226_and_encodes_unmasked(tiny):
    enc = T5FolderEncoder(tiny.official, dtype=torch.float32)
    ids = enc.input_ids(["smooth motion or in the wind", "a character " * 300])
    assert ids.shape == (2, MAX_SEQUENCE_LENGTH)
    first = ids[0].tolist()
    n = first.index(1)  # </s>
    assert n > 0 and all(i == 0 for i in first[n + 1:])  # then <pad> to 226
    assert first[:n + 1] == enc.tokenizer("smooth motion or in the wind")["input_ids"]
    assert ids[1].tolist()[-1] == 1 and 0 not in ids[1].tolist()  # truncated to 225 + </s>
    assert pad_token_ids(first[:n]) == first
    out = enc.encode(["smooth motion or in the wind"])
    assert out.shape == (1, MAX_SEQUENCE_LENGTH, tiny.config_4d["text_embed_dim"])
    with torch.no_grad():
        direct = enc.model(ids[:1])[0]  # no attention mask, as the official pipeline
        masked = enc.model(ids[:1], attention_mask=(ids[:1] != 0).long())[0]
    assert torch.equal(out, direct)
    assert not torch.allclose(out, masked)  # pads are encoded and attended, as officially


class _FakeT5Model(torch.nn.Module):
    """Stands for ComfyUI's T5XXLModel: records whether a mask would be used."""

    def __init__(self):
        super().__init__()
        self.enable_attention_masks = True
        self.zero_out_masked = True
        self.w = torch.nn.Parameter(torch.randn(4))


class _FakeClip:
    """The parts of ComfyUI's CLIP object the encoder uses, around the real T5-XXL tokenizer files."""

    def __init__(self, hf_tokenizer):
        class SDTok:
            embedding_key = "t5xxl"
            tokenizer = hf_tokenizer

        class Tok:
            pass

        self.tokenizer = Tok()
        self.tokenizer.t5xxl = SDTok()
        self.cond_stage_model = torch.nn.Module()
        self.cond_stage_model.t5xxl = _FakeT5Model()
        self.calls = []

    def tokenize(self, text):
        return {"g": [], "l": [], "t5xxl": [[(5, 1.0), (1, 1.0)]]}

    def encode_from_tokens(self, tokens):
        t5 = self.cond_stage_model.t5xxl
        self.calls.append((tokens, t5.enable_attention_masks, t5.zero_out_masked))
        ids = torch.tensor([[i for i, _ in tokens["t5xxl"][0]]], dtype=torch.float32)
        return ids[..., None].expand(1, ids.shape[1], 8).clone()


@pytest.mark.skipif(not COMFY_T5_TOKENIZER.is_dir(), reason="ComfyUI's T5 tokenizer files are not unpacked")
def test_comfy_clip_gets_the_official_226_ids():
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(COMFY_T5_TOKENIZER), local_files_only=True)
    clip = _FakeClip(hf)
    enc = ComfyClipEncoder(clip)
    prompt = "smooth motion or in the wind, (masterpiece:1.3)"
    out = enc.encode([prompt])
    tokens, mask_on, zero_on = clip.calls[0]
    sent = [i for i, _ in tokens["t5xxl"][0]]
    official = hf(prompt, padding="max_length", max_length=226, truncation=True, add_special_tokens=True)
    assert sent == official["input_ids"] and len(sent) == 226
    assert tokens["g"] == [] and tokens["l"] == []
    assert not mask_on and not zero_on  # run unmasked like the official encoder ...
    assert clip.cond_stage_model.t5xxl.enable_attention_masks and clip.cond_stage_model.t5xxl.zero_out_masked
    assert out.shape == (1, 226, 8)
    with pytest.raises(InputError, match="clip"):
        ComfyClipEncoder(object())

    class ClipL(_FakeClip):
        def tokenize(self, text):
            return {"l": [[(49406, 1.0), (49407, 1.0)]]}

    with pytest.raises(InputError, match="no T5-XXL encoder.*type 'sd3'"):
        ComfyClipEncoder(ClipL(hf))


@pytest.mark.skipif(not (REPO / ".comfyui" / "comfy" / "sd1_clip.py").is_file(), reason="ComfyUI is not unpacked")
def test_comfy_clip_t5_matches_official_encoder(tiny):
    """ComfyUI's own T5 (a real comfy.sd.CLIP, tiny config, the tiny T5's weights) through ComfyClipEncoder gives
    what the official path (transformers T5, 226 ids, no mask) gives.  Run in a child process: importing ComfyUI
    sets global state."""
    import subprocess
    import sys

    child = Path(__file__).with_name("models_comfy_clip_child.py")
    proc = subprocess.run([sys.executable, str(child), str(REPO), str(REPO / ".comfyui"), tiny.root],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["missing"] == [] and set(r["unexpected"]) <= {"encoder.embed_tokens.weight"}  # tied copy only
    assert r["ids_equal"] and r["shape"] == [2, 226, tiny.config_4d["text_embed_dim"]]
    assert r["max_diff"] < 1e-4
    assert r["masked_diff"] > 1e-3  # ComfyUI's masked encoding would differ: the mask switch matters
    assert r["native_shape"][1] != 226  # ComfyUI's own tokenization does not give the official layout
    assert r["mask_restored"]


def test_text_cache_hit_skips_the_encoder(tmp_path, tiny):
    cache = TextCache(str(tmp_path / "cache"))
    made = []

    def factory():
        made.append(1)
        return T5FolderEncoder(tiny.official, dtype=torch.float32)

    ident = "t5folder:test"
    a = encode_prompts("a character dancing", "low quality", ident, factory, cache)
    assert len(made) == 1 and not a.from_cache
    b = encode_prompts("a character dancing", "low quality", ident, factory, cache)
    assert len(made) == 1 and b.from_cache
    assert torch.equal(a.prompt_embeds, b.prompt_embeds) and torch.equal(a.negative_prompt_embeds,
                                                                         b.negative_prompt_embeds)
    assert a.cfg_batch().shape == (2, MAX_SEQUENCE_LENGTH, tiny.config_4d["text_embed_dim"])
    assert torch.equal(a.cfg_batch()[0], a.negative_prompt_embeds[0])  # [negative, positive]
    c = encode_prompts("a character dancing", "blurry", ident, factory, cache)
    assert len(made) == 2 and not c.from_cache
    d = encode_prompts("a character dancing", "low quality", "other-encoder", factory, cache)
    assert len(made) == 3 and not d.from_cache
    # a damaged entry is recomputed, not trusted
    entry = cache.path(cache.key("a character dancing", "low quality", ident))
    Path(entry).write_bytes(b"garbage")
    e = encode_prompts("a character dancing", "low quality", ident, factory, cache)
    assert len(made) == 4 and torch.equal(e.prompt_embeds, a.prompt_embeds)


# ---------------------------------------------------------------------------------------------- parity
PARITY = fixture_names()


@pytest.mark.parametrize("folder,tensor", [(n, t) for n in PARITY for t in ("camera_guider_out", "transformer4d_out")]
                         or [pytest.param("<none>", "-", marks=pytest.mark.skip(reason="no parity fixtures"))])
def test_parity_through_loaders(folder, tensor):
    """The fixtures' official-key files loaded through our single-file loaders reproduce the official outputs."""
    fx = load_fixture(folder)
    guider = L.load_camera_guider(str(fx.path / "camera_guider.safetensors"))
    assert guider.out_dim == int(fx.config["camera_guider"]["out_dim"])
    with torch.no_grad():
        guider_out = guider(fx.input_tensor("camera_maps").float())
    if tensor == "camera_guider_out":
        got = guider_out
    else:
        model, cfg, src = L.load_transformer(str(fx.path / "transformer4d.safetensors"), L.KIND_4D, "fp32")
        want = fx.config["transformer4d_config"]
        for k in ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "time_embed_dim",
                  "text_embed_dim", "num_layers", "patch_size"):
            assert cfg[k] == want[k], f"inferred {k}={cfg[k]}, fixture says {want[k]}"
        hidden = fx.input_tensor("transformer_hidden").float()
        b, v, f, _, h, w = hidden.shape
        p = want["patch_size"]
        base = (want["sample_height"] // p, want["sample_width"] // p)  # pipeline RoPE base: from config.json
        rope_t = rotary_embeddings(f, h // p, w // p, want["attention_head_dim"], base, "cpu")
        rope_v = rotary_embeddings(v, h // p, w // p, want["attention_head_dim"], base, "cpu")
        tokens = camera_tokens(guider_out)[None].expand(b, -1, -1, -1)
        with torch.no_grad():
            got = model(hidden, fx.input_tensor("transformer_text").float(), fx.input_tensor("transformer_timestep"),
                        tokens, rope_t, rope_v, per_sample_text=False)
    assert max_abs_diff(got, fx.expected_tensor(tensor)) <= 1e-4

"""Our CharacterShot transformer: official key layout at full size, batched block == naive per-view/per-frame loop,
text-copy modes, dtypes, chunking, fp8, RoPE, camera guider, configs and input errors.  Tiny sizes, CPU only."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from safetensors.torch import load_file, save_file

from charactershot_core.errors import InputError
from charactershot_core.models import (FULL_CONFIG_2D, FULL_CONFIG_4D, CameraGuider, CharacterShotTransformer4D,
                                       Transformer4DConfig, build_on_meta, build_transformer_2d, camera_tokens,
                                       parameter_count, random_init_, rotary_embeddings)
from charactershot_core.models.fp8 import (FP8_DTYPE, FP8Linear, fp8_weight_bytes, is_fp8_state_dict, prepare_fp8_,
                                           quantize_fp8_)
from charactershot_core.models.rope import grid_crop_region

# --------------------------------------------------------------------------------------------------------------
# Full size: the official key list of spec §B.4 (written out here from the spec, independently of the model code)


def _spec_keys_4d(layers=42, d=3072, t=512, text=4096, cin=32, cout=16, heads=48, head_dim=64, ff=12288, p=2):
    keys = {
        "patch_embed.proj.weight": (d, cin, p, p), "patch_embed.proj.bias": (d,),
        "patch_embed.text_proj.weight": (d, text), "patch_embed.text_proj.bias": (d,),
        "time_embedding.linear_1.weight": (t, d), "time_embedding.linear_1.bias": (t,),
        "time_embedding.linear_2.weight": (t, t), "time_embedding.linear_2.bias": (t,),
        "norm_final.weight": (d,), "norm_final.bias": (d,),
        "norm_out.linear.weight": (2 * d, t), "norm_out.linear.bias": (2 * d,),
        "norm_out.norm.weight": (d,), "norm_out.norm.bias": (d,),
        "proj_out.weight": (p * p * cout, d), "proj_out.bias": (p * p * cout,),
    }
    for i in range(layers):
        b = f"transformer_blocks.{i}."
        for n in ("norm1", "view_norm1", "norm2"):
            keys.update({b + n + ".linear.weight": (6 * d, t), b + n + ".linear.bias": (6 * d,),
                         b + n + ".norm.weight": (d,), b + n + ".norm.bias": (d,)})
        for a in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                keys.update({f"{b}{a}.{proj}.weight": (d, heads * head_dim), f"{b}{a}.{proj}.bias": (d,)})
            for nrm in ("norm_q", "norm_k"):
                keys.update({f"{b}{a}.{nrm}.weight": (head_dim,), f"{b}{a}.{nrm}.bias": (head_dim,)})
        keys.update({b + "ff.net.0.proj.weight": (ff, d), b + "ff.net.0.proj.bias": (ff,),
                     b + "ff.net.2.weight": (d, ff), b + "ff.net.2.bias": (d,)})
    return keys


def test_full_config_official_keys_shapes_and_count():
    model = build_on_meta(FULL_CONFIG_4D)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = _spec_keys_4d()
    assert len(want) == 1696  # spec: 1697 entries including patch_embed.pos_embedding
    assert sorted(set(want) - set(got)) == [], "keys missing from our model"
    assert sorted(set(got) - set(want)) == [], "keys our model has that the official one lacks"
    assert got == want
    assert parameter_count(model) == 7_553_847_360
    assert all(p.device.type == "meta" for p in model.parameters())
    assert CharacterShotTransformer4D.expected_keys(FULL_CONFIG_4D) == want


def test_full_config_2d_keys_are_the_4d_ones_without_dual_attention():
    model = build_transformer_2d(FULL_CONFIG_2D)  # meta device
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = {k: s for k, s in _spec_keys_4d().items() if ".attn2." not in k and ".view_norm1." not in k}
    want["patch_embed.pos_embedding"] = (1, 226 + 17550, 3072)
    assert keys == want
    assert model.patch_embed.use_learned_positional_embeddings is False  # RoPE only, as the pipelines run it


def test_config_dict_round_trip_and_unknown_keys():
    cfg = Transformer4DConfig.from_dict({**FULL_CONFIG_4D, "_diffusers_version": "0.33.1", "something_new": 1})
    assert cfg.num_layers == 42 and cfg.inner_dim == 3072 and cfg.out_dim == 16
    d = cfg.to_dict()
    assert d["_class_name"] == "CogVideoXTransformer4DModel"
    assert {k: v for k, v in d.items()} == FULL_CONFIG_4D
    assert FULL_CONFIG_2D["_class_name"] == "CogVideoXTransformer3DModel"
    assert {k: v for k, v in FULL_CONFIG_2D.items() if k != "_class_name"} == \
        {k: v for k, v in FULL_CONFIG_4D.items() if k != "_class_name"}
    with pytest.raises(ValueError, match="patch_size_t"):
        Transformer4DConfig.from_dict({**FULL_CONFIG_4D, "patch_size_t": 2})
    with pytest.raises(ValueError, match="rotary"):
        Transformer4DConfig.from_dict({**FULL_CONFIG_4D, "use_rotary_positional_embeddings": False})


# --------------------------------------------------------------------------------------------------------------
# Tiny model and a naive reference written the way the official block works (loops over views and frames)

TINY = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=2, time_embed_dim=8,
            text_embed_dim=12, num_layers=2, sample_height=4, sample_width=6, max_text_seq_length=5,
            use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False)
B, V, F, H, W, S = 2, 3, 2, 4, 6, 5


def _tiny_model(seed=0, std=0.3):
    torch.manual_seed(seed)
    model = CharacterShotTransformer4D(Transformer4DConfig.from_dict(TINY)).eval()
    return random_init_(model, seed=seed, std=std)


def _tiny_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    d = TINY["num_attention_heads"] * TINY["attention_head_dim"]
    n = (H // 2) * (W // 2)
    return dict(hidden_states=torch.randn(B, V, F, TINY["in_channels"], H, W, generator=g),
                encoder_hidden_states=torch.randn(B, V, S, TINY["text_embed_dim"], generator=g),
                timestep=torch.tensor([999, 421]),
                camera_latents=torch.randn(B, V, n, d, generator=g) * 0.5)


def _naive_forward(model, hidden_states, encoder_hidden_states, timestep, camera_latents, per_sample_text):
    """Reference: the module forwards of diffusers, one view / one frame at a time, as the official block does."""
    b, v, f, c, h, w = hidden_states.shape
    p = model.config.patch_size
    gh, gw = h // p, w // p
    n = gh * gw
    d = model.config.inner_dim
    proc = CogVideoXAttnProcessor2_0()
    rope_t = rotary_embeddings(f, gh, gw, model.config.attention_head_dim)
    rope_v = rotary_embeddings(v, gh, gw, model.config.attention_head_dim)
    temb = model.time_embedding(model.time_proj(timestep))
    seq = model.patch_embed(encoder_hidden_states.reshape(b * v, S, -1), hidden_states.reshape(b * v, f, c, h, w))
    text_v = [[seq[bi * v + vi, :S] for vi in range(v)] for bi in range(b)]
    vid = seq[:, S:].reshape(b, v, f, n, d) + camera_latents[:, :, None]
    text_f = [[seq[(bi if per_sample_text else 0) * v, :S] for _ in range(f)] for bi in range(b)]
    for blk in model.transformer_blocks:
        new_vid = vid.clone()
        new_tv = [[None] * v for _ in range(b)]
        new_tf = [[None] * f for _ in range(b)]
        for vi in range(v):  # spatial-temporal: one view, all its frames
            tokens = vid[:, vi].reshape(b, f * n, d)
            txt = torch.stack([text_v[bi][vi] for bi in range(b)])
            nh, ne, g, eg = blk.norm1(tokens, txt, temb)
            ah, ae = proc(blk.attn1, nh, ne, image_rotary_emb=rope_t)
            new_vid[:, vi] += (g * ah).reshape(b, f, n, d)
            for bi in range(b):
                new_tv[bi][vi] = txt[bi] + eg[bi] * ae[bi]
        for fi in range(f):  # spatial-view: one frame, all views
            tokens = vid[:, :, fi].reshape(b, v * n, d)
            txt = torch.stack([text_f[bi][fi] for bi in range(b)])
            nh, ne, g, eg = blk.view_norm1(tokens, txt, temb)
            ah, ae = proc(blk.attn2, nh, ne, image_rotary_emb=rope_v)
            new_vid[:, :, fi] += (g * ah).reshape(b, v, n, d)
            for bi in range(b):
                new_tf[bi][fi] = txt[bi] + eg[bi] * ae[bi]
        flat_vid = new_vid.reshape(b, v * f * n, d)
        flat_txt = torch.stack([torch.cat(new_tv[bi] + new_tf[bi]) for bi in range(b)])
        nh, ne, g, eg = blk.norm2(flat_vid, flat_txt, temb)
        flat_vid = flat_vid + g * blk.ff(nh)
        flat_txt = flat_txt + eg * blk.ff(ne)
        vid = flat_vid.reshape(b, v, f, n, d)
        flat_txt = flat_txt.reshape(b, v + f, S, d)
        text_v = [[flat_txt[bi, vi] for vi in range(v)] for bi in range(b)]
        text_f = [[flat_txt[bi, v + fi] for fi in range(f)] for bi in range(b)]
    x = model.norm_out(model.norm_final(vid.reshape(b, v * f * n, d)), temb=temb)
    x = model.proj_out(x).reshape(b, v, f, gh, gw, -1, p, p)
    out = torch.empty(b, v, f, x.shape[5], h, w)
    for i in range(gh):
        for j in range(gw):
            out[..., i * p:(i + 1) * p, j * p:(j + 1) * p] = x[:, :, :, i, j]
    return out


@pytest.mark.parametrize("per_sample_text", [False, True], ids=["faithful_text", "per_sample_text"])
def test_batched_model_equals_naive_per_view_per_frame_loops(per_sample_text):
    model = _tiny_model()
    inputs = _tiny_inputs()
    with torch.no_grad():
        ours = model(**inputs, per_sample_text=per_sample_text)
        ref = _naive_forward(model, per_sample_text=per_sample_text, **inputs)
    assert ours.shape == (B, V, F, TINY["out_channels"], H, W)
    assert ref.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-5)


def test_text_copy_modes():
    """per_sample_text=True: element 1's output ignores element 0's text; faithful mode: it does not."""
    model = _tiny_model()
    inputs = _tiny_inputs()
    other = dict(inputs)
    other["encoder_hidden_states"] = inputs["encoder_hidden_states"].clone()
    other["encoder_hidden_states"][0] = torch.randn(V, S, TINY["text_embed_dim"]) * 3
    with torch.no_grad():
        fixed_a = model(**inputs, per_sample_text=True)
        fixed_b = model(**other, per_sample_text=True)
        faithful_a = model(**inputs, per_sample_text=False)
        faithful_b = model(**other, per_sample_text=False)
    torch.testing.assert_close(fixed_a[1], fixed_b[1], atol=1e-6, rtol=0)
    assert (faithful_a[1] - faithful_b[1]).abs().max() > 1e-3
    assert (fixed_a[0] - fixed_b[0]).abs().max() > 1e-3  # element 0 does see its own new text


def test_grad_mode_path_equals_inference_path():
    """With autograd on, the functional (not in-place) code path gives the same numbers, and gradients flow."""
    model = _tiny_model().set_speed_options(ff_chunk_size=5)
    inputs = _tiny_inputs()
    with torch.no_grad():
        ref = model(**inputs)
    x = inputs["hidden_states"].clone().requires_grad_(True)
    out = model(**{**inputs, "hidden_states": x})
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert model.transformer_blocks[0].attn2.to_q.weight.grad.abs().sum() > 0


def test_chunked_ff_and_attention_chunks_identical():
    model = _tiny_model()
    inputs = _tiny_inputs()
    with torch.no_grad():
        ref = model(**inputs)
        model.set_speed_options(ff_chunk_size=7)
        ff_chunked = model(**inputs)
        model.set_speed_options(ff_chunk_size=3, attention_seq_chunk=1)
        both = model(**inputs)
    # same arithmetic; only GEMM blocking (row count per call) can change the last bits
    torch.testing.assert_close(ff_chunked, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both, ref, atol=1e-5, rtol=1e-5)
    assert not torch.equal(ref, model(**{**inputs, "timestep": torch.tensor([10, 20])}))
    with pytest.raises(ValueError, match="ff_chunk_size"):
        model.set_speed_options(ff_chunk_size=0)


def test_rope_applied_in_chunks_identical(monkeypatch):
    """The in-place RoPE of the inference path, forced to one sequence per chunk, changes nothing."""
    import charactershot_core.models.transformer4d as t4d

    model = _tiny_model()
    inputs = _tiny_inputs()
    with torch.no_grad():
        ref = model(**inputs)
        monkeypatch.setattr(t4d, "_ROPE_CHUNK_BYTES", 1)
        chunked = model(**inputs)
    assert torch.equal(chunked, ref)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 4e-2), (torch.float16, 5e-3)], ids=["bf16", "fp16"])
def test_half_precision_close_to_fp32(dtype, tol):
    model = _tiny_model(std=0.1)
    inputs = _tiny_inputs()
    with torch.no_grad():
        ref = model(**inputs)
        half = model.to(dtype)
        out = half(**inputs)
    assert out.dtype == dtype
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert rel < tol, f"relative L2 error {rel:.3g} in {dtype}"


def test_fp8_close_to_bf16_and_round_trips(tmp_path):
    model = _tiny_model(std=0.1).to(torch.bfloat16)
    inputs = _tiny_inputs()
    bytes_bf16 = fp8_weight_bytes(model)
    with torch.no_grad():
        ref = model(**inputs).float()
        converted = quantize_fp8_(model)
        out = model(**inputs).float()
    assert converted == TINY["num_layers"] * (3 + 2 * 4 + 2)  # 3 modulation, 2×4 attention, 2 FF linears
    q = model.transformer_blocks[0].attn1.to_q
    assert isinstance(q, FP8Linear) and q.weight.dtype == FP8_DTYPE and q.scale_weight.dtype == torch.float32
    assert fp8_weight_bytes(model) < 0.65 * bytes_bf16
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.06, f"fp8 vs bf16 relative L2 error {rel:.3g}"
    # a later dtype cast of the whole model keeps fp8 storage and the float32 scale
    scale = q.scale_weight.clone()
    model.to(torch.float16).to(torch.bfloat16)
    assert q.weight.dtype == FP8_DTYPE and torch.equal(q.scale_weight, scale)
    with torch.no_grad():
        assert torch.equal(model(**inputs).float(), out)

    # an fp8 state dict saved to safetensors loads into a meta-built model and computes the same
    sd = model.state_dict()
    assert is_fp8_state_dict(sd) and "transformer_blocks.0.attn1.to_q.scale_weight" in sd
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "fp8.safetensors"))
    loaded = load_file(str(tmp_path / "fp8.safetensors"))
    fresh = build_on_meta(TINY)
    assert prepare_fp8_(fresh, loaded.keys()) == converted
    fresh.load_state_dict(loaded, strict=True, assign=True)
    with torch.no_grad():
        again = fresh.eval()(**inputs).float()
    assert torch.equal(again, out)


def test_load_into_meta_model_with_assign_keeps_dtype():
    src = _tiny_model().to(torch.bfloat16)
    model = build_on_meta(TINY)
    model.load_state_dict(src.state_dict(), strict=True, assign=True)
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in model.parameters())
    inputs = _tiny_inputs()
    with torch.no_grad():
        assert torch.equal(model.eval()(**inputs), src(**inputs))


def test_bad_inputs_are_named():
    model = _tiny_model()
    inputs = _tiny_inputs()
    with pytest.raises(InputError, match="hidden_states.*channels"):
        model(**{**inputs, "hidden_states": inputs["hidden_states"][:, :, :, :3]})
    with pytest.raises(InputError, match="camera_latents"):
        model(**{**inputs, "camera_latents": inputs["camera_latents"][:, :, :-1]})
    with pytest.raises(InputError, match="encoder_hidden_states"):
        model(**{**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"][:, :2]})
    with pytest.raises(InputError, match="image_rotary_emb"):
        model(**inputs, image_rotary_emb=rotary_embeddings(F + 1, H // 2, W // 2, 16))


# --------------------------------------------------------------------------------------------------------------
# RoPE and camera guider


def test_rotary_tables_match_diffusers_pipeline_call():
    # the trained size: 30×45 token grid, base grid from the config = same, head dim 64 (t16/h24/w24)
    for t in (8, 5):
        cos, sin = rotary_embeddings(t, 30, 45, 64, base_grid=(30, 45))
        ref_cos, ref_sin = get_3d_rotary_pos_embed(64, ((0, 0), (30, 45)), (30, 45), t, use_real=True)
        assert cos.shape == (t * 1350, 64)
        assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)
        # spec §A.7: "slice" (training) and "linspace" (inference) tables coincide at 480×720
        sl_cos, sl_sin = get_3d_rotary_pos_embed(64, None, (30, 45), t, grid_type="slice", max_size=(30, 45))
        torch.testing.assert_close(cos, sl_cos, atol=1e-6, rtol=0)
    # another grid is fitted into the base grid and centred (values checked against diffusers'
    # get_resize_crop_region_for_grid, which is too slow to import in a test)
    assert grid_crop_region(30, 45, 30, 45) == ((0, 0), (30, 45))
    assert grid_crop_region(30, 30, 30, 45) == ((0, 8), (30, 38))
    assert grid_crop_region(45, 30, 30, 45) == ((0, 12), (30, 32))
    assert grid_crop_region(20, 45, 30, 45) == ((5, 0), (25, 45))
    # time/view position enters: different frames get different tables, same position same rows
    cos, _ = rotary_embeddings(3, 2, 3, 16)
    assert not torch.equal(cos[:6], cos[6:12])


def test_camera_guider_layout_and_tokens():
    with torch.device("meta"):
        full = CameraGuider()
    keys = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    assert set(keys) == {f"layer.{i}.{s}" for i in (0, 2, 4, 6, 8, 10, 12) for s in ("weight", "bias")}
    assert keys["layer.0.weight"] == (16, 6, 3, 3) and keys["layer.12.weight"] == (3072, 16, 2, 2)
    assert sum(p.numel() for p in full.parameters()) == 212_160

    guider = CameraGuider(out_dim=8)
    guider.reset_parameters(torch.Generator().manual_seed(0))
    maps = torch.randn(2, 6, 32, 48)
    out = guider(maps)
    assert out.shape == (2, 8, 2, 3)
    tokens = camera_tokens(out)
    assert tokens.shape == (2, 6, 8)
    assert torch.equal(tokens[1, 1 * 3 + 2], out[1, :, 1, 2])  # row-major: token h·w_count + w
    with pytest.raises(ValueError, match="multiples of 16"):
        guider(torch.randn(1, 6, 30, 48))
    with pytest.raises(ValueError, match="expected shape"):
        guider(torch.randn(1, 5, 32, 48))

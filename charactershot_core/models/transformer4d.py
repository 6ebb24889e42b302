"""Our implementation of the CharacterShot multi-view ("4D") transformer (spec §B).

The model is CogVideoX-5B-I2V with every block turned into a *dual-attention* block:

* a spatial-temporal branch (``norm1`` + ``attn1``): each view's frames attend to each other, with that view's
  copy of the text tokens and RoPE over latent frames;
* a spatial-view branch (``view_norm1`` + ``attn2``): each latent frame's views attend to each other, with that
  frame's copy of the text tokens and RoPE over views;
* both branches read the same block input and add their gated outputs to it; then one shared feed-forward
  (``norm2`` + ``ff``) over all video tokens and over all (views + frames) text copies.

The official code loops over views and frames in Python to apply the norms and concatenates copies.  Here each
branch is one batched computation: the modulation parameters depend only on the timestep, so the (B·V) and (B·F)
sequences are normalised with broadcasting and sent through a single ``scaled_dot_product_attention`` call per
branch.  RoPE is applied in place (chunked, float32 math like diffusers), the feed-forward can run in token chunks,
and in inference mode residuals are accumulated in place to keep peak memory low.

Key names are exactly the official ones (spec §B.4) minus the unused ``patch_embed.pos_embedding`` buffer, so
``load_state_dict(official_sd_without_pos_embedding, strict=True)`` works.  Build on the meta device and load with
``assign=True`` (see :func:`build_on_meta`) so that no full-size fp32 copy is ever made.

Text copies for the spatial-view branch: the official model takes them from batch element 0 (under CFG, the
*negative* prompt) for every batch element (spec §B.2).  That is the default here (``per_sample_text=False``);
``per_sample_text=True`` takes each batch element's own text (the documented fix).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import CogVideoXPatchEmbed, TimestepEmbedding, Timesteps
from diffusers.models.normalization import AdaLayerNorm, CogVideoXLayerNormZero

from ..errors import InputError
from .config import Transformer4DConfig, config_from_any
from .rope import rotary_embeddings

RotaryEmb = Tuple[torch.Tensor, torch.Tensor]

# Tokens per feed-forward chunk by default: bounds the (tokens × 4·D) GELU activations (≈0.8 GB in bf16 at
# D = 3072) without measurable cost; results equal the unchunked ones up to GEMM rounding.
DEFAULT_FF_CHUNK = 16384

# Float32 RoPE temporaries are bounded to about this many bytes per chunk (inference path).
_ROPE_CHUNK_BYTES = 256 * 1024 * 1024


def _rope_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved-pair rotation, computed in float32 and returned in x's dtype (diffusers' ``use_real`` form).

    x: (..., M, H, hd) with cos/sin (M, hd) broadcast over heads.
    """
    pairs = x.unflatten(-1, (-1, 2))
    real, imag = pairs.unbind(-1)
    rotated = torch.stack((-imag, real), dim=-1).flatten(-2)
    c = cos[:, None, :]
    s = sin[:, None, :]
    return (x.float() * c + rotated.float() * s).to(x.dtype)


def _apply_rope(x: torch.Tensor, text_len: int, rope: RotaryEmb) -> torch.Tensor:
    """Rotate the video part (positions ``text_len:``) of x (B', L, H, hd); text tokens are left as they are."""
    cos, sin = rope
    cos = cos.to(device=x.device, dtype=torch.float32)
    sin = sin.to(device=x.device, dtype=torch.float32)
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.cat([x[:, :text_len], _rope_rotate(x[:, text_len:], cos, sin)], dim=1)
    video = x[:, text_len:]
    per_seq = video[0].numel() * 4 * 3  # float32 product, rotated copy, sum
    step = max(1, _ROPE_CHUNK_BYTES // max(per_seq, 1))
    for i in range(0, x.shape[0], step):
        seg = video[i:i + step]
        seg.copy_(_rope_rotate(seg, cos, sin))
    return x


def _modulation(norm: CogVideoXLayerNormZero, temb: torch.Tensor):
    """(shift, scale, gate, enc_shift, enc_scale, enc_gate), each (B, D), from a LayerNormZero's linear."""
    return norm.linear(F.silu(temb)).chunk(6, dim=1)


def _bcast(p: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B, D) → (B, 1, ..., 1, D) with ``ndim`` dimensions."""
    return p.view(p.shape[0], *([1] * (ndim - 2)), p.shape[1])


def _modulate(norm: nn.LayerNorm, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """LN(x)·(1 + scale) + shift, with (B, D) scale/shift broadcast over x (B, ..., D); one fused op after LN."""
    return torch.addcmul(_bcast(shift, x.ndim), norm(x), _bcast(1 + scale, x.ndim))


def _attend(attn: Attention, text: torch.Tensor, video: torch.Tensor, rope: Optional[RotaryEmb],
            seq_chunk: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """CogVideoX joint attention over [text; video] for a batch of independent sequences.

    text (B', S, D), video (B', M, D) → (video_out (B', M, D), text_out (B', S, D)).  QK LayerNorm per head, RoPE on
    the video positions of q and k, non-causal SDPA.  ``seq_chunk`` limits how many sequences go through SDPA at
    once (None: all in one call).
    """
    bp, s_len, _ = text.shape
    x = torch.cat([text, video], dim=1)
    del text, video  # callers pass temporaries: free them before the projections
    q = attn.to_q(x)
    k = attn.to_k(x)
    v = attn.to_v(x)
    del x
    heads = attn.heads
    q = q.unflatten(-1, (heads, -1))
    k = k.unflatten(-1, (heads, -1))
    v = v.unflatten(-1, (heads, -1))
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    if rope is not None:
        q = _apply_rope(q, s_len, rope)
        k = _apply_rope(k, s_len, rope)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if seq_chunk is None or seq_chunk >= bp:
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
    else:
        o = torch.cat([F.scaled_dot_product_attention(q[i:i + seq_chunk], k[i:i + seq_chunk], v[i:i + seq_chunk],
                                                      dropout_p=0.0, is_causal=False)
                       for i in range(0, bp, seq_chunk)])
    del q, k, v
    o = o.transpose(1, 2).flatten(2)
    o = attn.to_out[0](o)
    o = attn.to_out[1](o)
    return o[:, s_len:], o[:, :s_len]


class DualAttentionBlock(nn.Module):
    """One CharacterShot block: parallel spatial-temporal and spatial-view attention, then a shared FF."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, time_embed_dim: int,
                 dropout: float = 0.0, attention_bias: bool = True, norm_elementwise_affine: bool = True,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = CogVideoXLayerNormZero(time_embed_dim, dim, norm_elementwise_affine, norm_eps, bias=True)
        self.view_norm1 = CogVideoXLayerNormZero(time_embed_dim, dim, norm_elementwise_affine, norm_eps, bias=True)

        def make_attention():
            return Attention(query_dim=dim, dim_head=attention_head_dim, heads=num_attention_heads,
                             qk_norm="layer_norm", eps=1e-6, bias=attention_bias, out_bias=True)

        self.attn1 = make_attention()
        self.attn2 = make_attention()
        self.norm2 = CogVideoXLayerNormZero(time_embed_dim, dim, norm_elementwise_affine, norm_eps, bias=True)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn="gelu-approximate", final_dropout=True, bias=True)

    def _ff_residual(self, x: torch.Tensor, shift, scale, gate, chunk: Optional[int]) -> torch.Tensor:
        """x + gate ⊙ ff(LN(x)·(1+scale)+shift) over x (B, L, D), optionally in chunks of ``chunk`` tokens."""
        norm = self.norm2.norm
        g = _bcast(gate, 3)
        if chunk is None or chunk >= x.shape[1]:
            return x + g * self.ff(_modulate(norm, x, shift, scale))
        if torch.is_grad_enabled():
            parts = [c + g * self.ff(_modulate(norm, c, shift, scale)) for c in x.split(chunk, dim=1)]
            return torch.cat(parts, dim=1)
        for c in x.split(chunk, dim=1):  # views into x: updated in place
            c.add_(g * self.ff(_modulate(norm, c, shift, scale)))
        return x

    def forward(self, hidden: torch.Tensor, text_v: torch.Tensor, text_f: torch.Tensor, temb: torch.Tensor,
                image_rotary_emb: Optional[RotaryEmb], view_rotary_emb: Optional[RotaryEmb],
                ff_chunk_size: Optional[int] = None, attention_seq_chunk: Optional[int] = None):
        """hidden (B,V,F,N,D), text_v (B,V,S,D), text_f (B,F,S,D), temb (B,T) → same three, updated."""
        b, v, f, n, d = hidden.shape
        s = text_v.shape[2]
        inplace = not torch.is_grad_enabled()

        # 1. Spatial-temporal attention: B·V sequences of [S text; F·N video].
        sh, sc, g1, esh, esc, eg1 = _modulation(self.norm1, temb)
        a_vid, a_txt = _attend(self.attn1,
                               _modulate(self.norm1.norm, text_v, esh, esc).reshape(b * v, s, d),
                               _modulate(self.norm1.norm, hidden, sh, sc).reshape(b * v, f * n, d),
                               image_rotary_emb, attention_seq_chunk)
        out = torch.addcmul(hidden, _bcast(g1, 5), a_vid.reshape(b, v, f, n, d))
        del a_vid
        new_text_v = torch.addcmul(text_v, _bcast(eg1, 4), a_txt.reshape(b, v, s, d))
        del a_txt

        # 2. Spatial-view attention: B·F sequences of [S text; V·N video], from the same block input.
        sh, sc, g2, esh, esc, eg2 = _modulation(self.view_norm1, temb)
        a_vid, a_txt = _attend(self.attn2,
                               _modulate(self.view_norm1.norm, text_f, esh, esc).reshape(b * f, s, d),
                               _modulate(self.view_norm1.norm, hidden.transpose(1, 2), sh, sc).reshape(b * f, v * n, d),
                               view_rotary_emb, attention_seq_chunk)
        a_vid = a_vid.reshape(b, f, v, n, d).transpose(1, 2)
        if inplace:
            out.addcmul_(_bcast(g2, 5), a_vid)
        else:
            out = torch.addcmul(out, _bcast(g2, 5), a_vid)
        del a_vid
        new_text_f = torch.addcmul(text_f, _bcast(eg2, 4), a_txt.reshape(b, f, s, d))
        del a_txt

        # 3. Shared feed-forward over all video tokens and all (V + F) text copies, one modulation.
        sh, sc, gf, esh, esc, egf = _modulation(self.norm2, temb)
        out = self._ff_residual(out.reshape(b, v * f * n, d), sh, sc, gf, ff_chunk_size).reshape(b, v, f, n, d)
        text = torch.cat([new_text_v, new_text_f], dim=1).reshape(b, (v + f) * s, d)
        text = self._ff_residual(text, esh, esc, egf, ff_chunk_size).reshape(b, v + f, s, d)
        return out, text[:, :v], text[:, v:]


class CharacterShotTransformer4D(nn.Module):
    """The CharacterShot multi-view transformer (official ``CogVideoXTransformer4DModel`` key layout).

    Speed options (module attributes, also settable with :meth:`set_speed_options`):
    ``ff_chunk_size`` (tokens per feed-forward chunk, default 16384, None = all at once) and
    ``attention_seq_chunk`` (sequences per SDPA call, default None = one call per branch).
    """

    def __init__(self, config: Transformer4DConfig):
        super().__init__()
        config = config_from_any(config)
        self.config = config
        dim = config.inner_dim
        # Positional embeddings are disabled exactly as the official pipeline does before sampling (RoPE only), so
        # no ``pos_embedding`` buffer is created.
        self.patch_embed = CogVideoXPatchEmbed(
            patch_size=config.patch_size, patch_size_t=None, in_channels=config.in_channels, embed_dim=dim,
            text_embed_dim=config.text_embed_dim, bias=config.patch_bias, sample_width=config.sample_width,
            sample_height=config.sample_height, sample_frames=config.sample_frames,
            temporal_compression_ratio=config.temporal_compression_ratio,
            max_text_seq_length=config.max_text_seq_length,
            spatial_interpolation_scale=config.spatial_interpolation_scale,
            temporal_interpolation_scale=config.temporal_interpolation_scale,
            use_positional_embeddings=False, use_learned_positional_embeddings=False,
        )
        self.time_proj = Timesteps(dim, config.flip_sin_to_cos, config.freq_shift)
        self.time_embedding = TimestepEmbedding(dim, config.time_embed_dim, config.timestep_activation_fn)
        self.transformer_blocks = nn.ModuleList([
            DualAttentionBlock(dim, config.num_attention_heads, config.attention_head_dim, config.time_embed_dim,
                               config.dropout, config.attention_bias, config.norm_elementwise_affine, config.norm_eps)
            for _ in range(config.num_layers)
        ])
        self.norm_final = nn.LayerNorm(dim, config.norm_eps, config.norm_elementwise_affine)
        self.norm_out = AdaLayerNorm(embedding_dim=config.time_embed_dim, output_dim=2 * dim,
                                     norm_elementwise_affine=config.norm_elementwise_affine,
                                     norm_eps=config.norm_eps, chunk_dim=1)
        self.proj_out = nn.Linear(dim, config.patch_size * config.patch_size * config.out_dim)
        self.ff_chunk_size: Optional[int] = DEFAULT_FF_CHUNK
        self.attention_seq_chunk: Optional[int] = None

    # ----------------------------------------------------------------------------------------------------------
    @staticmethod
    def expected_keys(config) -> Dict[str, Tuple[int, ...]]:
        """State-dict key → shape for ``config``, computed on the meta device (no memory used)."""
        model = build_on_meta(config)
        return {k: tuple(t.shape) for k, t in model.state_dict().items()}

    def set_speed_options(self, ff_chunk_size: Optional[int] = DEFAULT_FF_CHUNK,
                          attention_seq_chunk: Optional[int] = None) -> "CharacterShotTransformer4D":
        """``ff_chunk_size``: tokens per feed-forward call (None: all at once); ``attention_seq_chunk``: sequences
        per SDPA call (None: one call per branch).  Neither changes the result beyond float rounding."""
        for name, value in (("ff_chunk_size", ff_chunk_size), ("attention_seq_chunk", attention_seq_chunk)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name}: expected a positive integer or None, got {value!r}")
        self.ff_chunk_size = ff_chunk_size
        self.attention_seq_chunk = attention_seq_chunk
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        """The activation dtype: that of the patch-embedding convolution (never quantised)."""
        return self.patch_embed.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embed.proj.weight.device

    def rotary_embeddings(self, num_frames: int, num_views: int, grid_h: int, grid_w: int,
                          device=None) -> Tuple[RotaryEmb, RotaryEmb]:
        """The (frames, views) RoPE tables the official pipeline passes for a grid of grid_h × grid_w tokens."""
        c = self.config
        base = (c.sample_height // c.patch_size, c.sample_width // c.patch_size)
        dev = device if device is not None else self.device
        return (rotary_embeddings(num_frames, grid_h, grid_w, c.attention_head_dim, base, dev),
                rotary_embeddings(num_views, grid_h, grid_w, c.attention_head_dim, base, dev))

    # ----------------------------------------------------------------------------------------------------------
    def _check_inputs(self, hidden_states, encoder_hidden_states, timestep, camera_latents):
        c = self.config
        if hidden_states.ndim != 6:
            raise InputError("hidden_states", f"expected shape (B, V, F, {c.in_channels}, h, w), "
                                              f"got {tuple(hidden_states.shape)}")
        b, v, f, ch, h, w = hidden_states.shape
        if ch != c.in_channels:
            raise InputError("hidden_states", f"expected {c.in_channels} channels (dim 3), got {ch}")
        if h % c.patch_size or w % c.patch_size:
            raise InputError("hidden_states", f"latent height and width must be multiples of patch size "
                                              f"{c.patch_size}, got {h}x{w}")
        if (encoder_hidden_states.ndim != 4 or encoder_hidden_states.shape[:2] != (b, v)
                or encoder_hidden_states.shape[3] != c.text_embed_dim):
            raise InputError("encoder_hidden_states", f"expected shape ({b}, {v}, S, {c.text_embed_dim}), "
                                                      f"got {tuple(encoder_hidden_states.shape)}")
        if timestep.ndim != 1 or timestep.shape[0] != b:
            raise InputError("timestep", f"expected shape ({b},), got {tuple(timestep.shape)}")
        n = (h // c.patch_size) * (w // c.patch_size)
        if camera_latents is not None and tuple(camera_latents.shape) != (b, v, n, c.inner_dim):
            raise InputError("camera_latents", f"expected shape ({b}, {v}, {n}, {c.inner_dim}) (one token per "
                                               f"{c.patch_size}x{c.patch_size} latent patch), "
                                               f"got {tuple(camera_latents.shape)}")

    @staticmethod
    def _check_rope(name: str, rope: RotaryEmb, rows: int, head_dim: int) -> None:
        if (not isinstance(rope, (tuple, list)) or len(rope) != 2
                or any(tuple(t.shape) != (rows, head_dim) for t in rope)):
            got = [tuple(t.shape) for t in rope] if isinstance(rope, (tuple, list)) else type(rope).__name__
            raise InputError(name, f"expected (cos, sin), each of shape ({rows}, {head_dim}), got {got}")

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, timestep: torch.Tensor,
                camera_latents: Optional[torch.Tensor] = None, image_rotary_emb: Optional[RotaryEmb] = None,
                view_rotary_emb: Optional[RotaryEmb] = None, per_sample_text: bool = False,
                frame_text: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Predict (v-prediction) for every view and latent frame.

        hidden_states (B, V, F, C_in, h, w); encoder_hidden_states (B, V, S, D_text); timestep (B,);
        camera_latents (B, V, N, D) added to the video tokens of every frame, or None; rotary tables as from
        :func:`~charactershot_core.models.rope.rotary_embeddings` for F frames and V views (None: computed here
        the way the official pipeline computes them).  Returns (B, V, F, C_out, h, w) in :attr:`compute_dtype`.

        ``frame_text`` (1, S, D_text), faithful mode only: the text whose projection the spatial-view branch uses
        instead of batch element 0's.  The sampler's low-memory mode runs the CFG halves one at a time and passes
        the negative prompt here, so the positive half sees what it sees in the full batch.
        """
        c = self.config
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep] * hidden_states.shape[0], device=hidden_states.device)
        elif timestep.ndim == 0:
            timestep = timestep.expand(hidden_states.shape[0])
        self._check_inputs(hidden_states, encoder_hidden_states, timestep, camera_latents)
        b, v, f, ch, h, w = hidden_states.shape
        p = c.patch_size
        gh, gw = h // p, w // p
        n = gh * gw
        d = c.inner_dim
        dtype = self.compute_dtype
        # The input's device, not a weight's: under a host's partial loading (ComfyUI lowvram) some layers stay on
        # the CPU and copy their weights to the compute device per call.
        device = hidden_states.device
        if image_rotary_emb is None or view_rotary_emb is None:
            auto_t, auto_v = self.rotary_embeddings(f, v, gh, gw, device)
            image_rotary_emb = image_rotary_emb if image_rotary_emb is not None else auto_t
            view_rotary_emb = view_rotary_emb if view_rotary_emb is not None else auto_v
        self._check_rope("image_rotary_emb", image_rotary_emb, f * n, c.attention_head_dim)
        self._check_rope("view_rotary_emb", view_rotary_emb, v * n, c.attention_head_dim)

        # 1. Time embedding (sinusoids in float32, then the MLP in the model dtype).
        t_emb = self.time_proj(timestep.to(device)).to(dtype)
        temb = self.time_embedding(t_emb)

        # 2. Patch embedding: text projection per (batch, view) copy; 2×2 conv per frame.
        text = self.patch_embed.text_proj(encoder_hidden_states.to(device=device, dtype=dtype))  # (B,V,S,D)
        x = self.patch_embed.proj(hidden_states.to(device=device, dtype=dtype).reshape(b * v * f, ch, h, w))
        x = x.flatten(2).transpose(1, 2).reshape(b, v, f, n, d)
        if camera_latents is not None:
            x = x + camera_latents.to(device=device, dtype=dtype)[:, :, None]
        s = text.shape[2]
        if per_sample_text:
            source = text[:, :1]
        elif frame_text is not None:
            if frame_text.ndim != 3 or frame_text.shape[0] != 1 or frame_text.shape[2] != c.text_embed_dim:
                raise InputError("frame_text", f"expected shape (1, S, {c.text_embed_dim}), got "
                                               f"{tuple(frame_text.shape)}")
            source = self.patch_embed.text_proj(frame_text.to(device=device, dtype=dtype))[:, None]
        else:
            source = text[:1, :1]  # faithful: batch element 0, view 0
        text_f = source.expand(b, f, s, d)
        text_v = text

        # 3. Blocks.
        for block in self.transformer_blocks:
            x, text_v, text_f = block(x, text_v, text_f, temb, image_rotary_emb, view_rotary_emb,
                                      self.ff_chunk_size, self.attention_seq_chunk)
        del text_v, text_f

        # 4. Output: final norm, adaptive norm, projection, unpatchify.
        x = self.norm_final(x.reshape(b, v * f * n, d))
        x = self.norm_out(x, temb=temb)
        x = self.proj_out(x)
        x = x.reshape(b, v, f, gh, gw, -1, p, p).permute(0, 1, 2, 5, 3, 6, 4, 7)
        return x.reshape(b, v, f, -1, h, w)


# --------------------------------------------------------------------------------------------------------------
def build_on_meta(config) -> CharacterShotTransformer4D:
    """Construct the model on the meta device: parameters have shapes but no storage.

    Then either ``model.load_state_dict(sd, strict=True, assign=True)`` (the tensors of ``sd`` become the
    parameters: memory-mapped safetensors stay mapped, their dtype is kept) or ``model.to_empty(device=...)``
    followed by :func:`random_init_`.
    """
    with torch.device("meta"):
        return CharacterShotTransformer4D(config_from_any(config))


@torch.no_grad()
def random_init_(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Fill every floating parameter in place with small random values (benchmarks and tests, not training).

    LayerNorm weights 1 + N(0, std) and biases N(0, std); other weights N(0, std), other biases N(0, std/10).
    Works on any device (the values are drawn there from a seeded generator); quantised weights are left alone.
    """
    first = next(iter(model.parameters()), None)
    if first is None:
        return model
    if first.device.type == "meta":
        raise ValueError("random_init_: the model is on the meta device; call model.to_empty(device=...) first")
    g = torch.Generator(device=first.device).manual_seed(seed)
    floating = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    for module in model.modules():
        is_ln = isinstance(module, nn.LayerNorm)
        for leaf, prm in module.named_parameters(recurse=False):
            if prm.dtype not in floating:
                continue
            tmp = torch.empty(prm.shape, dtype=torch.float32, device=prm.device)
            if is_ln:
                tmp.normal_(0.0, std, generator=g)
                if leaf == "weight":
                    tmp += 1.0
            else:
                tmp.normal_(0.0, std if leaf != "bias" else std / 10, generator=g)
            prm.copy_(tmp)
            del tmp
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

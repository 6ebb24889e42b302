"""The denoising pipelines of CharacterShot, step for step and draw for draw as the official ones (spec §A.3-A.10).

Official order of the random draws for one pipeline call (one view group), all from one CPU generator seeded with
the seed (re-created for every group):

1. each view image of the group, in group order: ``vae.encode(view).latent_dist.sample(generator)`` x scaling factor;
2. the noise, shape (1, V, L, C, h, w) (L latent frames), ``randn_tensor`` in the compute dtype;
3. every DPM step draws its own noise (DDIM draws nothing).

Latent layout: ``latents = cat([noise, reference latent], frames)`` -> L + 1 frames; before every step frame 0 is
overwritten with the clean reference latent (so the reference is a clean frame 0; the trailing initial copy of it is
denoised like the other frames).  The transformer sees ``cat([latents, pose latents], channels)``; pose latents are
``[reference pose, pose video]`` along frames, the same for every view.  Under CFG the batch is
``[negative, positive]``; ``noise_pred.float()`` then guidance then the scheduler step, and the latents go back to the
compute dtype.  At the end latent frame 0 is dropped and each view is decoded on its own.

Everything here works on the 4D layout (1, V, F, C, h, w).  The 2D pose model is run as one view: its tensors have
the same memory layout, so the generator draws the same numbers as the official 2D pipeline's (1, F, C, h, w).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import CharacterShotError, InputError
from .schedulers import guidance_at, is_dpm, make_scheduler

StepCallback = Callable[[int, int, Callable[[], torch.Tensor]], None]


def _randn(shape, generator, device, dtype):
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tuple(shape), generator=generator, device=torch.device(device), dtype=dtype)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 (or float in [0, 1]) -> (N, 3, H, W) float32 in [-1, 1] (``x / 255 * 2 - 1``)."""
    x = images
    if not torch.is_tensor(x):
        x = torch.as_tensor(x)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InputError("images", f"expected (N, H, W, 3) images, got {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return (x * 2.0 - 1.0).permute(0, 3, 1, 2).contiguous()


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Decoded video (..., 3, F, H, W) in [-1, 1] -> (..., F, H, W, 3) uint8, as diffusers' postprocess does
    (``round(clamp(x / 2 + 0.5, 0, 1) * 255)``)."""
    x = (frames.float() / 2 + 0.5).clamp(0, 1)
    x = x.movedim(-4, -1)
    return (x * 255).round().to(torch.uint8)


# ------------------------------------------------------------------------------------------------ VAE passes
def _spatial_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


_UNTILED: set = set()  # (id(vae), kind, size) whose tiled pass came out wrongly sized: go untiled directly


def _guarded_pass(vae, kind: str, size, want, run, out_size):
    """``run()`` with the VAE's tiling as loaded (tiled, as officially); diffusers' tiled pass returns a wrongly sized
    result for images only a little larger than one tile (small test models): then the pass is made in one piece
    (and for that size from then on)."""
    tiled = getattr(vae, "use_tiling", False)
    key = (id(vae), kind, tuple(size))
    out = None if tiled and key in _UNTILED else run()
    if out is None or (tiled and tuple(out_size(out)) != tuple(want)):
        _UNTILED.add(key)
        vae.use_tiling = False
        try:
            out = run()
        finally:
            vae.use_tiling = True
    return out


def vae_encode(vae, x: torch.Tensor):
    """``vae.encode(x).latent_dist``, tiled when the VAE's tiling is on (see :func:`_guarded_pass`)."""
    f = _spatial_factor(vae)
    return _guarded_pass(vae, "enc", x.shape[-2:], (x.shape[-2] // f, x.shape[-1] // f),
                         lambda: vae.encode(x).latent_dist, lambda d: d.mean.shape[-2:])


def vae_decode(vae, z: torch.Tensor) -> torch.Tensor:
    """``vae.decode(z).sample``, tiled when the VAE's tiling is on (see :func:`_guarded_pass`)."""
    f = _spatial_factor(vae)
    return _guarded_pass(vae, "dec", z.shape[-2:], (z.shape[-2] * f, z.shape[-1] * f),
                         lambda: vae.decode(z).sample, lambda o: o.shape[-2:])


@torch.no_grad()
def encode_posteriors(vae, images: torch.Tensor, device=None) -> list:
    """One VAE posterior (``latent_dist``) per image: images (N, H, W, 3) uint8 -> list of N distributions.

    Encoding draws nothing from any generator; sampling a posterior does (see :func:`sample_image_latents`)."""
    w = next(vae.parameters())
    dev = torch.device(device) if device is not None else w.device
    x = to_model_range(images)
    out = []
    for img in x:
        out.append(vae_encode(vae, img[None, :, None].to(device=dev, dtype=w.dtype)))
    return out


def sample_image_latents(posteriors: list, generator: torch.Generator, scaling: float,
                         dtype: torch.dtype) -> torch.Tensor:
    """The reference latents of one group: one draw per posterior, in order -> (1, V, 1, C, h, w)."""
    lat = [p.sample(generator) for p in posteriors]  # each (1, C, 1, h, w)
    lat = torch.cat(lat, dim=0).to(dtype).permute(0, 2, 1, 3, 4)  # (V, 1, C, h, w)
    return (scaling * lat).unsqueeze(0)


@torch.no_grad()
def encode_pose_latents(vae, pose_frames: torch.Tensor, reference_pose: torch.Tensor, scaling: float,
                        generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """Pose latents as the official CLI builds them: ``[reference pose, pose video]`` along latent frames.

    pose_frames (F, H, W, 3) and reference_pose (H, W, 3) or (1, H, W, 3), uint8 -> (1, L + 1, C, h, w) float32.
    The official code samples both posteriors with torch's *global* RNG (pose video first); here ``generator``
    (seeded by the caller, so every group and every process gets the same pose latents) or, when None, the
    posterior means.
    """
    w = next(vae.parameters())
    dev = torch.device(device) if device is not None else w.device
    ref = reference_pose if reference_pose.ndim == 4 else reference_pose[None]
    poses = to_model_range(pose_frames).permute(1, 0, 2, 3)[None]  # (1, 3, F, H, W)
    refs = to_model_range(ref).permute(1, 0, 2, 3)[None]           # (1, 3, 1, H, W)
    p = vae_encode(vae, poses.to(device=dev, dtype=w.dtype))
    rp = vae_encode(vae, refs.to(device=dev, dtype=w.dtype))
    if generator is None:
        p_lat, rp_lat = p.mode(), rp.mode()
    else:
        p_lat, rp_lat = p.sample(generator), rp.sample(generator)
    lat = torch.cat([rp_lat * scaling, p_lat * scaling], dim=2)  # (1, C, L + 1, h, w)
    return lat.permute(0, 2, 1, 3, 4).float().contiguous()


@torch.no_grad()
def decode_views(vae, latents: torch.Tensor, scaling: float, device=None,
                 on_view: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Final latents (1, V, L + 1, C, h, w) -> (V, 3, F, H, W) float32 in about [-1, 1]: frame 0 (the reference)
    dropped, each view decoded on its own (``latents / scaling``)."""
    w = next(vae.parameters())
    dev = torch.device(device) if device is not None else w.device
    out = []
    for v in range(latents.shape[1]):
        if on_view is not None:
            on_view(v)
        lat = latents[:, v, 1:].permute(0, 2, 1, 3, 4) / scaling  # (1, C, L, h, w)
        out.append(vae_decode(vae, lat.to(device=dev, dtype=w.dtype)).float().cpu())
    return torch.cat(out, dim=0)


# ------------------------------------------------------------------------------------------------ denoising
@dataclass
class DenoiseOptions:
    steps: int = 50
    guidance: float = 6.0
    scheduler: str = "dpm"
    dynamic_cfg: str = "timestep"
    spacing: str = "trailing"
    low_memory: bool = False   # run the two CFG halves one after the other (same numbers, lower peak)
    check_every: int = 5       # steps between checks that the latents are finite (0: never; the last step always)


class NonFiniteLatents(CharacterShotError):
    """The latents became NaN or infinite (typically fp16 overflow)."""


def non_finite_message(dtype: torch.dtype, step: int, steps: int) -> str:
    name = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype, str(dtype))
    head = f"the latents became NaN or infinite by step {step} of {steps} with {name} compute"
    if dtype == torch.float16:
        return (f"{head}: the CogVideoX-5B weights overflow in fp16. Load the model with dtype bf16 (GPUs from "
                "RTX 30xx / A100 on), or fp32 (twice the memory), or weight_storage fp8_e4m3fn with dtype bf16")
    return (f"{head}: not an fp16 overflow; check the checkpoint (a damaged or mismatched file), the inputs, and "
            "try dtype fp32")


Predict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def denoise(predict: Predict, image_latents: torch.Tensor, noise: torch.Tensor, pose_latents: torch.Tensor,
            text: torch.Tensor, opts: DenoiseOptions, generator: torch.Generator,
            scheduler_config: Optional[dict] = None, device=None, dtype: torch.dtype = torch.float32,
            callback: Optional[StepCallback] = None) -> torch.Tensor:
    """The official denoising loop on the (1, V, F, C, h, w) layout.

    ``predict(model_input (B, V, F, 2C, h, w), text (B, S, D), timestep (B,), frame_text (1, S, D) or None)``
    returns the v-prediction (B, V, F, C, h, w); ``frame_text`` is the text the spatial-view branch must use (batch
    element 0 of the full CFG batch, for the low-memory halves).  ``text`` is (2, S, D) ``[negative, positive]`` when
    ``opts.guidance > 1`` (CFG) else (1, S, D) ``[positive]``.  ``callback(i, steps, x0_fn)`` runs after every step
    (``x0_fn()`` gives the current clean-latent estimate); raising there stops the loop.
    Returns the final latents (1, V, L + 1, C, h, w) in ``dtype``.
    """
    device = torch.device(device) if device is not None else noise.device
    scheduler = make_scheduler(opts.scheduler, scheduler_config, opts.spacing)
    scheduler.set_timesteps(opts.steps, device=device)
    timesteps = scheduler.timesteps
    do_cfg = opts.guidance > 1.0
    if do_cfg and text.shape[0] != 2:
        raise InputError("text", f"expected [negative, positive] embeddings for guidance > 1, got batch "
                                 f"{text.shape[0]}")
    image_latents = image_latents.to(device=device, dtype=dtype)
    latents = torch.cat([noise.to(device=device, dtype=dtype) * scheduler.init_noise_sigma, image_latents], dim=2)
    pose = pose_latents.to(device=device, dtype=dtype)
    text = text.to(device=device, dtype=dtype)
    pose_in = torch.cat([pose] * 2) if do_cfg else pose
    dpm = is_dpm(scheduler)
    old_x0 = None
    alphas = scheduler.alphas_cumprod
    for i, t in enumerate(timesteps):
        latents[:, :, 0:1] = image_latents
        model_in = torch.cat([latents] * 2) if do_cfg else latents
        model_in = scheduler.scale_model_input(model_in, t)
        model_in = torch.cat([model_in, pose_in], dim=3)
        if do_cfg and opts.low_memory:
            halves = [predict(model_in[k:k + 1], text[k:k + 1], t.expand(1), text[:1]) for k in range(2)]
            pred = torch.cat([h.float() for h in halves])
            del halves
        else:
            pred = predict(model_in, text, t.expand(model_in.shape[0]), None).float()
        del model_in
        g = guidance_at(opts.guidance, opts.steps, i, float(t.item()), opts.dynamic_cfg)
        if do_cfg:
            uncond, cond = pred.chunk(2)
            pred = uncond + g * (cond - uncond)
            del uncond, cond
        x_t = latents
        if dpm:
            latents, old_x0 = scheduler.step(pred, old_x0, t, timesteps[i - 1] if i > 0 else None, latents,
                                             eta=0.0, generator=generator, return_dict=False)
        else:
            latents = scheduler.step(pred, t, latents, eta=0.0, generator=generator, return_dict=False)[0]
        latents = latents.to(dtype)
        last = i == len(timesteps) - 1
        if opts.check_every and ((i + 1) % opts.check_every == 0 or last) and not torch.isfinite(latents).all():
            raise NonFiniteLatents(non_finite_message(dtype, i + 1, len(timesteps)))
        if callback is not None:
            def x0_fn(x_t=x_t, v=pred, t=t):
                a = alphas[int(t)].to(device=v.device, dtype=torch.float32)
                return a.sqrt() * x_t.float() - (1 - a).sqrt() * v
            callback(i, len(timesteps), x0_fn)
        del pred
    return latents


def predict_4d(transformer, camera_tokens: Optional[torch.Tensor], per_sample_text: bool,
               rope: Optional[tuple] = None) -> Predict:
    """A :data:`Predict` for our dual-attention transformer; camera_tokens (V, N, D) or None."""
    def predict(model_in, text, timestep, frame_text):
        b, v = model_in.shape[:2]
        cam = camera_tokens[None].expand(b, -1, -1, -1) if camera_tokens is not None else None
        enc = text[:, None].expand(-1, v, -1, -1)
        kwargs = {}
        if rope is not None:
            kwargs = {"image_rotary_emb": rope[0], "view_rotary_emb": rope[1]}
        return transformer(model_in, enc, timestep, cam, per_sample_text=per_sample_text,
                           frame_text=None if per_sample_text else frame_text, **kwargs)
    return predict


def predict_2d(transformer, rope: tuple) -> Predict:
    """A :data:`Predict` for the Character2D model (a diffusers CogVideoXTransformer3DModel), run as one view."""
    def predict(model_in, text, timestep, frame_text):
        if model_in.shape[1] != 1:
            raise InputError("views", f"the 2D model animates one view, got {model_in.shape[1]}")
        out = transformer(hidden_states=model_in[:, 0], encoder_hidden_states=text, timestep=timestep,
                          image_rotary_emb=rope, return_dict=False)[0]
        return out[:, None]
    return predict


def draw_noise(generator: torch.Generator, views: int, latent_frames: int, channels: int, h: int, w: int,
               device, dtype) -> torch.Tensor:
    """The initial noise (1, V, L, C, h, w), drawn right after the reference latents (official order)."""
    return _randn((1, views, latent_frames, channels, h, w), generator, device, dtype)

"""Memory and time estimates of a sampling job from real shapes (docs/sampling.md, "Memory": the derivations).

Everything here is arithmetic on configs and shapes: no device is touched, so a plan can be printed before a long
run, and the host's VRAM manager (ComfyUI's ``load_models_gpu(memory_required=...)``) is told how much to keep free
beside the weights.

Estimates, not measurements: the constants below come from counting the tensors our code keeps alive at its peak
(see the docs); no GPU has measured them yet.  So they advise and do not forbid: the estimate (with its margin) is
what ComfyUI is told to keep free beside the weights, and a run is refused only when even a fully offloaded one
cannot fit (:class:`Floor`: the counted activations without margin plus the largest layer in flight, against all the
memory the device can give).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

GiB = 1024 ** 3
TEXT_TOKENS = 226
FF_CHUNK = 16384              # transformer4d.DEFAULT_FF_CHUNK
ROPE_CHUNK_BYTES = 256 * 1024 ** 2  # transformer4d._ROPE_CHUNK_BYTES
LIVE_STREAMS = 6              # token streams alive at the attention peak (block input, branch-1 output, q, k, v, o)
FF_STREAMS = 2 * 4            # GELU projection and its activation, each 4·D wide, per FF chunk
SAFETY = 1.25                 # margin over the counted tensors (allocator fragmentation, small temporaries)
VAE_LIVE = 12                 # decoder activations alive at once at its widest level (counted in the docs)

# The reference the time estimates scale from: the official code on one H200, one CFG step (batch 2) of a 5-view
# group, 25 frames (7 + 1 latent frames) at 480x720, bf16: ~7.6 s and 25.8 GiB peak (README).
REF_SECONDS = 7.6
REF_TOKENS = 2 * 5 * 8 * 30 * 45
# Relative bf16 tensor throughput of common cards to the H200 the reference ran on (dense, from vendor data sheets;
# consumer cards at fp32 accumulation). A rough guide only.
DEVICE_SPEED = {
    "H200": 1.0, "H100": 0.95, "A100": 0.32, "L40S": 0.37, "RTX 6000 Ada": 0.37, "A6000": 0.16, "RTX 4090": 0.17,
    "RTX 3090": 0.072, "RTX 4080": 0.10, "RTX 4070": 0.060, "RTX 4060 Ti": 0.045, "RTX 3060": 0.026,
}
PCIE_BYTES_PER_S = 20e9       # effective host-to-device copy rate of offloaded weights (PCIe 4.0 x16)


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@dataclass
class JobShape:
    """The size of one transformer call: views per group, latent frames (+1 reference), latent grid."""

    views: int
    latent_frames: int          # including the reference frame
    latent_h: int
    latent_w: int
    cfg: bool = True
    low_memory: bool = False

    @property
    def batch(self) -> int:
        """Sequences per transformer call: 2 under CFG, 1 with low-memory CFG (halves one after the other)."""
        return 2 if self.cfg and not self.low_memory else 1

    @property
    def forwards_per_step(self) -> int:
        return 2 if self.cfg and self.low_memory else 1


def video_tokens(shape: JobShape, patch: int) -> int:
    """Video tokens of one call: batch x views x latent frames x (h/p)(w/p)."""
    return shape.batch * shape.views * shape.latent_frames * (shape.latent_h // patch) * (shape.latent_w // patch)


def _transformer_counted(config: dict, shape: JobShape, dtype: torch.dtype) -> tuple:
    """(bytes of the token streams counted at the peak, bytes of the RoPE temporaries), without any margin."""
    p = int(config["patch_size"])
    d = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    e = dtype_bytes(dtype)
    t = video_tokens(shape, p)
    text = shape.batch * max(shape.views, shape.latent_frames) * TEXT_TOKENS
    streams = LIVE_STREAMS * (t + text) + FF_STREAMS * min(t, FF_CHUNK)
    rope = 2 * min(ROPE_CHUNK_BYTES, 12 * (t + text) * d)  # float32 rotation temporaries of q and k, chunked
    return e * d * streams, rope


def transformer_activation_bytes(config: dict, shape: JobShape, dtype: torch.dtype) -> int:
    """Peak activation bytes of one 4D transformer call (docs/sampling.md):

    ``SAFETY x e x D x (LIVE_STREAMS x (T + B·max(V, F)·S) + FF_STREAMS x min(T, FF_CHUNK))
    + 2 x min(ROPE_CHUNK_BYTES, 12 x (T + B·max(V, F)·S) x D)``

    T video tokens of the call, B its batch, D the width, S = 226 text tokens, e bytes per element.  For the 2D
    model pass views = 1.  Low-memory CFG halves B and so T.  This is the estimate the host is told to keep free
    (``memory_required``): advice for how much of the weights to load, never a reason to refuse a run."""
    streams, rope = _transformer_counted(config, shape, dtype)
    return int(SAFETY * streams) + rope


def transformer_counted_bytes(config: dict, shape: JobShape, dtype: torch.dtype) -> int:
    """The tensors counted at the peak of one call, without the ``SAFETY`` margin (the least the call needs)."""
    streams, rope = _transformer_counted(config, shape, dtype)
    return int(streams) + rope


def largest_layer_bytes(module: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes of the largest single layer's own weights in the compute dtype: what a fully offloaded run copies to
    the device at once (an fp8 layer is dequantised there to the compute dtype)."""
    e = dtype_bytes(dtype)
    best = 0
    for m in module.modules():
        n = sum(t.numel() for t in list(m._parameters.values()) + list(m._buffers.values()) if t is not None)
        best = max(best, n * e)
    return best


@dataclass
class Floor:
    """What a fully offloaded run needs on the device at least: the counted activations of one call (no margin)
    plus the layers in flight (``streams`` copies of the largest one).  A run is refused only above this."""

    activations: int
    layer: int
    streams: int = 1

    @property
    def total(self) -> int:
        return self.activations + self.streams * self.layer

    def text(self) -> str:
        layers = f"{self.streams} x " if self.streams > 1 else ""
        return (f"{fmt(self.total)} (activations counted without margin {fmt(self.activations)} + {layers}the "
                f"largest layer streamed in {fmt(self.layer)})")


def vae_decode_bytes(vae_config: dict, height: int, width: int, dtype: torch.dtype, tiling: bool = True,
                     tile: Optional[tuple] = None, latent_frames_batch: int = 2) -> int:
    """Peak bytes of decoding one view (docs/sampling.md): the decoder's widest level (block_out_channels[0]
    channels at full resolution) for one tile and one batch of latent frames (4 output frames each), with
    ``VAE_LIVE`` such tensors alive at once.  ``tile`` (h, w) in pixels; default half the trained sample size,
    diffusers' CogVideoX default (480x720 -> 240x360 tiles)."""
    c0 = int((vae_config.get("block_out_channels") or [128])[0])
    e = dtype_bytes(dtype)
    if tiling:
        th, tw = tile or (int(vae_config.get("sample_height", 480)) // 2, int(vae_config.get("sample_width", 720)) // 2)
        th, tw = min(th, height), min(tw, width)
    else:
        th, tw = height, width
    frames = 4 * latent_frames_batch
    return int(VAE_LIVE * c0 * frames * th * tw * e)


def weights_by_dtype(module: torch.nn.Module) -> dict:
    """{dtype name: bytes} of the module's parameters and buffers."""
    out: dict = {}
    for t in list(module.parameters()) + list(module.buffers()):
        name = str(t.dtype).replace("torch.", "")
        out[name] = out.get(name, 0) + t.numel() * t.element_size()
    return out


def step_seconds(config: dict, shape: JobShape, speed: float, offloaded_bytes: int = 0,
                 copy_rate: float = PCIE_BYTES_PER_S) -> float:
    """Estimated seconds per denoising step: the official H200 figure scaled by the tokens of the step (linear
    layers dominate; attention grows faster, so long jobs are underestimated), divided by the card's relative speed,
    plus the copies of offloaded weights (once per transformer call)."""
    p = int(config["patch_size"])
    d = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    layers = int(config.get("num_layers", 42))
    tokens = video_tokens(shape, p) * shape.forwards_per_step
    size_ratio = (d / 3072) ** 2 * layers / 42
    compute = REF_SECONDS * tokens / REF_TOKENS * size_ratio / max(speed, 1e-6)
    return compute + shape.forwards_per_step * offloaded_bytes / copy_rate


@dataclass
class Plan:
    """A VRAM plan: what the weights take, the peaks, what the host will offload, time per step."""

    weights: dict = field(default_factory=dict)     # {"transformer": {dtype: bytes}, "vae": {...}}
    activation: int = 0                             # transformer peak beside its weights
    decode: int = 0                                 # VAE decode peak beside its weights
    free: Optional[int] = None                      # device memory the host can give (None: unknown)
    reserve: int = 0                                # what the host keeps free besides (ComfyUI's reserve)
    offloaded: int = 0                              # transformer weight bytes that will stay on the CPU
    seconds_per_step: Optional[float] = None
    fits: bool = True                               # False only when even a fully offloaded run cannot fit
    floor: Optional[Floor] = None                   # what a fully offloaded run needs at least
    advised_full_offload: bool = False              # the estimate leaves no room for weights: all streamed
    lines: list = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.lines)


def fmt(n: float) -> str:
    """Bytes for people: GiB with two decimals, MiB below 1 GiB (a small job must not read '0.00 GiB')."""
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / 1024 ** 2:.1f} MiB"


def make_plan(config: dict, transformer: torch.nn.Module, dtype: torch.dtype, shape: JobShape,
              vae=None, vae_dtype: Optional[torch.dtype] = None, vae_tiling: bool = True, height: int = 480,
              width: int = 720, free: Optional[int] = None, reserve: int = 0, speed: Optional[float] = None,
              device_name: str = "this device", streams: int = 1) -> Plan:
    """The plan for ``transformer`` (+ optional VAE) on a device with ``free`` bytes for our models (``reserve``
    of them kept free by the host; ``streams``: layers in flight when offloaded)."""
    plan = Plan()
    plan.weights["transformer"] = weights_by_dtype(transformer)
    t_bytes = sum(plan.weights["transformer"].values())
    plan.activation = transformer_activation_bytes(config, shape, dtype)
    plan.floor = Floor(transformer_counted_bytes(config, shape, dtype), largest_layer_bytes(transformer, dtype),
                       streams)
    if vae is not None:
        plan.weights["vae"] = weights_by_dtype(vae.vae)
        plan.decode = vae_decode_bytes(vae.config, height, width, vae_dtype or vae.dtype, vae_tiling)
    plan.free, plan.reserve = free, reserve
    if free is not None:
        room = free - reserve - plan.activation
        plan.offloaded = max(0, t_bytes - max(room, 0))
        plan.advised_full_offload = room <= 0
        plan.fits = plan.floor.total <= free
    if speed is not None:
        plan.seconds_per_step = step_seconds(config, shape, speed, plan.offloaded)
    w = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(plan.weights["transformer"].items()))
    plan.lines.append(f"VRAM plan ({device_name}; estimates): job {shape.views} views x {shape.latent_frames} "
                      f"latent frames x {shape.latent_h}x{shape.latent_w} latents, "
                      f"{'CFG' if shape.cfg else 'no CFG'}{' low_memory' if shape.low_memory else ''}")
    plan.lines.append(f"  transformer weights {fmt(t_bytes)} ({w}); activation peak {fmt(plan.activation)}")
    if vae is not None:
        v = sum(plan.weights["vae"].values())
        plan.lines.append(f"  VAE weights {fmt(v)}; decode peak {fmt(plan.decode)} "
                          f"({'tiled' if vae_tiling else 'untiled'}, {height}x{width})")
    if free is not None:
        plan.lines.append(f"  least a fully offloaded call needs: {plan.floor.text()}")
        if not plan.fits:
            plan.lines.append(f"  free {fmt(free)} (reserve included) is less than that least: this job cannot run "
                              "here; use low_memory, fewer frames or views per group, or free other models")
        elif plan.advised_full_offload:
            plan.lines.append(f"  free {fmt(free)} minus reserve {fmt(reserve)} is below the activation estimate: "
                              "an estimate, so the job runs on ComfyUI's partial loading, the weights that do not "
                              "fit streamed from the CPU (slower); if it runs out of memory, use low_memory or fewer "
                              "frames")
        elif plan.offloaded:
            plan.lines.append(f"  free {fmt(free)}: {fmt(t_bytes - plan.offloaded)} of the weights on the GPU, "
                              f"{fmt(plan.offloaded)} offloaded to the CPU and copied per call")
        else:
            plan.lines.append(f"  free {fmt(free)}: all weights fit; peak about {fmt(t_bytes + plan.activation)}")
    if plan.seconds_per_step is not None:
        plan.lines.append(f"  about {plan.seconds_per_step:.1f} s per step (scaled from the official 7.6 s per CFG "
                          "step on an H200)")
    return plan


def too_big_message(free: int, needed, shape: JobShape, weight_storage: str = "default") -> str:
    """The error when even a fully offloaded run cannot fit: ``needed`` (a :class:`Floor`, or bytes) exceeds the
    ``free`` bytes the device can give with every weight offloaded."""
    fixes = []
    if shape.cfg and not shape.low_memory:
        fixes.append("turn on low_memory (halves the activations, same result)")
    fixes.append("use fewer frames (num_frames), a smaller group_size or smaller views")
    fixes.append("free other models or start ComfyUI with a smaller --reserve-vram")
    if weight_storage == "default":
        fixes.append("then load the model with weight_storage fp8_e4m3fn, so that more of the weights fit beside the "
                     "activations (fewer copies per step)")
    what = needed.text() if isinstance(needed, Floor) else fmt(needed)
    return (f"not enough GPU memory for this job: the device has {fmt(free)} free for it with every weight "
            f"offloaded, but one transformer call needs at least {what}, for {shape.views} views x "
            f"{shape.latent_frames} latent frames x {shape.latent_h}x{shape.latent_w} latents, batch {shape.batch}; "
            + "; ".join(fixes))


def vae_too_big_message(free: int, needed, tiling: bool) -> str:
    """The error when even a fully offloaded VAE pass cannot fit (``needed``: a :class:`Floor`, or bytes)."""
    fix = ("turn tiling on in the CharacterShot VAE Loader (a quarter of the peak), or free other models"
           if not tiling else "free other models or start ComfyUI with a smaller --reserve-vram")
    what = needed.text() if isinstance(needed, Floor) else fmt(needed)
    return (f"not enough GPU memory for the VAE: the device has {fmt(free)} free for it with every weight "
            f"offloaded, but {'a tiled' if tiling else 'an untiled'} decode needs at least {what}; {fix}")

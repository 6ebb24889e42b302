"""One rendering interface, two backends: gsplat (CUDA) and a pure-torch rasteriser (CPU or any device).

``rasterize`` mirrors ``gsplat.rasterization`` (gsplat 1.5.3): same argument meaning, same outputs, and an ``info``
dict with what ``gsplat.strategy.DefaultStrategy`` needs on both backends (``means2d`` whose gradient the strategy
retains, ``radii`` int32 ``[C, N, 2]`` (``[nnz, 2]`` when packed), ``gaussian_ids``/``camera_ids`` when packed,
``depths``, ``conics``, ``opacities``, ``width``, ``height``, ``n_cameras``) plus ``backend``.

Conventions (as gsplat): ``viewmats`` are world-to-camera in the OpenCV convention (``CameraRig.viewmats()``), ``Ks``
pinhole intrinsics in pixels whose pixel ``j`` covers ``[j, j+1)``; ``quats`` wxyz (any norm), ``scales`` linear,
``opacities`` in [0, 1]; ``colors`` are either post-activation features ``(N, D)`` / ``(C, N, D)`` (``sh_degree``
None) or SH coefficients ``(N, K, 3)`` / ``(C, N, K, 3)`` evaluated as ``clamp(SH(dir) + 0.5, min=0)``.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from ...errors import InputError
from . import _torch_raster as tr

BACKENDS = ("auto", "torch", "gsplat")
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")

#: largest number of candidate (Gaussian, pixel) pairs (bounding-box estimate) composited in one chunk of cameras
PAIR_BUDGET = 12_000_000
#: a single camera whose bounding-box estimate exceeds this would need tens of GB in the torch backend
MAX_PAIRS_ONE_CAMERA = 400_000_000


#: why gsplat cannot be used in this process (set on its first failure: the "gsplat unusable" latch), or None
_GSPLAT_FAILURE: str | None = None
#: the gsplat module once it imported with its CUDA extension loaded (see ``_load_gsplat``)
_GSPLAT = None

log = logging.getLogger("CharacterShot")


class GsplatUnavailableError(InputError):
    """``backend="gsplat"`` was asked for and gsplat cannot run here; the message says how to fix the install."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__("backend", f"gsplat cannot be used here ({reason}). {install_hint()} Or choose backend "
                                    "'auto' (it falls back to the torch rasteriser on the same GPU) or 'torch'.")


def install_hint() -> str:
    """How to make gsplat's CUDA extension work with this torch (for error and log messages)."""
    cuda = torch.version.cuda or "?"
    arch = ""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        arch = f" (this card: TORCH_CUDA_ARCH_LIST={major}.{minor})"
    return (f"To fix it: install a gsplat built for torch {torch.__version__.split('+')[0]} with CUDA {cuda} (a "
            f"prebuilt wheel), or put the CUDA {cuda} toolkit's nvcc on PATH (or set CUDA_HOME) so that gsplat "
            f"compiles its extension on first use, for this card's architecture{arch}; after a failed or "
            "foreign build delete gsplat_cuda in the torch extensions cache (TORCH_EXTENSIONS_DIR, by default "
            "~/.cache/torch_extensions), then restart ComfyUI.")


def _import_gsplat():
    """The import hook: the gsplat module with its CUDA extension loaded (gsplat JIT-builds it on first use; a
    failed build raises, no CUDA toolkit leaves it None). Tests replace this function to make gsplat fail."""
    import gsplat
    from gsplat.cuda import _backend

    if getattr(_backend, "_C", None) is None:
        raise ImportError("gsplat has no prebuilt CUDA extension and found no CUDA toolkit to build one")
    return gsplat


def _device_supports_gsplat(device: torch.device) -> bool:
    """gsplat renders CUDA tensors only (tests replace this to exercise the gsplat paths on the CPU)."""
    return device.type == "cuda" and torch.cuda.is_available()


def _is_out_of_memory(e: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(e, oom) or "out of memory" in str(e).lower()


def mark_gsplat_unusable(e: BaseException | str) -> str:
    """Latch "gsplat unusable" for the rest of the process (the first reason wins) and log it in one line, once;
    returns the reason."""
    global _GSPLAT_FAILURE
    if _GSPLAT_FAILURE is None:
        if isinstance(e, str):
            reason = e
        else:
            first = (str(e).strip().splitlines() or [""])[0]
            reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
        _GSPLAT_FAILURE = reason[:400]
        log.warning("gsplat cannot be used in this session (%s); rendering and 4D fitting continue with the torch "
                    "rasteriser on the same device. %s", _GSPLAT_FAILURE, install_hint())
    return _GSPLAT_FAILURE


def is_gsplat_failure(e: BaseException) -> bool:
    """Whether an exception raised while gsplat rendered (or back-propagated) means gsplat is unusable here. Running
    out of memory is not gsplat's fault (the torch rasteriser would need more) and is not one."""
    return isinstance(e, Exception) and not _is_out_of_memory(e)


def _load_gsplat():
    """gsplat with its CUDA extension, loaded once per process; on failure latch and raise GsplatUnavailableError."""
    global _GSPLAT
    if _GSPLAT_FAILURE is not None:
        raise GsplatUnavailableError(_GSPLAT_FAILURE)
    if _GSPLAT is None:
        try:
            _GSPLAT = _import_gsplat()
        except Exception as e:  # missing package, failed JIT build (RuntimeError), no toolkit, broken .so ...
            raise GsplatUnavailableError(mark_gsplat_unusable(e)) from e
    return _GSPLAT


def gsplat_available(device=None) -> bool:
    """True when gsplat can run here: CUDA is available (and ``device``, if given, is a CUDA device), the package
    imports with its CUDA extension, and it has not failed in this process. The first call may build the
    extension (gsplat compiles it on first use); a failure latches (see ``mark_gsplat_unusable``)."""
    dev = torch.device(device) if device is not None else torch.device("cuda")
    if not _device_supports_gsplat(dev) or _GSPLAT_FAILURE is not None:
        return False
    try:
        _load_gsplat()
    except GsplatUnavailableError:
        return False
    return True


def resolve_backend(name: str, device=None) -> str:
    """``"auto"`` -> ``"gsplat"`` when ``device`` is a CUDA device and gsplat works there, else ``"torch"``.

    An explicit ``"gsplat"`` on a machine or device where it cannot run raises a clear ``InputError``
    (:class:`GsplatUnavailableError`, with how to fix the install, when gsplat itself is broken).
    """
    name = str(name).lower().strip()
    if name not in BACKENDS:
        raise InputError("backend", f"expected one of {', '.join(BACKENDS)}, got {name!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if name == "torch":
        return "torch"
    if name == "auto":
        return "gsplat" if gsplat_available(dev) else "torch"
    if not _device_supports_gsplat(dev):
        if not torch.cuda.is_available():
            raise InputError("backend", "the gsplat backend needs a CUDA GPU and none is available here; "
                                        "use backend 'torch' (or 'auto') on this machine")
        raise InputError("backend", f"the gsplat backend needs the Gaussians on a CUDA device, got {dev}")
    _load_gsplat()
    return "gsplat"


# -------------------------------------------------------------------------------------------- validation
def _check(cond: bool, name: str, message: str):
    if not cond:
        raise InputError(name, message)


def _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds,
              render_mode, rasterize_mode, check_finite=True):
    for name, t in (("means", means), ("quats", quats), ("scales", scales), ("opacities", opacities),
                    ("colors", colors), ("viewmats", viewmats), ("Ks", Ks)):
        _check(isinstance(t, torch.Tensor), name, f"expected a torch tensor, got {type(t).__name__}")
        _check(t.is_floating_point(), name, f"expected a floating-point tensor, got {t.dtype}")
    _check(means.dim() == 2 and means.shape[1] == 3, "means", f"expected shape (N, 3), got {tuple(means.shape)}")
    n = means.shape[0]
    _check(n >= 1, "means", "the Gaussian set is empty (N = 0); there is nothing to render")
    _check(tuple(quats.shape) == (n, 4), "quats", f"expected shape ({n}, 4) for {n} Gaussians, got {tuple(quats.shape)}")
    _check(tuple(scales.shape) == (n, 3), "scales", f"expected shape ({n}, 3), got {tuple(scales.shape)}")
    _check(tuple(opacities.shape) == (n,), "opacities", f"expected shape ({n},), got {tuple(opacities.shape)}")
    _check(viewmats.dim() == 3 and viewmats.shape[1:] == (4, 4) and viewmats.shape[0] >= 1, "viewmats",
           f"expected shape (C, 4, 4) with C >= 1, got {tuple(viewmats.shape)}")
    c = viewmats.shape[0]
    _check(tuple(Ks.shape) == (c, 3, 3), "Ks", f"expected shape ({c}, 3, 3) for {c} cameras, got {tuple(Ks.shape)}")
    _check(isinstance(width, int) and isinstance(height, int) and width >= 1 and height >= 1, "width",
           f"expected positive integer width and height, got {width!r} x {height!r}")
    if sh_degree is None:
        ok = (colors.dim() == 2 and colors.shape[0] == n) or (colors.dim() == 3 and colors.shape[:2] == (c, n))
        _check(ok, "colors", f"expected per-Gaussian features (N, D) = ({n}, D) or (C, N, D) = ({c}, {n}, D) when "
                             f"sh_degree is None, got {tuple(colors.shape)}")
    else:
        _check(isinstance(sh_degree, int) and 0 <= sh_degree <= 4, "sh_degree",
               f"expected an integer from 0 to 4, got {sh_degree!r}")
        k = (sh_degree + 1) ** 2
        ok = (colors.dim() == 3 and colors.shape[0] == n and colors.shape[2] == 3) or (
            colors.dim() == 4 and colors.shape[:2] == (c, n) and colors.shape[3] == 3)
        _check(ok, "colors", f"expected SH coefficients (N, K, 3) = ({n}, K, 3) or (C, N, K, 3) for sh_degree "
                             f"{sh_degree}, got {tuple(colors.shape)}")
        _check(colors.shape[-2] >= k, "colors", f"sh_degree {sh_degree} needs K >= {k} coefficients, got "
                                                 f"{colors.shape[-2]}")
    _check(render_mode in RENDER_MODES, "render_mode", f"expected one of {', '.join(RENDER_MODES)}, got {render_mode!r}")
    _check(rasterize_mode in ("classic", "antialiased"), "rasterize_mode",
           f"expected 'classic' or 'antialiased', got {rasterize_mode!r}")
    dev = means.device
    for name, t in (("quats", quats), ("scales", scales), ("opacities", opacities), ("colors", colors),
                    ("viewmats", viewmats), ("Ks", Ks)):
        _check(t.device == dev, name, f"expected the same device as means ({dev}), got {t.device}")
    tensors = (("means", means), ("quats", quats), ("scales", scales), ("opacities", opacities),
               ("colors", colors), ("viewmats", viewmats), ("Ks", Ks))
    if check_finite:  # one host sync for all inputs; the per-input check only when something is off
        from .precision import all_finite

        if not bool(all_finite([t for _, t in tensors])):
            for name, t in tensors:
                _check(bool(torch.isfinite(t.detach()).all()), name, "contains NaN or infinite values")
    if backgrounds is not None:
        _check(isinstance(backgrounds, torch.Tensor) and backgrounds.dim() == 2 and backgrounds.shape[0] == c,
               "backgrounds", f"expected shape (C, D) = ({c}, D), got "
                              f"{tuple(backgrounds.shape) if isinstance(backgrounds, torch.Tensor) else backgrounds!r}")


# --------------------------------------------------------------------------------------------- main entry
def rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree=None, backend="auto",
              backgrounds=None, near_plane=0.01, far_plane=1e10, radius_clip=0.0, rasterize_mode="classic",
              absgrad=False, packed=False, render_mode="RGB", eps2d=0.3, check_finite=True):
    """Render N Gaussians into C cameras -> ``(colors (C, H, W, D), alphas (C, H, W, 1), info)``.

    Mirrors ``gsplat.rasterization`` (see the module docstring); ``backend`` is ``"auto"`` (gsplat when the tensors
    are on a CUDA device and gsplat works there, else torch), ``"torch"`` or ``"gsplat"``. Under ``"auto"`` any
    failure of gsplat (missing, failed build, wrong architecture, an error in its kernels) is logged once and this
    call and every later one in the process render with the torch backend on the same device; an explicit
    ``"gsplat"`` raises :class:`GsplatUnavailableError` instead. ``render_mode`` "D"/"ED" ("RGB+D"/"RGB+ED") adds
    the accumulated / expected depth as the last channel, as gsplat does. ``check_finite=False`` skips the NaN/inf
    check of the inputs (a host sync; the fit checks its own tensors every few iterations).
    """
    width, height = int(width), int(height)
    _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds,
              render_mode, rasterize_mode, check_finite)
    which = resolve_backend(backend, means.device)
    if which == "gsplat":
        try:
            return _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                                     backgrounds, near_plane, far_plane, radius_clip, rasterize_mode, absgrad, packed,
                                     render_mode, eps2d)
        except Exception as e:
            if not is_gsplat_failure(e):
                raise
            # a build that fails on first use (RuntimeError), a card the build has no kernels for, a broken
            # extension: gsplat is unusable for the rest of the process ("auto" continues with torch)
            reason = mark_gsplat_unusable(e)
            if str(backend).lower().strip() != "auto":
                raise GsplatUnavailableError(reason) from e
    return _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                            backgrounds, near_plane, far_plane, radius_clip, rasterize_mode, absgrad, packed,
                            render_mode, eps2d)


def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds,
                      near_plane, far_plane, radius_clip, rasterize_mode, absgrad, packed, render_mode, eps2d):
    gsplat = _load_gsplat()
    img, alpha, meta = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree, packed=packed,
        backgrounds=backgrounds, render_mode=render_mode, absgrad=absgrad, rasterize_mode=rasterize_mode)
    meta = dict(meta)
    meta["backend"] = "gsplat"
    return img, alpha, meta


def _camera_chunks(radii: torch.Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive camera ranges whose estimated pair count (sum of bounding-box areas) stays under ``budget``."""
    r = radii.to(torch.int64)
    area = ((2 * r[..., 0] + 1) * (2 * r[..., 1] + 1) * (r[..., 0] > 0)).sum(1).tolist()
    worst = max(area)
    if worst > MAX_PAIRS_ONE_CAMERA:
        raise InputError("scales", f"the Gaussians cover about {worst:.3g} (Gaussian, pixel) pairs in one camera, too "
                                   "many for the CPU rasteriser's memory; use smaller scales, fewer Gaussians, a lower "
                                   "resolution, or the gsplat backend on a GPU")
    chunks, start, acc = [], 0, 0
    for k, a in enumerate(area):
        if k > start and acc + a > budget:
            chunks.append((start, k))
            start, acc = k, 0
        acc += a
    chunks.append((start, len(area)))
    return chunks


def _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds,
                     near_plane, far_plane, radius_clip, rasterize_mode, absgrad, packed, render_mode, eps2d):
    c_cams, n = viewmats.shape[0], means.shape[0]
    dt = means.dtype
    quats, scales, opacities, colors = quats.to(dt), scales.to(dt), opacities.to(dt), colors.to(dt)
    radii, means2d, depths, conics, opac = tr.project(
        means, quats, scales, opacities, viewmats.to(dt), Ks.to(dt), width, height, eps2d=eps2d,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip,
        antialiased=rasterize_mode == "antialiased")
    valid = (radii > 0).all(-1)  # (C, N)
    flat = torch.nonzero(valid.reshape(-1)).squeeze(1)  # entries, camera-major
    cam_ids = torch.div(flat, n, rounding_mode="floor")
    gauss_ids = flat % n

    m2_flat = means2d.reshape(-1, 2)
    if packed:
        means2d_info = m2_flat.index_select(0, flat)
        m2_entries = means2d_info
    else:
        means2d_info = means2d
        m2_entries = m2_flat.index_select(0, flat)
    con_e = conics.reshape(-1, 3).index_select(0, flat)
    opa_e = opac.reshape(-1).index_select(0, flat)
    dep_e = depths.reshape(-1).index_select(0, flat)

    # per-entry colour features
    if sh_degree is None:
        col_e = (colors.index_select(0, gauss_ids) if colors.dim() == 2
                 else colors.reshape(c_cams * n, -1).index_select(0, flat))
    else:
        campos = torch.linalg.inv(viewmats.to(dt))[:, :3, 3]  # (C, 3)
        coeffs = (colors.index_select(0, gauss_ids) if colors.dim() == 3
                  else colors.reshape(c_cams * n, colors.shape[-2], 3).index_select(0, flat))
        dirs = means.index_select(0, gauss_ids) - campos.index_select(0, cam_ids)
        col_e = torch.clamp_min(tr.eval_sh(sh_degree, dirs, coeffs) + 0.5, 0.0)
    col_e = col_e.to(dt)
    want_rgb = render_mode in ("RGB", "RGB+D", "RGB+ED")
    want_depth = render_mode != "RGB"
    feats = []
    if want_rgb:
        feats.append(col_e)
    if want_depth:
        feats.append(dep_e[:, None])
    feat_e = torch.cat(feats, 1) if len(feats) > 1 else feats[0]
    d = feat_e.shape[1]

    if absgrad:
        means2d_info.absgrad = torch.zeros_like(means2d_info.detach())

    out_img, out_alpha = [], []
    hw = height * width
    counts = torch.bincount(cam_ids, minlength=c_cams).tolist()
    offsets = [0]
    for cnt in counts:
        offsets.append(offsets[-1] + cnt)
    for c0, c1 in _camera_chunks(radii, PAIR_BUDGET):
        e0, e1 = offsets[c0], offsets[c1]
        n_pix = (c1 - c0) * hw
        sink = None
        if absgrad:
            sink = _absgrad_sink(means2d_info, packed, e0, e1, flat[e0:e1])
        with torch.no_grad():
            m2 = m2_entries[e0:e1].detach()
            pix_base = (cam_ids[e0:e1] - c0) * hw
            eid, pix, pair_alpha = tr.enumerate_pairs(m2, con_e[e0:e1].detach(), opa_e[e0:e1].detach(), pix_base,
                                                      dep_e[e0:e1].detach(), width, height, n_pix)
        img, alp = tr.Composite.apply(m2_entries[e0:e1], con_e[e0:e1], opa_e[e0:e1], feat_e[e0:e1], eid, pix,
                                      pair_alpha, n_pix, width, height, sink)
        out_img.append(img.reshape(c1 - c0, height, width, d))
        out_alpha.append(alp.reshape(c1 - c0, height, width, 1))
    images = torch.cat(out_img, 0) if len(out_img) > 1 else out_img[0]
    alphas = torch.cat(out_alpha, 0) if len(out_alpha) > 1 else out_alpha[0]
    if render_mode in ("ED", "RGB+ED"):
        images = torch.cat([images[..., :-1], images[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)
    if backgrounds is not None:
        images = images + (1.0 - alphas) * backgrounds.to(dt)[:, None, None, :]

    info = {
        "backend": "torch",
        "width": width,
        "height": height,
        "n_cameras": c_cams,
        "n_batches": 1,
        "tile_size": 16,
    }
    if packed:
        info.update(radii=radii[valid], means2d=means2d_info, depths=dep_e, conics=con_e, opacities=opa_e,
                    gaussian_ids=gauss_ids, camera_ids=cam_ids, batch_ids=torch.zeros_like(cam_ids))
    else:
        info.update(radii=radii, means2d=means2d_info, depths=depths, conics=conics, opacities=opac,
                    gaussian_ids=None, camera_ids=None, batch_ids=None)
    return images, alphas, info


def _absgrad_sink(means2d_info: torch.Tensor, packed: bool, e0: int, e1: int, flat_chunk: torch.Tensor) -> Callable:
    """Accumulate |d loss / d means2d| of one chunk into ``means2d_info.absgrad`` (gsplat's AbsGS statistic)."""
    def sink(absg: torch.Tensor):
        holder = means2d_info.absgrad
        if packed:
            holder[e0:e1] += absg
        else:
            holder.view(-1, 2).index_add_(0, flat_chunk, absg)
    return sink

"""Loader nodes: the multi-view (4D) model, the 2D pose model, the CogVideoX VAE and the text conditioning.

Weights are looked up through ``folder_paths`` (``diffusion_models``, ``vae``, ``text_encoders`` and our own
``charactershot`` folder, which users may already point elsewhere in ``extra_model_paths.yaml``); nothing is ever
downloaded.  Official Hugging Face folders appear in the lists as ``Name/``.
"""

from __future__ import annotations

import os

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..charactershot_core.errors import CharacterShotError, CheckpointError, InputError
from ..charactershot_core.models import loading as L
from ..charactershot_core.models import text as T
from .common import CATEGORY, VAE, Model2D, Model4D, TextEmbeds, advanced

FOLDER = "charactershot"
FROM_CHECKPOINT = "(from checkpoint folder)"
USE_CLIP = "(use the clip input)"
NONE = "(none)"
WEIGHT_EXTS = (".safetensors", ".sft")
DTYPE_OPTIONS = ["auto", "bf16", "fp16", "fp32"]


def register_model_folders() -> None:
    """Add ``models/charactershot`` to ``folder_paths`` (after any paths the user configured for it)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    folder_paths.add_model_folder_path(FOLDER, default)


register_model_folders()


# ----------------------------------------------------------------------------------------------- listing
def _roots(kind: str) -> list[str]:
    try:
        return [p for p in folder_paths.get_folder_paths(kind) if os.path.isdir(p)]
    except KeyError:
        return []


def _folders_with(kinds: tuple[str, ...], marker: str, depth: int = 2) -> list[str]:
    """Sub-folders (``Name/``, relative to a root of ``kinds``) that contain ``marker``."""
    found: list[str] = []
    for kind in kinds:
        for root in _roots(kind):
            stack = [(root, 0)]
            while stack:
                d, level = stack.pop()
                try:
                    entries = sorted(os.scandir(d), key=lambda e: e.name)
                except OSError:
                    continue
                for e in entries:
                    if not e.is_dir() or e.name.startswith("."):
                        continue
                    if os.path.exists(os.path.join(e.path, marker)):
                        rel = os.path.relpath(e.path, root).replace(os.sep, "/") + "/"
                        if rel not in found:
                            found.append(rel)
                    elif level + 1 < depth:
                        stack.append((e.path, level + 1))
    return sorted(found)


def _files(kinds: tuple[str, ...]) -> list[str]:
    """Weight files of ``kinds`` (for our own folder only the top level: deeper files belong to folders)."""
    out: list[str] = []
    for kind in kinds:
        try:
            names = folder_paths.get_filename_list(kind)
        except KeyError:
            continue
        for n in names:
            if not n.lower().endswith(WEIGHT_EXTS):
                continue
            if kind == FOLDER and "/" in n.replace("\\", "/"):
                continue
            if n not in out:
                out.append(n)
    return sorted(out)


def _resolve(name: str, kinds: tuple[str, ...], input_name: str) -> str:
    """The absolute path of a listed file or ``Folder/``."""
    from ..charactershot_core.naming import inside

    if not name or name == NONE:
        raise InputError(input_name, "no file chosen; put the weights in ComfyUI's models folders (see the "
                                     "CharacterShot docs/checkpoints.md) and refresh")
    parts = name.replace("\\", "/").rstrip("/").split("/")
    if ".." in parts or os.path.isabs(name):
        raise InputError(input_name, f"expected a name from the list, got {name!r}")
    for kind in kinds:
        for root in _roots(kind):
            p = os.path.join(root, *parts)
            if not inside(root, p):  # (another drive, a link out): not in this folder
                continue
            if name.endswith("/") and os.path.isdir(p) or not name.endswith("/") and os.path.isfile(p):
                return p
    raise InputError(input_name, f"{name!r} was not found in the models folders {list(kinds)}; it may have been "
                                 "moved or deleted (refresh the page)")


def checkpoint_options() -> list[str]:
    return _files(("diffusion_models",)) + _folders_with((FOLDER, "diffusion_models"), "transformer/config.json")


def camera_options() -> list[str]:
    return [FROM_CHECKPOINT] + _files((FOLDER,)) + _folders_with((FOLDER,), "camera_guider.pt")


def vae_options() -> list[str]:
    return _files(("vae",)) + _folders_with((FOLDER, "vae"), "vae/config.json")


def t5_options() -> list[str]:
    return [USE_CLIP] + _folders_with((FOLDER, "text_encoders"), "text_encoder/config.json")


def _or_none(options: list[str]) -> list[str]:
    return options or [NONE]


# where each loader's weights come from and where they go (docs/checkpoints.md); checked when a prompt is queued
OFFICIAL_URL = "https://huggingface.co/Gaojunyao/CharacterShot"
OFFICIAL_2D_URL = "https://huggingface.co/Gaojunyao/Character2D"


def _first_root(kind: str) -> str:
    """The folder of ``kind`` to name in a message: the first one named like the kind (ComfyUI lists its legacy
    ``models/unet`` before ``models/diffusion_models``), preferring folders that exist."""
    try:
        paths = list(folder_paths.get_folder_paths(kind))
    except KeyError:
        paths = []
    ranked = sorted(paths, key=lambda p: (os.path.basename(os.path.normpath(p)) != kind, not os.path.isdir(p)))
    return ranked[0] if ranked else os.path.join(folder_paths.models_dir, kind)


def check_listed(input_name: str, value, kinds: tuple[str, ...], what: str, url: str, folder_name: str,
                 alternative: str):
    """True when ``value`` names a file or folder of ``kinds``; else the message that refuses the prompt, naming
    the download and the folder it goes in. A value that comes from a link (None here) is checked when it runs."""
    if value is None:
        return True
    try:
        _resolve(value, kinds, input_name)
        return True
    except CharacterShotError:
        pass
    shown = "no model chosen" if not value or value == NONE else f"{value!r} is not in ComfyUI's models folders"
    target = os.path.join(_first_root(FOLDER), folder_name)
    return (f"{shown}. Download {what} from {url} (the whole repository) into models/{FOLDER}/{folder_name}/ "
            f"(here: {target}), {alternative}; then refresh the page (docs/checkpoints.md).")


# ----------------------------------------------------------------------------------------------- helpers
def _pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    import comfy.model_management as mm

    if choice != "auto":
        return L.parse_dtype(choice)
    if device.type == "cpu":
        return torch.float32
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16


class PatchedModule(torch.nn.Module):
    """Holds a model for a ModelPatcher, which sets ``.device`` on what it manages: diffusers, transformers and
    our transformer expose ``device`` as a read-only property, so the patcher gets this holder; moving the holder
    moves the held model in place (the loaded objects keep pointing at the same module)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.device = None


def make_patcher(module: torch.nn.Module, kind: str = "diffusion"):
    """A ModelPatcher for ``module`` on ComfyUI's devices for ``kind`` (diffusion, text_encoder or vae).

    The module's weight-bearing layers are made cast-enabled first (:func:`.vram.cast_enable`), so ComfyUI can load
    any part of it and stream the rest at its budgets (``--lowvram``, ``--novram``, ``--reserve-vram``, other
    models holding memory)."""
    import comfy.model_management as mm
    import comfy.model_patcher

    from .vram import cast_enable

    cast_enable(module)

    if kind == "text_encoder":
        load, offload = mm.text_encoder_device(), mm.text_encoder_offload_device()
    elif kind == "vae":
        load, offload = mm.vae_device(), mm.vae_offload_device()
    else:
        load, offload = mm.get_torch_device(), mm.unet_offload_device()
    return comfy.model_patcher.ModelPatcher(PatchedModule(module), load_device=load, offload_device=offload)


def _as_input_error(input_name: str, err: CharacterShotError) -> InputError:
    return err if isinstance(err, InputError) else InputError(input_name, str(err))


def text_cache_dir() -> str:
    return os.path.join(folder_paths.get_user_directory(), "charactershot", "text_cache")


# ----------------------------------------------------------------------------------------------- nodes
class ModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotModelLoader",
            display_name="CharacterShot Model Loader",
            category=f"{CATEGORY}/loaders",
            description="Loads the CharacterShot model that makes the multi-view videos: the folder "
                        "'CharacterShot/' from Hugging Face in models/charactershot/, or a converted .safetensors in "
                        "models/diffusion_models/ with a camera pack (docs/checkpoints.md).",
            inputs=[
                io.Combo.Input("checkpoint", options=_or_none(checkpoint_options()),
                               tooltip="The CharacterShot model: the folder 'CharacterShot/' downloaded from "
                                       "huggingface.co/Gaojunyao/CharacterShot into models/charactershot/, or a "
                                       "converted .safetensors in models/diffusion_models/. Refresh the page after "
                                       "adding files."),
                advanced(io.Combo.Input("camera", options=camera_options(), default=FROM_CHECKPOINT, optional=True,
                                        tooltip="Where the camera data comes from: keep '(from checkpoint folder)' "
                                                "with the official folder; with a single .safetensors checkpoint, "
                                                "choose the camera pack in models/charactershot/.")),
                advanced(io.Combo.Input("dtype", options=DTYPE_OPTIONS, default="auto", optional=True,
                                        tooltip="Number precision. auto picks the best for your GPU (bf16, fp16 on "
                                                "older cards, fp32 on a CPU); change it only to compare.")),
                io.Combo.Input("weight_storage", options=list(L.WEIGHT_STORAGES), default="default", optional=True,
                               tooltip="fp8_e4m3fn: the model takes half the GPU memory (about 7.6 GB instead "
                                       "of 15) and may lose a little detail. Use it when the sampler runs out of "
                                       "memory."),
                advanced(io.Combo.Input("text_mode", options=list(L.TEXT_MODES), default="faithful", optional=True,
                                        tooltip="faithful: the prompt reaches the model as in its training (keep "
                                                "this). per_sample: each guidance half sees its own prompt, for "
                                                "comparisons (docs/sampling.md).")),
            ],
            outputs=[Model4D.Output(display_name="model", tooltip="Transformer (in a ModelPatcher), camera "
                                                                     "guider, camera embeddings, config, dtype.")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint, camera=FROM_CHECKPOINT):
        """A missing model refuses the prompt at once, saying what to download and where it goes."""
        found = check_listed("checkpoint", checkpoint, ("diffusion_models", FOLDER), "the CharacterShot model",
                             OFFICIAL_URL, "CharacterShot",
                             f"or put a converted .safetensors into models/diffusion_models/ "
                             f"({_first_root('diffusion_models')})")
        if found is not True or not camera or camera == FROM_CHECKPOINT:
            return found
        return check_listed("camera", camera, (FOLDER,), "the CharacterShot model (its camera_guider.pt and "
                            "camera_embs/)", OFFICIAL_URL, "CharacterShot",
                            f"or put a camera pack .safetensors into models/{FOLDER}/ ({_first_root(FOLDER)})")

    @classmethod
    def execute(cls, checkpoint, camera=FROM_CHECKPOINT, dtype="auto", weight_storage="default",
                text_mode="faithful"):
        import comfy.model_management as mm

        ckpt_path = _resolve(checkpoint, ("diffusion_models", FOLDER), "checkpoint")
        cam_path = None
        if camera and camera != FROM_CHECKPOINT:
            cam_path = _resolve(camera, (FOLDER,), "camera")
        elif not os.path.isdir(ckpt_path):
            raise InputError("camera", f"the checkpoint {checkpoint!r} is a single file without camera guider or "
                                       "camera embeddings; choose a camera pack (models/charactershot) or the "
                                       "official folder as camera")
        compute = _pick_dtype(dtype, mm.get_torch_device())
        try:
            loaded = L.load_model_4d(ckpt_path, cam_path, compute, weight_storage, text_mode)
        except CheckpointError as e:
            src = "camera" if cam_path and cam_path in str(e) else "checkpoint"
            raise _as_input_error(src, e) from None
        loaded.patcher = make_patcher(loaded.transformer)
        return io.NodeOutput(loaded)


class Model2DLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShot2DModelLoader",
            display_name="CharacterShot 2D Model Loader",
            category=f"{CATEGORY}/loaders",
            description="Loads the Character2D model that animates a single picture: the folder "
                        "'Character2D/' from Hugging Face in models/charactershot/, or a converted .safetensors in "
                        "models/diffusion_models/.",
            inputs=[
                io.Combo.Input("checkpoint", options=_or_none(checkpoint_options()),
                               tooltip="The 2D pose model: the folder 'Character2D/' downloaded from "
                                       "huggingface.co/Gaojunyao/Character2D into models/charactershot/, or a "
                                       "converted .safetensors in models/diffusion_models/. Refresh the page after "
                                       "adding files."),
                advanced(io.Combo.Input("dtype", options=DTYPE_OPTIONS, default="auto", optional=True,
                                        tooltip="Number precision. auto picks the best for your GPU; change it only "
                                                "to compare.")),
            ],
            outputs=[Model2D.Output(display_name="model2d", tooltip="The 2D pose transformer (in a ModelPatcher).")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint):
        """A missing model refuses the prompt at once, saying what to download and where it goes."""
        return check_listed("checkpoint", checkpoint, ("diffusion_models", FOLDER), "the Character2D model",
                            OFFICIAL_2D_URL, "Character2D",
                            f"or put a converted .safetensors into models/diffusion_models/ "
                            f"({_first_root('diffusion_models')})")

    @classmethod
    def execute(cls, checkpoint, dtype="auto"):
        import comfy.model_management as mm

        path = _resolve(checkpoint, ("diffusion_models", FOLDER), "checkpoint")
        try:
            loaded = L.load_model_2d(path, _pick_dtype(dtype, mm.get_torch_device()))
        except CheckpointError as e:
            raise _as_input_error("checkpoint", e) from None
        loaded.patcher = make_patcher(loaded.transformer)
        return io.NodeOutput(loaded)


class VAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotVAELoader",
            display_name="CharacterShot VAE Loader",
            category=f"{CATEGORY}/loaders",
            description="Loads the video VAE that turns pictures into the model's working space and back "
                        "into videos: the official folder 'CharacterShot/', or a converted .safetensors in "
                        "models/vae/.",
            inputs=[
                io.Combo.Input("vae", options=_or_none(vae_options()),
                               tooltip="The video VAE: choose the official folder 'CharacterShot/' (its vae/ "
                                       "inside), or a converted CogVideoX VAE .safetensors in models/vae/."),
                advanced(io.Combo.Input("dtype", options=DTYPE_OPTIONS, default="auto", optional=True,
                                        tooltip="Number precision. auto picks the best for your GPU; change it only "
                                                "to compare.")),
                advanced(io.Boolean.Input("tiling", default=True, optional=True,
                                          tooltip="Work on the videos in overlapping tiles to save GPU memory. Keep "
                                                  "it on unless you compare.")),
                advanced(io.Boolean.Input("slicing", default=True, optional=True,
                                          tooltip="Work on one video at a time to save GPU memory. Keep it on.")),
            ],
            outputs=[VAE.Output(display_name="vae", tooltip="The VAE (in a ModelPatcher).")],
        )

    @classmethod
    def validate_inputs(cls, vae):
        """A missing VAE refuses the prompt at once, saying what to download and where it goes."""
        return check_listed("vae", vae, ("vae", FOLDER), "the CharacterShot model (the VAE is its vae/ folder)",
                            OFFICIAL_URL, "CharacterShot",
                            f"or put a CogVideoX VAE .safetensors into models/vae/ ({_first_root('vae')})")

    @classmethod
    def execute(cls, vae, dtype="auto", tiling=True, slicing=True):
        import comfy.model_management as mm

        path = _resolve(vae, ("vae", FOLDER), "vae")
        try:
            loaded = L.load_vae(path, _pick_dtype(dtype, mm.vae_device()), tiling=tiling, slicing=slicing)
        except CheckpointError as e:
            raise _as_input_error("vae", e) from None
        loaded.patcher = make_patcher(loaded.vae, "vae")
        return io.NodeOutput(loaded)


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotTextEncode",
            display_name="CharacterShot Text Encode",
            category=f"{CATEGORY}/loaders",
            description="Turns the prompt into what the model reads, with the T5-XXL text encoder (Load "
                        "CLIP with t5xxl_fp16.safetensors, type sd3, or the official folder). Each prompt is encoded "
                        "once and remembered on disk, so the large encoder is not loaded again for it.",
            inputs=[
                io.String.Input("prompt", multiline=True, default=T.OFFICIAL_PROMPT,
                                tooltip="A few words about the motion; the default 'smooth motion or in the wind' "
                                        "works for most characters, since the poses carry the motion."),
                io.String.Input("negative_prompt", multiline=True, default=T.OFFICIAL_NEGATIVE_PROMPT,
                                optional=True, tooltip="What to avoid in the videos (blur, distortion, ...); the "
                                                       "default suits most characters."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The T5-XXL text encoder from Load CLIP (t5xxl_fp16.safetensors in "
                                      "models/text_encoders/, type sd3). Not needed when t5_folder is set."),
                advanced(io.Combo.Input("t5_folder", options=t5_options(), default=USE_CLIP, optional=True,
                                        tooltip="Use the text encoder of the official folder ('CharacterShot/') "
                                                "instead of the clip input.")),
                advanced(io.Boolean.Input("use_cache", default=True, optional=True,
                                          tooltip="Remember encoded prompts on disk, so the large text encoder is "
                                                  "not loaded again for a prompt already used. Keep it on.")),
            ],
            outputs=[TextEmbeds.Output(display_name="text", tooltip="Prompt and negative prompt embeddings "
                                                                    "(1, 226, 4096) each.")],
        )

    @classmethod
    def validate_inputs(cls, t5_folder=USE_CLIP):
        """A missing text-encoder folder refuses the prompt at once, saying what to download and where it goes."""
        if not t5_folder or t5_folder == USE_CLIP:
            return True
        return check_listed("t5_folder", t5_folder, (FOLDER, "text_encoders"), "the CharacterShot model (its "
                            "text_encoder/ and tokenizer/)", OFFICIAL_URL, "CharacterShot",
                            f"or choose '{USE_CLIP}' and connect Load CLIP with t5xxl_fp16.safetensors (type sd3) "
                            f"in models/text_encoders/")

    @classmethod
    def execute(cls, prompt, negative_prompt=T.OFFICIAL_NEGATIVE_PROMPT, clip=None, t5_folder=USE_CLIP,
                use_cache=True):
        cache = T.TextCache(text_cache_dir()) if use_cache else None
        if t5_folder and t5_folder != USE_CLIP:
            path = _resolve(t5_folder, (FOLDER, "text_encoders"), "t5_folder")
            try:
                identity = T.folder_identity(path)
                return io.NodeOutput(T.encode_prompts(prompt, negative_prompt or "", identity,
                                                      lambda: _FolderEncoderInPatcher(path), cache))
            except CheckpointError as e:
                raise _as_input_error("t5_folder", e) from None
        if clip is None:
            raise InputError("clip", "connect a T5-XXL CLIP (Load CLIP: t5xxl_fp16.safetensors, type sd3) or "
                                     "choose an official folder as t5_folder")
        encoder = T.ComfyClipEncoder(clip)
        return io.NodeOutput(T.encode_prompts(prompt, negative_prompt or "", encoder.identity,
                                              lambda: encoder, cache))


class _FolderEncoderInPatcher:
    """The official T5 folder encoder, run through ComfyUI's model management (loaded, used, released)."""

    def __init__(self, path: str):
        import comfy.model_management as mm

        device = mm.text_encoder_device()
        dtype = torch.float32 if device.type == "cpu" else (torch.bfloat16 if mm.should_use_bf16(device)
                                                             else torch.float32)
        self.inner = T.T5FolderEncoder(path, dtype=dtype, device=mm.text_encoder_offload_device())
        self.patcher = make_patcher(self.inner.model, "text_encoder")

    def encode(self, texts):
        import comfy.model_management as mm

        mm.load_models_gpu([self.patcher])
        self.inner.device = self.patcher.load_device
        return self.inner.encode(texts)


class ModelInfo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterShotModelInfo",
            display_name="CharacterShot Model Info",
            category=f"{CATEGORY}/loaders",
            description="Shows what the loaders loaded and estimates the GPU memory and time a sampler run "
                        "of the size given will need on this machine: a check before a long run.",
            is_output_node=True,
            inputs=[
                Model4D.Input("model", optional=True, tooltip="A CharacterShot Model Loader output to describe."),
                Model2D.Input("model2d", optional=True, tooltip="A CharacterShot 2D Model Loader output to describe."),
                VAE.Input("vae", optional=True, tooltip="A CharacterShot VAE Loader output to describe."),
                TextEmbeds.Input("text", optional=True, tooltip="A CharacterShot Text Encode output to describe."),
                io.Int.Input("plan_num_frames", default=25, min=1, max=257, step=4, optional=True,
                             tooltip="Memory plan: frames per view, as set on the sampler."),
                advanced(io.Int.Input("plan_group_size", default=5, min=1, max=64, optional=True,
                                      tooltip="Memory plan: views per group, as set on the sampler.")),
                io.Int.Input("plan_width", default=720, min=16, max=4096, step=16, optional=True,
                             tooltip="Memory plan: picture width in pixels."),
                io.Int.Input("plan_height", default=480, min=16, max=4096, step=16, optional=True,
                             tooltip="Memory plan: picture height in pixels."),
                advanced(io.Boolean.Input("plan_cfg", default=True, optional=True,
                                          tooltip="Memory plan: guidance on (the sampler's cfg above 1).")),
                advanced(io.Boolean.Input("plan_low_memory", default=False, optional=True,
                                          tooltip="Memory plan: the sampler's low_memory switch.")),
            ],
            outputs=[io.String.Output(display_name="info", tooltip="The same summary as text.")],
        )

    @classmethod
    def execute(cls, model=None, model2d=None, vae=None, text=None, plan_num_frames=25, plan_group_size=5,
                plan_width=720, plan_height=480, plan_cfg=True, plan_low_memory=False):
        from .sampling import job_shape
        from .vram import vram_plan

        lines = [obj.describe() for obj in (model, model2d, vae, text) if obj is not None]
        latent_frames = (plan_num_frames - 1) // 4 + 1 + 1  # (F - 1) / 4 + 1 latent frames, plus the reference
        for m, views in ((model, plan_group_size), (model2d, 1)):
            if m is not None and getattr(m, "patcher", None) is not None:
                shape = job_shape(views, latent_frames, plan_height, plan_width, 6.0 if plan_cfg else 1.0,
                                  plan_low_memory)
                lines.append(vram_plan(m, vae, shape, plan_height, plan_width).text())
        summary = "\n".join(lines) if lines else "nothing connected"
        return io.NodeOutput(summary, ui=ui.PreviewText(summary))


NODES = [ModelLoader, Model2DLoader, VAELoader, TextEncode, ModelInfo]

"""Loader nodes through a real ComfyUI host, with a tiny checkpoint set written into its models folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.comfy_host import WorkflowError

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_models(comfy):
    from charactershot_core.models.tiny import make_tiny_set

    return make_tiny_set(str(comfy.models_dir), seed=0, views=5)


def _options(info: dict, node: str, name: str) -> list:
    spec = info[node]["input"]
    entry = spec.get("required", {}).get(name) or spec.get("optional", {}).get(name)
    return entry[0] if isinstance(entry[0], list) else entry[1]["options"]


def test_object_info_lists_the_checkpoints(comfy, tiny_models):
    info = comfy.object_info()
    ckpts = _options(info, "CharacterShotModelLoader", "checkpoint")
    for name in ("charactershot_tiny.safetensors", "charactershot_tiny_comfy.safetensors",
                 "charactershot_tiny_fp8.safetensors", "character2d_tiny.safetensors", "CharacterShot-tiny/",
                 "Character2D-tiny/"):
        assert name in ckpts, name
    cams = _options(info, "CharacterShotModelLoader", "camera")
    assert "charactershot_camera_tiny.safetensors" in cams and "CharacterShot-tiny/" in cams
    assert "Character2D-tiny/" not in cams
    vaes = _options(info, "CharacterShotVAELoader", "vae")
    assert "charactershot_vae_tiny.safetensors" in vaes and "CharacterShot-tiny/" in vaes
    t5 = _options(info, "CharacterShotTextEncode", "t5_folder")
    assert "CharacterShot-tiny/" in t5
    for node in ("CharacterShotModelLoader", "CharacterShot2DModelLoader", "CharacterShotVAELoader",
                 "CharacterShotTextEncode", "CharacterShotModelInfo"):
        assert info[node]["category"] == "CharacterShot/loaders"


def test_loader_workflow_runs(comfy, tiny_models):
    prompt = {
        "1": {"class_type": "CharacterShotModelLoader",
              "inputs": {"checkpoint": "CharacterShot-tiny/", "camera": "(from checkpoint folder)", "dtype": "fp32",
                         "weight_storage": "default", "text_mode": "faithful"}},
        "2": {"class_type": "CharacterShotModelLoader",
              "inputs": {"checkpoint": "charactershot_tiny_fp8.safetensors",
                         "camera": "charactershot_camera_tiny.safetensors", "dtype": "bf16",
                         "weight_storage": "fp8_e4m3fn", "text_mode": "per_sample"}},
        "3": {"class_type": "CharacterShot2DModelLoader",
              "inputs": {"checkpoint": "character2d_tiny.safetensors", "dtype": "auto"}},
        "4": {"class_type": "CharacterShotVAELoader",
              "inputs": {"vae": "charactershot_vae_tiny.safetensors", "dtype": "auto", "tiling": True,
                         "slicing": False}},
        "5": {"class_type": "CharacterShotTextEncode",
              "inputs": {"prompt": "a character dancing in the wind", "negative_prompt": "low quality",
                         "t5_folder": "CharacterShot-tiny/", "use_cache": True}},
        "6": {"class_type": "CharacterShotModelInfo",
              "inputs": {"model": ["1", 0], "model2d": ["3", 0], "vae": ["4", 0], "text": ["5", 0]}},
        "7": {"class_type": "CharacterShotModelInfo", "inputs": {"model": ["2", 0]}},
    }
    hist = comfy.run(prompt, timeout=240)
    text = hist["outputs"]["6"]["text"][0]
    assert "4D transformer: 2 blocks, 2x16 heads" in text and "fp32" in text
    assert "camera embeddings 5 views 64x96" in text
    assert "2D transformer: 2 blocks" in text and "fp32" in text  # auto on the CPU host
    assert "VAE: 4 latent channels" in text and "tiling on, slicing off" in text
    assert "embeddings [1, 226, 32]" in text and "from encoder" in text
    # the VRAM plan for the default job size (5 views x 25 frames at 720x480, CFG) on this device, both models
    assert text.count("VRAM plan") == 2 and "activation peak" in text and "decode peak" in text, text
    assert "job 5 views x 8 latent frames x 60x90 latents, CFG" in text and "no VRAM budget" in text
    text8 = hist["outputs"]["7"]["text"][0]
    assert "weights fp8_e4m3fn" in text8 and "bf16" in text8 and "text per_sample" in text8
    cache = list((comfy.user_dir / "charactershot" / "text_cache").glob("*.safetensors"))
    assert cache, "the text encoding was not cached on disk"


def test_bad_checkpoint_error_names_the_file(comfy, tiny_models):
    broken = Path(comfy.models_dir) / "diffusion_models" / "broken_download.safetensors"
    data = Path(tiny_models.single).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    prompt = {
        "1": {"class_type": "CharacterShotModelLoader",
              "inputs": {"checkpoint": "broken_download.safetensors",
                         "camera": "charactershot_camera_tiny.safetensors", "dtype": "fp32"}},
        "2": {"class_type": "CharacterShotModelInfo", "inputs": {"model": ["1", 0]}},
    }
    with pytest.raises(WorkflowError) as ei:
        comfy.run(prompt, timeout=120)
    msg = ei.value.message or ""
    assert "broken_download.safetensors" in msg and "truncated" in msg, msg
    assert msg.startswith("checkpoint:") or "checkpoint:" in msg
    # a 2D file given to the 4D loader
    prompt["1"]["inputs"]["checkpoint"] = "character2d_tiny.safetensors"
    with pytest.raises(WorkflowError) as ei:
        comfy.run(prompt, timeout=120)
    assert "character2d_tiny.safetensors" in ei.value.message and "2D Model Loader" in ei.value.message

"""Model loaders check their choice when a prompt is queued, through a real ComfyUI: a model that is not in the
models folders refuses the prompt at once (nothing runs), and the message names the download (the Hugging Face
repository) and the folder it goes in, with the server's real path."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _refusal(comfy, prompt: dict, key: str = "1") -> list[str]:
    status, body = comfy.queue(prompt)
    assert status == 400, body
    return [e["details"] for e in body["node_errors"][key]["errors"]]


@pytest.mark.parametrize("loader, value, repo, folder", [
    ("CharacterShotModelLoader", "CharacterShot/", "Gaojunyao/CharacterShot", "CharacterShot"),
    ("CharacterShot2DModelLoader", "Character2D/", "Gaojunyao/Character2D", "Character2D"),
    ("CharacterShotVAELoader", "CharacterShot/", "Gaojunyao/CharacterShot", "CharacterShot"),
])
def test_a_missing_model_is_refused_when_queued_naming_download_and_folder(comfy, loader, value, repo, folder):
    name = "vae" if loader == "CharacterShotVAELoader" else "checkpoint"
    out = {"CharacterShotModelLoader": "model", "CharacterShot2DModelLoader": "model2d",
           "CharacterShotVAELoader": "vae"}[loader]
    prompt = {"1": {"class_type": loader, "inputs": {name: value}},
              "2": {"class_type": "CharacterShotModelInfo", "inputs": {out: ["1", 0]}}}
    details = _refusal(comfy, prompt)
    assert len(details) == 1, details
    msg = details[0]
    assert msg.startswith(f"{name} - '{value}' is not in ComfyUI's models folders. Download "), msg
    assert f"https://huggingface.co/{repo}" in msg, msg
    assert f"models/charactershot/{folder}/" in msg, msg
    assert str(Path(comfy.models_dir) / "charactershot" / folder) in msg, msg
    assert "docs/checkpoints.md" in msg, msg


def test_a_missing_single_file_names_its_folder_and_nothing_is_checked_that_exists(comfy, tmp_path):
    prompt = {"1": {"class_type": "CharacterShotModelLoader",
                    "inputs": {"checkpoint": "charactershot_transformer_bf16.safetensors",
                               "camera": "charactershot_camera_pack.safetensors"}},
              "2": {"class_type": "CharacterShotModelInfo", "inputs": {"model": ["1", 0]}}}
    details = _refusal(comfy, prompt)
    # validate_inputs takes both inputs: ComfyUI reports its one message once per input it took
    assert details and all(d.split(" - ", 1)[1] == details[0].split(" - ", 1)[1] for d in details), details
    msg = details[0].split(" - ", 1)[1]
    assert "'charactershot_transformer_bf16.safetensors' is not in ComfyUI's models folders" in msg, msg
    named = msg.split("models/diffusion_models/ (", 1)[1].split(")", 1)[0]
    assert Path(named).name == "diffusion_models" and Path(named).is_dir(), msg
    # once the file is there, the checkpoint passes and the camera pack is the one named
    ckpt = Path(comfy.models_dir) / "diffusion_models" / "charactershot_transformer_bf16.safetensors"
    ckpt.write_bytes(b"not checked when queued")
    try:
        details = _refusal(comfy, prompt)
        msg = details[0].split(" - ", 1)[1]
        assert "'charactershot_camera_pack.safetensors' is not in ComfyUI's models folders" in msg, msg
        assert f"camera pack .safetensors into models/charactershot/ ({Path(comfy.models_dir) / 'charactershot'})" \
            in msg, msg
    finally:
        ckpt.unlink()


def test_the_text_encoder_folder_is_checked_only_when_chosen(comfy):
    prompt = {"1": {"class_type": "CharacterShotTextEncode",
                    "inputs": {"prompt": "smooth motion", "t5_folder": "CharacterShot/"}},
              "2": {"class_type": "CharacterShotModelInfo", "inputs": {"text": ["1", 0]}}}
    msg = _refusal(comfy, prompt)[0]
    assert msg.startswith("t5_folder - 'CharacterShot/' is not in ComfyUI's models folders"), msg
    assert "https://huggingface.co/Gaojunyao/CharacterShot" in msg and "t5xxl_fp16.safetensors" in msg, msg

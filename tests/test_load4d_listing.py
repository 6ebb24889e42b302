"""The Load 4D Gaussians list is built every time ComfyUI builds its node list (/object_info, on every page load), so
it must stay cheap: no file is opened (no safetensors header read) and no folder outside the pack's own
``charactershot/`` subfolders is looked into, however full the output folder is; the file chosen is checked when the
node runs.  Checked in a child process with ComfyUI's ``folder_paths`` and Python's audit hooks, which see every
``open`` and every directory listing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.comfy_host import REPO, comfyui_dir

CHILD = r'''
import json, os, sys, types
repo, comfy_dir, inp, out = sys.argv[1:5]
sys.path.insert(0, comfy_dir)
import folder_paths
folder_paths.set_input_directory(inp)
folder_paths.set_output_directory(out)
pkg = types.ModuleType("charshot_pack")
pkg.__path__ = [repo]
sys.modules["charshot_pack"] = pkg
import importlib
gaussians = importlib.import_module("charshot_pack.nodes.gaussians")

seen = {"open": [], "list": []}
watching = [False]


def hook(event, args):
    if not watching[0]:
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        seen["open"].append(os.fsdecode(args[0]))
    elif event in ("os.scandir", "os.listdir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        seen["list"].append(os.fsdecode(args[0]))


sys.addaudithook(hook)
watching[0] = True
names = gaussians.list_4d_files()
watching[0] = False
# listed by name, checked when the node runs: a LoRA in the list gives an error naming the input
try:
    gaussians.Load4DGaussians.execute("lora.safetensors")
    error = None
except Exception as e:  # noqa: BLE001 - reported to the test
    error = f"{type(e).__name__}: {e}"
print(json.dumps({"names": names, "error": error, **seen}))
'''


def _st(path, fmt):
    """A safetensors file whose header says ``fmt`` (the list must not read it to find out)."""
    import struct

    head = json.dumps({"__metadata__": {"format": fmt}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    head += " " * (-len(head) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(head)) + head.encode() + bytes(4))


def test_the_list_reads_no_file_and_stays_in_the_packs_folders(tmp_path):
    host = comfyui_dir()
    if not (host / "folder_paths.py").is_file():
        pytest.skip(f"no ComfyUI host at {host}")
    inp, out = tmp_path / "input", tmp_path / "output"
    # the pack's saves: weights + bundle, one level deeper, and a folder of frames beside them
    _st(out / "charactershot" / "4d_00001.safetensors", "charactershot-4dgs")
    (out / "charactershot" / "4d_00001_bundle.cs4d").write_bytes(b"CS4D")
    _st(out / "charactershot" / "hero" / "walk_00002.safetensors", "charactershot-4dgs")
    (out / "charactershot" / "multiview_00001" / "view00").mkdir(parents=True)
    (out / "charactershot" / "multiview_00001" / "view00" / "frame_00001.png").write_bytes(b"png")
    (out / "charactershot" / ".hidden").mkdir()
    _st(out / "charactershot" / ".hidden" / "x.safetensors", "charactershot-4dgs")
    # everything else in output/: never looked into
    for i in range(50):
        _st(out / "loras" / f"lora_{i}.safetensors", "pt")
        (out / f"ComfyUI_{i:05d}_.png").write_bytes(b"png")
    _st(out / "stray.safetensors", "charactershot-4dgs")
    (out / "project" / "charactershot").mkdir(parents=True)
    _st(out / "project" / "charactershot" / "deep.safetensors", "charactershot-4dgs")
    # input/: its top level and its charactershot/ folder
    _st(inp / "typed_in.safetensors", "charactershot-4dgs")
    _st(inp / "charactershot" / "mine.safetensors", "charactershot-4dgs")
    (inp / "charactershot" / "mine_bundle.cs4d").write_bytes(b"CS4D")
    _st(inp / "models" / "other.safetensors", "charactershot-4dgs")
    (inp / "photo.png").write_bytes(b"png")
    _st(inp / "lora.safetensors", "pt")  # another tool's weights: listed by name, refused when the node runs

    proc = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(host), str(inp), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])

    assert r["names"] == ["lora.safetensors", "typed_in.safetensors", "charactershot/mine.safetensors",
                          "charactershot/mine_bundle.cs4d",
                          "charactershot/4d_00001.safetensors [output]", "charactershot/4d_00001_bundle.cs4d [output]",
                          "charactershot/hero/walk_00002.safetensors [output]"]
    opened = [p for p in r["open"] if p.startswith(str(tmp_path))]
    assert opened == [], f"the list opened files: {opened[:5]}"
    listed = sorted({p.rstrip("/") for p in r["list"]})
    allowed = {str(inp), str(inp / "charactershot"), str(out / "charactershot"), str(out / "charactershot" / "hero"),
               str(out / "charactershot" / "multiview_00001")}
    assert set(listed) <= allowed, sorted(set(listed) - allowed)
    assert str(out) not in listed and str(out / "charactershot") in listed
    assert r["error"].startswith("InputError: file: lora.safetensors is not a CharacterShot 4D Gaussians file"), r

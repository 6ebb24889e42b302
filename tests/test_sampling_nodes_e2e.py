"""Sampling nodes through a real ComfyUI host with tiny checkpoints: loaders -> text -> multi-view sampler -> save
-> Fit 4D Gaussians; the 2D path; reuse of finished groups on a rerun; /interrupt keeps finished groups."""

from __future__ import annotations

import io
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.comfy_host import WorkflowError
from tests.tiny_models import F, H, W, install

pytestmark = pytest.mark.e2e

STEPS = 2


@pytest.fixture(scope="module")
def tiny(comfy, tmp_path_factory):
    install(comfy, tmp_path_factory.mktemp("tiny_sampling"))


def _graph(seed=7, **sampler):
    return {
        "1": {"class_type": "CharacterShotModelLoader",
              "inputs": {"checkpoint": "CharacterShot-tiny21/", "dtype": "fp32"}},
        "2": {"class_type": "CharacterShotVAELoader", "inputs": {"vae": "CharacterShot-tiny21/", "dtype": "fp32"}},
        "3": {"class_type": "CharacterShotTextEncode",
              "inputs": {"prompt": "smooth motion or in the wind", "t5_folder": "CharacterShot-tiny21/"}},
        "4": {"class_type": "CharacterShotCameraRig",
              "inputs": {"preset": "custom_orbit", "num_views": 9, "radius": 3.5, "elevation": 0.0,
                         "look_at_height": 0.7, "fov": 39.6, "start_azimuth": 0.0, "direction": "counterclockwise",
                         "width": W, "height": H}},
        "5": {"class_type": "CharacterShotLoadMultiView", "inputs": {"source": "samp_views/", "cameras": ["4", 0]}},
        "6": {"class_type": "CharacterShotLoadPoseKeypoints", "inputs": {"json_file": "samp_drv.json"}},
        "7": {"class_type": "CharacterShotLoadPoseKeypoints", "inputs": {"json_file": "samp_ref.json"}},
        "8": {"class_type": "CharacterShotPoseFromKeypoints",
              "inputs": {"driving_pose": ["6", 0], "reference_pose": ["7", 0], "num_frames": F, "retarget": True,
                         "width": W, "height": H}},
        "9": {"class_type": "CharacterShotMultiViewSampler",
              "inputs": {"model": ["1", 0], "vae": ["2", 0], "text": ["3", 0], "views": ["5", 1],
                         "pose_frames": ["8", 0], "reference_pose": ["8", 1], "cameras": ["4", 0], "seed": seed,
                         "steps": STEPS, "cfg": 6.0, "scheduler": "dpm", "num_frames": F, **sampler}},
        "10": {"class_type": "CharacterShotSaveMultiView",
               "inputs": {"multiview": ["9", 0], "filename_prefix": f"samp/mv_{seed}"}},
    }


def _progress(events, node):
    return [e["data"]["value"] for e in events if e.get("type") == "progress" and e["data"].get("node") == node]


def _text(hist, node):
    return "\n".join(hist["outputs"][node].get("text", []))


def test_multiview_sampler_save_fit_and_reuse(comfy, tiny):
    prompt = _graph()
    prompt["11"] = {"class_type": "CharacterShotFit4DGaussians",
                    "inputs": {"multiview": ["9", 0], "iterations": 3, "seconds": 0.0, "initial_gaussians": 300,
                               "preview_every": 0}}
    prompt["12"] = {"class_type": "CharacterShotSave4DGaussians",
                    "inputs": {"gaussians": ["11", 0], "filename_prefix": "samp/g", "save_bundle": False,
                               "save_weights": False}}
    hist = comfy.run(prompt, timeout=600)
    assert hist["status"]["status_str"] == "success"
    text = _text(hist, "9")
    assert "9 views x 9 frames at 96x64; groups sampled [0, 1], reused none" in text
    assert "not the official 21-view orbit" in text  # a custom rig with the official embeddings warns
    assert max(_progress(comfy.events, "9")) == 2 * STEPS
    assert any(e.get("type") == "binary" for e in comfy.events), "latent previews were sent"
    # the saved layout: viewXX/frame_XXXXX.png + cameras.json, readable by the 4D stage
    saved = sorted((comfy.output_dir / "samp").glob("mv_7_*"))
    assert len(saved) == 1
    folder = saved[0]
    assert sorted(p.name for p in folder.iterdir()) == ["cameras.json"] + [f"view{v:02d}" for v in range(9)]
    assert sorted(p.name for p in (folder / "view08").iterdir()) == [f"frame_{i:05d}.png" for i in range(1, F + 1)]
    cams = json.loads((folder / "cameras.json").read_text())
    assert len(cams["times"]) == F
    first = [np.asarray(Image.open(folder / f"view{v:02d}" / "frame_00005.png")) for v in range(9)]
    assert all(im.shape == (H, W, 3) for im in first)
    imgs = hist["outputs"]["10"]["images"]
    assert len(imgs) == 9 and imgs[0]["subfolder"].endswith("/view00")
    assert any(f.endswith(".ply") for f in (x["filename"] for x in hist["outputs"]["12"]["charshot_4d"]))

    # a rerun with a changed node input that does not change the numbers reuses both finished groups
    prompt2 = _graph(low_memory=True)
    prompt2["10"]["inputs"]["filename_prefix"] = "samp/mv_again"
    hist2 = comfy.run(prompt2, timeout=600)
    assert "groups sampled none, reused [0, 1]" in _text(hist2, "9")
    assert _progress(comfy.events, "9") == [] or max(_progress(comfy.events, "9")) <= 1
    again = sorted((comfy.output_dir / "samp").glob("mv_again_*"))[0]
    for v in range(9):
        assert (again / f"view{v:02d}" / "frame_00005.png").read_bytes() == \
            (folder / f"view{v:02d}" / "frame_00005.png").read_bytes()
    # and the saved folder loads back as the same multi-view video
    shutil.copytree(folder, comfy.input_dir / "samp_saved")
    back = {"1": {"class_type": "CharacterShotLoadMultiView", "inputs": {"source": "samp_saved/"}},
            "2": {"class_type": "CharacterShotSaveMultiView",
                  "inputs": {"multiview": ["1", 0], "filename_prefix": "samp/back"}}}
    comfy.run(back, timeout=120)
    round_trip = sorted((comfy.output_dir / "samp").glob("back_*"))[0]
    assert (round_trip / "view03" / "frame_00009.png").read_bytes() == \
        (folder / "view03" / "frame_00009.png").read_bytes()


def test_interrupt_keeps_finished_groups(comfy, tiny):
    prompt = _graph(seed=8)
    sent = {}

    def on_event(msg):
        d = msg.get("data", {})
        if msg.get("type") == "progress" and d.get("node") == "9" and d["value"] > STEPS and not sent:
            sent["at"] = d["value"]
            comfy.interrupt()

    with pytest.raises(WorkflowError) as err:
        comfy.run(prompt, timeout=600, on_event=on_event)
    assert "interrupted" in err.value.message.lower()
    seen = _progress(comfy.events, "9")
    assert sent and max(seen) <= sent["at"] + 1, "stopped within one step of the interrupt"
    assert "finished view groups are kept" in comfy.log_text()
    hist = comfy.run(prompt, timeout=600)
    assert "groups sampled [1], reused [0]" in _text(hist, "9")


def test_animate_2d(comfy, tiny):
    prompt = _graph()
    for k in ("1", "4", "5", "9", "10"):
        prompt.pop(k)
    prompt["11"] = {"class_type": "CharacterShot2DModelLoader",
                    "inputs": {"checkpoint": "Character2D-tiny21/", "dtype": "fp32"}}
    prompt["12"] = {"class_type": "LoadImage", "inputs": {"image": "samp_view0.png"}}
    prompt["13"] = {"class_type": "CharacterShotAnimate2D",
                    "inputs": {"model2d": ["11", 0], "vae": ["2", 0], "text": ["3", 0], "image": ["12", 0],
                               "pose_frames": ["8", 0], "reference_pose": ["8", 1], "seed": 3, "steps": STEPS,
                               "cfg": 6.0, "scheduler": "ddim", "num_frames": F}}
    prompt["14"] = {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "samp/anim"}}
    hist = comfy.run(prompt, timeout=600)
    imgs = hist["outputs"]["14"]["images"]
    assert len(imgs) == F
    im = Image.open(io.BytesIO(comfy.view(imgs[0]["filename"], imgs[0]["subfolder"], imgs[0]["type"])))
    assert im.size == (W, H)
    # bad inputs are named
    wrong = _graph()
    wrong["9"]["inputs"]["num_frames"] = 13
    with pytest.raises(WorkflowError) as e:
        comfy.run(wrong, timeout=120)
    assert "pose_frames: 9 pose frames given but num_frames is 13" in e.value.message
    rig21 = _graph()
    rig21["9"]["inputs"]["cameras"] = ["15", 0]
    rig21["15"] = {"class_type": "CharacterShotCameraRig", "inputs": dict(rig21["4"]["inputs"], num_views=21)}
    with pytest.raises(WorkflowError) as e:
        comfy.run(rig21, timeout=120)
    assert "views: 9 view images but the camera rig has 21 views" in e.value.message


def test_a_subset_of_groups_gives_their_views(comfy, tiny):
    """One ComfyUI (or one ComfyUI-Distributed worker) per group index: the outputs hold that group's views."""
    prompt = _graph(groups="1")
    prompt["10"]["inputs"]["filename_prefix"] = "samp/group1"
    hist = comfy.run(prompt, timeout=600)
    assert "5 views x 9 frames" in _text(hist, "9")
    saved = sorted((comfy.output_dir / "samp").glob("group1_*"))[0]
    cams = json.loads((saved / "cameras.json").read_text())
    assert len(cams["views"]) == 5 and sorted(p.name for p in saved.glob("view*")) == [f"view{v:02d}" for v in range(5)]
    bad = _graph(groups="0, 7")
    with pytest.raises(WorkflowError) as e:
        comfy.run(bad, timeout=120)
    assert "groups: group indices [7] out of range: the job has 2 groups" in e.value.message


def _ray_config(comfy, data):
    """The server owner's Ray configuration file (read by the node at every run); None removes it."""
    path = comfy.user_dir / "__charactershot" / "ray.json"
    if data is None:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))


@pytest.fixture
def ray_config(comfy):
    yield lambda data: _ray_config(comfy, data)
    _ray_config(comfy, None)


def _submit_children(pid):
    """Processes under ``pid`` that run the Ray driver module."""
    found, todo = [], [pid]
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append((int(stat.parent.name), cmd))
    while todo:
        for child, cmd in children.get(todo.pop(), []):
            todo.append(child)
            if "charactershot_core.distributed.submit" in cmd:
                found.append(cmd)
    return found


def test_an_old_ray_address_connects_nowhere(comfy, tiny, ray_config):
    """The removed ray_address input (old API prompts and saved workflows): any value is refused with a named
    error, typed (refused when queued) or linked (refused before the node does anything); the address's socket sees
    no connection and no Ray driver child starts, even on a server whose owner enabled Ray."""
    ray_config({"local": True})
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        for execution in ("here", "ray local"):
            typed = _graph(groups="1", reuse_finished=False, ray_address=address, execution=execution)
            with pytest.raises(WorkflowError) as e:
                comfy.run(typed, timeout=60)
            assert e.value.status == 400
            details = [err["details"] for err in e.value.body["node_errors"]["9"]["errors"]]
            assert details == [details[0]] and details[0].startswith(
                "ray_address - this input is no longer used and must be empty: a workflow cannot choose the machine "
                "the server connects to"), details
        linked = _graph(groups="1", reuse_finished=False, ray_address=["20", 0], execution="ray local")
        linked["20"] = {"class_type": "PrimitiveString", "inputs": {"value": address}}
        with pytest.raises(WorkflowError) as e:
            comfy.run(linked, timeout=300)
        assert e.value.message.startswith("ray_address: this input is no longer used"), e.value.message
        assert not _progress(e.value.events, "9"), "the sampler did not start"
        listener.settimeout(0.5)
        with pytest.raises(socket.timeout):
            conn, peer = listener.accept()
            conn.close()
            pytest.fail(f"the server connected to the address of the workflow (from {peer})")
    assert _submit_children(comfy.proc.pid) == []


def test_an_unconfigured_server_refuses_ray(comfy, tiny, ray_config):
    ray_config(None)
    with pytest.raises(WorkflowError) as e:
        comfy.run(_graph(groups="1", execution="ray"), timeout=300)
    assert e.value.message.startswith(
        "execution: 'ray' sends the view groups to the Ray cluster configured by the server's owner, and this "
        "server has none. The owner enables it by starting ComfyUI with CHARSHOT_RAY_ADDRESS=HEAD_HOST:6379 in its "
        'environment, or by writing {"address": "HEAD_HOST:6379"} to __charactershot/ray.json in ComfyUI\'s user '
        "directory"), e.value.message
    ray_config({"address": "10.0.0.5:6379"})  # a cluster, but no local Ray
    with pytest.raises(WorkflowError) as e:
        comfy.run(_graph(groups="1", execution="ray local"), timeout=300)
    assert e.value.message.startswith("execution: 'ray local' starts a Ray with actors on this server's machine, "
                                      "which the server's owner has not allowed"), e.value.message
    ray_config({"adress": "10.0.0.5:6379"})
    with pytest.raises(WorkflowError) as e:
        comfy.run(_graph(groups="1", execution="ray"), timeout=300)
    assert "ray.json: unknown key(s) ['adress']" in e.value.message
    assert _submit_children(comfy.proc.pid) == []


def test_groups_on_a_configured_local_ray_equal_the_local_run(comfy, tiny, ray_config):
    """execution='ray local' on a server whose owner allows it: the group goes to a Ray actor through a
    child-process driver (Ray never starts in the server) and comes back byte-identical to the in-process run."""
    pytest.importorskip("ray")
    ray_config({"local": True})
    here = _graph(groups="1")
    here["10"]["inputs"]["filename_prefix"] = "samp/here"
    comfy.run(here, timeout=600)
    remote = _graph(groups="1", reuse_finished=False, execution="ray local")
    remote["10"]["inputs"]["filename_prefix"] = "samp/ray"
    hist = comfy.run(remote, timeout=900)
    assert "groups sampled [1], reused none" in _text(hist, "9")
    assert "ray: 1 actor(s) ready" in comfy.log_text()
    a = sorted((comfy.output_dir / "samp").glob("here_*"))[0]
    b = sorted((comfy.output_dir / "samp").glob("ray_*"))[0]
    for v in range(5):
        for i in (1, F):
            name = f"view{v:02d}/frame_{i:05d}.png"
            assert (a / name).read_bytes() == (b / name).read_bytes(), name

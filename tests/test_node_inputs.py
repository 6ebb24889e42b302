"""What every node shows an artist: expert inputs marked advanced (front-ends 1.58+ fold them behind "Show advanced
inputs"; older ones show them as before), at most about eight inputs in view, and a tooltip on every input that says
what it changes, in an artist's words.

The node definitions are read the way ComfyUI serves them (``INPUT_TYPES``, what ``/object_info`` sends), in a child
process with the host on its path (its top-level modules such as ``nodes`` would shadow the pack's here). Links
(IMAGE, CHARSHOT_..., ...) are always in view: front-ends fold only widgets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.comfy_host import REPO, comfyui_dir

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MAX_IN_VIEW = 8
# nodes allowed more than MAX_IN_VIEW inputs in view: the count is exact, so it cannot grow unnoticed
EXCEPTIONS = {
    "CharacterShotMultiViewSampler": (9, ("seven links it cannot run without (model, vae, text, views, "
                                          "pose_frames, reference_pose) or that choose the rig (cameras), plus "
                                          "seed and steps")),
}
ENGINEER_WORDS = ("official code", "a fix", "as officially", "the fix", "ModelPatcher", "diffusers", "dtype of")

DUMP = r"""
import importlib.util, json, os, sys
repo, host = sys.argv[1], sys.argv[2]
sys.path.insert(0, host)
sys.argv = sys.argv[:1]
spec = importlib.util.spec_from_file_location("charactershot", os.path.join(repo, "__init__.py"),
                                              submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec)
sys.modules["charactershot"] = pack
spec.loader.exec_module(pack)
from charactershot.nodes import all_nodes
out = {}
for cls in all_nodes():
    schema = cls.define_schema()
    served = cls.INPUT_TYPES()
    inputs = []
    for group in ("required", "optional"):
        for name, spec in served.get(group, {}).items():
            io_type, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            inputs.append({"name": name, "type": io_type if isinstance(io_type, str) else "COMBO",
                           "advanced": bool(opts.get("advanced")), "tooltip": opts.get("tooltip") or "",
                           "force_input": bool(opts.get("forceInput"))})
    order = [i.id for i in schema.inputs]
    inputs.sort(key=lambda i: order.index(i["name"]))
    out[schema.node_id] = inputs
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def nodes() -> dict[str, list[dict]]:
    proc = subprocess.run([sys.executable, "-c", DUMP, str(REPO), str(comfyui_dir())], cwd=str(REPO),
                          capture_output=True, text=True, timeout=300, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("JSON")), None)
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[4:])


def in_view(inputs: list[dict]) -> list[str]:
    """The inputs a front-end that folds advanced widgets still shows: every link, and every widget not marked."""
    return [i["name"] for i in inputs
            if i["type"] not in WIDGET_TYPES or i["force_input"] or not i["advanced"]]


def test_every_node_keeps_about_eight_inputs_in_view(nodes):
    assert len(nodes) >= 20, sorted(nodes)
    too_many = {}
    for node_id, inputs in nodes.items():
        shown = in_view(inputs)
        if node_id in EXCEPTIONS:
            assert len(shown) == EXCEPTIONS[node_id][0], (node_id, shown)
        elif len(shown) > MAX_IN_VIEW:
            too_many[node_id] = shown
    assert not too_many, too_many


def test_the_sampler_and_the_fit_show_their_basic_inputs_only(nodes):
    assert in_view(nodes["CharacterShotMultiViewSampler"]) == [
        "model", "vae", "text", "views", "pose_frames", "reference_pose", "seed", "steps", "cameras"]
    assert in_view(nodes["CharacterShotFit4DGaussians"]) == ["multiview", "iterations", "seconds", "scale",
                                                           "initial_splat"]
    folded = {i["name"] for i in nodes["CharacterShotFit4DGaussians"] if i["advanced"]}
    assert {"sh_degree", "batch_views", "initial_gaussians", "neighbour_weight", "rigidity_weight", "densify",
            "backend", "seed", "preview_every", "motion_model", "background_estimate", "appearance_correction",
            "camera_refinement", "robust_loss", "repair_lost_parts", "colour_field"} == folded


def test_only_widgets_are_marked_advanced(nodes):
    """A link marked advanced would still be drawn by every front-end: the flag would promise what it does not do."""
    marked_links = [(n, i["name"]) for n, inputs in nodes.items() for i in inputs
                    if i["advanced"] and i["type"] not in WIDGET_TYPES]
    assert not marked_links, marked_links


def test_every_input_has_a_tooltip_for_artists(nodes):
    missing, short, technical = [], [], []
    for node_id, inputs in nodes.items():
        for i in inputs:
            tip = i["tooltip"]
            if not tip:
                missing.append((node_id, i["name"]))
            elif len(tip.split()) < 5:
                short.append((node_id, i["name"], tip))
            if any(w.lower() in tip.lower() for w in ENGINEER_WORDS):
                technical.append((node_id, i["name"], tip))
    assert not missing, missing
    assert not short, short
    assert not technical, technical

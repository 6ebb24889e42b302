"""Finished view groups survive a restart of ComfyUI: a real 0.3.75 server samples with tiny checkpoints, is
stopped, and a new server on the same folders reuses every group without calling the transformer once, with a
byte-identical result; CharacterShot Clear Cached Groups then reports and removes them.

The transformer calls are counted outside the pack: a probe module in the host's custom_nodes folder registers a
global torch forward hook (every ``nn.Module`` call in the server process) and serves the count over HTTP."""

from __future__ import annotations

import filecmp
import json

import pytest

from charactershot_core.sampling.store import COMFY_STORE
from tests.comfy_host import ComfyHost
from tests.test_sampling_nodes_e2e import _graph, _text
from tests.tiny_models import install

pytestmark = pytest.mark.e2e

PROBE = '''
import torch
from aiohttp import web
from server import PromptServer

CALLS = {}


def _count(module, args):
    for cls in type(module).__mro__:
        if cls.__name__ in ("CharacterShotTransformer4D", "CogVideoXTransformer3DModel"):
            CALLS[cls.__name__] = CALLS.get(cls.__name__, 0) + 1
            break


torch.nn.modules.module.register_module_forward_pre_hook(_count)


@PromptServer.instance.routes.get("/charshot_probe/calls")
async def calls(request):
    return web.json_response(CALLS)


NODE_CLASS_MAPPINGS = {}
'''


def _calls(host) -> dict:
    return host.get_json("/charshot_probe/calls")


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_finished_groups_survive_a_restart(tmp_path_factory):
    root = tmp_path_factory.mktemp("restart")
    (root / "custom_nodes").mkdir()
    (root / "custom_nodes" / "charshot_call_probe.py").write_text(PROBE)
    store = root.joinpath("user", *COMFY_STORE)

    first = ComfyHost(root=root)
    try:
        first.start()
        install(first, tmp_path_factory.mktemp("tiny_restart"))
        prompt = _graph(seed=21)
        prompt["10"]["inputs"]["filename_prefix"] = "restart/before"
        hist = first.run(prompt, timeout=600)
        assert "groups sampled [0, 1], reused none" in _text(hist, "9")
        before_calls = _calls(first)
        assert before_calls.get("CharacterShotTransformer4D", 0) > 0, before_calls  # the probe sees real calls
        spec = first.object_info("CharacterShotMultiViewSampler")["CharacterShotMultiViewSampler"]
        tip = spec["input"]["optional"]["reuse_finished"][1]["tooltip"]
        assert str(store) in tip, tip  # the tooltip says where the groups are
    finally:
        first.stop()
    groups = sorted(p.name for p in store.iterdir())
    assert len(groups) == 2, groups
    kept = {g: _files(store / g) for g in groups}
    temp = first.temp_dir / "temp"  # ComfyUI's temp folder is <--temp-directory>/temp
    assert temp.is_dir()
    (temp / "marker").write_text("ComfyUI empties its temp folder at every start")

    second = ComfyHost(root=root)
    try:
        second.start()
        assert not (temp / "marker").exists()  # the folder the groups used to be kept in
        prompt = _graph(seed=21)
        prompt["10"]["inputs"]["filename_prefix"] = "restart/after"
        hist = second.run(prompt, timeout=600)
        assert "groups sampled none, reused [0, 1]" in _text(hist, "9")
        assert _calls(second) == {}, "the transformer ran although every group was stored"
        a = next((root / "output" / "restart").glob("before_*"))
        b = next((root / "output" / "restart").glob("after_*"))
        names = _files(a)
        assert names == _files(b) and "cameras.json" in names and len(names) == 1 + 9 * 9
        _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
        assert mismatch == [] and errors == [], mismatch + errors
        assert {g: _files(store / g) for g in sorted(p.name for p in store.iterdir())} == kept

        # the size readout and the way to clear them
        report = {"1": {"class_type": "CharacterShotClearCachedGroups", "inputs": {"dry_run": True}}}
        text = _text(second.run(report, timeout=120), "1")
        assert f"{store} holds 2 finished view groups" in text and "dry run: nothing removed" in text, text
        assert sorted(p.name for p in store.iterdir()) == groups
        report["1"]["inputs"] = {"dry_run": False, "older_than_days": 0.0}
        text = _text(second.run(report, timeout=120), "1")
        assert f"{store} lost 2 finished view groups" in text and "freed" in text, text
        assert list(store.iterdir()) == []
        # a cleared group is sampled again
        prompt = _graph(seed=21, groups="1")
        prompt["10"]["inputs"]["filename_prefix"] = "restart/again"
        hist = second.run(prompt, timeout=600)
        assert "groups sampled [1], reused none" in _text(hist, "9")
        assert _calls(second).get("CharacterShotTransformer4D", 0) > 0
    finally:
        second.stop()
    assert second.import_failure() is None
    assert json.loads((store / next(iter(store.iterdir())).name / "group.json").read_text())["index"] == 1

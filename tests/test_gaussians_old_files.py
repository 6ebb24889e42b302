"""Files written by earlier versions of the pack still load: 4D weights (``.safetensors``, format
``charactershot-4dgs`` version 1; trajectory-table and HexPlane motion) and a ``.cs4d`` bundle, all written by the pack
before the 4D package was split into ``model/``, ``formats/``, ``evaluation/`` and ``synthetic/``
(tests/fixtures/gaussians_v1/). ``baked_v1.safetensors`` holds what that version baked from the weights
(``baked(t)`` at the times in its metadata): the current code must bake the same numbers. Neither file names a
Python module or class, so no loader by module path is involved."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from charactershot_core.gaussians.formats import read_bundle
from charactershot_core.gaussians.model import FORMAT, Gaussians4D

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "gaussians_v1")


def _baked_reference(name: str):
    with safe_open(os.path.join(HERE, "baked_v1.safetensors"), framework="pt") as f:
        t = float(f.metadata()[f"{name}_t"])
        return t, {k.split(".", 1)[1]: f.get_tensor(k) for k in f.keys() if k.startswith(name + ".")}


@pytest.mark.parametrize("name,motion", [("table", "table"), ("hexplane", "hexplane")])
def test_old_weights_load_and_bake_the_same_gaussians(name, motion):
    path = os.path.join(HERE, f"{name}_v1.safetensors")
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT and meta["version"] == "1"
    assert "module" not in json.dumps(meta)  # nothing refers to a Python module path
    model = Gaussians4D.load(path)
    assert model.motion == motion and model.num_gaussians == 60 and model.times == [0.0, 0.5, 1.0]
    t, ref = _baked_reference(name)
    with torch.no_grad():
        baked = model.baked(t)
    assert set(baked) == set(ref)
    for k, v in ref.items():
        assert torch.allclose(baked[k], v, rtol=1e-6, atol=1e-7), k


def test_old_bundle_reads_and_matches_the_old_weights():
    b = read_bundle(os.path.join(HERE, "table_v1_bundle.cs4d"))
    assert b["header"]["version"] == 1 and b["times"] == [0.0, 0.25, 0.5, 1.0]
    pos = b["frames"]["positions"]
    assert pos.shape == (4, 60, 3) and b["static"]["sh_rest"].shape == (60, 3, 3)
    model = Gaussians4D.load(os.path.join(HERE, "table_v1.safetensors"))
    with torch.no_grad():
        want = np.stack([model.means_at(t).numpy() for t in b["times"]])
    extent = float(np.ptp(want.reshape(-1, 3), axis=0).max())
    assert np.abs(pos - want).max() <= extent * 2.0 ** -14 + 1e-6  # within the default 14-bit quantisation

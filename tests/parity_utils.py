"""Reading the parity fixtures (official CharacterShot code, tiny random weights; see ../shared/parity/README.md).

Everything comes from the fixture folder: sizes and configs from its config.json, weights in official key names,
inputs and expected tensors.  Nothing here knows the values of any particular fixture.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
FIXTURE_FILES = ("config.json", "inputs.safetensors", "expected.safetensors")


def parity_root() -> Path:
    return Path(os.environ.get("CHARSHOT_PARITY_DIR", REPO.parent / "shared" / "parity"))


def fixture_names() -> List[str]:
    """Sub-folders of the parity root that hold a config.json (sorted); empty if the root is missing."""
    root = parity_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())


@dataclass
class Fixture:
    name: str
    path: Path
    config: dict
    inputs: Dict[str, torch.Tensor]
    expected: Dict[str, torch.Tensor]
    _weights: Dict[str, Dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def weights(self, stem: str) -> Dict[str, torch.Tensor]:
        """State dict of ``<stem>.safetensors`` (official key names), cached."""
        if stem not in self._weights:
            f = self.path / f"{stem}.safetensors"
            if not f.is_file():
                raise FileNotFoundError(f"parity fixture {self.name}: {f.name} is missing")
            self._weights[stem] = load_file(str(f))
        return self._weights[stem]

    def expected_tensor(self, key: str) -> torch.Tensor:
        if key not in self.expected:
            raise KeyError(f"parity fixture {self.name}: expected.safetensors has no '{key}' "
                           f"(has {sorted(self.expected)})")
        return self.expected[key]

    def input_tensor(self, key: str) -> torch.Tensor:
        if key not in self.inputs:
            raise KeyError(f"parity fixture {self.name}: inputs.safetensors has no '{key}' (has {sorted(self.inputs)})")
        return self.inputs[key]


_CACHE: Dict[str, Fixture] = {}


def load_fixture(folder) -> Fixture:
    """Load one fixture folder (a name under :func:`parity_root` or a path)."""
    path = Path(folder)
    if not path.is_absolute() and not path.is_dir():
        path = parity_root() / str(folder)
    key = str(path.resolve())
    if key in _CACHE:
        return _CACHE[key]
    missing = [f for f in FIXTURE_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"parity fixture {path}: missing {', '.join(missing)}")
    fx = Fixture(name=path.name, path=path, config=json.loads((path / "config.json").read_text()),
                 inputs=load_file(str(path / "inputs.safetensors")),
                 expected=load_file(str(path / "expected.safetensors")))
    _CACHE[key] = fx
    return fx


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if tuple(a.shape) != tuple(b.shape):
        raise AssertionError(f"shape mismatch: got {tuple(a.shape)}, expected {tuple(b.shape)}")
    return (a.detach().double() - b.detach().double()).abs().max().item()


def without_pos_embedding(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The official state dict minus the unused ``patch_embed.pos_embedding`` buffer (and only that)."""
    return {k: v for k, v in sd.items() if k != "patch_embed.pos_embedding"}

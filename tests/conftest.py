"""Shared fixtures: the real ComfyUI host (one server per test session) and paths to the reference data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.comfy_host import REPO, ComfyHost

SHARED = Path(os.environ.get("CHARSHOT_SHARED_DIR", REPO.parent / "shared"))


def pytest_configure(config):
    # keep CPU tests deterministic and polite on small CI machines
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def example_dir() -> Path:
    d = SHARED / "fixtures" / "charactershot_example"
    if not d.is_dir():
        pytest.skip(f"reference fixtures not found at {d}")
    return d


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI 0.3.75 (or COMFYUI_DIR) serving this checkout as a custom-node pack."""
    host = ComfyHost(root=tmp_path_factory.mktemp("comfyui"))
    try:
        host.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield host
    host.stop()
    failure = host.import_failure()
    assert failure is None, failure

"""Shared fixtures: the real ComfyUI host (one server per test session) and paths to the reference data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.comfy_host import NEWEST_FRONTEND, REPO, ComfyHost, newest_frontend_root

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


def _serve(tmp_path_factory, name: str, extra_args: list[str] | None = None):
    """Start a ComfyHost for the session, hand it to the tests, stop it and check the pack never failed to import."""
    host = ComfyHost(root=tmp_path_factory.mktemp(name), extra_args=extra_args)
    try:
        host.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield host
    host.stop()
    failure = host.import_failure()
    assert failure is None, failure


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI 0.3.75 (or COMFYUI_DIR) serving this checkout as a custom-node pack."""
    yield from _serve(tmp_path_factory, "comfyui")


@pytest.fixture(scope="session")
def comfy_newest(tmp_path_factory):
    """A second server of the same host with the newest front-end (NEWEST_FRONTEND, ``--front-end-root``): only the
    browser tests use it, to run the widget on both front-ends."""
    root = newest_frontend_root()
    if not (root / "index.html").is_file():
        pytest.fail(f"front-end {NEWEST_FRONTEND} is not installed at {root}: run scripts/setup.sh", pytrace=False)
    yield from _serve(tmp_path_factory, "comfyui-newest", ["--front-end-root", str(root)])

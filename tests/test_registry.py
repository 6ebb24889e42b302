"""The Comfy Registry's own check: ``comfy node validate`` (comfy-cli, the publishing tool) passes with no warning.

It parses pyproject.toml and runs ruff's exec/eval/one-line-statements rules (S102, S307, E702) over the pack;
today those are warnings that "will soon be an error", so any warning fails here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.comfy_host import REPO


def _comfy_cli() -> list[str]:
    exe = Path(sys.executable).with_name("comfy")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("comfy")
    if found:
        return [found]
    pytest.fail("comfy-cli is not installed: it is a test dependency (requirements-dev.txt); run scripts/setup.sh")


def test_comfy_node_validate_passes_without_warnings(tmp_path):
    pytest.importorskip("ruff", reason="ruff is needed by comfy node validate (requirements-dev.txt)")
    # its own config (tracking consent) goes to a private folder; --skip-prompt never waits for input
    env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"), NO_COLOR="1")
    proc = subprocess.run([*_comfy_cli(), "--skip-prompt", "--no-json", "node", "validate"], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "All validation checks passed" in out, out
    assert "warning" not in out.lower(), out

"""The test harness starts ComfyUI only with flags the host's own argument parser defines (issue 13): newer ComfyUI
renamed ``--disable-api-nodes`` to ``--offline`` (the old name is a deprecated alias there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.comfy_host import ComfyHost, comfyui_dir, host_flags

BASE = ["--cpu", "--listen", "--port", "--disable-auto-launch", "--database-url", "--output-directory",
        "--input-directory", "--temp-directory", "--user-directory", "--extra-model-paths-config"]


def _fake_host(tmp_path: Path, flags: list[str]) -> Path:
    host = tmp_path / "host"
    (host / "comfy").mkdir(parents=True)
    (host / "comfy" / "cli_args.py").write_text(
        "import argparse\nparser = argparse.ArgumentParser()\n"
        + "".join(f'parser.add_argument("{f}", action="store_true", help="x")\n' for f in flags))
    return host


def _flags(cmd: list[str]) -> list[str]:
    return [a for a in cmd[2:] if a.startswith("--")]


def test_the_bundled_host_gets_only_flags_it_defines(tmp_path):
    host = comfyui_dir()
    if not (host / "comfy" / "cli_args.py").is_file():
        pytest.skip(f"no ComfyUI at {host}")
    accepted = host_flags(host)
    assert "--cpu" in accepted and "--front-end-root" in accepted
    cmd = ComfyHost(root=tmp_path).command(host, tmp_path / "x.yaml")
    assert set(_flags(cmd)) <= accepted
    assert ("--offline" in cmd) == ("--offline" in accepted)
    assert ("--disable-api-nodes" in cmd) == ("--offline" not in accepted and "--disable-api-nodes" in accepted)


def test_a_newer_host_gets_offline_not_the_deprecated_alias(tmp_path):
    host = _fake_host(tmp_path, BASE + ["--offline", "--disable-api-nodes", "--disable-partner-nodes"])
    cmd = ComfyHost(root=tmp_path).command(host, tmp_path / "x.yaml")
    assert "--offline" in cmd and "--disable-api-nodes" not in cmd


def test_the_0_3_75_host_gets_disable_api_nodes(tmp_path):
    host = _fake_host(tmp_path, BASE + ["--disable-api-nodes"])
    cmd = ComfyHost(root=tmp_path).command(host, tmp_path / "x.yaml")
    assert "--disable-api-nodes" in cmd and "--offline" not in cmd


def test_a_flag_the_host_lacks_is_a_clear_error(tmp_path):
    host = _fake_host(tmp_path, BASE + ["--offline"])
    with pytest.raises(RuntimeError, match=r"does not accept \['--front-end-root'\]"):
        ComfyHost(root=tmp_path, extra_args=["--front-end-root", "/x"]).command(host, tmp_path / "x.yaml")

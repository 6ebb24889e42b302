"""The store of finished view groups: its size report, clearing it (all, by last use, dry run), unfinished writes
left by a crash, and the ``groups`` command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from charactershot_core.sampling import GroupStore
from charactershot_core.sampling.job import GroupResult
from charactershot_core.sampling.store import COMFY_STORE, comfy_store_root, folder_bytes
from tests.cli_inprocess import run_main
from tests.comfy_host import REPO


def _group(store: GroupStore, key: str, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    res = GroupResult(0, [0, 1], key, torch.randn(1, 2, 3, 4, 2, 3, generator=g),
                      torch.randint(0, 255, (2, 3, 8, 12, 3), generator=g, dtype=torch.uint8))
    return store.save(res, {"seed": seed})


def _age(path: str, days: float) -> None:
    t = time.time() - days * 86400
    os.utime(path, (t, t))


def test_report_counts_every_byte_and_clear_removes_only_what_it_reports(tmp_path):
    store = GroupStore(tmp_path / "groups")
    assert store.report().groups == [] and store.report().bytes == 0  # no folder yet: an empty store
    for i, key in enumerate(("a" * 8, "b" * 8, "c" * 8)):
        _group(store, key, i)
    _age(os.path.join(store.path("a" * 8), "group.json"), 40)
    rep = store.report()
    assert [k for k, _, _ in rep.groups] == ["a" * 8, "b" * 8, "c" * 8]
    assert rep.bytes == folder_bytes(store.root) > 0
    assert f"holds 3 finished view groups: " in rep.text()

    dry = store.clear(dry_run=True)
    assert not dry.removed and len(dry.groups) == 3 and store.keys() == ["a" * 8, "b" * 8, "c" * 8]

    old = store.clear(dry_run=False, older_than_days=30)
    assert old.removed and [k for k, _, _ in old.groups] == ["a" * 8] and old.kept == 2
    assert "left alone" in old.text()
    assert store.keys() == ["b" * 8, "c" * 8]
    assert sorted(os.listdir(store.root)) == ["b" * 8, "c" * 8]  # nothing half-removed left behind

    everything = store.clear(dry_run=False)
    assert len(everything.groups) == 2 and store.keys() == [] and os.listdir(store.root) == []


def test_reuse_marks_a_group_as_used(tmp_path):
    store = GroupStore(tmp_path / "groups")
    _group(store, "k" * 8, 0)
    _age(os.path.join(store.path("k" * 8), "group.json"), 40)
    assert len(store.report(older_than_days=30).groups) == 1
    store.load("k" * 8)
    rep = store.report(older_than_days=30)
    assert rep.groups == [] and rep.kept == 1


def test_unfinished_writes_are_cleared_only_when_stale(tmp_path):
    store = GroupStore(tmp_path / "groups")
    _group(store, "k" * 8, 0)
    fresh = tmp_path / "groups" / ".x.partial-1234abcd"
    stale = tmp_path / "groups" / ".y.partial-5678abcd"
    for d in (fresh, stale):
        d.mkdir()
        (d / "latents.safetensors").write_bytes(b"0" * 1000)
    _age(str(stale), 2)
    rep = store.clear(dry_run=False)
    assert [n for n, _ in rep.partial] == [stale.name] and "1 unfinished write" in rep.text("lost")
    assert fresh.is_dir() and not stale.exists()  # a write in progress (another process) is never touched


def _cli(*args):
    """The ``groups`` command as its own process (``python -m charactershot_core groups``)."""
    return subprocess.run([sys.executable, "-m", "charactershot_core", "groups", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _groups(*args):
    """The same command in this process (tests/cli_inprocess.py): the same parser, output and exit codes."""
    return run_main("groups", *args)


def test_groups_command_reports_and_clears_a_comfyui_store(tmp_path):
    comfy = tmp_path / "ComfyUI"
    store = GroupStore(comfy_store_root(str(comfy / "user")))
    assert store.root == str(comfy.joinpath("user", *COMFY_STORE))
    _group(store, "a" * 8, 0)
    _group(store, "b" * 8, 1)
    size = folder_bytes(store.root)
    r = _cli("--comfyui", str(comfy))
    assert r.returncode == 0, r.stderr
    assert "a" * 8 in r.stdout and "holds 2 finished view groups" in r.stdout
    r = _groups("--comfyui", str(comfy), "--clear", "--dry-run")
    assert r.returncode == 0 and "would free" in r.stdout and store.keys() == ["a" * 8, "b" * 8], r.stdout
    r = _groups("--store", store.root, "--clear")
    assert r.returncode == 0, r.stderr
    assert "lost 2 finished view groups" in r.stdout and store.keys() == []
    from charactershot_core.sampling.store import human_size
    assert f"freed {human_size(size)}" in r.stdout


@pytest.mark.parametrize("args, expected", [
    ((), "give the store folder (--store DIR) or the ComfyUI it belongs to"),
    (("--comfyui", "nowhere-at-all"), "comfyui: nowhere-at-all"),
    (("--store", "x", "--comfyui", "y"), "give the store folder"),
])
def test_groups_command_names_a_bad_argument(tmp_path, args, expected):
    r = _groups(*args)
    assert r.returncode == 1 and expected in r.stderr, r.stderr


def test_groups_command_refuses_a_folder_that_is_not_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    r = _groups("--store", str(tmp_path), "--clear")
    assert r.returncode == 1 and "is not a group store" in r.stderr, r.stderr
    assert (tmp_path / "notes.txt").is_file()

"""The pack's shape: registry metadata, requirements, and a core library that never imports ComfyUI."""

import subprocess
import sys
import tomllib

from tests.comfy_host import REPO


def test_core_does_not_import_comfyui():
    code = ("import sys, charactershot_core, charactershot_core.cameras, charactershot_core.__main__;"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('comfy','comfy_api','folder_paths','nodes','server',"
            "'comfy_execution','execution')];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_pyproject_is_valid_for_the_registry():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    proj = data["project"]
    assert proj["name"] == "charactershot"
    major, minor, patch = proj["version"].split(".")
    assert all(p.isdigit() for p in (major, minor, patch))
    assert proj["description"] and proj["requires-python"]
    assert proj["license"] and (REPO / "LICENSE").read_text().startswith("MIT License")
    assert proj["urls"]["Repository"]
    comfy = data["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon"):
        assert comfy[key]
    assert comfy["requires-comfyui"] == ">=0.3.75"
    deps = proj["dependencies"]
    reqs = [l.strip() for l in (REPO / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert sorted(deps) == sorted(reqs), "pyproject dependencies and requirements.txt differ"
    for d in deps:
        assert "git+" not in d and "://" not in d
        if d.startswith("torch"):
            assert d == "torch", "no torch pin"
    assert not (REPO / "install.py").exists()


def test_cli_info_lists_the_nodes():
    r = subprocess.run([sys.executable, "-m", "charactershot_core", "info"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "CharacterShotCameraRig" in r.stdout


def test_no_versioned_comfy_api_imports():
    """Newer ComfyUI lists only ``comfy_api.latest`` among its API versions: a ``comfy_api.v0_*`` import would stop
    the whole pack from loading there (issue 13)."""
    import ast
    import re

    bad = []
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0].startswith(".") or "__pycache__" in rel.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
            bad += [f"{rel}:{node.lineno}: {n}" for n in names if re.match(r"comfy_api\.v\d", n)]
    assert not bad, "versioned comfy_api imports:\n" + "\n".join(bad)
    # and the nodes do import the current surface
    assert "from comfy_api.latest import" in (REPO / "nodes" / "__init__.py").read_text()

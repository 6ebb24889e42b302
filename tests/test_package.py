"""The pack's shape: registry metadata, requirements, and a core library that never imports ComfyUI."""

import subprocess
import sys
import tomllib

import pytest

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


# ------------------------------------------------------------------------------------------------ dependencies
# Top-level module -> the distribution that provides it. A module imported by the shipped code and missing here
# fails test_imports_and_declarations_agree: add its row (and declare it, or list it among the host's modules).
MODULE_TO_DISTRIBUTION = {
    "torch": "torch",
    "numpy": "numpy",
    "scipy": "scipy",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "gsplat": "gsplat",
    "PIL": "pillow",
    "ray": "ray",  # optional extra [ray]
    "cv2": "opencv",  # any OpenCV distribution, none declared (charactershot_core/opencv.py)
}
OPTIONAL = {"ray": "ray", "opencv": "opencv"}  # distribution -> the extra of [project.optional-dependencies]
HOST_MODULES = {"comfy", "comfy_api", "comfy_execution", "folder_paths", "server", "execution", "node_helpers",
                "latent_preview", "comfy_extras"}  # ComfyUI itself
PACK_MODULES = {"charactershot_core", "nodes"}
OPENCV = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")


def _requirement(line: str) -> tuple[str, str]:
    """(normalised distribution name, version specifier) of a requirement line."""
    import re

    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$", line)
    assert m, line
    return m.group(1).lower().replace("_", "-"), m.group(3)


def _requirements_txt() -> list[str]:
    return [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def imported_modules() -> dict[str, set[str]]:
    """Top-level modules the shipped Python imports (absolute imports, standard library left out) -> files."""
    import ast

    out: dict[str, set[str]] = {}
    files = [REPO / "__init__.py", *sorted((REPO / "nodes").rglob("*.py")),
             *sorted((REPO / "charactershot_core").rglob("*.py"))]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in PACK_MODULES:
                    out.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return out


def test_imports_and_declarations_agree():
    """Every third-party module the nodes and the core import is declared (requirements.txt = pyproject's
    dependencies, optional ones as extras), and every declared distribution is imported."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    imported = imported_modules()
    unknown = sorted(set(imported) - set(MODULE_TO_DISTRIBUTION) - HOST_MODULES)
    assert not unknown, f"imported, not in MODULE_TO_DISTRIBUTION: {[(m, sorted(imported[m])) for m in unknown]}"
    needed = {MODULE_TO_DISTRIBUTION[m] for m in imported if m in MODULE_TO_DISTRIBUTION}
    declared = {_requirement(r)[0] for r in _requirements_txt()}
    assert declared == {_requirement(r)[0] for r in data["project"]["dependencies"]}
    required = needed - set(OPTIONAL)
    assert sorted(required - declared) == [], "imported and not declared"
    assert sorted(declared - required) == [], "declared and never imported"
    extras = data["project"]["optional-dependencies"]
    for dist, extra in OPTIONAL.items():
        assert dist in needed, f"the extra [{extra}] is never imported"
        assert extras.get(extra), f"{dist} is imported and has no extra [{extra}]"
    assert {_requirement(r)[0] for r in extras["ray"]} == {"ray"}
    assert len(extras["opencv"]) == 1 and _requirement(extras["opencv"][0])[0] in OPENCV


def test_no_opencv_distribution_is_required():
    """Either OpenCV distribution may already be installed (comfyui_controlnet_aux brings opencv-python): the pack
    requires none, so that pip never puts a second one beside it, and no declared dependency requires one either."""
    from importlib import metadata

    for line in _requirements_txt():
        assert _requirement(line)[0] not in OPENCV, line
    seen, todo, pulled = set(), [_requirement(r)[0] for r in _requirements_txt()], []
    while todo:  # the declared distributions' own requirements, as installed here (extras left out)
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra==" in r.replace(" ", ""):
                continue
            dep = _requirement(r)[0]
            if dep in OPENCV:
                pulled.append(f"{name} -> {r}")
            todo.append(dep)
    assert not pulled, pulled
    # the shipped code reaches cv2 only through the helper that names both distributions when it is missing
    for module, files in imported_modules().items():
        if module == "cv2":
            assert files == {"charactershot_core/opencv.py"}, files


_FAKE_CV2 = '''
FLAVOUR = {flavour!r}
__version__ = "4.10.0"
INTER_AREA = 3
def resize(img, size, interpolation=None):
    return ("resized by", FLAVOUR, size)
'''


def _fake_site(root, dist: str | None):
    """A site folder holding a stand-in ``cv2`` installed by ``dist`` (its metadata included), or, for None, a
    ``cv2`` that cannot be imported (no OpenCV installed)."""
    site = root / (dist or "none")
    (site / "cv2").mkdir(parents=True)
    if dist is None:
        (site / "cv2" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'cv2'\", name='cv2')\n")
        return site
    (site / "cv2" / "__init__.py").write_text(_FAKE_CV2.format(flavour=dist))
    info = site / f"{dist.replace('-', '_')}-4.10.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 4.10.0\n")
    (info / "top_level.txt").write_text("cv2\n")
    return site


_CHILD = '''
import json, sys
site = sys.argv[1]
from charactershot_core import opencv
from charactershot_core import canvas, views  # import without touching cv2
from charactershot_core.poses import draw
out = {"found": opencv.installed_distributions([site]), "check": opencv.check([site]),
       "lazy": canvas.cv2 is opencv.cv2 and draw.cv2 is opencv.cv2}
try:
    out["resize"] = list(canvas.cv2.resize(None, (4, 2)))
    out["module"] = opencv.require_cv2().__file__
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
'''


@pytest.mark.parametrize("dist", ["opencv-python", "opencv-python-headless", None])
def test_the_pack_takes_whichever_opencv_is_installed(tmp_path, dist):
    """A child Python whose cv2 comes from opencv-python, from opencv-python-headless, or is missing: the pack's
    modules import either way, the first one takes that cv2, and without one the error names both distributions."""
    import json
    import os

    site = _fake_site(tmp_path, dist)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), OMP_WAIT_POLICY="PASSIVE")
    r = subprocess.run([sys.executable, "-c", _CHILD, str(site)], cwd=REPO, capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["lazy"], "the pack's modules hold the lazy cv2"
    if dist is not None:
        assert out["found"] == [dist] and out["check"] is None, out
        assert out["resize"] == ["resized by", dist, [4, 2]], out
        assert out["module"] == str(site / "cv2" / "__init__.py"), out
    else:
        assert out["found"] == [], out
        for text in (out["error"], out["check"]):
            assert "OpenCVMissing: " in out["error"] and "pip install opencv-python-headless" in text, out
            assert "'opencv-python'" in text and "never both" in text, out


def test_two_opencv_distributions_are_reported(tmp_path):
    from charactershot_core import opencv

    a, b = _fake_site(tmp_path / "a", "opencv-python"), _fake_site(tmp_path / "b", "opencv-python-headless")
    assert opencv.installed_distributions([a, b]) == ["opencv-python", "opencv-python-headless"]
    msg = opencv.check([a, b])
    assert msg.startswith("OpenCV is installed twice (opencv-python, opencv-python-headless)"), msg
    assert "pip uninstall opencv-python-headless" in msg


def test_the_declared_floors_are_the_tested_versions():
    """Each floor of requirements.txt (and of the extras) is pinned in requirements-floors.txt, which
    scripts/test_floors.sh installs to run the dependency tests at the floors; gsplat (GPU only) has the floor the
    GPU measurements pin. A floor raised or lowered without the other file fails here."""
    import re

    from packaging.version import Version

    pins = {}
    for line in (REPO / "requirements-floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    lines = _requirements_txt() + [r for extra in data["project"]["optional-dependencies"].values() for r in extra]
    gpu_pins = dict(re.findall(r'"(\w+)": "\w+==([\d.]+)"', (REPO / "benchmarks" / "gpu_env.py").read_text()))
    for line in lines:
        name, spec = _requirement(line)
        if name == "torch":
            assert spec == "", "torch is the host's: no pin, no floor"
            continue
        m = re.fullmatch(r">=([\d.]+)", spec)
        assert m, f"{line}: expected a floor (NAME>=VERSION)"
        tested = gpu_pins[name] if name == "gsplat" else pins.get(name)
        assert tested is not None, f"{name}'s floor is not in requirements-floors.txt"
        assert Version(m.group(1)) == Version(tested), f"{line}: the floor tested is {tested}"
    # the environment the rest of the tests run in is at or above every floor
    from importlib import metadata

    for line in _requirements_txt():
        name, spec = _requirement(line)
        if spec and name != "gsplat":
            assert Version(metadata.version(name)) >= Version(spec[2:]), (name, metadata.version(name))

"""The archive the Comfy Registry publishes, built as ``comfy node pack`` / ``comfy node publish`` build it, and
read as the Registry's scanner reads it.

comfy-cli 1.23.0 (``comfy_cli/command/custom_nodes/command.py: pack``) reads ``[tool.comfy] includes`` with
``extract_node_configuration`` and calls ``comfy_cli.file_utils.zip_files``: the files ``git ls-files`` lists, minus
the ``.comfyignore`` patterns (gitwildmatch), plus every file under ``includes`` (walked on disk, tracked or not,
never ignored). The test calls those two functions, in a child process started in the repository as the command is.

The scanner (the Registry's YARA rules, as publishers reported them) flags or bans a version for process spawning,
shell calls, network modules, environment writes and eval/exec anywhere in the archive; a ban cites code that is
"attacker-reachable via unauthenticated /prompt (node widget)". Each finding that remains in the archive is in
``ALLOWED`` with its reason and with the tests that prove no node input reaches it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.comfy_host import REPO

# The top level of the archive: anything new there must be classified (shipped here, or in .comfyignore).
TOP_LEVEL = {"__init__.py", "nodes", "charactershot_core", "web", "example_workflows", "docs", "README.md", "LICENSE",
             "pyproject.toml", "requirements.txt"}
# Folders shipped whole: every tracked file under them is in the archive.
SHIPPED_TREES = ("nodes/", "charactershot_core/", "web/", "example_workflows/")
MUST_HAVE = ["__init__.py", "nodes/__init__.py", "charactershot_core/__init__.py", "charactershot_core/__main__.py",
             "charactershot_core/data/cam_template_21.json", "web/js/charactershot.js", "web/js/splat4d_viewer.js",
             "example_workflows/1 Start here - 4D character demo (CPU, no downloads).json",
             "example_workflows/1 Start here - 4D character demo (CPU, no downloads).jpg", "README.md",
             "LICENSE", "pyproject.toml", "requirements.txt", "docs/icon.png"]
# Development material: tests, benchmarks (GPU tooling included), dev scripts, CI, raw benchmark data, test tools.
KEPT_OUT = ("tests/", "benchmarks/", "scripts/", ".ci/", "docs/bench/")
KEPT_OUT_FILES = ("requirements-dev.txt", "requirements-floors.txt", ".gitignore", ".comfyignore")

# What remains of the scanner's patterns in the shipped Python, and why none of it is reachable from a node input.
ALLOWED = {
    ("charactershot_core/distributed/submit.py", "process", "import subprocess"):
        "the Ray driver runs in a child Python (ray.init must not run inside the ComfyUI server): submit.py uses "
        "subprocess' pipe constants; the process itself is started by childproc.ChildTree (below)",
    ("charactershot_core/distributed/childproc.py", "process", "import subprocess"):
        "starts and stops the Ray driver child (the only child process the pack makes) on every system",
    ("charactershot_core/distributed/childproc.py", "process", "call subprocess.Popen"):
        "ChildTree, used only by submit_to_ray for the Ray driver child: [sys.executable, '-m', "
        "'charactershot_core.distributed.submit', <job folder>], no shell, fixed argv; started only for execution "
        "'ray'/'ray local' when the server's owner configured Ray (environment or user/__charactershot/ray.json), "
        "never with a workflow's value. Proof: test_the_child_process_helpers_are_used_only_by_the_ray_submission, "
        "test_the_ray_driver_child_is_reached_only_through_the_owners_configuration, "
        "test_the_ray_driver_child_command_is_fixed (here), tests/test_distributed_serverconfig.py, "
        "tests/test_sampling_nodes_e2e.py::test_an_unconfigured_server_refuses_ray and "
        "::test_an_old_ray_address_connects_nowhere",
    ("charactershot_core/distributed/childproc.py", "process", "call subprocess.run"):
        "Windows only: `taskkill /T /F /PID <int>` ends the Ray driver child's tree when Cancel finds it still "
        "running; the argv is fixed but for the child's own process id. Proof: as for ChildTree",
    ("charactershot_core/distributed/raylib.py", "network", "import socket"):
        "a 5 s reachability check of the Ray head before ray.init (which would retry for minutes)",
    ("charactershot_core/distributed/raylib.py", "network", "call socket.create_connection"):
        "the reachability check of the owner-configured Ray address; run only in the Ray driver child and the "
        "headless CLI, never in the server process. Proof: "
        "test_ray_connections_are_never_made_in_the_server_process (here) and the tests named for the child",
}

PROCESS_MODULES = {"subprocess", "multiprocessing", "pty", "concurrent.futures.process"}
NETWORK_MODULES = {"socket", "ssl", "socketserver", "urllib", "urllib3", "http", "requests", "aiohttp", "httpx",
                   "ftplib", "smtplib", "poplib", "imaplib", "telnetlib", "websocket", "websockets", "xmlrpc",
                   "paramiko", "pycurl"}
OS_PROCESS_CALLS = re.compile(r"^os\.(system|popen|exec\w*|spawn\w*|fork|forkpty|posix_spawnp?|startfile)$")
ENVIRON_WRITES = {"setdefault", "update", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
DYNAMIC_CALLS = {"__import__", "importlib.import_module", "importlib.reload", "importlib.__import__",
                 "importlib.util.spec_from_file_location", "importlib.util.module_from_spec",
                 "importlib.machinery.SourceFileLoader", "runpy.run_path", "runpy.run_module", "pkgutil.get_loader"}


# --------------------------------------------------------------------------------------------- the archive
def build_archive(zip_path: Path) -> list[str]:
    """``comfy node pack`` into ``zip_path``: its own configuration reader and zip function, run in the repository;
    returns the archive's file names."""
    code = textwrap.dedent("""
        import sys
        from comfy_cli.command.custom_nodes.command import extract_node_configuration
        from comfy_cli.file_utils import zip_files
        config = extract_node_configuration()
        if not config:
            sys.exit("pyproject.toml was not accepted")
        includes = config.tool_comfy.includes if config and config.tool_comfy else []
        zip_files(sys.argv[1], includes=includes)
        """)
    try:
        import comfy_cli  # noqa: F401
    except ImportError:
        pytest.fail("comfy-cli is not installed: it is a test dependency (requirements-dev.txt); run scripts/setup.sh")
    r = subprocess.run([sys.executable, "-c", code, str(zip_path)], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Not in a git repository" not in r.stdout, r.stdout  # would zip everything on disk
    with zipfile.ZipFile(zip_path) as z:
        return z.namelist()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> zipfile.ZipFile:
    path = tmp_path_factory.mktemp("pack") / "node.zip"
    build_archive(path)
    with zipfile.ZipFile(path) as z:
        yield z


def _tracked(*prefixes: str) -> list[str]:
    out = subprocess.check_output(["git", "-C", str(REPO), "ls-files", "--", *prefixes], text=True)
    return [line for line in out.splitlines() if line and (REPO / line).exists()]


def test_the_archive_holds_what_the_pack_needs(archive):
    names = set(archive.namelist())
    missing = [n for n in MUST_HAVE if n not in names]
    assert not missing, f"missing from the archive: {missing} (a file must be tracked by git to be packed)"
    not_shipped = [f for f in _tracked(*SHIPPED_TREES) if f not in names]
    assert not not_shipped, f"tracked files of the pack left out of the archive: {not_shipped}"
    docs = [f for f in _tracked("docs") if f.endswith(".md")]
    assert docs and all(f in names for f in docs), "the user documentation ships"
    for n in ("pyproject.toml", "requirements.txt", "README.md", "LICENSE"):
        assert archive.read(n) == (REPO / n).read_bytes(), n


def test_the_archive_keeps_development_material_out(archive):
    names = archive.namelist()
    top = {n.split("/")[0] for n in names}
    assert top <= TOP_LEVEL, f"unclassified top-level entries in the archive: {sorted(top - TOP_LEVEL)}: ship them " \
                             "(TOP_LEVEL) or add them to .comfyignore"
    dev = [n for n in names if n.startswith(KEPT_OUT) or n in KEPT_OUT_FILES]
    assert not dev, f"development material in the archive: {dev}"
    junk = [n for n in names if "__pycache__/" in n or n.endswith((".pyc", ".pyo")) or "/.pytest_cache/" in n]
    assert not junk, junk
    # and the exclusions do exclude something real: these are tracked and would otherwise ship
    for prefix in ("tests/", "benchmarks/", "scripts/", "docs/bench/"):
        assert _tracked(prefix), f"{prefix} is not tracked any more: update KEPT_OUT"


def test_the_icon_is_a_small_square_png(archive):
    import tomllib
    from io import BytesIO

    from PIL import Image

    icon = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]["Icon"]
    assert icon.endswith("/main/docs/icon.png"), icon  # the raw URL of the committed file
    data = archive.read("docs/icon.png")
    img = Image.open(BytesIO(data))
    assert img.format == "PNG" and img.size[0] == img.size[1] >= 256, (img.format, img.size)
    assert len(data) < 100_000, f"{len(data)} bytes"
    colours = img.convert("RGBA").getcolors(maxcolors=1 << 20)
    assert len(colours) > 16, "a picture, not a blank square"


def test_the_archive_runs_on_its_own(archive, tmp_path):
    """Nothing shipped needs a file that was left out: the core library and its CLI work from the unpacked archive."""
    root = tmp_path / "charactershot"
    archive.extractall(root)
    r = subprocess.run([sys.executable, "-m", "charactershot_core", "info"], cwd=root, capture_output=True,
                       text=True, timeout=300, env={"PATH": "", "PYTHONPATH": str(root), "OMP_WAIT_POLICY": "PASSIVE"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CharacterShotCameraRig" in r.stdout


# --------------------------------------------------------------------------------------------- the scan
def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def scan_python(source: str, filename: str = "<archive>") -> list[tuple[int, str, str]]:
    """(line, category, what) for each use of what the Registry's scanner flags: ``process`` (spawning),
    ``shell``, ``network``, ``environment`` (writes), ``eval`` (eval/exec/compile) and ``dynamic-import``."""
    tree = ast.parse(source, filename=filename)
    aliases: dict[str, str] = {}  # local name -> dotted name it stands for
    found: list[tuple[int, str, str]] = []

    def module_category(name: str) -> str | None:
        for cat, mods in (("process", PROCESS_MODULES), ("network", NETWORK_MODULES)):
            if any(name == m or name.startswith(m + ".") for m in mods):
                return cat
        if name == "asyncio.subprocess":
            return "process"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                cat = module_category(a.name)
                if cat:
                    found.append((node.lineno, cat, f"import {a.name}"))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                aliases[a.asname or a.name] = full
                cat = module_category(node.module) or module_category(full)
                if cat:
                    found.append((node.lineno, cat, f"from {node.module} import {a.name}"))
                elif node.module == "os" and (OS_PROCESS_CALLS.match(full) or a.name in ("putenv", "unsetenv")):
                    found.append((node.lineno, "process" if OS_PROCESS_CALLS.match(full) else "environment",
                                  f"from os import {a.name}"))

    def resolve(name: str | None) -> str | None:
        if not name:
            return None
        head, _, rest = name.partition(".")
        base = aliases.get(head, head)
        return f"{base}.{rest}" if rest else base

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = resolve(_dotted(node.func))
            if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in node.keywords):
                found.append((node.lineno, "shell", f"call {name} shell="))
            if not name:
                continue
            if name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec", "builtins.compile"):
                found.append((node.lineno, "eval", f"call {name}"))
            elif name in DYNAMIC_CALLS:
                found.append((node.lineno, "dynamic-import", f"call {name}"))
            elif OS_PROCESS_CALLS.match(name):
                found.append((node.lineno, "process", f"call {name}"))
            elif name in ("os.putenv", "os.unsetenv") or (
                    name.startswith("os.environ.") and name.rsplit(".", 1)[1] in ENVIRON_WRITES):
                found.append((node.lineno, "environment", f"call {name}"))
            elif name.startswith(("asyncio.create_subprocess_", "loop.subprocess_")):
                found.append((node.lineno, "process", f"call {name}"))
            elif module_category(name) and "." in name:
                found.append((node.lineno, module_category(name), f"call {name}"))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                if isinstance(t, ast.Subscript) and resolve(_dotted(t.value)) == "os.environ":
                    found.append((node.lineno, "environment", f"write os.environ[{ast.unparse(t.slice)}]"))
                elif resolve(_dotted(t)) == "os.environ":
                    found.append((node.lineno, "environment", "replace os.environ"))
    return sorted(set(found))


def _archive_python(archive) -> dict[str, str]:
    return {n: archive.read(n).decode("utf-8") for n in archive.namelist() if n.endswith(".py")}


def test_the_scan_finds_what_the_registry_flags():
    """The scanner above catches each pattern in its usual spellings (so an empty result means something)."""
    src = textwrap.dedent("""
        import subprocess as sp, socket
        import os, importlib, multiprocessing.pool
        from os import environ, system
        from urllib.request import urlopen
        import http.client
        sp.run(["ls"], shell=True)
        os.system("ls"); os.popen("ls"); os.execv("/bin/sh", []); os.spawnl(0, "x"); system("x")
        os.environ["A"] = "1"; environ["B"] = "2"; os.environ.setdefault("C", "3"); os.putenv("D", "4")
        os.environ.update(E="5"); del os.environ["A"]
        eval("1"); exec("x=1"); compile("1", "f", "eval")
        __import__("json"); importlib.import_module("json")
        urlopen("http://x"); socket.create_connection(("h", 1))
        re.compile("x"); model.eval(); os.environ.get("A"); os.getenv("B"); dict(os.environ)
        """)
    whats = {w for _, _, w in scan_python(src)}
    for w in ("import subprocess", "import socket", "import multiprocessing.pool", "from os import system",
              "from urllib.request import urlopen", "import http.client", "call subprocess.run shell=",
              "call os.system", "call os.popen", "call os.execv", "call os.spawnl", "write os.environ['A']",
              "write os.environ['B']", "call os.environ.setdefault", "call os.putenv", "call os.environ.update",
              "call eval", "call exec", "call compile", "call __import__", "call importlib.import_module",
              "call socket.create_connection"):
        assert w in whats, (w, sorted(whats))
    assert not any("re.compile" in w or "model.eval" in w or ".get" in w or "getenv" in w for w in whats), whats


def test_the_archive_python_has_only_the_allowed_findings(archive):
    findings = {}
    for name, src in _archive_python(archive).items():
        for line, cat, what in scan_python(src, name):
            findings.setdefault((name, cat, what), []).append(line)
    unexpected = {k: v for k, v in findings.items() if k not in ALLOWED}
    assert not unexpected, "the Registry's scanner flags these (remove them, or list them in ALLOWED with a reason " \
                           "and a test that no node input reaches them):\n" + \
                           "\n".join(f"{p}:{lines} {cat}: {w}" for (p, cat, w), lines in sorted(unexpected.items()))
    stale = sorted(set(ALLOWED) - set(findings))
    assert not stale, f"ALLOWED lists findings that are gone: {stale}"


def test_no_eval_or_exec_text_in_the_archive(archive):
    """eval/exec lead to bans; a text rule would also match ``obj.eval(`` (torch's ``Module.eval``), so the
    shipped code says ``train(False)`` instead."""
    hits = [f"{n}:{i}: {line.strip()}" for n, src in _archive_python(archive).items()
            for i, line in enumerate(src.splitlines(), 1) if re.search(r"\b(eval|exec)\s*\(", line)]
    assert not hits, "\n".join(hits)


# --------------------------------------------------------------------------------------------- reachability
def _references(archive, name: str) -> dict[str, list[str]]:
    """Archive module -> the functions (``<module>`` at top level) whose bodies mention ``name``."""
    out: dict[str, list[str]] = {}
    for path, src in _archive_python(archive).items():
        owners: set[str] = set()
        todo = [(ast.parse(src), "<module>")]
        while todo:
            node, owner = todo.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    todo.append((child, child.name if owner == "<module>" else f"{owner}.{child.name}"))
                    continue
                if (isinstance(child, ast.Name) and child.id == name) or \
                        (isinstance(child, ast.Attribute) and child.attr == name) or \
                        (isinstance(child, ast.alias) and (child.asname or child.name).split(".")[-1] == name):
                    owners.add(owner)
                todo.append((child, owner))
        if owners:
            out[path] = sorted(owners)
    return out


def test_the_ray_driver_child_is_reached_only_through_the_owners_configuration(archive):
    """The one process spawn: ``submit_to_ray`` is used by the Sampler only in ``_sample_on_ray``, which the node
    calls only with the address ``_ray_target`` returns; that address comes from the owner's configuration
    (``serverconfig.load(os.environ, user directory)`` -> ``serverconfig.resolve``), and ``resolve`` never returns
    a workflow's value (tests/test_distributed_serverconfig.py)."""
    refs = _references(archive, "submit_to_ray")
    assert refs == {"nodes/sampling.py": ["_sample_on_ray"]}, refs
    assert _references(archive, "_sample_on_ray") == {"nodes/sampling.py": ["MultiViewSampler.execute"]}
    tree = ast.parse(archive.read("nodes/sampling.py").decode())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _dotted(n.func) == "_sample_on_ray"]
    assert calls, "the Sampler no longer calls _sample_on_ray: update this test"
    for call in calls:
        address = call.args[4]
        assert isinstance(address, ast.Name), ast.unparse(call)
        fn = next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                  and any(c is call for c in ast.walk(f)))
        sources = [n.value for n in ast.walk(fn) if isinstance(n, ast.Assign)
                   and any(isinstance(t, ast.Name) and t.id == address.id for t in n.targets)]
        assert sources and all(isinstance(s, ast.Call) and _dotted(s.func) == "_ray_target" for s in sources), \
            [ast.unparse(s) for s in sources]
        assert address.id not in [a.arg for a in fn.args.args + fn.args.kwonlyargs], "the address is not an input"
    target = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "_ray_target")
    body = ast.unparse(target)
    assert "serverconfig.load(os.environ, folder_paths.get_user_directory())" in body, body
    assert "return serverconfig.resolve(execution, ray_address, cfg)" in body, body

    from charactershot_core.distributed import serverconfig as sc

    nothing = sc.RayServerConfig()
    owner = sc.RayServerConfig(address="10.0.0.5:6379", local=True)
    for execution in (*sc.EXECUTION, "x", "10.0.0.9:6379", "ray://evil:10001"):
        for old in ("", None, "10.0.0.9:6379", "ray://evil:10001", "local"):
            for cfg in (nothing, owner):
                try:
                    got = sc.resolve(execution, old, cfg)
                except sc.InputError:
                    continue
                assert got in (None, "local", cfg.address), (execution, old, got)
                if cfg is nothing:
                    assert got is None, (execution, old, got)  # nothing configured: never a child


def test_the_ray_driver_child_command_is_fixed(tmp_path, monkeypatch):
    """The child's command line holds no value of the job or the request: the job goes to it as files."""
    import types

    import torch

    from charactershot_core.distributed import submit

    seen = {}

    class Stop(Exception):
        pass

    def fake_popen(args, **kwargs):
        seen["args"], seen["kwargs"] = list(args), kwargs
        raise Stop

    monkeypatch.setattr(submit.subprocess, "Popen", fake_popen)
    job = types.SimpleNamespace(**{k: torch.zeros(1, 2) for k in submit._TENSORS},
                                **{k: 0 for k in submit._SCALARS}, rig=None)
    job.groups = [[0]]
    spec = types.SimpleNamespace()
    monkeypatch.setattr(submit, "asdict", lambda s: {"checkpoint": "C:/models/x.safetensors"})
    with pytest.raises(Stop):
        submit.submit_to_ray(job, spec, "10.0.0.5:6379", str(tmp_path / "store"), python=None)
    args = seen["args"]
    assert args[:3] == [sys.executable, "-m", "charactershot_core.distributed.submit"], args
    assert len(args) == 4 and Path(args[3]).parent == tmp_path / "store", args
    assert Path(args[3]).name.startswith(".submit-") and (Path(args[3]) / "request.json").is_file()
    assert not seen["kwargs"].get("shell"), seen["kwargs"]
    assert "10.0.0.5" not in " ".join(args) and "models" not in " ".join(args)


def test_ray_connections_are_never_made_in_the_server_process(archive):
    """``raylib.check_reachable`` and ``raylib.connect`` (the socket and ``ray.init``) are used only by the Ray
    driver child, the Ray executor and the headless CLI; nothing under nodes/ refers to them, to the executor or to
    the CLI, and the nodes reach the child only through ``submit_to_ray`` (test above)."""
    allowed = {"charactershot_core/distributed/raylib.py", "charactershot_core/distributed/executor.py",
               "charactershot_core/distributed/cli.py", "charactershot_core/distributed/batch.py",
               "charactershot_core/distributed/submit.py"}
    for name in ("check_reachable", "connect", "RayExecutor", "raylib"):
        refs = {p for p in _references(archive, name) if p.startswith(("charactershot_core/distributed/", "nodes/"))}
        assert refs <= allowed, (name, sorted(refs - allowed))
    for name in ("connect", "RayExecutor", "require_ray", "check_reachable"):
        in_submit = _references(archive, name).get("charactershot_core/distributed/submit.py", [])
        assert "submit_to_ray" not in in_submit, f"the server-side entry point uses {name}: it must not connect"
    nodes = {p: s for p, s in _archive_python(archive).items() if p.startswith("nodes/")}
    assert not [p for p, s in nodes.items() if re.search(r"\b(raylib|executor import RayExecutor|distributed\.cli)\b",
                                                         s)]


def test_the_child_process_helpers_are_used_only_by_the_ray_submission():
    """childproc (Popen, taskkill) is imported by no module but the Ray submission: no node reaches it otherwise."""
    users = []
    for path in sorted((REPO / "charactershot_core").rglob("*.py")) + sorted((REPO / "nodes").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel == "charactershot_core/distributed/childproc.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1] == "childproc":
                users.append(rel)
            elif isinstance(node, ast.Import) and any(a.name.endswith("childproc") for a in node.names):
                users.append(rel)
    assert users == ["charactershot_core/distributed/submit.py"], users

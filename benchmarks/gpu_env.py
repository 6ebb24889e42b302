"""The GPU run's environment steps (used by benchmarks/gpu_measure.py; stdlib + ``packaging`` only until the
install is done):

  plan       --prepare, here: pip's resolver gives the closure of diffusers + gsplat for the GPU machine's Python; the
             packages the GPU machine's image already holds (benchmarks/device_packages.txt) are dropped, the rest are
             downloaded (``pip download --no-deps``, exact versions) into the wheel folder with plan.json.
  install    on the GPU machine: walks the requirements of the target packages; each one is satisfied by the image's
             installed version or by a carried wheel, else the step fails naming what is missing; the carried
             wheels that are needed are installed with ``pip install --no-index --no-deps --target SITE``.
  imports    every module the benchmarks import, with versions; a failure names the module and the fix.
  gsplat     builds gsplat's CUDA extension once (TORCH_CUDA_ARCH_LIST for the card, MAX_JOBS) and renders one
             small scene with it, so that the later steps reuse the build; on a machine without CUDA it tries
             nothing, says so and succeeds.

Each writes a JSON result (``--json``) and exits non-zero on failure with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import base64
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("diffusers", "gsplat")
PINS = {"diffusers": "diffusers==0.42.1", "gsplat": "gsplat==1.5.3"}
#: the GPU machine's interpreter and platforms (Python 3.12.3, x86-64 manylinux)
DEVICE_PY = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                    "manylinux2014_x86_64", "manylinux1_x86_64")


def _packaging():
    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
        from packaging.version import Version
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.markers import default_environment
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name
        from pip._vendor.packaging.version import Version
    return Requirement, canonicalize_name, Version, default_environment


def _write(path, obj):
    if path:
        tmp = str(path) + ".partial"
        Path(tmp).write_text(json.dumps(obj, indent=1))
        os.replace(tmp, path)


def _fail(msg: str, result: dict, path) -> int:
    result["error"] = msg
    _write(path, result)
    print(f"gpu_env: {msg}", file=sys.stderr, flush=True)
    return 1


# ------------------------------------------------------------------------------------------------- wheels
def wheel_info(path: Path):
    """(canonical name, version, [Requires-Dist lines]) of a wheel file."""
    _, canon, _, _ = _packaging()
    with zipfile.ZipFile(path) as z:
        meta_name = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        text = z.read(meta_name).decode("utf-8", "replace")
    head = text.split("\n\n", 1)[0]
    fields = {}
    requires = []
    for line in head.splitlines():
        if ":" not in line or line.startswith((" ", "\t")):
            continue
        k, v = line.split(":", 1)
        if k == "Requires-Dist":
            requires.append(v.strip())
        else:
            fields.setdefault(k, v.strip())
    return canon(fields["Name"]), fields["Version"], requires


def installed_version(name: str):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def plan_install(wheels: dict, targets, installed=installed_version, env=None):
    """Which carried wheels to install so that ``targets`` and their requirements (for this interpreter) are all
    met. ``wheels``: canonical name -> (version, requires, file). Returns (to_install: {name: file},
    from_image: {name: version}, missing: [text])."""
    Requirement, canon, Version, default_environment = _packaging()
    env = dict(env or default_environment())
    env.setdefault("extra", "")
    to_install, from_image, missing = {}, {}, []
    queue = [(canon(t), None, "(target)") for t in targets]
    seen = set()
    while queue:
        name, spec, needed_by = queue.pop(0)
        key = (name, str(spec))
        if key in seen:
            continue
        seen.add(key)
        have = installed(name)
        is_target = needed_by == "(target)"
        carried = wheels.get(name)
        if not is_target and have is not None and (spec is None or spec.contains(have, prereleases=True)) \
                and name not in to_install:
            from_image[name] = have
            continue
        if carried is not None and (spec is None or spec.contains(carried[0], prereleases=True)):
            if name in to_install:
                continue
            to_install[name] = carried[2]
            from_image.pop(name, None)
            for line in carried[1]:
                r = Requirement(line)
                if r.marker is not None and not r.marker.evaluate(env):
                    continue
                queue.append((canon(r.name), r.specifier, name))
            continue
        if is_target and have is not None:
            from_image[name] = have  # the image has it and nothing carried replaces it
            continue
        what = f"{name}{spec or ''} (needed by {needed_by})"
        if have is not None:
            what += f": the image has {have}"
        if carried is not None:
            what += f", carried {carried[0]}"
        missing.append(what)
    return to_install, from_image, missing


def scan_wheels(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        name, version, requires = wheel_info(f)
        if name in out:
            raise SystemExit(f"two wheels of {name} in {folder} ({out[name][2].name}, {f.name}): keep one")
        out[name] = (version, requires, f)
    return out


def cmd_install(a) -> int:
    t0 = time.perf_counter()
    folder = Path(a.wheels)
    targets = [t for t in a.targets.split(",") if t]
    result = {"wheels_folder": str(folder), "targets": targets, "python": sys.version.split()[0]}
    wheels = scan_wheels(folder)
    result["carried"] = {k: v[0] for k, v in wheels.items()}
    to_install, from_image, missing = plan_install(wheels, targets)
    result.update(install={k: Path(v).name for k, v in to_install.items()}, from_image=from_image, missing=missing)
    if missing:
        return _fail("missing dependencies, neither in the image nor carried: " + "; ".join(missing)
                     + ". Carry them: rerun `bash benchmarks/gpu_measure.sh --prepare` here (add names with "
                       "--carry NAME) and carry .gpu", result, a.json)
    if to_install:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
               "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade", "--target", a.site,
               *[str(v) for v in to_install.values()]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        result["pip_exit"] = proc.returncode
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return _fail(f"pip install --no-index --no-deps failed (exit {proc.returncode}): {' | '.join(tail)}",
                         result, a.json)
    result["site"] = a.site
    result["seconds"] = round(time.perf_counter() - t0, 2)
    _write(a.json, result)
    print(json.dumps(result, indent=1))
    return 0


def cmd_plan(a) -> int:
    """--prepare: resolve the closure for the GPU machine's Python, drop what its image holds, download the rest."""
    _, canon, _, _ = _packaging()
    folder = Path(a.wheels)
    folder.mkdir(parents=True, exist_ok=True)
    on_device = {canon(x.split("#")[0].strip()) for x in (REPO / "benchmarks" / "device_packages.txt").read_text()
                 .splitlines() if x.split("#")[0].strip()}
    report = folder / "resolve.json"
    plat = [x for p in DEVICE_PLATFORMS for x in ("--platform", p)]
    pins = [PINS[t] for t in TARGETS] + [c for c in a.carry.split(",") if c]
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--dry-run",
           "--ignore-installed", "--only-binary=:all:", "--python-version", DEVICE_PY, "--implementation", "cp",
           "--abi", "cp" + DEVICE_PY.replace(".", ""), *plat, "--target", str(folder / ".resolve-target"),
           "--report", str(report), *pins]
    print("resolving:", " ".join(pins), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1
    rep = json.loads(report.read_text())
    Requirement = _packaging()[0]
    env = dict(rep.get("environment") or {})
    env["extra"] = ""
    items = {canon(i["metadata"]["name"]): i["metadata"] for i in rep["install"]}
    closure = {n: m["version"] for n, m in items.items()}
    forced = {canon(Requirement(c).name) for c in a.carry.split(",") if c}
    # walk from the targets; a package the image holds ends its branch (torch's CUDA wheels are never carried)
    carry, queue = {}, [canon(t) for t in TARGETS] + sorted(forced)
    while queue:
        n = queue.pop(0)
        if n in carry or n not in items or (n in on_device and n not in forced and n not in TARGETS):
            continue
        carry[n] = closure[n]
        for line in items[n].get("requires_dist") or []:
            r = Requirement(line)
            if r.marker is None or r.marker.evaluate(env):
                queue.append(canon(r.name))
    for old in folder.glob("*.whl"):  # one version of each: stale wheels would stop the install
        if canon(old.name.split("-")[0]) not in carry:
            old.unlink()
    for n, v in sorted(carry.items()):
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", "--no-deps",
               "--only-binary=:all:", "--python-version", DEVICE_PY, "--implementation", "cp", "--abi",
               "cp" + DEVICE_PY.replace(".", ""), *plat, "-d", str(folder), f"{n}=={v}"]
        if subprocess.run(cmd).returncode != 0:
            print(f"gpu_env: could not download {n}=={v}", file=sys.stderr)
            return 1
    plan = {"closure": closure, "carried": carry,
            "held_by_image": sorted(n for n in closure if n in on_device and n not in carry),
            "only_below_the_image": sorted(n for n in closure if n not in on_device and n not in carry),
            "python": DEVICE_PY, "platforms": list(DEVICE_PLATFORMS)}
    _write(folder / "plan.json", plan)
    print(json.dumps({k: plan[k] for k in ("carried", "held_by_image")}, indent=1))
    return 0


def make_probe_wheel(folder: Path, requires=("numpy",)) -> Path:
    """A tiny wheel (``charshot_probe``) so that --dry-run exercises the real install command without a download."""
    folder.mkdir(parents=True, exist_ok=True)
    name, version = "charshot_probe", "1.0"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{name}-{version}.dist-info/METADATA": "Metadata-Version: 2.1\nName: charshot-probe\nVersion: 1.0\n"
                                                 + "".join(f"Requires-Dist: {r}\n" for r in requires) + "\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: charactershot\nRoot-Is-Purelib: true\n"
                                              "Tag: py3-none-any\n\n",
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    out = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return out


# ------------------------------------------------------------------------------------------------ imports
IMPORTS = ("torch", "numpy", "safetensors", "PIL", "cv2", "diffusers", "gsplat", "gsplat.strategy",
           "charactershot_core.models", "charactershot_core.models.loading", "charactershot_core.sampling",
           "charactershot_core.gaussians.fitting.fit", "charactershot_core.gaussians.raster.render")


def cmd_imports(a) -> int:
    import importlib

    sys.path.insert(0, str(REPO))
    mods = list(IMPORTS) + [m for m in a.extra.split(",") if m]
    result = {"python": sys.version.split()[0], "modules": {}}
    for m in mods:
        try:
            mod = importlib.import_module(m)
        except Exception as e:  # noqa: BLE001 - any import failure stops the run with its reason
            first = (str(e).strip().splitlines() or [""])[0]
            return _fail(f"import {m} failed ({type(e).__name__}: {first}). Carry what is missing as wheels: "
                         "`bash benchmarks/gpu_measure.sh --prepare` here computes the closure; then run again",
                         result, a.json)
        result["modules"][m] = getattr(mod, "__version__", None) or "ok"
    import torch

    result["cuda"] = torch.cuda.is_available()
    result["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name(0)
        result["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    _write(a.json, result)
    print(json.dumps(result, indent=1))
    return 0


# ------------------------------------------------------------------------------------------------- gsplat
def cmd_gsplat(a) -> int:
    import torch

    t0 = time.perf_counter()
    result = {"cuda": torch.cuda.is_available(), "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST"),
              "MAX_JOBS": os.environ.get("MAX_JOBS"), "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR")}
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
        os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
        result.update(TORCH_CUDA_ARCH_LIST=os.environ["TORCH_CUDA_ARCH_LIST"], MAX_JOBS=os.environ["MAX_JOBS"])
    sys.path.insert(0, str(REPO))
    from charactershot_core.gaussians.raster import render as R

    if not torch.cuda.is_available():
        # no build attempt without a GPU (torch's JIT would look for a card's architecture, or compile for none)
        result.update(extension="not tried: no CUDA device", seconds=round(time.perf_counter() - t0, 2))
        _write(a.json, result)
        print(json.dumps(result, indent=1))
        return 0
    try:
        R._import_gsplat()
        result["extension"] = "loaded"
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [""])[0]
        result.update(extension="failed", reason=f"{type(e).__name__}: {first}")
    result["build_or_load_s"] = round(time.perf_counter() - t0, 2)
    if result["extension"] == "loaded":
        try:  # the kernels run on this card (a build for another architecture fails here)
            from charactershot_core.cameras import official_rig

            rig = official_rig().scaled(0.125).select([0, 1])
            g = torch.Generator().manual_seed(0)
            n = 500
            means = (torch.rand(n, 3, generator=g) - 0.5) * 0.5 + torch.tensor([0.0, 0.0, 0.9])
            quats, scales = torch.randn(n, 4, generator=g), torch.full((n, 3), 0.02)
            opac, cols = torch.full((n,), 0.8), torch.rand(n, 3, generator=g)
            args = [t.cuda() for t in (means, quats, scales, opac, cols)]
            img, _, info = R.rasterize(*args, rig.viewmats(device="cuda"), rig.Ks(device="cuda"), rig.width,
                                       rig.height, backend="gsplat")
            torch.cuda.synchronize()
            result.update(kernels="ran", render_finite=bool(torch.isfinite(img).all()))
        except Exception as e:  # noqa: BLE001
            first = (str(e).strip().splitlines() or [""])[0]
            result.update(kernels="failed", reason=f"{type(e).__name__}: {first}")
    result["seconds"] = round(time.perf_counter() - t0, 2)
    _write(a.json, result)
    print(json.dumps(result, indent=1))
    if result["extension"] != "loaded" or result.get("kernels") != "ran":
        print(f"gpu_env: gsplat is unusable on this GPU ({result.get('reason')}); the later steps use 'auto' and "
              "fall back to the torch rasteriser", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--wheels", default=str(REPO / ".gpu" / "wheels"))
    p.add_argument("--carry", default="", help="extra requirements to carry, comma-separated (NAME or NAME==V)")
    p = sub.add_parser("install")
    p.add_argument("--wheels", required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--json")
    p = sub.add_parser("imports")
    p.add_argument("--extra", default="")
    p.add_argument("--json")
    p = sub.add_parser("gsplat")
    p.add_argument("--json")
    a = ap.parse_args(argv)
    return {"plan": cmd_plan, "install": cmd_install, "imports": cmd_imports, "gsplat": cmd_gsplat}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

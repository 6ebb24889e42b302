"""The prepared device run (benchmarks/gpu_measure.sh) rehearsed on the CPU: --dry-run runs every step with tiny
settings (install from a wheel with --no-deps into a target folder, imports, the gsplat build step, the backend
check, the VRAM-cap step, the sampler, the fit) and writes an entry per step into summary.json; the install plan
takes what the image has and carries the rest; a failed essential step stops the run with its reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_env  # noqa: E402
import gpu_measure  # noqa: E402


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_the_summary(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(["bash", str(BENCH / "gpu_measure.sh"), "--dry-run", "--vram-cap", "12,16"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "gpu_measure.log").read_text().strip()
    steps = summary["steps"]
    assert list(steps) == list(gpu_measure.DEFAULT_STEPS)
    for name, entry in steps.items():
        assert entry["status"] == "ok", (name, entry)
        assert isinstance(entry.get("result"), dict), name
    assert summary["stopped"] is None and summary["machine"]["mode"].startswith("dry-run")
    # install: the probe wheel went in with --no-deps into the target folder, the rest came from the environment
    inst = steps["install"]["result"]
    assert inst["install"] == {"charshot-probe": "charshot_probe-1.0-py3-none-any.whl"} and not inst["missing"]
    assert {"diffusers", "gsplat"} <= set(inst["from_image"])
    assert (tmp_path / "site" / "charshot_probe" / "__init__.py").is_file()
    assert steps["imports"]["result"]["modules"]["charshot_probe"] == "ok"  # the site folder is on the path
    assert {"diffusers", "gsplat", "charactershot_core.sampling"} <= set(steps["imports"]["result"]["modules"])
    assert steps["gsplat_build"]["result"]["cuda"] is False
    caps = steps["vram_caps"]["result"]
    assert set(caps["variants"]) == {"bf16", "bf16_low_memory", "fp8_low_memory"}
    for v in caps["variants"].values():
        assert [r["cap_gib"] for r in v["caps"]] == [16.0, 12.0]
        assert all(r["fits"] and r["step_s"] > 0 and r["enforced"] is False for r in v["caps"])
    assert steps["sampler_bf16"]["result"]["per_step_s"] > 0
    fit = steps["fit_real"]["result"]
    assert (fit.get("real") or fit.get("motions"))
    # only the summary and the log in OUT's top level (the device returns at most 8 files)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["gpu_measure.log", "summary.json"]


def test_an_essential_step_that_fails_stops_the_run_with_its_reason(tmp_path, monkeypatch):
    real = gpu_measure.steps_for

    def fake(a, py, out, site, work):
        table = real(a, py, out, site, work)
        table["imports"].argv = lambda limit: [py, "-c", "import sys; print('import diffusers failed'); sys.exit(3)"]
        table["backends"].argv = lambda limit: [py, "-c", "raise SystemExit('must not run')"]
        return table

    monkeypatch.setattr(gpu_measure, "steps_for", fake)
    rc = gpu_measure.main(["--dry-run", "--steps", "env,imports,backends", "--out", str(tmp_path)])
    assert rc == 1
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["steps"]["env"]["status"] == "ok"
    assert s["steps"]["imports"]["status"] == "failed" and s["steps"]["imports"]["exit"] == 3
    assert s["steps"]["backends"] == {"status": "skipped", "reason": s["stopped"]}
    assert s["stopped"].startswith("imports failed")


def test_steps_that_do_not_fit_the_budget_are_skipped_and_timeouts_are_recorded(tmp_path, monkeypatch):
    real = gpu_measure.steps_for

    def fake(a, py, out, site, work):
        table = real(a, py, out, site, work)
        table["backends"].argv = lambda limit: [py, "-c", "import time; time.sleep(60)"]
        table["backends"].max_s = 1
        table["backends"].min_s = 1
        return table

    monkeypatch.setattr(gpu_measure, "steps_for", fake)
    monkeypatch.setattr(gpu_measure, "RESERVE_S", 0)
    rc = gpu_measure.main(["--dry-run", "--steps", "backends,vram_caps", "--budget", "30", "--out", str(tmp_path)])
    s = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 0
    assert s["steps"]["backends"]["status"] == "timeout" and s["steps"]["backends"]["limit_s"] == 1
    assert s["steps"]["vram_caps"]["status"] == "skipped" and "budget" in s["steps"]["vram_caps"]["reason"]


def test_bad_vram_cap_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit):
        gpu_measure.main(["--dry-run", "--vram-cap", "12,big", "--out", str(tmp_path)])


# ------------------------------------------------------------------------------------------ install plan
def _wheels(**spec):
    """canonical name -> (version, requires, file), as scan_wheels gives them"""
    return {k.replace("_", "-"): (v[0], v[1], Path(f"{k}-{v[0]}-py3-none-any.whl")) for k, v in spec.items()}


def test_install_plan_uses_the_image_where_it_satisfies_and_carried_wheels_elsewhere():
    image = {"huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.7.0", "zipp": "3.23.0"}
    wheels = _wheels(
        diffusers=("0.42.1", ["importlib_metadata", "huggingface-hub<3.0,>=1.32.0", "numpy",
                              "safetensors>=0.8.0", "torch-only-on-windows; sys_platform == 'win32'",
                              "pytest; extra == 'test'"]),
        importlib_metadata=("10.2.0", ["zipp>=3.20"]),
        safetensors=("0.8.0", []),
        gsplat=("1.5.3", ["numpy"]),
    )
    env = {"sys_platform": "linux", "python_version": "3.12", "extra": ""}
    to_install, from_image, missing = gpu_env.plan_install(wheels, ["diffusers", "gsplat"], image.get, env)
    assert set(to_install) == {"diffusers", "gsplat", "importlib-metadata", "safetensors"}  # image's 0.7 too old
    assert from_image == {"huggingface-hub": "1.33.0", "numpy": "2.5.2", "zipp": "3.23.0"}
    assert missing == []


def test_install_plan_names_what_is_neither_in_the_image_nor_carried():
    wheels = _wheels(diffusers=("0.42.1", ["importlib_metadata", "regex!=2019.12.17"]))
    to_install, _, missing = gpu_env.plan_install(wheels, ["diffusers", "gsplat"], {"regex": "2026.1.1"}.get,
                                                  {"python_version": "3.12", "extra": ""})
    assert set(to_install) == {"diffusers"}
    assert any(m.startswith("importlib-metadata (needed by diffusers)") for m in missing)
    assert any(m.startswith("gsplat") for m in missing)


def test_probe_wheel_is_a_valid_wheel(tmp_path):
    w = gpu_env.make_probe_wheel(tmp_path, requires=("numpy>=1",))
    name, version, requires = gpu_env.wheel_info(w)
    assert (name, version, requires) == ("charshot-probe", "1.0", ["numpy>=1"])
    with zipfile.ZipFile(w) as z:
        assert "charshot_probe-1.0.dist-info/RECORD" in z.namelist()


def test_imports_step_fails_naming_the_module_and_the_fix(tmp_path):
    out = tmp_path / "imports.json"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_env.py"), "imports", "--extra", "no_such_module_xyz",
                           "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 1
    assert "import no_such_module_xyz failed (ModuleNotFoundError" in proc.stderr and "--prepare" in proc.stderr
    assert "no_such_module_xyz" in json.loads(out.read_text())["error"]

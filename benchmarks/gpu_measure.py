"""The prepared GPU run: every GPU measurement the issues ask for, as ONE call of at most --budget seconds (540).

Here (this machine reaches the package index; the GPU machine may reach no network):
    bash benchmarks/gpu_measure.sh --prepare        # the wheels the GPU machine's image lacks + the real views -> .gpu/
    bash benchmarks/gpu_measure.sh --dry-run        # the whole run on this CPU with tiny settings (also a test)
Then one call on the GPU machine (a 590 s limit, .gpu/ copied beside the checkout):
    bash benchmarks/gpu_measure.sh [--vram-cap 12,16,24] [--steps a,b,...] [--budget 540]
$OUT then holds summary.json (every step's entry: status, seconds, limit, its figures) and gpu_measure.log.

Steps, in order (a step that no longer fits in what is left of the budget is recorded as skipped):
  env           nvidia-smi, Python, CPU count
  install       the carried wheels the image lacks, `pip install --no-index --no-deps --target` (gpu_env.py install)
  imports       every module the benchmarks import; a failure STOPS the run with the reason (gpu_env.py imports)
  gsplat_build  gsplat's CUDA extension built once for this card (TORCH_CUDA_ARCH_LIST, MAX_JOBS), untimed: it may
                use what is left of the budget; the later steps reuse the build (gpu_env.py gsplat)
  backends      gsplat vs the torch rasteriser: parity + timings (check_backends_gpu.py)
  vram_caps     one real-size view-group step under --vram-cap caps, per weights variant (bench_vram_cap.py)
  sampler_bf16  one 5-view group through the real sampler code, 480x720 x 25 frames (bench_sampler.py)
  fit_real      the 21 real views fitted at full resolution with backend auto (bench_fit4d.py real --scale 1)
  transformer_bf16, transformer_fp8   one CFG forward (bench_transformer.py), only when named in --steps
The summary is rewritten after every step, so a call cut short still returns what was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STEPS = ("env", "install", "imports", "gsplat_build", "backends", "vram_caps", "sampler_bf16", "fit_real")
OPTIONAL_STEPS = ("transformer_bf16", "transformer_fp8")
#: seconds kept back at the end for the summary
RESERVE_S = 10


class Step:
    def __init__(self, name, max_s, min_s, argv, essential=False):
        self.name, self.max_s, self.min_s, self.argv, self.essential = name, max_s, min_s, argv, essential


def steps_for(a, py: str, out: Path, site: str, work: Path) -> dict:
    """name -> Step. ``argv(limit_s)`` gives the command for the limit the step gets (or None: done in-process).
    Each step writes its figures to work/NAME.json (outside $OUT: only 8 files come back from the GPU machine, and
    summary.json holds them all)."""
    dry = a.dry_run
    b = str(REPO / "benchmarks")
    caps = a.vram_cap
    j = lambda name: ["--json", str(work / f"{name}.json")]  # noqa: E731
    wheels = str(out / "wheels") if dry else a.wheels
    targets = "diffusers,gsplat,charshot_probe" if dry else "diffusers,gsplat"

    def fit_argv(limit):
        fit_out = ["--out", str(work / "fit4d")]
        if dry:  # the real views when this checkout has them, else the synthetic character (3 frames)
            case = ["real", "--seconds", "8"] if real_views_dir() else [
                "motions", "--motions", "wave", "--budgets", "8", "--neighbour", "on", "--frames", "3",
                "--synth-gaussians", "300"]
            return [py, f"{b}/bench_fit4d.py", *case, "--scale", "0.125", "--backend", "auto", *fit_out,
                    *j("fit_real")]
        # the fit's budget, leaving time to load the views and render the held-out ones at full resolution
        secs = int(max(15, min(120, limit - 45)))
        return [py, f"{b}/bench_fit4d.py", "real", "--scale", "1", "--seconds", str(secs), "--backend", "auto",
                *fit_out, *j("fit_real")]

    def caps_argv(limit):
        if dry:
            return [py, f"{b}/bench_vram_cap.py", "--device", "cpu", "--tiny", "--caps", caps, *j("vram_caps")]
        return [py, f"{b}/bench_vram_cap.py", "--caps", "none," + caps, "--deadline-s", str(max(10, limit - 40)),
                *j("vram_caps")]

    def tr(fp8):
        name = "transformer_fp8" if fp8 else "transformer_bf16"
        extra = ["--fp8"] if fp8 else []
        if dry:
            return lambda limit: [py, f"{b}/bench_transformer.py", "--device", "cpu", "--tiny", "--steps", "1",
                                  "--warmup", "0", *extra, *j(name)]
        return lambda limit: [py, f"{b}/bench_transformer.py", "--steps", "2", *extra, *j(name)]

    table = [
        Step("env", 30, 1, None, essential=True),
        Step("install", 120, 5, lambda limit: [py, f"{b}/gpu_env.py", "install", "--wheels", wheels, "--site", site,
                                               "--targets", targets, *j("install")], essential=True),
        Step("imports", 120, 5, lambda limit: [py, f"{b}/gpu_env.py", "imports", *(["--extra", "charshot_probe"]
                                                                                   if dry else []), *j("imports")],
             essential=True),
        Step("gsplat_build", None, 20, lambda limit: [py, f"{b}/gpu_env.py", "gsplat", *j("gsplat_build")]),
        Step("backends", 90, 20, lambda limit: [py, f"{b}/check_backends_gpu.py", *j("backends")]),
        Step("vram_caps", 200, 60, caps_argv),
        Step("sampler_bf16", 150, 60, lambda limit: [py, f"{b}/bench_sampler.py", *(
            ["--tiny", "--steps", "2", "--frames", "5"] if dry else ["--steps", "4"]), *j("sampler_bf16")]),
        Step("fit_real", 170, 60, fit_argv),
        Step("transformer_bf16", 90, 40, tr(False)),
        Step("transformer_fp8", 90, 40, tr(True)),
    ]
    return {s.name: s for s in table}


def real_views_dir():
    """The shared folder holding fixtures/charactershot_example (the 21 real views), or None."""
    for d in (os.environ.get("CHARSHOT_SHARED_DIR"), REPO / ".gpu" / "shared", REPO.parent / "shared"):
        if d and (Path(d) / "fixtures" / "charactershot_example" / "cameras.json").is_file():
            return Path(d)
    return None


class Summary:
    def __init__(self, path: Path, meta: dict):
        self.path, self.data = path, {**meta, "steps": {}}

    def put(self, name, entry):
        self.data["steps"][name] = entry
        self.write()

    def write(self):
        tmp = self.path.with_suffix(".partial")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def run_cmd(argv, limit_s, env) -> tuple[int | None, float, bool]:
    """Run argv in its own process group (its output on ours), killed after limit_s; (exit code, seconds, timed
    out)."""
    t0 = time.perf_counter()
    print(f"$ {' '.join(argv)}", flush=True)
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc.wait(timeout=limit_s)
        return rc, time.perf_counter() - t0, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return None, time.perf_counter() - t0, True


def env_info(dry: bool) -> dict:
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader"],
                           capture_output=True, text=True)
        info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    else:
        info["nvidia_smi"] = None
    info["mode"] = "dry-run (CPU, tiny settings)" if dry else "device"
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the whole run on the CPU with tiny settings, no download")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for all the steps together")
    ap.add_argument("--vram-cap", default="12,16,24", help="GiB caps emulating smaller cards, comma-separated")
    ap.add_argument("--steps", default=",".join(DEFAULT_STEPS),
                    help=f"comma-separated, in run order; also {', '.join(OPTIONAL_STEPS)}")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / ".gpu" / "out"))
    ap.add_argument("--wheels", default=str(REPO / ".gpu" / "wheels"))
    ap.add_argument("--site", default="/tmp/charshot-site", help="where the carried wheels are installed")
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the steps")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + a.budget
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for part in a.vram_cap.split(","):
        try:
            if float(part) <= 0:
                raise ValueError
        except ValueError:
            ap.error(f"--vram-cap: expected positive GiB numbers separated by commas, e.g. 12,16,24; got {a.vram_cap!r}")
    site = str(out / "site") if a.dry_run else a.site
    work = out / "work" if a.dry_run else REPO / ".gpu" / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    table = steps_for(a, a.python, out, site, work)
    names = [s.strip() for s in a.steps.split(",") if s.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"--steps: unknown {unknown}; expected some of {', '.join(table)}")

    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([site, str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    shared = real_views_dir()
    if shared is not None:
        env["CHARSHOT_SHARED_DIR"] = str(shared)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(work / "torch_extensions") if a.dry_run else "/tmp/charshot-torch-ext")
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    if a.dry_run:
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from gpu_env import make_probe_wheel

        shutil.rmtree(out / "wheels", ignore_errors=True)
        shutil.rmtree(out / "site", ignore_errors=True)
        make_probe_wheel(out / "wheels")

    info = env_info(a.dry_run)
    cap = (info.get("nvidia_smi") or "").splitlines()[0].split(",")[-1].strip() if info.get("nvidia_smi") else ""
    if cap.replace(".", "").isdigit():  # the same arch list for the gsplat build and every step that loads it
        env.setdefault("TORCH_CUDA_ARCH_LIST", cap)
    summary = Summary(out / "summary.json", {"machine": info, "budget_s": a.budget, "vram_cap_gib": a.vram_cap,
                                             "steps_asked": names, "command": " ".join(sys.argv)})
    stopped = None
    for name in names:
        step = table[name]
        left = deadline - time.perf_counter() - RESERVE_S
        if stopped:
            summary.put(name, {"status": "skipped", "reason": stopped})
            continue
        if left < step.min_s:
            summary.put(name, {"status": "skipped", "reason": f"budget: {left:.0f} s left, the step needs at least "
                                                              f"{step.min_s} s"})
            print(f"=== {name}: skipped ({left:.0f} s left)", flush=True)
            continue
        limit = left if step.max_s is None else min(step.max_s, left)
        print(f"=== {name} (limit {limit:.0f} s)", flush=True)
        if step.argv is None:  # env: in-process
            t0 = time.perf_counter()
            summary.put(name, {"status": "ok", "seconds": round(time.perf_counter() - t0, 2), "result": info})
            print(json.dumps(info), flush=True)
            continue
        rc, secs, timed_out = run_cmd(step.argv(limit), limit, env)
        entry = {"status": "timeout" if timed_out else ("ok" if rc == 0 else "failed"), "seconds": round(secs, 1),
                 "limit_s": round(limit), "exit": rc}
        res_path = work / f"{name}.json"
        if res_path.is_file():
            try:
                entry["result"] = json.loads(res_path.read_text())
            except ValueError as e:
                entry["result_error"] = str(e)
        if entry["status"] != "ok":
            err = (entry.get("result") or {}).get("error") if isinstance(entry.get("result"), dict) else None
            entry["reason"] = err or ("killed at its time limit" if timed_out else f"exit {rc}: see gpu_measure.log")
        summary.put(name, entry)
        print(f"=== {name}: {entry['status']} after {secs:.0f} s", flush=True)
        if entry["status"] != "ok" and step.essential:
            stopped = f"{name} failed: {entry['reason']}"
            print(f"STOPPED: {stopped}", flush=True)
    summary.data["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    summary.data["stopped"] = stopped
    summary.write()
    short = {n: e["status"] for n, e in summary.data["steps"].items()}
    print(json.dumps({"summary": str(out / "summary.json"), "elapsed_s": summary.data["elapsed_s"],
                      "steps": short, "stopped": stopped}, indent=1))
    return 1 if stopped else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())

#!/usr/bin/env bash
# The prepared device run: every GPU measurement the issues ask for, as ONE command on a lent H100/H200.
#
# Prepare here (this machine reaches PyPI; the device machine reaches nothing):
#   bash benchmarks/gpu_measure.sh --prepare        # wheels (diffusers, gsplat) + the real example views into .gpu/
# Then one device call (tool `run`), e.g. with timeout_s 580:
#   carry: [".gpu"]   command: bash benchmarks/gpu_measure.sh
# What comes back under $OUT: summary.json (every figure) and gpu_measure.log (all output). Copy the figures,
# the machine and this command into docs/performance.md.
#
# Steps (each bounded by its own timeout so one slow step cannot eat the lease):
#   1. gsplat vs the torch rasteriser (parity + timings at 720x480)    benchmarks/check_backends_gpu.py
#   2. transformer CFG step, bf16 and fp8 weights                       benchmarks/bench_transformer.py
#   3. one 5-view group through the sampler (per-step, peak VRAM, VAE)  benchmarks/bench_sampler.py
#   4. a full-resolution 4D fit of the real views (gsplat, 120 s)       benchmarks/bench_fit4d.py real --scale 1
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
here="$(pwd)"
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .gpu/wheels .gpu/shared/fixtures
  py=".venv/bin/python"; [ -x "$py" ] || py=python3
  "$py" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: -d .gpu/wheels \
      "diffusers==0.42.1" "gsplat>=1.5"
  rm -rf .gpu/shared/fixtures/charactershot_example
  cp -r ../shared/fixtures/charactershot_example .gpu/shared/fixtures/
  du -sh .gpu
  exit 0
fi
OUT="${OUT:-$here/.gpu/out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_measure.log") 2>&1
export PYTHONUNBUFFERED=1 CHARSHOT_SHARED_DIR="$here/.gpu/shared"
py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -m pip install --no-index --find-links .gpu/wheels -q diffusers gsplat || echo "pip install failed"
"$py" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, torch.cuda.get_device_name(0))"

step() {  # step NAME SECONDS script args...
  local name=$1 secs=$2; shift 2
  echo "=== $name (limit ${secs}s): $*"
  local t0=$SECONDS
  timeout "$secs" "$py" "$@" --json "$OUT/$name.json"
  echo "=== $name: exit $? after $((SECONDS - t0)) s"
}
step backends 150 benchmarks/check_backends_gpu.py
step transformer_bf16 120 benchmarks/bench_transformer.py --steps 3
step transformer_fp8 120 benchmarks/bench_transformer.py --steps 3 --fp8
step sampler_bf16 150 benchmarks/bench_sampler.py --steps 5
step fit_real 170 benchmarks/bench_fit4d.py real --scale 1 --seconds 120 --backend gsplat
"$py" - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
summary = {}
for fn in sorted(os.listdir(out)):
    if fn.endswith(".json") and fn != "summary.json":
        try:
            summary[fn[:-5]] = json.load(open(os.path.join(out, fn)))
        except ValueError as e:
            summary[fn[:-5]] = {"error": str(e)}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(summary, indent=1)[:6000])
PY

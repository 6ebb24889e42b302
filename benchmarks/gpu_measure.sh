#!/usr/bin/env bash
# The prepared GPU run: every GPU measurement the issues ask for, as ONE call within --budget (540) seconds.
#
# Here (this machine reaches the package index; the GPU machine may reach no network):
#   bash benchmarks/gpu_measure.sh --prepare     # the wheels the GPU machine's image lacks (pip's resolver for its Python
#                                                #   3.12, minus benchmarks/device_packages.txt) + the real views -> .gpu/
#   bash benchmarks/gpu_measure.sh --dry-run     # the whole run on this CPU, tiny settings, no download (a test too)
# Then one call on the GPU machine (a 590 s limit), with .gpu/ copied beside the checkout:
#   bash benchmarks/gpu_measure.sh [--vram-cap 12,16,24] [--steps ...] [--budget 540]
# Back under $OUT: summary.json (every step: status, seconds, limit, figures) and gpu_measure.log (all output).
# The steps and their limits: benchmarks/gpu_measure.py (its docstring). Copy the figures, the machine and this
# command into docs/performance.md.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
here="$(pwd)"
venv_py="$here/.venv/bin/python"

if [ "${1:-}" = "--prepare" ]; then
  shift
  py="$venv_py"; [ -x "$py" ] || py=python3
  mkdir -p .gpu/wheels .gpu/shared/fixtures
  "$py" benchmarks/gpu_env.py plan --wheels .gpu/wheels "$@" || { echo "prepare: resolving or downloading failed"; exit 1; }
  rm -rf .gpu/wheels/.resolve-target
  src="${CHARSHOT_SHARED_DIR:-../shared}/fixtures/charactershot_example"
  if [ -d "$src" ]; then
    rm -rf .gpu/shared/fixtures/charactershot_example
    cp -r "$src" .gpu/shared/fixtures/
  else
    echo "prepare: no real views at $src (set CHARSHOT_SHARED_DIR); fit_real will be skipped on the GPU machine"
  fi
  du -sh .gpu
  exit 0
fi

dry=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done
if [ "$dry" = 1 ]; then
  # the venv's packages, tiny settings on the CPU; nothing is downloaded
  py="$venv_py"; [ -x "$py" ] || py=python3
  out="${OUT:-$here/.gpu/dry-run}"
else
  py=python3  # the GPU machine's interpreter (it holds torch)
  out="${OUT:-$here/.gpu/out}"
fi
mkdir -p "$out"
"$py" benchmarks/gpu_measure.py --out "$out" --python "$py" "$@" 2>&1 | tee "$out/gpu_measure.log"
exit "${PIPESTATUS[0]}"

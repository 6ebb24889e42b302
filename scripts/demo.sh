#!/usr/bin/env bash
# Set up what is missing (idempotent), then run the demo workflow (tests/workflows/charactershot_demo.json, the
# "1 Start here" template) headless through a real ComfyUI on the CPU and print where its files are.
#   scripts/demo.sh                 run the demo workflow (extra arguments go to scripts/demo_workflow.py, e.g. --seconds 60)
#   scripts/demo.sh --ui            start ComfyUI with the pack to look at it in the browser; Ctrl-C stops it
#   scripts/demo.sh --cli [...]     the headless core demo instead (python -m charactershot_core demo), no ComfyUI
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
# Threads that spin while waiting make torch crawl when another process shares the cores.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
if [ "${1:-}" = "--cli" ]; then
  shift
  .venv/bin/python -m charactershot_core info
  exec .venv/bin/python -m charactershot_core demo --out "$root/demo_out" "$@"
fi
exec .venv/bin/python scripts/demo_workflow.py "$@"

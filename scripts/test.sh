#!/usr/bin/env bash
# Set up what is missing (idempotent), then run the whole test suite with the project's venv.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not e2e"` or `scripts/test.sh tests/test_cameras.py`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
# Threads that spin while waiting make torch crawl when another process shares the cores (measured: 16x slower).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
set +e
.venv/bin/python -m pytest -q -ra --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "no tests were collected" >&2
  exit 1
fi
exit "$rc"

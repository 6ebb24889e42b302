#!/usr/bin/env bash
# Set up what is missing (idempotent), then run the main job on the bundled demo.
# Extra arguments go to `python -m charactershot_core demo` (see --help there), e.g. --seconds 60.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
.venv/bin/python -m charactershot_core info
exec .venv/bin/python -m charactershot_core demo --out "$root/demo_out" "$@"

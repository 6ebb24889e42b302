#!/usr/bin/env bash
# The tests that exercise the pack's dependencies, run with the lowest versions requirements.txt allows
# (requirements-floors.txt, installed into .cache/floors-site, or $CHARSHOT_FLOORS_SITE, and put before the
# project's .venv on the path).
# Arguments go to pytest; test paths among them replace the default selection (`scripts/test_floors.sh tests/test_poses.py`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"
site="${CHARSHOT_FLOORS_SITE:-$root/.cache/floors-site}"
stamp="$site/.installed-$(sha1sum requirements-floors.txt | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[floors] installing requirements-floors.txt into $site" >&2
  rm -rf "$site"
  "$py" -m pip install --disable-pip-version-check -q --no-deps --target "$site" -r requirements-floors.txt
  touch "$stamp"
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# the floors are what the tests import
"$py" - <<'PY'
import re
from importlib import metadata
pins = {}
for line in open("requirements-floors.txt"):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        pins[name] = version
for name, version in pins.items():
    got = metadata.version(name)
    assert got == version, f"{name}: {got} imported, {version} pinned"
print("[floors] " + ", ".join(f"{n}=={v}" for n, v in pins.items()))
PY
paths=0
for a in "$@"; do case "$a" in tests/*|./tests/*) paths=1 ;; esac; done
if [ "$paths" -eq 0 ]; then  # options only (or nothing): the default selection
  set -- "$@" tests/test_models_parity.py tests/test_models_transformer.py tests/test_models_loading.py \
    tests/test_sampling.py tests/test_poses.py tests/test_canvas.py tests/test_views.py tests/test_package.py \
    tests/test_distributed_ray.py
fi
exec "$py" -m pytest -q -p no:cacheprovider "$@"

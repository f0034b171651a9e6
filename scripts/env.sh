#!/usr/bin/env bash
# Create or reuse the project environment in .venv/ with every version pinned.
#   requirements.lock       all Python packages (resolved from requirements.in by scripts/lock.sh), torch
#                           with CUDA 13; or requirements-cu12.lock, the same with torch's CUDA 12 build, for
#                           NVIDIA drivers older than 580 (scripts/cuda_lock.sh picks: SECVIT_CUDA=12|13,
#                           else the driver that nvidia-smi reports); .venv/.secvit-lock names the one installed
#   mmcv 2.1.0         built from source once per machine and cached (scripts/build_mmcv.sh): with
#                      CPU ops, or with CPU and CUDA ops where a GPU is visible or SECVIT_MMCV_CUDA=1
#                      (scripts/mmcv_flavour.sh says which, and names the cache directory)
# Re-running is cheap: a stamp of the inputs skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
MMCV_VERSION=2.1.0
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: secvit needs Python 3.11 (found $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

source scripts/mmcv_flavour.sh
wheel_dir=$MMCV_WHEEL_DIR
# the stamp names the mmcv flavour too: switching between the CPU and a CUDA build reinstalls mmcv
stamp=$( (cat "$SECVIT_LOCK" pyproject.toml scripts/env.sh scripts/build_mmcv.sh scripts/mmcv_flavour.sh scripts/cuda_lock.sh; echo "$wheel_dir") \
  | sha256sum | cut -c1-16)

if [ -f .venv/.secvit-env ] && [ "$(cat .venv/.secvit-env)" = "$stamp" ]; then
  exit 0
fi
if [ -f .venv/.secvit-lock ] && [ "$(cat .venv/.secvit-lock)" != "$SECVIT_LOCK" ]; then
  # torch's CUDA libraries differ by name between the locks: start afresh rather than keep both
  echo "secvit: .venv was installed from $(cat .venv/.secvit-lock); recreating it for $SECVIT_LOCK" >&2
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q "uv==$UV_VERSION"
uv=.venv/bin/uv
echo "secvit: installing the packages pinned in $SECVIT_LOCK into .venv ($SECVIT_LOCK_WHY)" >&2
# --compile-bytecode: write every module's bytecode now. Where PYTHONDONTWRITEBYTECODE is set (as on
# this project's machines) Python never caches it, and each process would compile torch, timm, mmdet
# and their imports from source again: `import secvit.cli.main` took 11 s instead of 4.6 s on 2 cores.
"$uv" pip install -q --python .venv/bin/python --compile-bytecode -r "$SECVIT_LOCK"
echo "$SECVIT_LOCK" > .venv/.secvit-lock  # secvit doctor reads it; cuda_lock.sh keeps it

mmcv_wheel=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)
legacy=$(ls "$MMCV_LEGACY_CPU_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$mmcv_wheel" ] && [ "$MMCV_FLAVOUR" = cpu ] && [ -n "$legacy" ]; then
  # a CPU wheel cached before the key named the flavour (every build then was FORCE_CUDA=0)
  mkdir -p "$wheel_dir" && cp "$legacy" "$wheel_dir/" && mmcv_wheel=$wheel_dir/$(basename "$legacy")
fi
if [ -z "$mmcv_wheel" ]; then
  if [ "$MMCV_FLAVOUR" = cuda ]; then
    echo "secvit: building mmcv $MMCV_VERSION with CUDA ops for $MMCV_ARCHS (once per machine and architectures; ~35 min on 2 cores for one)" >&2
  else
    echo "secvit: building mmcv $MMCV_VERSION with CPU ops (once per machine, ~15 min on 2 cores)" >&2
    if [ -z "${SECVIT_MMCV_CUDA:-}" ] && command -v nvcc >/dev/null 2>&1; then
      echo "secvit: nvcc is here but no GPU: SECVIT_MMCV_CUDA=1 builds the CUDA ops too (~35 min on 2 cores, one architecture)" >&2
    fi
  fi
  mmcv_wheel=$(scripts/build_mmcv.sh "$wheel_dir" | tail -n1)
fi
# same name and version for every flavour: reinstall, or uv keeps whichever build is there
"$uv" pip install -q --python .venv/bin/python --compile-bytecode --no-deps --reinstall-package mmcv "$mmcv_wheel"
"$uv" pip install -q --python .venv/bin/python --compile-bytecode --no-deps -e .
echo "$stamp" > .venv/.secvit-env

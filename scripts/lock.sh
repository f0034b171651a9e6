#!/usr/bin/env bash
# Re-resolve requirements.in into the pinned requirements.lock (run after changing requirements.in).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --no-header requirements.in -o requirements.lock

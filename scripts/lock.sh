#!/usr/bin/env bash
# Re-resolve requirements.in into the pinned lockfiles (run after changing requirements.in):
#   requirements.lock       torch's CUDA 13 wheels (the default)
#   requirements-cu12.lock  the same with requirements-cu12.in's torch and torchvision (CUDA 12 wheels);
#                           every package that torch does not pull in keeps its requirements.lock pin
set -euo pipefail
cd "$(dirname "$0")/.."
compile() {
  .venv/bin/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header "$@"
}
compile requirements.in -o requirements.lock
# constraints: requirements.lock without torch, torchvision and what they pull in (triton, CUDA libraries)
constraints=$(mktemp --suffix .txt)
trap 'rm -f "$constraints"' EXIT
.venv/bin/python - requirements.lock requirements-cu12.in > "$constraints" <<'PY'
import sys
from secvit.doctor.report import lock_pins, requirement_names, torch_closure
pins = lock_pins(sys.argv[1])
for name in sorted(set(pins) - torch_closure(sys.argv[1], requirement_names(sys.argv[2]))):
    print(f"{name}=={pins[name]}")
PY
compile requirements.in --override requirements-cu12.in --constraint "$constraints" -o requirements-cu12.lock
# the constraints file is this script's means, not a reason for a pin: drop its (temporary) name from the notes
sed -i -E '/^    #   -c /d; /^    # via -c /d' requirements-cu12.lock

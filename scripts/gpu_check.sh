#!/usr/bin/env bash
# The GPU check: whether the study runs on this machine's GPU, in minutes (docs/gpu.md, docs/benchmarks.md).
#   bash scripts/gpu_check.sh [--device cuda|cpu] [--parts seca,families,...] [--out DIR]
#   bash scripts/gpu_check.sh --fetch-wheels   (where the package index is reachable: the wheels a bare machine needs)
# Writes DIR/gpu_check.json and DIR/gpu_check.md (default DIR: runs/gpu_check/<device>); exit status 1 if a part failed.
#
# Two ways to run, chosen here:
#   project  the project's environment: .venv from the lockfile (scripts/env.sh; on a GPU it builds mmcv's CUDA ops,
#            about an hour of CPU once per machine), so the dense checks run too.
#   bare     the machine's own Python and torch, nothing installed: where the package index is out of reach, or
#            PYTHON names an interpreter with torch that the check must use, or SECVIT_GPU_CHECK=bare. Needs Python
#            3.11 or 3.12 with torch >= 2.10 (the CUDA 12 lock's), timm, typer and rich; every other package the check imports comes
#            from the wheels in wheels/gpu-check/ (pure Python; --fetch-wheels puts them there, and they travel
#            with the checkout), unpacked with a copy of the project into .gpu-check/site. No mmcv: the dense
#            checks are skipped.
# SECVIT_GPU_CHECK=project forces the project's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=wheels/gpu-check
SITE=.gpu-check/site
# What the check imports beyond torch, timm, typer and rich (and what they pull in), pinned as in the lockfile.
BARE_PACKAGES=(nvidia-ml-py fastervit submitit cloudpickle)
# the oldest torch of the two lockfiles (requirements-cu12.lock's: a CUDA 12 node's own torch is 2.10 at newest)
MIN_TORCH=$(grep -E '^torch==' requirements-cu12.lock | cut -d= -f3 | cut -d. -f1,2)

die() { echo "error: $*" >&2; exit 2; }

device=cuda
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in
    --device) device=${args[$((i + 1))]:-cuda} ;;
    --device=*) device=${args[$i]#--device=} ;;
    --fetch-wheels)
      # pure-Python wheels only (py3-none-any): the same files serve Python 3.11 and 3.12
      pins=()
      for name in "${BARE_PACKAGES[@]}"; do
        pin=$(grep -iE "^${name}==" requirements.lock | cut -d' ' -f1) || die "$name is not in requirements.lock"
        pins+=("$pin")
      done
      rm -rf "$WHEELS" && mkdir -p "$WHEELS"
      python3 -m pip download -q --no-deps --only-binary :all: --dest "$WHEELS" "${pins[@]}"
      if ls "$WHEELS" | grep -v -- '-none-any\.whl$' >/dev/null; then die "not pure Python: $(ls "$WHEELS" | grep -v -- '-none-any')"; fi
      echo "$WHEELS: $(ls "$WHEELS" | tr '\n' ' ')"
      exit 0 ;;
  esac
done

index_reachable() {  # the package index that pip is configured for answers within 20 s (a 20 kB wheel)
  local dest
  dest=$(mktemp -d)
  timeout 20 "$1" -m pip download -q --no-deps --only-binary :all: --dest "$dest" "$(grep -E '^cloudpickle==' requirements.lock)" >/dev/null 2>&1
  local status=$?
  rm -rf "$dest"
  return $status
}

mode=${SECVIT_GPU_CHECK:-}
why=""
if [ -z "$mode" ]; then
  host_python=${PYTHON:-$(command -v python3 || true)}
  if [ -n "${PYTHON:-}" ] && "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
    mode=bare; why="PYTHON=$PYTHON has torch"
  elif [ -f .venv/.secvit-env ]; then
    mode=project; why="the project's .venv is installed"
  elif [ -z "$host_python" ] || ! index_reachable "$host_python"; then
    mode=bare; why="no package index within reach"
  else
    mode=project; why="the package index is within reach"
  fi
fi
case "$mode" in
  project|bare) ;;
  *) die "SECVIT_GPU_CHECK must be project or bare (got '$mode')" ;;
esac
export SECVIT_GPU_CHECK_MODE=$mode

if [ "$mode" = project ]; then
  echo "gpu_check: project mode${why:+ ($why)}" >&2
  if [ "$device" = cuda ]; then
    # mmcv with CUDA ops, for the visible GPUs' architectures unless TORCH_CUDA_ARCH_LIST says otherwise
    export SECVIT_MMCV_CUDA=${SECVIT_MMCV_CUDA:-1}
    export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}  # one GPU
  fi
  bash scripts/env.sh
  exec .venv/bin/secvit doctor --run "$@"
fi

# bare: the machine's Python as it is
py=${PYTHON:-$(command -v python3 || true)}
[ -n "$py" ] || die "no python3 on PATH; set PYTHON=/path/to/python"
"$py" - "$MIN_TORCH" <<'PY' || exit 2
import sys
if sys.version_info[:2] not in ((3, 11), (3, 12)):
    sys.exit(f"error: the bare GPU check needs Python 3.11 or 3.12, found {sys.version.split()[0]} ({sys.executable}); set PYTHON")
missing = []
for name in ("torch", "timm", "typer", "rich"):
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
if missing:
    sys.exit(f"error: {sys.executable} lacks {', '.join(missing)}: the bare GPU check uses the machine's own torch, timm, typer and rich")
import torch
have = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
want = tuple(int(p) for p in sys.argv[1].split("."))
if have < want:
    sys.exit(f"error: torch {torch.__version__} is older than {sys.argv[1]}, the oldest the GPU check supports")
PY
echo "gpu_check: bare mode${why:+ ($why)}: $py" >&2
rm -rf "$SITE" && mkdir -p "$SITE"
# the project as it would be installed: secvit/ with cli/, pipelines/ and orchestrate/ inside (pyproject's package-dir)
cp -r secvit "$SITE/secvit"
cp -r cli "$SITE/secvit/cli" && cp -r pipelines "$SITE/secvit/pipelines" && cp -r orchestrate "$SITE/secvit/orchestrate"
# the brought wheels, each only where the machine lacks the package (a wheel is a zip file: unpacked, it is installed)
"$py" - "$WHEELS" "$SITE" "${BARE_PACKAGES[@]}" <<'PY' || exit 2
import sys, zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
wheels, site, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
for name in names:
    try:
        version(name)
        continue
    except PackageNotFoundError:
        pass
    found = sorted(wheels.glob(f"{name.replace('-', '_')}-*.whl"))
    if not found:
        sys.exit(f"error: {name} is neither installed nor in {wheels}/: run `bash scripts/gpu_check.sh --fetch-wheels` where the package index is reachable, and bring {wheels}/ along")
    zipfile.ZipFile(found[-1]).extractall(site)
    print(f"gpu_check: {name} from {found[-1].name}", file=sys.stderr)
PY
export PYTHONPATH=$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONSAFEPATH=1  # the copy in $SITE, not ./secvit (which lacks cli/): no current directory on sys.path
[ "$device" = cuda ] && export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
exec "$py" -m secvit.cli.main doctor --run "$@"

#!/usr/bin/env bash
# Build mmcv 2.1.0 against the pinned torch and cache the wheel.
# Usage: scripts/build_mmcv.sh [OUT_DIR]   (prints the wheel path on success)
# OUT_DIR defaults to the cache directory that scripts/mmcv_flavour.sh names for this machine.
# The flavour comes from scripts/mmcv_flavour.sh: CPU ops only, or CPU and CUDA ops
# (SECVIT_MMCV_CUDA=1, or a visible GPU) for the architectures in TORCH_CUDA_ARCH_LIST
# (default: the visible GPUs', else 8.0;9.0 = A100, H100).
# mmcv has no wheels for this torch; its setup.py needs setuptools<70 (pkg_resources)
# and asks for -std=c++14/17, while torch 2.14's headers need C++20.
# CUDA compiler: a system nvcc of torch's CUDA major version (13 or 12) if there is one, else, for
# CUDA 13, NVIDIA's compiler and headers from PyPI (cuda-toolkit[nvcc,...] at the lock's cuda-toolkit
# pin), installed into the throwaway build environment only; SECVIT_CUDA_FROM_PYPI=1 takes PyPI's even
# where a system nvcc exists. CUDA 12 (requirements-cu12.lock) needs the system nvcc (module load
# cuda/12.x): PyPI's CUDA 12 packages put nvcc, the runtime and CCCL each in its own directory, not
# the one CUDA_HOME that torch's extension builder expects.
# MAX_JOBS (default: all cores) bounds the parallel compiles. SECVIT_MMCV_WORKDIR=DIR keeps the
# build tree in DIR and resumes it on the next run (for working on the patches); default: a
# temporary directory, removed at exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/mmcv_flavour.sh"
out=${1:-$MMCV_WHEEL_DIR}
torch_pin=$(grep -E '^torch==' "$root/$SECVIT_LOCK" | cut -d' ' -f1)  # the lockfile scripts/cuda_lock.sh picks
mmcv_version=2.1.0
start=$(date +%s)
if [ -n "${SECVIT_MMCV_WORKDIR:-}" ]; then
  work=$SECVIT_MMCV_WORKDIR
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
say() { echo "build_mmcv: $*" >&2; }

if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q "uv==0.13.8"
fi
uv="$work/venv/bin/uv"
py="$work/venv/bin/python"
export PATH=$work/venv/bin:$PATH  # torch's extension builder runs the ninja on PATH: the pinned one
"$uv" pip install -q --python "$py" "$torch_pin" numpy
"$uv" pip install -q --python "$py" --no-deps "setuptools==69.5.1" "wheel==0.45.1" "ninja==1.13.0"

if [ "$MMCV_FLAVOUR" = cuda ]; then
  nvcc_sys=$(command -v nvcc || true)
  if [ -z "$nvcc_sys" ] && [ -x "${CUDA_HOME:-/nonexistent}/bin/nvcc" ]; then nvcc_sys=$CUDA_HOME/bin/nvcc; fi
  if [ -z "${SECVIT_CUDA_FROM_PYPI:-}" ] && [ -n "$nvcc_sys" ] \
      && "$nvcc_sys" --version | grep -q "release ${MMCV_CUDA_VERSION%%.*}\."; then
    # nvcc on PATH may be a wrapper script: nvcc itself says where its toolkit lives
    cuda_home=$(dirname "$("$nvcc_sys" --dryrun -E -x cu /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p' | head -n1)")
    say "CUDA $MMCV_CUDA_VERSION from $cuda_home"
  elif [ "${MMCV_CUDA_VERSION%%.*}" != 13 ]; then
    say "CUDA $MMCV_CUDA_VERSION ops need a system nvcc $MMCV_CUDA_VERSION on PATH or in CUDA_HOME (e.g. module load cuda/${MMCV_CUDA_VERSION}); found ${nvcc_sys:-none}"
    exit 1
  else
    # NVIDIA's compiler (nvcc, cicc, ptxas), the runtime, CCCL (thrust/cub), NVTX and profiler
    # headers, at the versions of the cuda-toolkit that the locked torch pulls in.
    "$uv" pip install -q --python "$py" \
      "cuda-toolkit[nvcc,cccl,profiler,nvtx]==$MMCV_CUDA_TOOLKIT"
    cuda_home=$("$py" -c 'import nvidia; print(nvidia.__path__[0])')/cu${MMCV_CUDA_VERSION%%.*}
    # torch's cpp_extension links with -L$CUDA_HOME/lib64 -lcudart; the wheels ship lib/ and
    # only the versioned libcudart.so.13.
    [ -e "$cuda_home/lib64" ] || ln -s lib "$cuda_home/lib64"
    [ -e "$cuda_home/lib/libcudart.so" ] || ln -s libcudart.so.13 "$cuda_home/lib/libcudart.so"
    say "CUDA $MMCV_CUDA_VERSION from PyPI (cuda-toolkit $MMCV_CUDA_TOOLKIT) in $cuda_home"
  fi
  export CUDA_HOME=$cuda_home PATH=$cuda_home/bin:$PATH
  export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$MMCV_ARCHS
  say "CUDA ops for architectures $MMCV_ARCHS"
else
  export FORCE_CUDA=0
fi

src=$work/src/mmcv-$mmcv_version
if [ ! -d "$src" ]; then
  "$work/venv/bin/pip" download -q --no-deps --no-binary :all: "mmcv==$mmcv_version" -d "$work/src"
  tar -xzf "$work/src/mmcv-$mmcv_version.tar.gz" -C "$work/src"
fi
cd "$src"

# Patches to mmcv 2.1.0's sources, each idempotent and checked.
patch_check() { grep -q -- "$2" "$1" || { say "could not patch $1 ($3)"; exit 1; }; }
# torch 2.14's headers need C++20 (setup.py asks for C++14/17 for both cxx and nvcc).
# CUDA 13: with nvcc 13.0.88 (sm_90) every CUDA source compiles with no other patch (README, "On GPUs");
# a source that a later nvcc or architecture breaks gets its small, commented patch here.
sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' setup.py
patch_check setup.py 'c++20' 'C++ standard'

rm -rf "$work/dist"
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
  "$work/venv/bin/pip" wheel -v --no-build-isolation --no-deps . -w "$work/dist" > "$work/build.log" 2>&1 \
  || { tail -n 60 "$work/build.log" >&2; say "failed; full log in $work/build.log"; exit 1; }
mkdir -p "$out"
wheel=$(ls "$work/dist"/mmcv-*.whl)
cp "$wheel" "$out/"
say "built $(basename "$wheel") ($MMCV_FLAVOUR${MMCV_ARCHS:+, $MMCV_ARCHS}) in $(( $(date +%s) - start )) s"
echo "$out/$(basename "$wheel")"

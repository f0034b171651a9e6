#!/usr/bin/env bash
# Which mmcv build this machine needs, and the wheel cache directory that names it.
# Sourced by env.sh and build_mmcv.sh; run alone it prints the three values:
#   bash scripts/mmcv_flavour.sh   ->  MMCV_FLAVOUR=cpu|cuda  MMCV_ARCHS=...  MMCV_WHEEL_DIR=...
# MMCV_FLAVOUR is cuda when SECVIT_MMCV_CUDA=1, or (SECVIT_MMCV_CUDA unset) when a GPU is
# visible (nvidia-smi -L); SECVIT_MMCV_CUDA=0 forces the CPU build. A CUDA toolchain alone does
# not switch the default: this project's CPU machines ship nvcc 13.0 without a GPU, where a CUDA
# build would cost an hour for ops nothing can run. A login node preparing the environment for
# its GPU nodes sets SECVIT_MMCV_CUDA=1.
# MMCV_ARCHS (CUDA only) is TORCH_CUDA_ARCH_LIST if set, else the compute capabilities of the
# visible GPUs, else 8.0;9.0 (A100 and H100).
# The cache key names torch, Python, and for CUDA builds the CUDA version and the architectures,
# so a CPU wheel and CUDA wheels for different GPUs never take each other's place.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$_root/scripts/cuda_lock.sh"  # SECVIT_LOCK: the lockfile this machine installs
_torch=$(grep -E '^torch==' "$_root/$SECVIT_LOCK" | cut -d= -f3)
# torch's CUDA version, from the CUDA runtime that the locked torch wheel pulls in: cuda-toolkit 13.0.3.0
# (CUDA 13 wheels) or nvidia-cuda-runtime-cu12 12.8.90 (CUDA 12 wheels) -> 13.0 or 12.8
MMCV_CUDA_TOOLKIT=$(grep -E '^(cuda-toolkit|nvidia-cuda-runtime-cu12)==' "$_root/$SECVIT_LOCK" | head -n1 | cut -d= -f3)
MMCV_CUDA_VERSION=$(echo "$MMCV_CUDA_TOOLKIT" | cut -d. -f1-2)

_has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }

case "${SECVIT_MMCV_CUDA:-auto}" in
  1) MMCV_FLAVOUR=cuda ;;
  0) MMCV_FLAVOUR=cpu ;;
  auto) if _has_gpu; then MMCV_FLAVOUR=cuda; else MMCV_FLAVOUR=cpu; fi ;;
  *) echo "error: SECVIT_MMCV_CUDA must be 0 or 1 (got '$SECVIT_MMCV_CUDA')" >&2; exit 2 ;;
esac

_base=${SECVIT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secvit/wheels}
if [ "$MMCV_FLAVOUR" = cuda ]; then
  if [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    MMCV_ARCHS=$TORCH_CUDA_ARCH_LIST
  elif _has_gpu && caps=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null) && [ -n "$caps" ]; then
    MMCV_ARCHS=$(echo "$caps" | tr -d ' ' | sort -u | paste -sd';')
  else
    MMCV_ARCHS="8.0;9.0"
  fi
  # "8.0;9.0+PTX" -> sm80-sm90ptx
  _tag=$(echo "$MMCV_ARCHS" | tr ' ,' ';;' | tr ';' '\n' | grep -v '^$' | sed -E 's/\.//; s/\+PTX$/ptx/I; s/^/sm/' | paste -sd-)
  MMCV_WHEEL_DIR=$_base/torch-$_torch-cp311-cu${MMCV_CUDA_VERSION/./}-$_tag
else
  MMCV_ARCHS=
  MMCV_WHEEL_DIR=$_base/torch-$_torch-cp311-cpu
fi
# Before CUDA builds existed, the CPU wheel was cached under this key.
MMCV_LEGACY_CPU_DIR=$_base/torch-$_torch-cp311

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "MMCV_FLAVOUR=$MMCV_FLAVOUR"
  echo "MMCV_ARCHS=$MMCV_ARCHS"
  echo "MMCV_WHEEL_DIR=$MMCV_WHEEL_DIR"
fi

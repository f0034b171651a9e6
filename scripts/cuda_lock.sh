#!/usr/bin/env bash
# Which lockfile this machine installs: CUDA 13 or CUDA 12 builds of torch.
# Sourced by mmcv_flavour.sh (so by env.sh and build_mmcv.sh); run alone it prints the values:
#   bash scripts/cuda_lock.sh   ->  SECVIT_LOCK=requirements.lock  SECVIT_LOCK_CUDA=13  SECVIT_LOCK_WHY=...
#   requirements.lock       torch 2.14.1, CUDA 13.0 wheels: NVIDIA driver >= 580
#   requirements-cu12.lock  torch 2.10.0, CUDA 12.8 wheels (the last torch whose PyPI wheels are CUDA 12):
#                           driver >= 570, or >= 525 through CUDA's minor-version compatibility
# The choice, first that applies:
#   SECVIT_CUDA=12 or 13                  as asked
#   the lock .venv was installed from     kept while the driver (if any) can run it, so that a CPU
#                                         machine set up with SECVIT_CUDA=12 stays on it
#   nvidia-smi's driver version           below 580: CUDA 12; else CUDA 13
#   none of these                         CUDA 13 (requirements.lock)
_lock_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_lock_file() { if [ "$1" = 12 ]; then echo requirements-cu12.lock; else echo requirements.lock; fi; }
_driver_major=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 | cut -d. -f1 || true)
_venv_lock=$(cat "$_lock_root/.venv/.secvit-lock" 2>/dev/null || true)

case "${SECVIT_CUDA:-}" in
  12|13) SECVIT_LOCK_CUDA=$SECVIT_CUDA; SECVIT_LOCK_WHY="SECVIT_CUDA=$SECVIT_CUDA" ;;
  "")
    if [ -n "$_venv_lock" ] && { [ -z "$_driver_major" ] || [ "$_venv_lock" = requirements-cu12.lock ] || [ "$_driver_major" -ge 580 ]; }; then
      if [ "$_venv_lock" = requirements-cu12.lock ]; then SECVIT_LOCK_CUDA=12; else SECVIT_LOCK_CUDA=13; fi
      SECVIT_LOCK_WHY=".venv was installed from $_venv_lock"
    elif [ -n "$_driver_major" ] && [ "$_driver_major" -lt 580 ]; then
      SECVIT_LOCK_CUDA=12; SECVIT_LOCK_WHY="NVIDIA driver $_driver_major < 580 runs CUDA 12, not 13"
    elif [ -n "$_driver_major" ]; then
      SECVIT_LOCK_CUDA=13; SECVIT_LOCK_WHY="NVIDIA driver $_driver_major >= 580"
    else
      SECVIT_LOCK_CUDA=13; SECVIT_LOCK_WHY="no NVIDIA driver seen: the default"
    fi ;;
  *) echo "error: SECVIT_CUDA must be 12 or 13 (got '$SECVIT_CUDA')" >&2; exit 2 ;;
esac
SECVIT_LOCK=$(_lock_file "$SECVIT_LOCK_CUDA")

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "SECVIT_LOCK=$SECVIT_LOCK"
  echo "SECVIT_LOCK_CUDA=$SECVIT_LOCK_CUDA"
  echo "SECVIT_LOCK_WHY=$SECVIT_LOCK_WHY"
fi

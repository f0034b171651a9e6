#!/usr/bin/env bash
# The GPU check: whether the study runs on this machine's GPU, in a few minutes.
#   bash scripts/gpu_check.sh                 # on one GPU: build or reuse the CUDA environment, then check
#   bash scripts/gpu_check.sh --device cpu    # the same parts at tiny sizes on the CPU (CPU environment)
# Prints a table (SECA fast vs reference, training steps eager and compiled, Mask R-CNN and UperNet
# iterations, secvit bench models vs Swin-T); exit status 1 if a part failed. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in
    --device) device=${args[$((i + 1))]:-cuda} ;;
    --device=*) device=${args[$i]#--device=} ;;
  esac
done
if [ "$device" = cuda ]; then
  # mmcv with CUDA ops, for the visible GPUs' architectures unless TORCH_CUDA_ARCH_LIST says otherwise
  export SECVIT_MMCV_CUDA=${SECVIT_MMCV_CUDA:-1}
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}  # one GPU
fi
bash scripts/env.sh
exec .venv/bin/secvit doctor --run "$@"   # --device cuda is the default

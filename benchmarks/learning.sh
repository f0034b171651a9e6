#!/usr/bin/env bash
# The learning check of the dense stages (docs/learning.md): Mask R-CNN, RetinaNet, UperNet and Semantic FPN
# fine-tuned from the smoke pretraining's secvit_tiny on generated data that a small model can learn.
#   bash benchmarks/learning.sh              # prints box/mask AP50 and mIoU (vs a constant predictor)
#   bash benchmarks/learning.sh --shuffle    # the control: training labels permuted between images
# Needs runs/smoke/pretrain/secvit_tiny/best.pth:
#   secvit data --profile smoke --dataset imagenet && secvit pretrain --profile smoke --model secvit_tiny
# Each run takes at most 15 minutes on an idle 2-core CPU (0.5-9.1 minutes measured: docs/learning.md).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=runs/learning/real
[ "${1:-}" = "--shuffle" ] && out=runs/learning/shuffled
"$py" benchmarks/learning.py data --out "$out" "$@"
for setting in ${LEARNING_SETTINGS:-mask_rcnn retinanet upernet semantic_fpn}; do
  "$py" benchmarks/learning.py train "$setting" --out "$out"
done
"$py" benchmarks/learning.py report --out "$out"

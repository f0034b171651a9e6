#!/usr/bin/env bash
# The main job: set up .venv, then run the whole study on the smoke profile (CPU, generated data).
# Extra arguments go to `secvit repro all` (e.g. --profile paper --executor slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/env.sh
exec .venv/bin/secvit repro all "$@"

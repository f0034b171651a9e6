#!/usr/bin/env bash
# Run the test suite: set up .venv, start the local SLURM cluster for the `slurm` tests, run pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slurm" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/env.sh
if [ "${SECVIT_NO_SLURM:-0}" != 1 ]; then
  slurm/cluster.sh start
fi
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"

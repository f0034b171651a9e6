#!/usr/bin/env bash
# Run the test suite: set up .venv, start the local SLURM cluster for the `slurm` tests, run pytest.
# Tests run in SECVIT_TEST_WORKERS processes (default 2, one per core here; 0 runs them in this
# process), a whole test module per process, so module fixtures such as the smoke DAG run once.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow and not slurm" (the quick suite).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/env.sh
if [ "${SECVIT_NO_SLURM:-0}" != 1 ]; then
  slurm/cluster.sh start
fi
exec .venv/bin/python -m pytest -p no:cacheprovider -n "${SECVIT_TEST_WORKERS:-2}" --dist loadscope "$@"

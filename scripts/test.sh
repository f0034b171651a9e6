#!/usr/bin/env bash
# Run the test suite: set up .venv, start the local SLURM cluster for the `slurm` tests, run pytest.
# Tests run in SECVIT_TEST_WORKERS processes (default 2, one per core here; 0 runs them in this
# process), a whole test module per process (the long modules first: tests/conftest.py LONG_MODULES), so
# module fixtures such as the smoke DAG run once.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" (the quick subset: minutes, not the smoke DAG or SLURM jobs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/env.sh
if [ "${SECVIT_NO_SLURM:-0}" != 1 ]; then
  slurm/cluster.sh start
fi
workers="${SECVIT_TEST_WORKERS:-2}"
# each worker (and each command a test starts) gets its share of the cores: torch's default of one thread per
# core in every process oversubscribes them, and OpenMP threads then wait on each other (a smoke pretraining
# run beside another took 130 s with 2 threads each, 35 s with 1)
threads=$(( $(nproc) / (workers > 1 ? workers : 1) ))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}"
exec .venv/bin/python -m pytest -p no:cacheprovider -n "$workers" --dist loadscope --no-loadscope-reorder "$@"

"""How stages are dispatched, not what they compute: ``secvit.orchestrate``, whose files are in the top-level
folder ``orchestrate/`` (pyproject.toml's ``package-dir``).

:mod:`.repro` (``secvit repro``: targets and the stale stages), :mod:`.dag` (DVC's stale stages, run side by
side), :mod:`.launch` (one stage command: here, one process per device, or a SLURM job), :mod:`.env` (the
environment of stage commands), :mod:`.slurm` (SLURM jobs), :mod:`.slurm_watch` (their states and logs),
:mod:`.slurm_dag` (the DAG as SLURM jobs). Which stages exist is the study model (:mod:`secvit.study`); what
they cost, :mod:`secvit.cost`.

No DVC stage depends on this package: a stage's outputs depend on the code that computes them (``pipelines/``
and the library), not on how it was launched (tests/test_dvc_deps.py checks both directions).
"""

"""How stages are dispatched, not what they compute: running the DAG's stale stages side by side
(:mod:`.dag`), one process per device (:mod:`.launch`), SLURM jobs (:mod:`.slurm`, :mod:`.slurm_dag`)
and `secvit repro` (:mod:`.repro`).

Installed as ``secvit.orchestrate``. No DVC stage depends on this package: a stage's outputs depend
on the code that computes them (``pipelines/`` and the library), not on how it was launched
(tests/test_dvc_deps.py checks both directions).
"""

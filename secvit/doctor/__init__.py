"""``secvit doctor``: can this machine run a profile? Two parts, one command:

- :mod:`.report` reads the machine (packages against the lockfile, torch's CUDA, the driver, GPUs, mmcv's
  CUDA ops, the profile's datasets, SLURM) and says, row by row, what can run;
- :mod:`.gpu_check` (``secvit doctor --run``, ``scripts/gpu_check.sh``) runs the study's workloads on a GPU for
  a few minutes: the GPU check.

What a stage itself checks before it runs is :mod:`secvit.device`.
"""

"""The cost plan (``secvit plan``): what the study costs before anything runs, per stage, table and in all.

Its seams: :mod:`.rates` (a device's GFLOPs per second, measured by ``secvit bench train`` or defaults),
:mod:`.flops` (FLOP counts of the models, cached), :mod:`.work` and :mod:`.dense` (what each stage computes;
the dense stages' schedules, images and RoI heads), :mod:`.plan` (device-hours and wall time of every stage of
the study model, :mod:`secvit.study`). No stage depends on it, and it dispatches nothing.
"""

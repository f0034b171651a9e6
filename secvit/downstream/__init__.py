"""Dense prediction on OpenMMLab: the backbone adapter (``backbone``), the runner (``run``), hooks.

Nothing here is imported by ``import secvit``: mmengine, mmdet and mmseg load only with these modules.
"""

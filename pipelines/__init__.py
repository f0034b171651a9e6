"""The stages: ``secvit.pipelines``, whose files are in the top-level folder ``pipelines/`` (pyproject.toml's
``package-dir``). Each stage reads its settings from params.yaml and writes its declared outputs.

One module per stage; the CLI calls them and dvc.yaml calls the CLI. ``configs/`` holds the OpenMMLab configs
of the detection and segmentation stages.
"""

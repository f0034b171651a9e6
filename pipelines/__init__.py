"""Pipeline stages: each reads its settings from params.yaml and writes its declared outputs.

One module per stage; the CLI calls them and dvc.yaml calls the CLI.
"""

"""The `secvit` command line (Typer), installed as secvit.cli; each command calls a stage in secvit.pipelines."""

"""The ``secvit`` command line (Typer): ``secvit.cli``, whose files are in the top-level folder ``cli/``
(pyproject.toml's ``package-dir``). Each command calls a stage in ``secvit.pipelines`` or the library.

Each command imports its stage inside its function: a stage's DVC dependencies are that function's imports
(tests/test_dvc_deps.py follows them per command), and ``secvit --help`` loads no stage code.
"""

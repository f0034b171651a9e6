"""Every DVC stage depends on all of the project's code that its command runs.

The import closure of a stage's ``secvit <command>`` is computed from the source: the imports of
the CLI function itself and of its module, then every import (function-level ones included) of
each library module reached. CLI modules reached on the way (shared options) count with their
module-level imports only: their other commands do not run. A module missing from the stage's
``deps`` would let ``dvc repro`` keep stale results after that module changed.
"""

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Installed packages whose folder is not their dotted name: secvit.cli -> cli/, secvit.pipelines -> pipelines/
FOLDERS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    for package, folder in FOLDERS.items():
        if name == package or name.startswith(package + "."):
            parts = [folder, *name[len(package) + 1 :].split(".")] if name != package else [folder]
    path = ROOT.joinpath(*parts)
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _project_names(nodes) -> set[str]:
    """Project modules named by the import statements among ``nodes`` (with their parent packages)."""
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in found:
            parts = name.split(".")
            if parts[0] == "secvit":
                prefixes = (".".join(parts[: i + 1]) for i in range(len(parts)))
                names.update(p for p in prefixes if _module_file(p) is not None)
    return names


def _tree(name: str) -> ast.Module:
    return ast.parse(_module_file(name).read_text(encoding="utf-8"))


def import_closure(module: str, function: str) -> set[str]:
    """Repository files of the project modules that ``module.function`` reaches."""
    tree = _tree(module)
    body = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    todo = _project_names(tree.body) | _project_names(ast.walk(body)) | {module}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = _tree(name)
        nodes = tree.body if name.startswith("secvit.cli.") else ast.walk(tree)
        todo |= _project_names(nodes) - seen
    return {str(_module_file(n).relative_to(ROOT)) for n in seen}


def _commands() -> dict[str, tuple[str, str]]:
    """``secvit <name>`` -> (CLI module, function)."""
    from secvit.cli.main import app

    out = {}
    groups = [("", app)] + [(f"{g.name} ", g.typer_instance) for g in app.registered_groups]
    for prefix, typer_app in groups:
        for command in typer_app.registered_commands:
            func = getattr(command.callback, "__wrapped__", command.callback)
            out[prefix + (command.name or func.__name__)] = (func.__module__, func.__name__)
    return out


def _stages(root: Path) -> list[tuple[str, str, list[str]]]:
    from dvc.repo import Repo

    repo = Repo(str(root))
    try:
        return [(s.addressing, s.cmd, [d.def_path for d in s.deps]) for s in repo.index.stages if s.cmd]
    finally:
        repo.close()


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_closure_follows_function_level_imports():
    closure = import_closure("secvit.cli.downstream", "detect")
    assert {"pipelines/downstream.py", "secvit/downstream/run.py", "secvit/data/layout.py", "cli/train.py"} <= closure
    assert "secvit/engine/train.py" not in closure  # secvit.cli.train's pretrain command does not run
    assert "secvit/engine/train.py" in import_closure("secvit.cli.train", "pretrain")


def test_every_stage_depends_on_the_code_it_runs():
    commands = _commands()
    missing = {}
    for name, cmd, deps in _stages(ROOT):
        words = cmd.split()
        assert words[0] == "secvit", f"{name}: {cmd}"
        key = words[1] if words[1] in commands else " ".join(words[1:3])
        lacking = sorted(f for f in import_closure(*commands[key]) if not _covered(f, deps))
        if lacking:
            missing[name] = lacking
    assert not missing, "dvc.yaml stages miss code they run:\n" + "\n".join(f"{k}: {v}" for k, v in missing.items())


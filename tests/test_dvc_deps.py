"""Every DVC stage depends on exactly the project code that computes its outputs.

The computing closure of a stage's ``secvit <command>`` is found in the source: the imports of the
CLI function itself and of its module, then every import (function-level ones included) of each
module reached, except the rooms that choose, cost, dispatch or display stages and compute none of
their outputs (:data:`DISPATCH`: the command line, the orchestration of stages, the study model, the
cost plan, the benchmarks, the doctor). Both directions are checked: a computing module missing from
the stage's ``deps`` would let ``dvc repro`` keep stale results after it changed; a dispatch module
listed would re-run days of training after an edit to the SLURM watcher or the benchmark's report. No
computing module may import a dispatch module, and no library module (``secvit/``) a stage module.
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


#: Modules that choose, cost, dispatch, launch or display stages, or benchmark them: no stage depends on them.
DISPATCH = ("secvit.cli", "secvit.orchestrate", "secvit.study", "secvit.cost", "secvit.bench", "secvit.doctor")
#: The stage modules and the rooms above the library: nothing in secvit/ imports them.
ABOVE_THE_LIBRARY = ("secvit.cli", "secvit.pipelines", "secvit.orchestrate")


def is_dispatch(name: str) -> bool:
    return any(name == room or name.startswith(room + ".") for room in DISPATCH)


def import_closure(module: str, function: str) -> set[str]:
    """Repository files of the computing modules that ``module.function`` (a CLI command) reaches."""
    tree = _tree(module)
    body = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    todo = {n for n in _project_names(tree.body) | _project_names(ast.walk(body)) if not is_dispatch(n)}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        named = _project_names(ast.walk(_tree(name)))
        wrong = sorted(n for n in named if is_dispatch(n))
        assert not wrong, f"{name} computes stage outputs but imports {wrong}, which dispatch or display stages"
        todo |= named - seen
    return {str(_module_file(n).relative_to(ROOT)) for n in seen}


def dispatch_files() -> set[str]:
    """Repository files of the dispatch rooms."""
    files = set()
    for room in DISPATCH:
        path = _module_file(room)
        found = path.parent.rglob("*.py") if path.name == "__init__.py" else [path]
        files |= {str(f.relative_to(ROOT)) for f in found}
    return files


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


def test_closure_follows_function_level_imports_and_stops_at_dispatch():
    closure = import_closure("secvit.cli.downstream", "detect")
    assert {"pipelines/downstream.py", "secvit/downstream/runner.py", "secvit/data/layout.py"} <= closure
    assert "secvit/engine/train.py" not in closure  # secvit.cli.train's pretrain command does not run
    assert "secvit/engine/train.py" in import_closure("secvit.cli.train", "pretrain")
    dispatch = dispatch_files()
    assert {"cli/train.py", "orchestrate/slurm.py", "orchestrate/launch.py", "secvit/bench/seca.py", "secvit/cost/plan.py",
            "secvit/study/__init__.py"} <= dispatch
    for command in (("secvit.cli.train", "pretrain"), ("secvit.cli.downstream", "detect"), ("secvit.cli.models", "complexity")):
        assert not import_closure(*command) & dispatch, command


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


def test_no_stage_depends_on_the_code_that_dispatches_it():
    """The command line, the DAG runner, the SLURM executor, the launcher and the benchmarks: editing
    them leaves every stage's results valid."""
    dispatch = dispatch_files()
    listed = {}
    for name, _cmd, deps in _stages(ROOT):
        found = sorted(f for f in dispatch if _covered(f, deps))
        if found:
            listed[name] = found
    assert not listed, "dvc.yaml stages depend on dispatch code:\n" + "\n".join(f"{k}: {v}" for k, v in listed.items())



def test_the_library_imports_no_stage_module():
    """``secvit/`` (the library) imports nothing from the stage modules, the command line or the orchestration,
    at module top or inside a function: the facts they share live in the library."""
    wrong = {}
    for path in sorted((ROOT / "secvit").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        named = sorted(n for n in _project_names(ast.walk(tree)) if any(n == r or n.startswith(r + ".") for r in ABOVE_THE_LIBRARY))
        if named:
            wrong[str(path.relative_to(ROOT))] = named
    assert not wrong, f"library modules import stage or dispatch modules: {wrong}"


#: The rooms whose function-local imports say why they are function-local (heavy or optional).
EXPLAINED_IMPORTS = ("orchestrate", "secvit/study", "secvit/cost", "secvit/bench", "secvit/doctor", "secvit/downstream")


def test_function_local_imports_say_why():
    """Imports inside functions hide the graph from readers and tools: in these rooms they are kept only where an
    import is heavy or optional, and each says so (a comment on the line, above it, or on the group's first line)."""
    bare = []
    for room in EXPLAINED_IMPORTS:
        for path in sorted((ROOT / room).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            tree = ast.parse("\n".join(lines))
            local = sorted({n.lineno for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                            for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))})
            explained: set[int] = set()
            for number in local:
                above = lines[number - 2].strip() if number > 1 else ""
                if "#" in lines[number - 1] or above.startswith("#") or number - 1 in explained:
                    explained.add(number)
                else:
                    bare.append(f"{path.relative_to(ROOT)}:{number}: {lines[number - 1].strip()}")
    assert not bare, "function-local imports without a reason:\n" + "\n".join(bare)

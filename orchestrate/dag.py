"""The stale part of a profile's DAG, run outside ``dvc repro``: by SLURM jobs (``slurm_dag``) or by
several local processes side by side (:func:`run_parallel`, ``secvit repro all --jobs N``).

DVC runs one stage at a time, and a smoke stage spends much of its time in single-threaded work
(imports, data generation, checkpoint files, DVC's hashing), so on a CPU machine stages side by side
finish the DAG sooner. Both executors take the stale stages from DVC's own graph, run their
interpolated commands, upstream first, and record each finished stage with ``dvc commit`` (serially,
from this process), so ``dvc status`` afterwards is what ``dvc repro`` would have left.

They run exactly the stages ``dvc repro`` would (:func:`stale_stages`): a stage below a stage that
runs is not run because of it, but checked again once it has run (:func:`still_changed`), as DVC
checks each stage in turn; an ``always_changed`` data stage whose output comes out the same leaves
everything below it alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from rich.console import Console

from secvit.errors import SecvitError
from secvit.orchestrate.env import stage_env

SHELL_CHARS = set(";&|<>$`\\\"'*?(){}[]~#\n")
#: The wall and CPU time of each stage that the local runner completed, in its logs directory: what
#: ``secvit plan``'s estimates are compared with (benchmarks/plan_vs_run.py).
STAGE_TIMES = "stage_times.json"


@dataclass(frozen=True)
class StaleStage:
    """A stage to run, or to check again: its DVC name, interpolated command, working directory and
    the stale stages directly upstream of it.

    ``conditional``: the stage is up to date now, but a stale stage upstream of it will run first
    (it is stale, or ``always_changed``). As ``dvc repro`` does, the executors check it again once
    those have finished and run it only if its dependencies changed (:func:`still_changed`)."""

    name: str
    cmd: str
    wdir: Path
    upstream: tuple[str, ...]
    conditional: bool = False
    why: str = ""  # what changed, in DVC's words (``dvc status``), for a stage that is to run


# ---- which stages are stale (DVC's graph)


@contextlib.contextmanager
def dvc_repo(root: Path) -> Iterator[Any]:
    """The DVC repo at ``root``, opened from there (targets resolve as on the command line)."""
    from dvc.repo import Repo  # heavy: DVC and its dependencies take a second to import; loaded when a repo is opened

    with contextlib.chdir(root), Repo(".") as repo:
        yield repo


def _select(stages: list[Any], target: str) -> list[Any]:
    """Stages named ``target``, or the foreach/matrix group ``target`` (``data-smoke``)."""
    found = [s for s in stages if s.addressing == target or s.addressing.startswith(f"{target}@")]
    if not found:
        raise SecvitError(f"no stage {target!r} in dvc.yaml; see `dvc stage list`")
    return found


def _command(stage: Any) -> str:
    return " && ".join(stage.cmd) if isinstance(stage.cmd, list) else str(stage.cmd)


def stale_stages(root: Path, targets: list[str], explain: bool = False) -> list[StaleStage]:
    """The stages among ``targets`` and everything upstream that ``dvc repro`` may run, upstream first.

    A stage that has changed (``stage.changed()``: command, params, deps or outs differ from
    dvc.lock; always for ``always_changed``) is to run. A stage that has not, but has a stale
    stage upstream, is ``conditional``: DVC does not re-run it because an upstream
    stage ran, only if that run changed its dependencies. ``explain``: each stage to run says why (``why``: DVC's
    status of it, which hashes its dependencies again; for ``--dry-run``)."""
    import networkx as nx  # DVC's graph library, loaded with DVC (heavy)
    from dvc.repo import lock_repo

    with dvc_repo(root) as repo, lock_repo(repo):
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        wanted = {s for t in targets for s in _select(list(graph.nodes), t)}
        closure = wanted.union(*(nx.descendants(graph, s) for s in wanted))
        order = list(reversed(list(nx.topological_sort(graph.subgraph(closure)))))
        found: dict[Any, StaleStage] = {}
        lock = root / "dvc.lock"
        locked = set((yaml.safe_load(lock.read_text()) or {}).get("stages", {})) if lock.exists() else set()
        for stage in order:
            if not stage.cmd or stage.frozen:
                continue
            upstream = tuple(u.addressing for u in graph.successors(stage) if u in found)
            if stage.changed():
                found[stage] = StaleStage(stage.addressing, _command(stage), Path(stage.wdir), upstream,
                                           why=(_why(stage) if stage.addressing in locked else "never run: no entry in dvc.lock") if explain else "")
            elif upstream:
                found[stage] = StaleStage(stage.addressing, _command(stage), Path(stage.wdir), upstream, conditional=True)
        return list(found.values())


def _why(stage: Any) -> str:
    """What DVC finds changed in ``stage`` (its ``dvc status`` entry), in one line."""
    parts: list[str] = []
    for item in stage.status().get(stage.addressing, []):
        if isinstance(item, str):
            parts.append(item)
            continue
        for kind, changes in item.items():
            listed = []
            for path, state in changes.items():
                if isinstance(state, dict):  # params: name -> state
                    listed += [f"{name} ({what})" for name, what in state.items()]
                else:
                    listed.append(f"{path} ({state})")
            more = f" and {len(listed) - 5} more" if len(listed) > 5 else ""
            parts.append(f"{kind}: {', '.join(listed[:5])}{more}")
    return "; ".join(parts) or "changed"


def target_closure(root: Path, targets: list[str]) -> list[str]:
    """The stages of ``targets`` and everything upstream, upstream first (what ``dvc repro`` looks at)."""
    import networkx as nx  # DVC's graph library, loaded with DVC (heavy)
    from dvc.repo import lock_repo

    with dvc_repo(root) as repo, lock_repo(repo):
        graph = repo.index.graph
        wanted = {s for t in targets for s in _select(list(graph.nodes), t)}
        closure = wanted.union(*(nx.descendants(graph, s) for s in wanted))
        order = reversed(list(nx.topological_sort(graph.subgraph(closure))))
        return [s.addressing for s in order if s.cmd and not s.frozen]


def still_changed(root: Path, names: list[str]) -> set[str]:
    """Those of the stages ``names`` that have changed now (checked once their upstream stages ran)."""
    from dvc.repo import lock_repo  # heavy: DVC

    if not names:
        return set()
    with dvc_repo(root) as repo, lock_repo(repo):
        stages = [s for s in repo.index.graph.nodes if s.addressing in names]
        return {s.addressing for s in stages if s.changed()}


def fingerprints(root: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """What each stage ``names`` runs, as it stands now: its command, its params' values and the
    hashes of its dependencies that no stage writes (the code). Two equal fingerprints mean a job
    submitted for the stage runs what the stage asks now (the outputs of the stages upstream are
    checked when those run, :func:`lock_outs`). Keys: ``cmd``, ``params``, ``deps``."""
    from dvc.dependency.param import ParamsDependency  # heavy: DVC
    from dvc.repo import lock_repo

    found: dict[str, dict[str, Any]] = {}
    with dvc_repo(root) as repo, lock_repo(repo):
        graph = repo.index.graph
        for stage in (s for s in graph.nodes if s.addressing in names):
            written = [o.fs_path for u in graph.successors(stage) for o in u.outs]
            params: dict[str, Any] = {}
            deps: dict[str, str | None] = {}
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    params.update(dep.read_params())
                elif not any(_overlap(dep.fs_path, path) for path in written):
                    try:
                        deps[dep.def_path] = dep.get_hash().value
                    except Exception:  # missing: an output of a stage outside this DAG
                        deps[dep.def_path] = None
            found[stage.addressing] = {"cmd": _command(stage), "params": _jsonable(params), "deps": deps}
    return found


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep)


def _jsonable(value: Any) -> Any:
    """Params as JSON stores them (tuples as lists), so a fingerprint read back compares equal."""
    return json.loads(json.dumps(value, default=str))


def fingerprint_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What differs between two :func:`fingerprints` of a stage, in words (empty: nothing)."""
    if not old:
        return []
    changes = ["its command"] if old.get("cmd") != new["cmd"] else []
    for kind, what in (("params", "param"), ("deps", "dependency")):
        a, b = old.get(kind, {}), new[kind]
        changes += [f"{what} {key}" for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)]
    return changes


def lock_outs(root: Path, name: str) -> dict[str, Any] | None:
    """The outputs (path -> hash) that dvc.lock records for stage ``name``; None without an entry."""
    path = root / "dvc.lock"
    if not path.exists():
        return None
    entry = (yaml.safe_load(path.read_text()) or {}).get("stages", {}).get(name)
    if entry is None:
        return None
    return {o["path"]: o.get("md5") or o.get("hash") for o in entry.get("outs", [])}


def commit_stage(root: Path, name: str, tries: int = 5) -> None:
    """``dvc commit -f --no-relink <name>``: record the stage's deps and outs in dvc.lock and
    its outs in the cache. No relink: the workspace files stay as they are, because stages
    downstream may be reading them right now (relinking deletes and re-creates them)."""
    from dvc.lock import LockError  # heavy: DVC

    for attempt in range(tries):
        try:
            with dvc_repo(root) as repo:
                repo.commit(name, force=True, relink=False)
            return
        except LockError:  # someone runs dvc in this repo right now
            if attempt == tries - 1:
                raise
            time.sleep(2.0)


def dvc_executable() -> str:
    """DVC from the same environment as this secvit."""
    local = Path(sys.executable).with_name("dvc")
    found = str(local) if local.exists() else shutil.which("dvc")
    if not found:
        raise SecvitError("dvc is not installed in this environment; run scripts/env.sh")
    return found


def relink(root: Path, stages: list[str]) -> None:
    """``dvc checkout --relink --with-deps <stages>`` once every stage has run: their outputs become links
    into DVC's cache (``.dvc/config``: ``cache.type``), so a checkpoint exists once on disk. DVC leaves
    copies where it commits with stages still reading (``--jobs``, SLURM) and for persistent outputs.
    A failure only costs disk, and is a note."""
    result = subprocess.run([dvc_executable(), "checkout", "--relink", "--with-deps", "-q", *stages], cwd=root, env=stage_env(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["exit " + str(result.returncode)])[-1]
        print(f"note: outputs not relinked to DVC's cache ({last}); `dvc checkout --relink` saves the disk of their copies")


def command_argv(cmd: str) -> list[str]:
    """The stage command as argv: split it when that is exact, else run it with ``sh -c``."""
    return shlex.split(cmd) if not SHELL_CHARS & set(cmd) else ["/bin/sh", "-c", cmd]


def downstream_of(stale: list[StaleStage], name: str) -> list[str]:
    """The stale that depend on ``name``, directly or through others (``stale`` upstream first)."""
    found: list[str] = []
    for stage in stale:
        if name in stage.upstream or set(found) & set(stage.upstream):
            found.append(stage.name)
    return found


# ---- several local processes side by side


@dataclass
class _Running:
    stage: StaleStage
    process: subprocess.Popen
    log: TextIO
    path: Path
    started: float = field(default_factory=time.monotonic)


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    return "\n".join(text[-lines:])


def record_time(logs: Path, stage: str, seconds: float, cpu_seconds: float | None, jobs: int, threads: int) -> None:
    """Add a completed stage's wall time and its process's CPU time (user + system; on an idle machine, a
    one-thread stage's wall time), the stages allowed at once and each one's threads to ``logs/stage_times.json``."""
    path = logs / STAGE_TIMES
    try:
        times = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        times = {}
    times[stage] = {"seconds": round(seconds, 2), "cpu_seconds": None if cpu_seconds is None else round(cpu_seconds, 2),
                    "jobs": jobs, "threads": threads}
    path.write_text(json.dumps(times, indent=1, sort_keys=True))


def _poll(process: subprocess.Popen) -> tuple[int | None, float | None]:
    """(exit code, CPU seconds of the process and the children it waited for) once it has exited, else (None, None)."""
    if process.returncode is not None:
        return process.returncode, None
    try:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere
        return process.poll(), None
    if pid == 0:
        return None, None
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
    return process.returncode, usage.ru_utime + usage.ru_stime


def run_parallel(root: Path, stale: list[StaleStage], jobs: int, logs: Path) -> None:
    """Run ``stale`` (from :func:`stale_stages`) as up to ``jobs`` local processes at once, each
    once its upstream stages are committed (a conditional one only if they changed its
    dependencies); commit each as it completes.

    Each stage's output goes to ``logs/<stage>.log``; each process gets ``cpu_count // jobs``
    threads (``OMP_NUM_THREADS``, unless set). A failed stage is reported with its log tail and
    its downstream stages are skipped; the others run and are committed, and a
    :class:`SecvitError` follows. Ctrl-C stops the running stages (they get the signal too;
    training resumes from its last checkpoint next time) and commits nothing more.
    """
    console = Console(stderr=True, highlight=False)
    logs.mkdir(parents=True, exist_ok=True)
    env = stage_env()
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    pending = list(stale)
    running: dict[str, _Running] = {}
    committed: set[str] = set()
    failed: list[str] = []
    skipped: set[str] = set()
    current: set[str] = set()  # conditional stages found up to date once their upstream ran
    began = time.monotonic()
    downstream = {p.name: len(downstream_of(stale, p.name)) for p in stale}

    def priority(stage: StaleStage) -> tuple[bool, int]:
        """Stages that wait on nothing first (a long independent stage, such as complexity, then
        overlaps the rest instead of running alone at the end), then those that more stages wait on."""
        return bool(stage.upstream), -downstream[stage.name]

    def start(stage: StaleStage) -> None:
        path = logs / f"{stage.name}.log"
        log = path.open("w")
        process = subprocess.Popen(command_argv(stage.cmd), cwd=root / stage.wdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        running[stage.name] = _Running(stage, process, log, path)
        console.print(f"[cyan]started[/] {stage.name}", f"[dim]({os.path.relpath(path)})", soft_wrap=True)

    def finish(name: str, returncode: int, cpu_seconds: float | None = None) -> None:
        run = running.pop(name)
        run.log.close()
        seconds = time.monotonic() - run.started
        if returncode == 0:
            try:
                commit_stage(root, name)
            except Exception as e:  # a DVC error: report it, go on with the other stages
                console.print(f"[red]stage {name}: dvc commit failed: {type(e).__name__}: {e}")
                failed.append(name)
            else:
                committed.add(name)
                record_time(logs, name, seconds, cpu_seconds, jobs, int(env["OMP_NUM_THREADS"]))
                console.print(f"[green]done[/] {name} in {seconds:.0f} s")
                return
        else:
            console.print(_tail(run.path), markup=False)
            console.print(f"[red]stage {name} failed[/] (exit {returncode}) after {seconds:.0f} s; log: {run.path}")
            failed.append(name)
        skipped.update(downstream_of(stale, name))
        pending[:] = [p for p in pending if p.name not in skipped]

    try:
        with console.status("") as status:
            while pending or running:
                ready = sorted((p for p in pending if all(u in committed | current for u in p.upstream)), key=priority)
                check = [p.name for p in ready if p.conditional]
                if check:  # their upstream stages ran: run them only if that changed their dependencies
                    changed = still_changed(root, check)
                    for stage in [p for p in ready if p.conditional and p.name not in changed]:
                        pending.remove(stage)
                        ready.remove(stage)
                        current.add(stage.name)
                        console.print(f"[green]up to date[/] {stage.name} [dim](its dependencies did not change)")
                for stage in ready[: jobs - len(running)]:
                    pending.remove(stage)
                    start(stage)
                for name, run in list(running.items()):
                    code, cpu_seconds = _poll(run.process)
                    if code is not None:
                        finish(name, code, cpu_seconds)
                status.update(
                    f"{len(committed)}/{len(stale)} stages done, running: {', '.join(running) or '-'} "
                    f"({time.monotonic() - began:.0f} s)"
                )
                time.sleep(0.5)
    except KeyboardInterrupt:
        for run in running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(timeout=60)  # they got the Ctrl-C too: let them save a checkpoint
            if run.process.poll() is None:
                run.process.kill()
        raise SecvitError(
            f"interrupted; {len(committed)} stage(s) were committed; run the same command again to go on "
            "(training resumes from its last checkpoint)"
        ) from None
    if failed:
        more = f"; {len(failed) - 1} more stage(s) failed" if len(failed) > 1 else ""
        more += f"; {len(skipped)} stage(s) downstream skipped" if skipped else ""
        raise SecvitError(f"stage {failed[0]} failed (log above, in full in {logs / (failed[0] + '.log')}){more}")

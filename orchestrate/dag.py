"""The stale part of a profile's DAG, run outside ``dvc repro``: by SLURM jobs (``slurm_dag``) or by
several local processes side by side (:func:`run_parallel`, ``secvit repro all --jobs N``).

DVC runs one stage at a time, and a smoke stage spends much of its time in single-threaded work
(imports, data generation, checkpoint files, DVC's hashing), so on a CPU machine stages side by side
finish the DAG sooner. Both executors take the stale stages from DVC's own graph, run their
interpolated commands, upstream first, and record each finished stage with ``dvc commit`` (serially,
from this process), so ``dvc status`` afterwards is what ``dvc repro`` would have left.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from secvit.errors import SecvitError
from secvit.orchestrate.slurm import stage_env

SHELL_CHARS = set(";&|<>$`\\\"'*?(){}[]~#\n")


@dataclass(frozen=True)
class StalePlan:
    """A stale stage: its DVC name, interpolated command, working directory and the stale
    stages directly upstream of it."""

    name: str
    cmd: str
    wdir: Path
    upstream: tuple[str, ...]


# ---- which stages are stale (DVC's graph)


@contextlib.contextmanager
def dvc_repo(root: Path) -> Iterator[Any]:
    """The DVC repo at ``root``, opened from there (targets resolve as on the command line)."""
    from dvc.repo import Repo

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


def stale_stages(root: Path, targets: list[str]) -> list[StalePlan]:
    """The stale stages among ``targets`` and everything upstream, upstream first."""
    import networkx as nx
    from dvc.repo import lock_repo

    with dvc_repo(root) as repo, lock_repo(repo):
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        wanted = {s for t in targets for s in _select(list(graph.nodes), t)}
        closure = wanted.union(*(nx.descendants(graph, s) for s in wanted))
        order = list(reversed(list(nx.topological_sort(graph.subgraph(closure)))))
        stale: dict[Any, bool] = {}
        for stage in order:
            upstream_stale = any(stale[u] for u in graph.successors(stage))
            runnable = bool(stage.cmd) and not stage.frozen
            stale[stage] = runnable and (upstream_stale or stage.changed())
        return [
            StalePlan(s.addressing, _command(s), Path(s.wdir), tuple(u.addressing for u in graph.successors(s) if stale[u]))
            for s in order
            if stale[s]
        ]


def commit_stage(root: Path, name: str, tries: int = 5) -> None:
    """``dvc commit -f --no-relink <name>``: record the stage's deps and outs in dvc.lock and
    its outs in the cache. No relink: the workspace files stay as they are, because stages
    downstream may be reading them right now (relinking deletes and re-creates them)."""
    from dvc.lock import LockError

    for attempt in range(tries):
        try:
            with dvc_repo(root) as repo:
                repo.commit(name, force=True, relink=False)
            return
        except LockError:  # someone runs dvc in this repo right now
            if attempt == tries - 1:
                raise
            time.sleep(2.0)


def command_argv(cmd: str) -> list[str]:
    """The stage command as argv: split it when that is exact, else run it with ``sh -c``."""
    return shlex.split(cmd) if not SHELL_CHARS & set(cmd) else ["/bin/sh", "-c", cmd]


def downstream_of(plans: list[StalePlan], name: str) -> list[str]:
    """The plans that depend on ``name``, directly or through others (``plans`` upstream first)."""
    found: list[str] = []
    for plan in plans:
        if name in plan.upstream or set(found) & set(plan.upstream):
            found.append(plan.name)
    return found


# ---- several local processes side by side


@dataclass
class _Running:
    plan: StalePlan
    process: subprocess.Popen
    log: TextIO
    path: Path
    started: float = field(default_factory=time.monotonic)


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    return "\n".join(text[-lines:])


def run_parallel(root: Path, plans: list[StalePlan], jobs: int, logs: Path) -> None:
    """Run ``plans`` (from :func:`stale_stages`) as up to ``jobs`` local processes at once, each
    once its upstream stages are committed; commit each as it completes.

    Each stage's output goes to ``logs/<stage>.log``; each process gets ``cpu_count // jobs``
    threads (``OMP_NUM_THREADS``, unless set). A failed stage is reported with its log tail and
    its downstream stages are skipped; the others run and are committed, and a
    :class:`SecvitError` follows. Ctrl-C stops the running stages (they get the signal too;
    training resumes from its last checkpoint next time) and commits nothing more.
    """
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    logs.mkdir(parents=True, exist_ok=True)
    env = stage_env()
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    pending = list(plans)
    running: dict[str, _Running] = {}
    committed: set[str] = set()
    failed: list[str] = []
    skipped: set[str] = set()
    began = time.monotonic()
    downstream = {p.name: len(downstream_of(plans, p.name)) for p in plans}

    def priority(plan: StalePlan) -> tuple[bool, int]:
        """Stages that wait on nothing first (a long independent stage, such as complexity, then
        overlaps the rest instead of running alone at the end), then those that more stages wait on."""
        return bool(plan.upstream), -downstream[plan.name]

    def start(plan: StalePlan) -> None:
        path = logs / f"{plan.name}.log"
        log = path.open("w")
        process = subprocess.Popen(command_argv(plan.cmd), cwd=root / plan.wdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        running[plan.name] = _Running(plan, process, log, path)
        console.print(f"[cyan]started[/] {plan.name}", f"[dim]({os.path.relpath(path)})", soft_wrap=True)

    def finish(name: str, returncode: int) -> None:
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
                console.print(f"[green]done[/] {name} in {seconds:.0f} s")
                return
        else:
            console.print(_tail(run.path), markup=False)
            console.print(f"[red]stage {name} failed[/] (exit {returncode}) after {seconds:.0f} s; log: {run.path}")
            failed.append(name)
        skipped.update(downstream_of(plans, name))
        pending[:] = [p for p in pending if p.name not in skipped]

    try:
        with console.status("") as status:
            while pending or running:
                ready = sorted((p for p in pending if all(u in committed for u in p.upstream)), key=priority)
                for plan in ready[: jobs - len(running)]:
                    pending.remove(plan)
                    start(plan)
                for name, run in list(running.items()):
                    code = run.process.poll()
                    if code is not None:
                        finish(name, code)
                status.update(
                    f"{len(committed)}/{len(plans)} stages done, running: {', '.join(running) or '-'} "
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

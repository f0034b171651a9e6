"""DVC experiments on the smoke DAG: `dvc exp run -S ...` in a scratch git + DVC repository.

Each experiment commits the small `cache: false` metrics and plots (git-tracked, see .gitignore)
and keeps checkpoints and datasets in DVC's cache, so `dvc exp show` compares experiments' metrics.
"""

import csv
import io
import json

import pytest
from conftest import invoke, scratch_repo

STAGE = "pretrain@smoke-secvit_tiny"
METRICS = "results/smoke/pretrain/secvit_tiny/metrics.json"
TINY = {  # the smallest pretraining that still takes an optimizer step per epoch: 64 + 32 images of 48 px
    "smoke.data.generate.imagenet.train_per_class": 16,
    "smoke.data.generate.imagenet.val_per_class": 8,
    "smoke.pretrain.epochs": 1,
}


def _exp_metrics(shown: list[dict], name: str) -> dict:
    """An experiment's metrics (of ``METRICS``) and params from ``dvc exp show --json``."""
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            if exp.get("name") == name:
                data = exp["revs"][0]["data"]
                return {"metrics": data["metrics"][METRICS]["data"], "params": data["params"]["params.yaml"]["data"]}
    raise AssertionError(f"no experiment {name} in {json.dumps(shown)[:2000]}")


@pytest.mark.slow
def test_two_experiments_compare_in_exp_show(tmp_path, repo_root):
    repo = scratch_repo(repo_root, tmp_path, untracked=True, params=TINY)
    for name, lr_base in (("lr-low", 1.0e-4), ("lr-high", 1.0e-2)):
        result = invoke(repo, "dvc", "exp", "run", "-n", name, "-S", f"smoke.pretrain.lr_base={lr_base}", STAGE, timeout=300)
        assert "Running stage 'pretrain@smoke-secvit_tiny'" in result.stdout, result.stdout[-2000:]
    shown = json.loads(invoke(repo, "dvc", "exp", "show", "--json").stdout)
    low, high = _exp_metrics(shown, "lr-low"), _exp_metrics(shown, "lr-high")
    assert low["params"]["smoke"]["pretrain"]["lr_base"] == 1.0e-4 and high["params"]["smoke"]["pretrain"]["lr_base"] == 1.0e-2
    assert low["metrics"]["lr"] == pytest.approx(1.0e-4 * 32 / 512) and high["metrics"]["lr"] == pytest.approx(1.0e-2 * 32 / 512)
    assert low["metrics"]["epochs"] == high["metrics"]["epochs"] == 1
    # the second experiment trained afresh: it did not resume the first one's (persisted) checkpoint
    assert low["metrics"]["train_loss"] != high["metrics"]["train_loss"]

    # metrics and curves are in each experiment's git commit; checkpoints only in DVC's cache
    for name, found in (("lr-low", low), ("lr-high", high)):
        committed = invoke(repo, "git", "show", f"refs/exps/{_ref(repo, name)}:{METRICS}").stdout
        scalars = {k: v for k, v in json.loads(committed).items() if not isinstance(v, list)}  # DVC shows no lists (hosts)
        assert scalars == found["metrics"]
        files = invoke(repo, "git", "ls-tree", "-r", "--name-only", f"refs/exps/{_ref(repo, name)}").stdout.split()
        assert "results/smoke/pretrain/secvit_tiny/dvclive/plots/metrics/train/loss.tsv" in files
        assert not [f for f in files if f.startswith(("runs/", "data/"))]
    lock = invoke(repo, "git", "show", f"refs/exps/{_ref(repo, 'lr-high')}:dvc.lock").stdout
    assert "runs/smoke/pretrain/secvit_tiny" in lock and "data/smoke/imagenet" in lock
    assert any((repo / ".dvc/cache").rglob("*"))

    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(invoke(repo, "dvc", "exp", "show", "--csv").stdout))}
    for name in ("lr-low", "lr-high"):  # `!` marks a metric that an experiment's commit lacks
        assert rows[name]["best_top1"] != "!" and "!" not in rows[name].values(), rows[name]


def _ref(repo, name: str) -> str:
    """The ``refs/exps/...`` suffix of experiment ``name``."""
    refs = invoke(repo, "git", "for-each-ref", "--format=%(refname)", "refs/exps/").stdout.split()
    found = [r.removeprefix("refs/exps/") for r in refs if r.endswith(f"/{name}")]
    assert len(found) == 1, refs
    return found[0]

"""ImageNet's official layouts read as they ship: the devkit's flat val/ and Kaggle's CLS-LOC with
LOC_val_solution.csv (tests/imagenet_layouts.py builds them in miniature). Each image's class is in its
pixels, so the labels that the run's own loaders produce are checked image by image."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_project, secvit, secvit_in_process
from imagenet_layouts import COLOURS, WNIDS, devkit_layout, kaggle_layout

from secvit.data.layout import check_imagenet, find_imagenet

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # timm's ImageNet normalisation


LABEL_FILES = {
    "devkit": ["ILSVRC2012_devkit_t12.tar.gz"],
    "devkit_extracted": ["ILSVRC2012_devkit_t12/data/meta.mat", "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"],
    "kaggle": ["LOC_val_solution.csv"],
    "kaggle_cls_loc": ["../../../LOC_val_solution.csv"],
}


def _classes_of(images: torch.Tensor) -> list[int]:
    """The class of each normalised image tensor, read from its mean colour."""
    colour = (images.mean((2, 3)).numpy() * STD + MEAN) * 255
    return np.abs(colour[:, None, :] - COLOURS[None]).sum(2).argmin(1).tolist()


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    devkit_layout(base / "devkit", train_per_class=8, val_per_class=8)
    devkit_layout(base / "devkit_extracted", train_per_class=2, val_per_class=3, archive=False, seed=3)
    kaggle_layout(base / "kaggle", train_per_class=2, val_per_class=8)
    return {"devkit": base / "devkit", "devkit_extracted": base / "devkit_extracted", "kaggle": base / "kaggle",
            "kaggle_cls_loc": base / "kaggle/ILSVRC/Data/CLS-LOC"}


@pytest.mark.parametrize("name,layout,val", [("devkit", "devkit", 32), ("devkit_extracted", "devkit", 12), ("kaggle", "kaggle", 32),
                                             ("kaggle_cls_loc", "kaggle", 32)])
def test_the_run_loaders_label_every_image_by_its_class(layouts, repo_root, name, layout, val):
    from secvit.engine.config import pretrain_config
    from secvit.engine.distributed import DistEnv
    from secvit.engine.loaders import build_eval_loader, build_train_loader

    root = layouts[name]
    tree = find_imagenet(root)
    assert (tree.layout, tree.classes) == (layout, WNIDS)
    assert tree.label_files == LABEL_FILES[name]  # in the manifest's listing: a changed label file re-runs what uses it
    counts = check_imagenet(root, expected={"classes": 4, "val": val})
    assert counts.per_class["val"] == dict.fromkeys(WNIDS, val // 4)
    # the smoke recipe without the augmentations that change colours (RandAugment, colour jitter, random erasing): the class
    # is the colour
    cfg = dataclasses.replace(pretrain_config(repo_root / "params.yaml", "smoke", "secvit_tiny"), auto_augment=None, color_jitter=0.0, reprob=0.0)
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    loaders = [build_eval_loader(root, cfg.img_size, cfg.eval_crop_pct, cfg.interpolation, 8, 0, env)]
    if counts.splits["train"] >= cfg.batch_size:
        loaders.append(build_train_loader(root, cfg, env, None))
    for loader in loaders:
        seen = 0
        for images, targets in loader:
            assert _classes_of(images) == targets.tolist()
            seen += len(targets)
        assert seen == (val if loader is loaders[0] else counts.splits["train"] // cfg.batch_size * cfg.batch_size)


@pytest.mark.slow
def test_a_tiny_run_trains_and_evaluates_on_the_raw_layouts(layouts, tmp_path, repo_root):
    """The devkit layout as the smoke profile's ImageNet: data stage, one epoch of pretraining, evaluation; then the
    trained model evaluated on Kaggle's layout, whole and with one validation image broken (each image once)."""
    project = make_project(tmp_path / "project", repo_root)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["smoke"]["data"]["imagenet"] = str(layouts["devkit"])
    del params["smoke"]["data"]["generate"]["imagenet"]
    params["smoke"]["pretrain"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commands = [(secvit_in_process, ["data", "--dataset", "imagenet"]), (secvit, ["pretrain", "--model", "secvit_tiny"]),
                (secvit_in_process, ["evaluate", "--model", "secvit_tiny"])]  # the training as users run it
    for runner, command in commands:
        result = runner(project, *command, "--profile", "smoke")
        assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((project / "results/smoke/pretrain/secvit_tiny/metrics.json").read_text())
    assert metrics["num_classes"] == 4 and metrics["skipped_images"] == 0 and metrics["best_top1"] is not None
    evaluated = json.loads((project / "results/smoke/pretrain/secvit_tiny/eval.json").read_text())
    assert (evaluated["images"], evaluated["skipped_images"]) == (32, 0)

    kaggle = tmp_path / "kaggle"
    shutil.copytree(layouts["kaggle"], kaggle)
    for broken in (False, True):
        if broken:
            victim = kaggle / "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000005.JPEG"
            victim.write_bytes(victim.read_bytes()[:200])
        result = secvit_in_process(project, "evaluate", "--profile", "smoke", "--model", "secvit_tiny", "--data", str(kaggle))
        assert result.returncode == 0, result.stderr[-3000:]
        out = json.loads(result.stdout)
        assert (out["images"], out["skipped_images"]) == ((31, 1) if broken else (32, 0))

"""Real datasets, safely: nothing of a user's is deleted, a bad image or mask is found by the data stage
(before any training step) and left out, every official layout is accepted, and the bad-data catalogue:
each known way a dataset can be wrong, its one-line message, and proof that nothing was written or lost."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import edit_params, invoke, make_project, one_line_error, scratch_repo, secvit_in_process
from imagenet_layouts import devkit_layout, kaggle_layout
from PIL import Image

from secvit.data import synthetic
from secvit.data.synthetic import MARKER

DATASETS = ("imagenet", "coco", "ade20k")
ADE = "ADEChallengeData2016"
SMALL = {  # the generator arguments of the small sets these tests copy
    "imagenet": {"num_classes": 3, "train_per_class": 4, "val_per_class": 2, "size": 32, "seed": 0},
    "coco": {"train_images": 4, "val_images": 2, "size": [48, 64], "seed": 0},
    "ade20k": {"train_images": 4, "val_images": 2, "size": [48, 48], "seed": 0},
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Small intact datasets: the three generated ones, ImageNet with the devkit's flat val/, Kaggle's top folder."""
    base = tmp_path_factory.mktemp("pristine")
    for name, args in SMALL.items():
        synthetic.GENERATORS[name](base / name, **{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    devkit_layout(base / "devkit", train_per_class=3, val_per_class=2)
    kaggle_layout(base / "kaggle", train_per_class=3, val_per_class=2)
    return base


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry below ``folder``: a file's size, mtime and content digest; a folder's presence."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file():
            st = path.stat()
            found[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha1(path.read_bytes()).hexdigest())
        else:
            found[rel] = ("dir",)
    return found


def project_for(tmp_path: Path, repo_root: Path, profile: str, changes: dict) -> Path:
    """A scratch project whose params.yaml has ``changes`` (dotted keys) made."""
    project = make_project(tmp_path / "project", repo_root)
    edit_params(project / "params.yaml", changes)
    return project


# ---------------------------------------------------------------------------- helpers that break a dataset


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def first(folder: Path, pattern: str = "*") -> Path:
    return sorted(p for p in folder.rglob(pattern) if p.is_file())[0]


def rewrite_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def resize_mask(path: Path, size: tuple[int, int]) -> None:
    with Image.open(path) as mask:
        mask.resize(size, Image.NEAREST).save(path)


def devkit_file(root: Path, name: str, change: Callable[[bytes], bytes]) -> None:
    """Rewrite one member of the devkit archive in ``root``."""
    archive = root / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    key = f"ILSVRC2012_devkit_t12/{name}"
    members[key] = change(members[key])
    with tarfile.open(archive, "w:gz") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def png_as_jpeg(path: Path) -> None:  # ImageNet's n02105855_2933.JPEG is a PNG
    with Image.open(path) as img:
        img.convert("RGB").save(path, format="PNG")


def cmyk(path: Path) -> None:  # 22 of ImageNet's training JPEGs are CMYK
    with Image.open(path) as img:
        img.convert("CMYK").save(path, format="JPEG")


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def loose(split: Path) -> None:
    """Move a split's class folders' images up into the split (a half-done sort)."""
    for image in list(split.rglob("*.JPEG")):
        image.rename(split / image.name)
    for folder in split.iterdir():
        if folder.is_dir():
            folder.rmdir()


def ade_labels(path: Path, value: int) -> None:
    with Image.open(path) as mask:
        labels = np.asarray(mask).copy()
    labels[:4, :4] = value
    Image.fromarray(labels, "L").save(path)


# ---------------------------------------------------------------------------- the catalogue


@dataclass
class Case:
    """One bad dataset: ``source`` (a pristine set), ``dataset`` (its kind), ``breaks`` it in place and returns the
    folder to configure; ``outcome``: ``error`` (the stage stops, one line), ``bad`` (the file is listed and left
    out; ``file`` relative to the root) or ``ok`` (accepted as it is); ``message``: a regex of the line."""

    name: str
    dataset: str
    source: str
    breaks: Callable[[Path], Path]
    outcome: str
    message: str = ""
    file: str = ""
    expected: dict | None = None


def _in(rel: str, action: Callable[[Path], None]) -> Callable[[Path], Path]:
    def breaks(root: Path) -> Path:
        action(root / rel if rel else root)
        return root

    return breaks


def _first_in(rel: str, pattern: str, action: Callable[[Path], None]) -> Callable[[Path], Path]:
    return _in(rel, lambda folder: action(first(folder, pattern)))


T0 = "train/n01440764"  # the generated ImageNet's first class
KEY = r"paper\.data\.expected\.{} in .*params\.yaml to the counts of the subset you use \(null: no check\)"
CASES = [
    # ImageNet (class-folder layout)
    Case("imagenet-root-missing", "imagenet", "imagenet", lambda r: r.parent / "absent", "error",
         r"ImageNet root .*absent does not exist; set paper\.data\.imagenet in .*params\.yaml"),
    Case("imagenet-root-a-file", "imagenet", "imagenet", lambda r: r / T0 / "n01440764_1.JPEG", "error",
         r"ImageNet root .*n01440764_1\.JPEG is not a folder; set paper\.data\.imagenet in"),
    Case("imagenet-no-train", "imagenet", "imagenet", _in("train", remove), "error", r"train/ is missing; extract the ImageNet train archive"),
    Case("imagenet-no-val", "imagenet", "imagenet", _in("val", remove), "error", r"val/ is missing; extract the ImageNet val archive"),
    Case("imagenet-train-unsorted", "imagenet", "imagenet", _in("train", loose), "error", r"train/ holds 12 images directly instead of in class folders"),
    Case("imagenet-flat-val-no-labels", "imagenet", "imagenet", _in("val", loose), "error",
         r"val/ holds 6 images directly instead of in class folders; put the devkit \(ILSVRC2012_devkit_t12\.tar\.gz"),
    Case("imagenet-class-missing-in-val", "imagenet", "imagenet", _in("val/n01441764", remove), "error",
         r"val/ has 2 class folders but train/ has 3 \(missing in val: n01441764\)"),
    Case("imagenet-not-an-image-file", "imagenet", "imagenet", _in(f"{T0}/notes.txt", lambda p: p.write_text("x")), "error",
         rf"1 entries are not images .*{T0}/notes\.txt"),
    Case("imagenet-empty-class", "imagenet", "imagenet", _in("train/n01442764", lambda f: [p.unlink() for p in f.iterdir()]), "error",
         r"class folder train/n01442764 has no images"),
    Case("imagenet-count-mismatch", "imagenet", "imagenet", lambda r: r, "error",
         r"train/ images: found 12, expected 1281167 .*" + KEY.format("imagenet"), expected={"train": 1281167}),
    Case("imagenet-truncated-jpeg", "imagenet", "imagenet", _in(f"{T0}/n01440764_2.JPEG", truncate), "bad",
         r"cannot be decoded \(OSError: image file is truncated", f"{T0}/n01440764_2.JPEG"),
    Case("imagenet-empty-jpeg", "imagenet", "imagenet", _first_in("val", "*.JPEG", lambda p: p.write_bytes(b"")), "bad", r"is empty \(0 bytes\)",
         "val/n01440764/ILSVRC2012_val_00000004.JPEG"),
    Case("imagenet-text-as-jpeg", "imagenet", "imagenet", _in(f"{T0}/n01440764_3.JPEG", lambda p: p.write_text("<html>404</html>")), "bad",
         r"cannot be decoded \(UnidentifiedImageError", f"{T0}/n01440764_3.JPEG"),
    Case("imagenet-png-named-jpeg", "imagenet", "imagenet", _in(f"{T0}/n01440764_4.JPEG", png_as_jpeg), "ok"),
    Case("imagenet-cmyk-jpeg", "imagenet", "imagenet", _in(f"{T0}/n01440764_1.JPEG", cmyk), "ok"),
    # ImageNet: the devkit's flat val/
    Case("devkit-accepted", "imagenet", "devkit", lambda r: r, "ok"),
    Case("devkit-ground-truth-not-an-id", "imagenet", "devkit",
         _in("", lambda r: devkit_file(r, "data/ILSVRC2012_validation_ground_truth.txt", lambda b: b.replace(b"\n", b"\nx", 1))), "error",
         r"line 2 of data/ILSVRC2012_validation_ground_truth\.txt is 'x\d', not a class id"),
    Case("devkit-archive-truncated", "imagenet", "devkit", _in("ILSVRC2012_devkit_t12.tar.gz", lambda p: truncate(p, 0.5)), "error",
         r"devkit archive .* cannot be read .*download ILSVRC2012_devkit_t12\.tar\.gz again"),
    Case("devkit-meta-not-a-mat-file", "imagenet", "devkit", _in("", lambda r: devkit_file(r, "data/meta.mat", lambda b: b"MATLAB? no")), "error",
         r"data/meta\.mat is not the devkit's synset table"),
    Case("devkit-ground-truth-short", "imagenet", "devkit",
         _in("", lambda r: devkit_file(r, "data/ILSVRC2012_validation_ground_truth.txt", lambda b: b"".join(b.splitlines(True)[:-1]))), "error",
         r"1 images in val/ have no label in .*ILSVRC2012_devkit_t12\.tar\.gz \(ILSVRC2012_val_00000008\.JPEG\)"),
    Case("devkit-val-image-missing", "imagenet", "devkit", _in("val/ILSVRC2012_val_00000003.JPEG", remove), "error",
         r"1 validation images listed in .* are missing from val/ \(ILSVRC2012_val_00000003\); re-extract ILSVRC2012_img_val\.tar"),
    Case("devkit-truncated-val-jpeg", "imagenet", "devkit", _in("val/ILSVRC2012_val_00000004.JPEG", truncate), "bad",
         r"image file is truncated", "val/ILSVRC2012_val_00000004.JPEG"),
    # ImageNet: Kaggle's top folder
    Case("kaggle-accepted", "imagenet", "kaggle", lambda r: r, "ok"),
    Case("kaggle-cls-loc-given", "imagenet", "kaggle", lambda r: r / "ILSVRC/Data/CLS-LOC", "ok"),
    Case("kaggle-parent-given", "imagenet", "kaggle", lambda r: r.parent, "error",
         r"no train/ or val/ here; the images are in .*/kaggle/ILSVRC/Data/CLS-LOC: pass .*/kaggle$"),
    Case("kaggle-csv-header", "imagenet", "kaggle", _in("LOC_val_solution.csv", lambda p: p.write_text("id,label\n" + p.read_text().split("\n", 1)[1])),
         "error", r"LOC_val_solution\.csv does not start with the header ImageId,PredictionString"),
    Case("kaggle-csv-row-without-wnid", "imagenet", "kaggle",
         _in("LOC_val_solution.csv", lambda p: p.write_text(re.sub(r"(?m)^(ILSVRC2012_val_\d+),n\d+", r"\1,12", p.read_text(), count=2))),
         "error", r"LOC_val_solution\.csv: line 2 has no WordNet id"),
    Case("kaggle-csv-unknown-class", "imagenet", "kaggle",
         _in("LOC_val_solution.csv", lambda p: p.write_text(re.sub(r",n\d{8}", ",n09999999", p.read_text(), count=1))), "error",
         r"labels validation images with 1 classes that train/ lacks \(n09999999\)"),
    # COCO
    Case("coco-root-missing", "coco", "coco", lambda r: r.parent / "absent", "error",
         r"COCO root .*absent does not exist; set paper\.data\.coco in .*params\.yaml to the folder that holds train2017/"),
    Case("coco-no-val2017", "coco", "coco", _in("val2017", remove), "error", r"val2017/ is missing; extract val2017\.zip"),
    Case("coco-annotations-not-json", "coco", "coco", _in("annotations/instances_val2017.json", lambda p: p.write_text('{"images": [')), "error",
         r"instances_val2017\.json is not valid JSON"),
    Case("coco-annotations-without-lists", "coco", "coco", _in("annotations/instances_train2017.json", lambda p: p.write_text("{}")), "error",
         r"has no images/annotations/categories lists"),
    Case("coco-image-missing", "coco", "coco", _first_in("train2017", "*.jpg", remove), "error",
         r"1 images listed in annotations/instances_train2017\.json are missing from train2017/ \(000000100001\.jpg\)"),
    Case("coco-unknown-category", "coco", "coco",
         _in("annotations/instances_train2017.json", lambda p: rewrite_json(p, lambda d: d["annotations"][0].update(category_id=99))), "error",
         r"annotation 1 has category_id 99, which is not in its categories"),
    Case("coco-category-count-differs", "coco", "coco",
         _in("annotations/instances_val2017.json", lambda p: rewrite_json(p, lambda d: d["categories"].append({"id": 4, "name": "star"}))), "error",
         r"train and val annotation files have 3 and 4 categories"),
    Case("coco-count-mismatch", "coco", "coco", lambda r: r, "error", r"val/ images: found 2, expected 5000 .*" + KEY.format("coco"),
         expected={"val": 5000}),
    Case("coco-truncated-jpeg", "coco", "coco", _in("train2017/000000100002.jpg", truncate), "bad", r"image file is truncated",
         "train2017/000000100002.jpg"),
    Case("coco-empty-jpeg", "coco", "coco", _in("val2017/000000200001.jpg", lambda p: p.write_bytes(b"")), "bad", r"is empty", "val2017/000000200001.jpg"),
    Case("coco-size-differs-from-json", "coco", "coco", _in("val2017/000000200002.jpg", lambda p: Image.open(p).resize((32, 24)).save(p)), "bad",
         r"is 32x24 pixels but its annotation file says 64x48", "val2017/000000200002.jpg"),
    # ADE20K
    Case("ade20k-inner-folder-given", "ade20k", "ade20k", lambda r: r / ADE, "error", r"looks like ADEChallengeData2016 itself, pass its parent"),
    Case("ade20k-no-challenge-folder", "ade20k", "ade20k", _in(ADE, remove), "error", r"ADEChallengeData2016/ is missing; extract ADEChallengeData2016\.zip"),
    Case("ade20k-no-validation-annotations", "ade20k", "ade20k", _in(f"{ADE}/annotations/validation", remove), "error",
         r"annotations/validation/ is missing"),
    Case("ade20k-image-without-mask", "ade20k", "ade20k", _in(f"{ADE}/annotations/training/ADE_train_00000002.png", remove), "error",
         r"1 images in images/training/ have no \.png in annotations/training/ \(ADE_train_00000002\.jpg\)"),
    Case("ade20k-count-mismatch", "ade20k", "ade20k", lambda r: r, "error", r"training/ images: found 4, expected 20210 .*" + KEY.format("ade20k"),
         expected={"training": 20210}),
    Case("ade20k-truncated-jpeg", "ade20k", "ade20k", _in(f"{ADE}/images/training/ADE_train_00000003.jpg", truncate), "bad",
         r"image file is truncated", f"{ADE}/images/training/ADE_train_00000003.jpg"),
    Case("ade20k-train-mask-wrong-size", "ade20k", "ade20k", _in(f"{ADE}/annotations/training/ADE_train_00000001.png", lambda p: resize_mask(p, (24, 24))),
         "bad", r"its mask .*ADE_train_00000001\.png is 24x24 pixels but the image 48x48", f"{ADE}/images/training/ADE_train_00000001.jpg"),
    Case("ade20k-val-mask-wrong-size", "ade20k", "ade20k", _in(f"{ADE}/annotations/validation/ADE_val_00000002.png", lambda p: resize_mask(p, (48, 40))),
         "bad", r"is 48x40 pixels but the image 48x48", f"{ADE}/images/validation/ADE_val_00000002.jpg"),
    Case("ade20k-rgb-mask", "ade20k", "ade20k", _in(f"{ADE}/annotations/training/ADE_train_00000004.png", lambda p: Image.open(p).convert("RGB").save(p)),
         "bad", r"is mode RGB, not one channel of class indices", f"{ADE}/images/training/ADE_train_00000004.jpg"),
    Case("ade20k-label-out-of-range", "ade20k", "ade20k", _in(f"{ADE}/annotations/validation/ADE_val_00000001.png", lambda p: ade_labels(p, 200)),
         "bad", r"holds label 200; labels are 0-150", f"{ADE}/images/validation/ADE_val_00000001.jpg"),
    Case("ade20k-mask-not-decodable", "ade20k", "ade20k", _in(f"{ADE}/annotations/training/ADE_train_00000002.png", lambda p: truncate(p, 0.3)),
         "bad", r"its mask .*ADE_train_00000002\.png cannot be decoded", f"{ADE}/images/training/ADE_train_00000002.jpg"),
]


def test_the_catalogue_has_at_least_25_cases_across_the_three_datasets():
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)
    assert {c.dataset for c in CASES} == set(DATASETS)
    assert {c.outcome for c in CASES} == {"error", "bad", "ok"}
    documented = (Path(__file__).parents[1] / "docs/data.md").read_text()
    assert all(f"`{c.name}`" in documented for c in CASES), [c.name for c in CASES if f"`{c.name}`" not in documented]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_data_catalogue(case: Case, pristine: Path, tmp_path: Path, repo_root: Path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copytree(pristine / case.source, data / case.source)
    root = case.breaks(data / case.source)
    before = snapshot(data)
    project = project_for(tmp_path, repo_root, "paper", {f"paper.data.{case.dataset}": str(root), "paper.data.expected": {case.dataset: case.expected}})
    result = secvit_in_process(project, "data", "--profile", "paper", "--dataset", case.dataset)
    manifest = project / f"results/paper/data/{case.dataset}.json"
    if case.outcome == "error":
        assert re.search(case.message, one_line_error(result)), one_line_error(result)
        assert not manifest.exists()
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        bad = json.loads(manifest.read_text())["bad"]
        if case.outcome == "ok":
            assert bad == {} and "warning" not in result.stderr, result.stderr
        else:
            assert list(bad) == [case.file] and re.search(case.message, bad[case.file]), bad
            warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
            assert len(warnings) == 1 and case.file in warnings[0] and "restore it from" in warnings[0], result.stderr
    assert snapshot(data) == before  # nothing in or beside the dataset written, changed or lost


# ---------------------------------------------------------------------------- nothing of a user's is deleted


def _users_folder(pristine: Path, dest: Path, dataset: str) -> Path:
    """A user's copy of a dataset (no marker of ours) with their own notes beside the images."""
    shutil.copytree(pristine / dataset, dest)
    (dest / "notes.txt").write_text("where I downloaded this, and the checksums\n")
    return dest


@pytest.mark.parametrize("dataset", DATASETS)
def test_smoke_data_refuses_a_folder_it_did_not_make(dataset: str, pristine: Path, tmp_path: Path, repo_root: Path):
    users = _users_folder(pristine, tmp_path / "datasets" / dataset, dataset)
    before = snapshot(users.parent)
    project = project_for(tmp_path, repo_root, "smoke", {f"smoke.data.{dataset}": str(users)})
    message = one_line_error(secvit_in_process(project, "data", "--profile", "smoke", "--dataset", dataset))
    assert f"will not generate the {dataset} data into {users}: it holds files that secvit did not make" in message
    assert f"nothing was changed; set smoke.data.{dataset} in params.yaml to another folder" in message
    assert snapshot(users.parent) == before  # not one file written or removed, no temporary folder left


@pytest.mark.parametrize("dataset", DATASETS)
def test_paper_data_writes_nothing_into_the_dataset(dataset: str, pristine: Path, tmp_path: Path, repo_root: Path):
    users = _users_folder(pristine, tmp_path / "datasets" / dataset, dataset)
    before = snapshot(users.parent)
    project = project_for(tmp_path, repo_root, "paper", {f"paper.data.{dataset}": str(users), "paper.data.expected": None})
    for _ in range(2):  # the second run reads the verification cache
        result = secvit_in_process(project, "data", "--profile", "paper", "--dataset", dataset)
        assert result.returncode == 0, result.stderr[-2000:]
    assert snapshot(users.parent) == before
    assert json.loads((project / f"results/paper/data/{dataset}.checked.json").read_text())["root"] == str(users)  # verified there


@pytest.mark.parametrize("dataset", DATASETS)
def test_smoke_data_replaces_only_what_it_made(dataset: str, tmp_path: Path, repo_root: Path):
    """Missing, then its own folder with the user's notes inside: regenerated with other settings, the files the new
    data lacks are removed, the user's notes stay; an empty folder is taken too."""
    root = tmp_path / "gen" / dataset
    project = project_for(tmp_path, repo_root, "smoke", {f"smoke.data.{dataset}": str(root), f"smoke.data.generate.{dataset}": SMALL[dataset]})
    assert secvit_in_process(project, "data", "--profile", "smoke", "--dataset", dataset).returncode == 0
    made = json.loads((root / MARKER).read_text())
    assert made["files"] == sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MARKER)
    inner = root / made["dirs"][0] / "mine.txt"  # train/, annotations/, ADEChallengeData2016/: a file there breaks no layout
    for note in (root / "notes.txt", inner):
        note.write_text("mine")
    smaller = {**SMALL[dataset], **({"num_classes": 2} if dataset == "imagenet" else {"train_images": 2})}
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["smoke"]["data"]["generate"][dataset] = smaller
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = secvit_in_process(project, "data", "--profile", "smoke", "--dataset", dataset)
    assert result.returncode == 0, result.stderr[-2000:]
    remade = json.loads((root / MARKER).read_text())
    assert len(remade["files"]) < len(made["files"]) and remade["args"] == smaller
    assert all((root / f).is_file() for f in remade["files"])
    assert not any((root / f).exists() for f in set(made["files"]) - set(remade["files"]))  # its own old files went
    assert not any((root / d).exists() for d in set(made["dirs"]) - set(remade["dirs"]))  # and its folders, once empty
    assert (root / "notes.txt").read_text() == inner.read_text() == "mine"  # the user's stayed, with their folder
    empty = tmp_path / "empty"
    empty.mkdir()
    synthetic.generate(dataset, empty, SMALL[dataset])
    assert (empty / MARKER).is_file() and not list(empty.parent.glob(".empty.generating-*"))


def test_dvc_repro_keeps_a_users_folder_and_names_the_paper_setting(pristine: Path, tmp_path: Path, repo_root: Path):
    """DVC itself deletes a stage's outputs before running it, unless they are `persist`: data/smoke/<dataset>
    is, so the stage's own refusal is what the user sees, and their folder is untouched. And plain `dvc repro`
    on a fresh clone stops at the paper profile's data stage, saying which setting to edit."""
    repo = scratch_repo(repo_root, tmp_path / "repo")
    users = _users_folder(pristine, repo / "data/smoke/imagenet", "imagenet")
    before = snapshot(users)
    result = invoke(repo, "dvc", "repro", "data-smoke@imagenet", check=False, timeout=300)
    assert result.returncode != 0
    assert "will not generate the imagenet data into data/smoke/imagenet: it holds files that secvit did not make" in result.stdout + result.stderr
    assert snapshot(users) == before

    result = invoke(repo, "dvc", "repro", "data-paper@imagenet", check=False, timeout=300)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert ("error: ImageNet root /datasets/imagenet does not exist; set paper.data.imagenet in params.yaml to the folder that holds "
            "train/ and val/ (or Kaggle's ILSVRC/)") in out, out[-2000:]
    assert "Traceback" not in out


# ---------------------------------------------------------------------------- the smaller traps


def test_expected_null_is_accepted(pristine: Path, tmp_path: Path, repo_root: Path):
    changes = {f"paper.data.{d}": str(pristine / d) for d in DATASETS}
    project = project_for(tmp_path, repo_root, "paper", {**changes, "paper.data.expected.ade20k": None, "paper.data.expected.coco": None,
                                                         "paper.data.expected.imagenet": None})
    result = secvit_in_process(project, "data", "--profile", "paper")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (project / "results/paper/data").glob("*.json") if ".checked" not in p.name) == ["ade20k.json", "coco.json", "imagenet.json"]


def test_figure_image_is_found_in_the_profiles_imagenet_and_checked_by_doctor(pristine: Path, tmp_path: Path, repo_root: Path):
    from secvit.doctor.report import Report, _datasets
    from secvit.visualize import figure_image

    kaggle = pristine / "kaggle"
    project = project_for(tmp_path, repo_root, "paper", {"paper.data.imagenet": str(kaggle), "paper.data.expected": None,
                                                         "paper.figures.image": "ILSVRC2012_val_00000003.JPEG"})
    params = project / "params.yaml"
    assert figure_image("paper", params) == kaggle / "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000003.JPEG"
    report = Report("paper")
    _datasets(report, params, "paper")
    assert {r.check: r.status for r in report.rows}["figures: image"] == "ok"

    text = params.read_text().replace("ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000293.JPEG")
    params.write_text(text)
    report = Report("paper")
    _datasets(report, params, "paper")
    row = {r.check: r for r in report.rows}["figures: image"]
    assert row.status == "fail" and row.detail.startswith("paper.figures.image ILSVRC2012_val_00000293.JPEG is in neither val/ nor train/")
    assert "set paper.figures.image in" in row.detail

    smoke = make_project(tmp_path / "smoke", repo_root)  # the smoke profile's image, by name, in its generated data
    with contextlib.chdir(smoke):  # its paths are relative to the project
        report = Report("smoke")
        _datasets(report, Path("params.yaml"), "smoke")
        assert {r.check: r.status for r in report.rows}["figures: image"] == "warn"  # not generated yet
        assert secvit_in_process(smoke, "data", "--profile", "smoke", "--dataset", "imagenet").returncode == 0
        assert figure_image("smoke", Path("params.yaml")) == Path("data/smoke/imagenet/train/n01440764/n01440764_1.JPEG")


def test_a_stage_on_real_data_needs_the_data_stage_first(pristine: Path, tmp_path: Path, repo_root: Path):
    """No GPU time before the verification: without the manifest (or with one of another folder) a stage stops at once."""
    from secvit.errors import SecvitError
    from secvit.data.inputs import stage_data

    project = project_for(tmp_path, repo_root, "paper", {"paper.data.coco": str(pristine / "coco"), "paper.data.expected": None})
    params = project / "params.yaml"
    with contextlib.chdir(project), pytest.raises(SecvitError, match=r"COCO at .* has not been verified \(results/paper/data/coco\.json is missing\); "
                                          r"run `secvit data --profile paper --dataset coco` first"):
        stage_data("paper", params, "coco")
    assert secvit_in_process(project, "data", "--profile", "paper", "--dataset", "coco").returncode == 0
    with contextlib.chdir(project):
        assert stage_data("paper", params, "coco").bad == {}
    manifest = (project / "results/paper/data/coco.json").read_bytes()
    shutil.copytree(pristine / "coco", tmp_path / "other")  # the dataset moved: not verified there yet
    params.write_text(params.read_text().replace(str(pristine / "coco"), str(tmp_path / "other")))
    with contextlib.chdir(project), pytest.raises(SecvitError, match=r"COCO at .*/other has not been verified there \(it was verified at "
                                                  r".*/coco\); run `secvit data"):
        stage_data("paper", params, "coco")
    assert secvit_in_process(project, "data", "--profile", "paper", "--dataset", "coco").returncode == 0
    with contextlib.chdir(project):
        assert stage_data("paper", params, "coco").root == tmp_path / "other"
    # the dataset's identity is its files and sizes, not its path: the manifest (what stages depend on) is unchanged
    assert (project / "results/paper/data/coco.json").read_bytes() == manifest


def test_verification_is_cached_by_size_and_mtime(pristine: Path, tmp_path: Path):
    import os

    from secvit.data import layout, verify

    root = tmp_path / "imagenet"
    shutil.copytree(pristine / "imagenet", root)
    scanned = layout.scan("imagenet", root)
    first_run = verify.verify(root, "imagenet", scanned, workers=2)
    assert first_run.checked == first_run.total == 18 and first_run.bad == {}
    again = verify.verify(root, "imagenet", scanned, first_run.cache)
    assert again.checked == 0 and again.cache == first_run.cache
    victim = root / T0 / "n01440764_2.JPEG"
    truncate(victim)
    changed = verify.verify(root, "imagenet", scanned, again.cache)
    assert 1 <= changed.checked < 18 and list(changed.bad) == [f"{T0}/n01440764_2.JPEG"]
    assert verify.verify(root, "imagenet", scanned, changed.cache).bad == changed.bad  # the cached verdict
    victim.write_bytes((pristine / "imagenet" / T0 / "n01440764_2.JPEG").read_bytes())
    os.utime(victim, ns=(1, 1))
    assert verify.verify(root, "imagenet", scanned, changed.cache).bad == {}  # restored: its new mtime re-checks it
    many = verify.verify(root, "imagenet", scanned, None, workers=2, progress=lambda done, total: None)
    assert many.bad == {} and many.checked == 18


# ---------------------------------------------------------------------------- bad images left out; each image counted once


def test_evaluation_counts_each_imagenet_image_once(pristine: Path, tmp_path: Path):
    """A bad image the data stage found is left out; one that breaks later is skipped and dropped from its batch:
    the count falls by one each, no image stands in for another."""
    from imagenet_layouts import COLOURS, class_of_pixels

    from secvit.data.imagenet import ImageFolderDataset, collate_readable, read_skips
    from secvit.engine.distributed import DistEnv
    from secvit.engine.evaluate import evaluate

    root = tmp_path / "devkit"
    shutil.copytree(pristine / "devkit", root)
    left_out = "val/ILSVRC2012_val_00000002.JPEG"
    truncate(root / "val/ILSVRC2012_val_00000006.JPEG")  # broke after the data stage ran
    seen: list[int] = []

    def transform(img: Image.Image) -> torch.Tensor:
        k = class_of_pixels(img)
        seen.append(k)
        return torch.tensor(COLOURS[k])

    class ByColour(torch.nn.Module):  # timm's interface, as evaluate() uses it
        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def forward_head(self, x: torch.Tensor) -> torch.Tensor:
            return -torch.cdist(x, torch.tensor(COLOURS))

    dataset = ImageFolderDataset(root, "val", transform=transform, skip_log=tmp_path / "skips.tsv", exclude={left_out}, drop_unreadable=True)
    assert len(dataset) == 7 and dataset.excluded == 1
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate_readable)
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    result = evaluate(ByColour(), loader, env)
    assert result["images"] == 6 and len(seen) == 6  # 8 images, one left out, one unreadable: each other image once
    assert result["top1"] == 100.0  # the devkit's labels match the pixels
    assert [p for p, _ in read_skips(tmp_path / "skips.tsv")] == [str(root / "val/ILSVRC2012_val_00000006.JPEG")]


def test_coco_and_ade20k_loaders_leave_out_the_bad_files(pristine: Path, tmp_path: Path, repo_root: Path):
    """Through mmdet's and mmseg's own dataset classes, built from the stage's configs: the truncated COCO JPEG and
    the wrong-size ADE20K masks are not listed, every other sample loads, and COCO's metric scores the rest."""
    pytest.importorskip("mmdet")
    from mmengine.registry import init_default_scope

    from secvit.downstream.datasets import leave_out
    from secvit.downstream.config import DETECTION_CONFIGS, SEGMENTATION_CONFIGS, config_file, prepare_config
    from secvit.data.inputs import stage_data

    data = tmp_path / "data"
    shutil.copytree(pristine / "coco", data / "coco")
    shutil.copytree(pristine / "ade20k", data / "ade20k")
    truncate(data / "coco/train2017/000000100002.jpg")
    truncate(data / "coco/val2017/000000200001.jpg")
    resize_mask(data / f"ade20k/{ADE}/annotations/training/ADE_train_00000001.png", (24, 24))
    resize_mask(data / f"ade20k/{ADE}/annotations/validation/ADE_val_00000002.png", (48, 40))
    project = project_for(tmp_path, repo_root, "paper", {"paper.data.coco": str(data / "coco"), "paper.data.ade20k": str(data / "ade20k"),
                                                         "paper.data.expected": None})
    for dataset in ("coco", "ade20k"):
        assert secvit_in_process(project, "data", "--profile", "paper", "--dataset", dataset).returncode == 0
    params = project / "params.yaml"

    with contextlib.chdir(project):
        coco, ade = stage_data("paper", params, "coco"), stage_data("paper", params, "ade20k")
    assert sorted(coco.bad) == ["train2017/000000100002.jpg", "val2017/000000200001.jpg"]
    config, _ = config_file(DETECTION_CONFIGS[("mask_rcnn", "1x")], "secvit_tiny")
    cfg = prepare_config(config, work_dir=tmp_path / "work", data_root=coco.root, pretrained=None, classes=["circle", "square", "triangle"])
    leave_out(cfg, coco.bad_paths())
    init_default_scope("mmdet")
    from mmdet.registry import DATASETS, METRICS

    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(train) == 3 and len(val) == 1
    assert all(train[i]["inputs"].shape[0] == 3 for i in range(len(train)))  # every listed image loads
    metric = METRICS.build(cfg.val_evaluator)
    assert [metric._coco_api.imgs[i]["file_name"] for i in metric.img_ids] == ["000000200002.jpg"]

    assert sorted(ade.bad) == [f"{ADE}/images/training/ADE_train_00000001.jpg", f"{ADE}/images/validation/ADE_val_00000002.jpg"]
    config, _ = config_file(SEGMENTATION_CONFIGS["semantic_fpn"], "secvit_tiny")
    cfg = prepare_config(config, work_dir=tmp_path / "work", data_root=ade.root / ADE, pretrained=None)
    leave_out(cfg, ade.bad_paths())
    init_default_scope("mmseg")
    from mmseg.registry import DATASETS as SEG_DATASETS

    train = SEG_DATASETS.build(cfg.train_dataloader.dataset)
    val = SEG_DATASETS.build(cfg.val_dataloader.dataset)
    assert len(train) == 3 and len(val) == 1
    for item in [train[i] for i in range(len(train))]:
        assert item["inputs"].shape[-2:] == item["data_samples"].gt_sem_seg.data.shape[-2:]  # image and mask agree
    assert tuple(val[0]["data_samples"].gt_sem_seg.data.shape[-2:]) == val[0]["data_samples"].ori_shape  # scored at the image's size

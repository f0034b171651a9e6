"""Generated datasets, layout checks, manifests and the ImageNet dataset class."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from secvit.data import layout, manifest, synthetic
from secvit.data.imagenet import ImageFolderDataset, read_skips
from secvit.errors import SecvitError

WNID = re.compile(r"n\d{8}")


def _one_line_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(SecvitError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("in") / "imagenet"
    synthetic.make_imagenet(root, num_classes=4, train_per_class=60, val_per_class=20, size=64, seed=0)
    return root


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco") / "coco"
    synthetic.make_coco(root, seed=0)
    return root


@pytest.fixture(scope="module")
def ade(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ade") / "ade20k"
    synthetic.make_ade20k(root, seed=0)
    return root


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- generators + accepted layouts


def test_imagenet_layout_and_counts(imagenet: Path):
    wnids = sorted(p.name for p in (imagenet / "train").iterdir())
    assert len(wnids) == 4 and all(WNID.fullmatch(w) for w in wnids)
    assert sorted(p.name for p in (imagenet / "val").iterdir()) == wnids
    train_names = {p.name for p in (imagenet / "train" / wnids[0]).iterdir()}
    assert train_names == {f"{wnids[0]}_{i}.JPEG" for i in range(1, 61)}
    val_names = sorted(p.name for p in (imagenet / "val").rglob("*.JPEG"))
    assert val_names == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 81)]
    with Image.open(next((imagenet / "val" / wnids[1]).iterdir())) as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (64, 64)

    counts = layout.check_imagenet(imagenet, expected={"classes": 4, "train": 240, "val": 80})
    assert (counts.classes, counts.splits) == (4, {"train": 240, "val": 80})
    assert counts.per_class["train"] == {w: 60 for w in wnids}
    assert counts.per_class["val"] == {w: 20 for w in wnids}
    assert counts["train"] == 240 and counts["classes"] == 4


def test_generators_are_deterministic(tmp_path: Path):
    makers = {
        "in": lambda r, s: synthetic.make_imagenet(r, 2, 3, 2, 32, seed=s),
        "coco": lambda r, s: synthetic.make_coco(r, 3, 2, seed=s),
        "ade": lambda r, s: synthetic.make_ade20k(r, 3, 2, seed=s),
    }
    for name, make in makers.items():
        a, b, c = (tmp_path / f"{name}{x}" for x in "abc")
        make(a, 0), make(b, 0), make(c, 1)
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
        assert manifest.tree_fingerprint(a) == manifest.tree_fingerprint(b)
        assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_coco_layout_polygons_and_eval(coco: Path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    counts = layout.check_coco(coco, expected={"train": 16, "val": 8, "classes": 3})
    assert counts.splits == {"train": 16, "val": 8} and counts.annotations["val"] >= 8
    for split in ("train", "val"):
        with contextlib.redirect_stdout(io.StringIO()):
            api = COCO(str(coco / "annotations" / f"instances_{split}2017.json"))
        assert sorted(c["name"] for c in api.loadCats(api.getCatIds())) == ["circle", "square", "triangle"]
        for img in api.loadImgs(api.getImgIds()):
            assert re.fullmatch(r"\d{12}\.jpg", img["file_name"]) and (coco / f"{split}2017" / img["file_name"]).is_file()
            assert (img["height"], img["width"]) == (96, 128)
            anns = api.loadAnns(api.getAnnIds(imgIds=img["id"]))
            assert 1 <= len(anns) <= 3
            for ann in anns:
                assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"], list)
                mask = api.annToMask(ann)
                assert abs(mask.sum() - ann["area"]) <= 0.15 * ann["area"] + 5
                ys, xs = np.nonzero(mask)
                x, y, w, h = ann["bbox"]
                assert abs(xs.min() - x) <= 1.5 and abs(ys.min() - y) <= 1.5
                assert abs(xs.max() + 1 - (x + w)) <= 1.5 and abs(ys.max() + 1 - (y + h)) <= 1.5

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco / "annotations" / "instances_val2017.json"))
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                for a in gt.loadAnns(gt.getAnnIds())]
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_coco_drawn_colours_match_masks(coco: Path):
    from pycocotools import mask as mask_utils

    data = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    img = data["images"][0]
    arr = np.asarray(Image.open(coco / "val2017" / img["file_name"]), dtype=np.float32)
    for ann in (a for a in data["annotations"] if a["image_id"] == img["id"]):
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], img["height"], img["width"]))
        inside = mask_utils.decode(rle).astype(bool)
        assert arr[inside].std(axis=0).mean() < 25  # one flat colour (plus noise / JPEG) inside the polygon


def test_ade20k_layout_and_labels(ade: Path):
    counts = layout.check_ade20k(ade, expected={"training": 16, "validation": 8})
    assert counts.splits == {"training": 16, "validation": 8}
    base = ade / "ADEChallengeData2016"
    assert sorted(p.name for p in (base / "images" / "training").iterdir())[:2] == [
        "ADE_train_00000001.jpg", "ADE_train_00000002.jpg"]
    assert (base / "annotations" / "validation" / "ADE_val_00000008.png").is_file()
    seen: set[int] = set()
    for png in (base / "annotations" / "training").iterdir():
        with Image.open(png) as lab, Image.open(base / "images" / "training" / f"{png.stem}.jpg") as im:
            assert lab.mode == "L" and lab.size == im.size == (128, 128)
            labels = np.asarray(lab)
            seen |= set(np.unique(labels).tolist())
            background = np.asarray(im, dtype=np.float32)[labels == 1]
            assert len(background) and background.std(axis=0).mean() < 30
    assert seen <= set(range(151)) and {0, 1, 2} <= seen


# ---------------------------------------------------------------- rejected layouts


def test_missing_roots_and_split_dirs(tmp_path: Path, imagenet: Path, coco: Path, ade: Path):
    _one_line_error("does not exist", layout.check_imagenet, tmp_path / "nope")
    root = _copy(imagenet, tmp_path)
    shutil.rmtree(root / "val")
    assert "extract" in _one_line_error(r"val/ is missing", layout.check_imagenet, root)

    c = _copy(coco, tmp_path)
    shutil.rmtree(c / "val2017")
    _one_line_error(r"val2017/ is missing", layout.check_coco, c)

    a = _copy(ade, tmp_path)
    _one_line_error("pass its parent", layout.check_ade20k, a / "ADEChallengeData2016")
    shutil.rmtree(a / "ADEChallengeData2016" / "annotations" / "validation")
    _one_line_error(r"annotations/validation/ is missing", layout.check_ade20k, a)


def test_imagenet_class_missing_in_val(tmp_path: Path, imagenet: Path):
    root = _copy(imagenet, tmp_path)
    wnid = sorted(p.name for p in (root / "val").iterdir())[0]
    shutil.rmtree(root / "val" / wnid)
    msg = _one_line_error("val/ has 3 class folders but train/ has 4", layout.check_imagenet, root)
    assert f"missing in val: {wnid}" in msg and "valprep" in msg


def test_imagenet_flat_val_bad_files_and_empty_class(tmp_path: Path, imagenet: Path):
    root = _copy(imagenet, tmp_path)
    val = root / "val"
    for f in list(val.rglob("*.JPEG")):
        f.rename(val / f.name)
    for d in val.iterdir():
        if d.is_dir():
            d.rmdir()
    _one_line_error("holds 80 images directly", layout.check_imagenet, root)

    root = _copy(imagenet, tmp_path / "b")
    wnid = sorted(p.name for p in (root / "train").iterdir())[2]
    (root / "train" / wnid / "notes.txt").write_text("x")
    (root / "train" / wnid / ".DS_Store").write_text("x")  # hidden files are ignored
    msg = _one_line_error("1 entries are not images", layout.check_imagenet, root)
    assert f"train/{wnid}/notes.txt" in msg
    (root / "train" / wnid / "notes.txt").unlink()
    layout.check_imagenet(root)
    for f in (root / "train" / wnid).glob("*.JPEG"):
        f.unlink()
    _one_line_error(f"class folder train/{wnid} has no images", layout.check_imagenet, root)


def test_expected_count_mismatch(imagenet: Path, coco: Path, ade: Path):
    msg = _one_line_error("ImageNet at", layout.check_imagenet, imagenet, expected=layout.IMAGENET_1K)
    assert "classes: found 4, expected 1000 (996 fewer)" in msg
    assert "train/ images: found 240, expected 1281167 (1280927 fewer)" in msg
    msg = _one_line_error(r"val/ images: found 80, expected 79 \(1 more\)", layout.check_imagenet,
                          imagenet, expected={"val": 79})
    assert "train/ images" not in msg
    _one_line_error("train/ images: found 16, expected 118287", layout.check_coco, coco, expected=layout.COCO_2017)
    _one_line_error("validation/ images: found 8, expected 2000", layout.check_ade20k, ade, expected=layout.ADE20K)
    _one_line_error("unknown expected-count key 'test'", layout.check_coco, coco, expected={"test": 1})


def test_coco_corrupt_json_and_missing_images(tmp_path: Path, coco: Path):
    root = _copy(coco, tmp_path)
    ann = root / "annotations" / "instances_val2017.json"
    ann.write_text('{"images": [')
    assert "instances_val2017.json" in _one_line_error("is not valid JSON", layout.check_coco, root)
    ann.write_text('{"foo": 1}')
    _one_line_error("has no images/annotations/categories", layout.check_coco, root)

    root = _copy(coco, tmp_path / "b")
    names = sorted(p.name for p in (root / "train2017").iterdir())
    for name in names[:7]:
        (root / "train2017" / name).unlink()
    msg = _one_line_error("7 images listed in annotations/instances_train2017.json are missing from train2017/",
                          layout.check_coco, root)
    assert names[0] in msg and "and 2 more" in msg
    (root / "annotations" / "instances_train2017.json").unlink()
    _one_line_error("instances_train2017.json is missing", layout.check_coco, root)


def test_ade_image_without_annotation(tmp_path: Path, ade: Path):
    root = _copy(ade, tmp_path)
    (root / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000003.png").unlink()
    msg = _one_line_error("1 images in images/training/ have no .png", layout.check_ade20k, root)
    assert "ADE_train_00000003.jpg" in msg


# ---------------------------------------------------------------- manifests


def test_manifest_is_deterministic_and_tracks_changes(tmp_path: Path, imagenet: Path):
    root = _copy(imagenet, tmp_path)
    counts = layout.check_imagenet(root)
    out = tmp_path / "manifests" / "imagenet.json"
    first = manifest.write_manifest(root, "imagenet", counts, out)
    text = out.read_bytes()
    assert manifest.write_manifest(root, "imagenet", layout.check_imagenet(root), out) == first
    assert out.read_bytes() == text
    data = manifest.read_manifest(out)
    assert data == json.loads(text) and list(data) == sorted(data) == sorted(manifest.MANIFEST_KEYS)
    assert data["kind"] == "imagenet" and "root" not in data and data["files"] == 320  # identity: files and sizes, not where
    assert data["bytes"] == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert data["counts"]["splits"] == {"train": 240, "val": 80} and data["counts"]["classes"] == 4
    listing = sorted(f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}\n" for p in root.rglob("*") if p.is_file())
    import hashlib
    assert data["listing_sha256"] == hashlib.sha256("".join(listing).encode()).hexdigest()

    wnid = sorted(counts.per_class["val"])[0]
    extra = root / "val" / wnid / "ILSVRC2012_val_00099999.JPEG"
    shutil.copy(next((root / "val" / wnid).iterdir()), extra)
    added = manifest.write_manifest(root, "imagenet", counts, out)
    assert added["listing_sha256"] != first["listing_sha256"] and added["files"] == 321
    extra.unlink()
    assert manifest.write_manifest(root, "imagenet", counts, out)["listing_sha256"] == first["listing_sha256"]
    assert out.read_bytes() == text
    victim = next((root / "train" / wnid).iterdir())
    victim.write_bytes(victim.read_bytes()[:-10])
    truncated = manifest.write_manifest(root, "imagenet", counts, out)
    assert truncated["listing_sha256"] != first["listing_sha256"] and truncated["bytes"] == first["bytes"] - 10

    inside = root / "manifest.json"  # a manifest written into the tree does not fingerprint itself
    a = manifest.write_manifest(root, "imagenet", counts, inside)
    assert manifest.write_manifest(root, "imagenet", counts, inside) == a
    assert a["listing_sha256"] == truncated["listing_sha256"]


def test_read_manifest_errors(tmp_path: Path):
    _one_line_error("does not exist", manifest.read_manifest, tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    _one_line_error("cannot be read", manifest.read_manifest, tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    _one_line_error("is not a dataset manifest", manifest.read_manifest, tmp_path / "other.json")
    _one_line_error("not a directory", manifest.write_manifest, tmp_path / "nope", "coco", {}, tmp_path / "m.json")


# ---------------------------------------------------------------- ImageFolderDataset


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def test_dataset_classes_and_targets(imagenet: Path):
    ds = ImageFolderDataset(imagenet, "val", transform=_to_tensor)
    wnids = sorted(p.name for p in (imagenet / "val").iterdir())
    assert ds.classes == wnids and ds.class_to_idx == {w: i for i, w in enumerate(wnids)}
    assert len(ds) == 80 and ds.targets == sorted(ds.targets) and ds.targets.count(3) == 20
    x, y = ds[25]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == 1
    img, _ = ImageFolderDataset(imagenet, "train")[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    with pytest.raises(SecvitError, match="does not exist"):
        ImageFolderDataset(imagenet, "test")


def test_dataset_skips_corrupt_files_and_converts_modes(tmp_path: Path, imagenet: Path):
    root = _copy(imagenet, tmp_path)
    wnid = sorted(p.name for p in (root / "val").iterdir())[0]
    files = sorted((root / "val" / wnid).iterdir())
    files[0].write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 20)  # corrupt
    files[1].write_bytes(b"")  # zero bytes
    Image.open(files[2]).convert("L").save(files[2], quality=90)  # grayscale JPEG
    Image.open(files[3]).convert("CMYK").save(files[3], quality=90)  # CMYK JPEG
    data = files[4].read_bytes()
    files[4].write_bytes(data[: len(data) // 2])  # truncated

    log = tmp_path / "logs" / "skipped.tsv"
    ds = ImageFolderDataset(root, "val", transform=_to_tensor, skip_log=log)
    index = {path: i for i, (path, _) in enumerate(ds.samples)}
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 64, 64) and torch.isfinite(x).all() and 0 <= y < 4
    x0, _ = ds[index[str(files[0])]]
    x2, _ = ds[index[str(files[2])]]
    assert torch.equal(x0, x2)  # the corrupt sample is replaced by the next readable one
    assert torch.equal(x2[0], x2[1]) and torch.equal(x2[1], x2[2])  # gray -> 3 equal channels

    ImageFolderDataset(root, "val", transform=_to_tensor, skip_log=log)[index[str(files[1])]]
    skips = read_skips(log)
    assert [p for p, _ in skips] == sorted(str(f) for f in (files[0], files[1], files[4]))
    assert all(err and "\n" not in err and "\t" not in err for _, err in skips)
    assert len(log.read_text().splitlines()) == 4  # 3 from the first dataset, 1 again from the second
    assert read_skips(tmp_path / "absent.tsv") == []


def test_dataset_all_unreadable(tmp_path: Path):
    for split in ("train", "val"):
        (tmp_path / split / "n00000001").mkdir(parents=True)
        (tmp_path / split / "n00000001" / "a.JPEG").write_bytes(b"")
    with pytest.raises(SecvitError, match="no readable image"):
        ImageFolderDataset(tmp_path, "train")[0]


def test_dataset_skip_log_across_workers(tmp_path: Path, imagenet: Path):
    root = _copy(imagenet, tmp_path)
    bad = sorted((root / "train").rglob("*.JPEG"))[::40]
    for f in bad:
        f.write_bytes(b"junk")
    log = tmp_path / "skipped.tsv"
    ds = ImageFolderDataset(root, "train", transform=lambda im: _to_tensor(im.resize((16, 16))), skip_log=log)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2)
    assert sum(len(y) for _, y in loader) == 240
    assert [p for p, _ in read_skips(log)] == sorted(map(str, bad))


# ---------------------------------------------------------------- learnability


def _arrays(root: Path, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = ImageFolderDataset(root, split, transform=lambda im: _to_tensor(im.resize((size, size), Image.BILINEAR)))
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def test_classes_not_separable_by_colour_or_mean_image(imagenet: Path):
    xtr, ytr = _arrays(imagenet, "train", 16)
    xva, yva = _arrays(imagenet, "val", 16)

    def nearest_mean(ftr: torch.Tensor, fva: torch.Tensor) -> float:
        means = torch.stack([ftr[ytr == k].mean(0) for k in range(4)])
        return (torch.cdist(fva, means).argmin(1) == yva).float().mean().item()

    colour = nearest_mean(xtr.mean((2, 3)), xva.mean((2, 3)))
    gray = nearest_mean(xtr.mean(1).flatten(1), xva.mean(1).flatten(1))
    assert colour < 0.6 and gray < 0.7, (colour, gray)  # chance is 0.25


@pytest.mark.slow
def test_small_convnet_learns_classes(imagenet: Path):
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    try:
        xtr, ytr = _arrays(imagenet, "train", 64)
        xva, yva = _arrays(imagenet, "val", 64)
        net = torch.nn.Sequential(  # strided convs: ~3 s for 100 steps on 2 idle cores
            torch.nn.Conv2d(3, 16, 5, stride=2, padding=2), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 4),
        )
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(100):
            idx = torch.randint(0, len(xtr), (32,), generator=gen)
            loss = torch.nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (net(xva).argmax(1) == yva).float().mean().item()
        assert acc > 0.8, acc
    finally:
        torch.set_num_threads(threads)


def test_learnable_coco_draws_each_category_in_its_colour(tmp_path):
    """make_coco(learnable=True), the learning check's data: 1-2 large objects, each category its own colour,
    masks that cover exactly the coloured pixels."""
    from pycocotools import mask as mask_utils

    counts = synthetic.make_coco(tmp_path, train_images=12, val_images=2, size=(96, 96), learnable=True)
    data = json.loads((tmp_path / "annotations/instances_train2017.json").read_text())
    per_image = {}
    for ann in data["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
    assert counts["train"] == 12 and set(per_image) == {im["id"] for im in data["images"]}
    assert all(1 <= len(anns) <= 2 for anns in per_image.values())
    colours = np.array([(220, 40, 40), (40, 200, 40), (40, 60, 230)])
    for image in data["images"]:
        pixels = np.asarray(Image.open(tmp_path / "train2017" / image["file_name"]), dtype=np.float32)
        for ann in per_image[image["id"]]:
            assert ann["area"] > 0.1 * 96 * 96 * 0.2  # large: radius 20-35% of the side
            rle = mask_utils.frPyObjects(ann["segmentation"], 96, 96)
            inside = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
            mean = pixels[inside].mean(0)
            assert np.abs(mean - colours[ann["category_id"] - 1]).max() < 40, (image["file_name"], mean)
            assert np.abs(pixels[~inside].mean(0) - colours[ann["category_id"] - 1]).max() > 40

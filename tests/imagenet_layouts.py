"""ImageNet's official on-disk layouts in miniature, with real file names, WordNet ids and label formats.

- :func:`devkit_layout`: ``ILSVRC2012_img_train.tar``'s class folders, ``ILSVRC2012_img_val.tar``
  extracted flat (``val/ILSVRC2012_val_00000001.JPEG`` ...), and ``ILSVRC2012_devkit_t12`` (its
  ``.tar.gz`` or extracted) with ``data/meta.mat`` (MATLAB struct array ``synsets``, the devkit's fields,
  leaf and inner synsets) and ``data/ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID a line).
- :func:`kaggle_layout`: the ImageNet Object Localization Challenge's top folder: ``ILSVRC/Data/CLS-LOC``
  (``train/<wnid>/<wnid>_<n>.JPEG``, flat ``val/``, ``test/``), ``ILSVRC/Annotations`` and ``ILSVRC/ImageSets``,
  ``LOC_val_solution.csv``, ``LOC_train_solution.csv``, ``LOC_synset_mapping.txt``, ``LOC_sample_submission.csv``.

Each image is one flat colour (plus noise) per class, so its class can be read back from its pixels
(:func:`class_of_pixels`): a loader's label is right when it equals the pixels' class.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

#: Four leaf synsets with their devkit ILSVRC2012_IDs (map_clsloc.txt): the IDs are not in WNID order.
SYNSETS = {1: ("n02119789", "kit fox, Vulpes macrotis"), 3: ("n02110185", "Siberian husky"),
           4: ("n02096294", "Australian terrier"), 5: ("n02102040", "English springer, English springer spaniel")}
WNIDS = sorted(w for w, _ in SYNSETS.values())  # the class order: index = position
COLOURS = np.array([(220, 40, 40), (40, 200, 40), (40, 60, 230), (235, 235, 60)], dtype=np.float32)  # by class index
INNER = [(1001, "n02084071", "dog, domestic dog, Canis familiaris", [3, 4, 5]), (1002, "n02118333", "fox", [1])]


def image(class_index: int, rng: np.random.Generator, size: int = 40) -> Image.Image:
    pixels = COLOURS[class_index] + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def class_of_pixels(img: Image.Image) -> int:
    """The class whose colour is nearest the image's mean colour."""
    mean = np.asarray(img.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0)
    return int(np.abs(COLOURS - mean).sum(1).argmin())


def _train(folder: Path, per_class: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    rows = []
    for k, wnid in enumerate(WNIDS):
        (folder / wnid).mkdir(parents=True)
        for n in rng.choice(np.arange(10, 15000), per_class, replace=False):
            image(k, rng).save(folder / wnid / f"{wnid}_{n}.JPEG", quality=92)
            rows.append((f"{wnid}_{n}", k))
    return rows


def _val(folder: Path, per_class: int, rng: np.random.Generator) -> dict[str, int]:
    """Flat val/ of ILSVRC2012_val_<8 digits>.JPEG, classes in shuffled order: {stem: class index}."""
    folder.mkdir(parents=True)
    classes = rng.permutation(np.repeat(np.arange(len(WNIDS)), per_class))
    labels = {}
    for i, k in enumerate(classes, 1):
        stem = f"ILSVRC2012_val_{i:08d}"
        image(int(k), rng).save(folder / f"{stem}.JPEG", quality=92)
        labels[stem] = int(k)
    return labels


def meta_mat() -> bytes:
    """The devkit's data/meta.mat: a 1-by-N struct array ``synsets`` with the devkit's eight fields."""
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
    rows = [(i, w, words, f"gloss of {words.split(',')[0]}", 0, np.zeros((1, 0)), 0, 1300) for i, (w, words) in SYNSETS.items()]
    rows += [(i, w, words, f"gloss of {words.split(',')[0]}", len(ch), np.array(ch, dtype=np.float64), 1, 0) for i, w, words, ch in INNER]
    synsets = np.zeros((len(rows), 1), dtype=[(f, object) for f in fields])
    for n, row in enumerate(rows):
        synsets[n, 0] = tuple(np.array([[v]], dtype=np.float64) if isinstance(v, int) else v for v in row)
    buffer = io.BytesIO()
    savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def devkit_layout(dest: Path, train_per_class: int = 6, val_per_class: int = 4, archive: bool = True, seed: int = 0) -> dict[str, int]:
    """Official archives extracted as they are; returns {val stem: class index}."""
    rng = np.random.default_rng(seed)
    _train(dest / "train", train_per_class, rng)
    labels = _val(dest / "val", val_per_class, rng)
    id_of = {w: i for i, (w, _) in SYNSETS.items()}
    truth = "".join(f"{id_of[WNIDS[labels[s]]]}\n" for s in sorted(labels)).encode()
    files = {"data/meta.mat": meta_mat(), "data/ILSVRC2012_validation_ground_truth.txt": truth,
             "readme.txt": b"ILSVRC2012 development kit\n", "evaluation/demo_eval.m": b"% demo\n"}
    if archive:
        with tarfile.open(dest / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        for name, data in files.items():
            (dest / "ILSVRC2012_devkit_t12" / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / "ILSVRC2012_devkit_t12" / name).write_bytes(data)
    return labels


def kaggle_layout(dest: Path, train_per_class: int = 6, val_per_class: int = 4, seed: int = 1) -> dict[str, int]:
    """Kaggle's imagenet-object-localization-challenge folder; returns {val stem: class index}."""
    rng = np.random.default_rng(seed)
    cls_loc = dest / "ILSVRC" / "Data" / "CLS-LOC"
    train = _train(cls_loc / "train", train_per_class, rng)
    labels = _val(cls_loc / "val", val_per_class, rng)
    (cls_loc / "test").mkdir()
    for i in range(1, 4):
        image(0, rng).save(cls_loc / "test" / f"ILSVRC2012_test_{i:08d}.JPEG")
    for sub in ("Annotations/CLS-LOC/val", "ImageSets/CLS-LOC"):
        (dest / "ILSVRC" / sub).mkdir(parents=True)
    for stem in labels:
        (dest / "ILSVRC/Annotations/CLS-LOC/val" / f"{stem}.xml").write_text(f"<annotation><filename>{stem}</filename></annotation>\n")
    (dest / "ILSVRC/ImageSets/CLS-LOC/val.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(sorted(labels), 1)))

    def boxes(wnid: str) -> str:
        return " ".join(f"{wnid} {x} {y} {x + 20} {y + 15}" for x, y in rng.integers(0, 20, (int(rng.integers(1, 3)), 2))) + " "

    stems = sorted(labels)
    rows = [f"{stems[i]},{boxes(WNIDS[labels[stems[i]]])}" for i in rng.permutation(len(stems))]
    (dest / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    (dest / "LOC_train_solution.csv").write_text("ImageId,PredictionString\n" + "".join(f"{s},{boxes(WNIDS[k])}\n" for s, k in train[:5]))
    (dest / "LOC_synset_mapping.txt").write_text("".join(f"{w} {words}\n" for w, words in sorted(SYNSETS.values())))
    (dest / "LOC_sample_submission.csv").write_text("ImageId,PredictionString\nILSVRC2012_test_00000001,1 2 3 4 5\n")
    return {stem: int(k) for stem, k in labels.items()}

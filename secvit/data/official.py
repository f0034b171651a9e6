"""The label files of ImageNet's two official flat validation layouts, read as they ship.

- The ILSVRC2012 devkit (``ILSVRC2012_devkit_t12.tar.gz``, extracted or not) beside a flat ``val/`` of
  ``ILSVRC2012_val_00000001.JPEG`` ... (``ILSVRC2012_img_val.tar`` extracted as it is):
  ``data/ILSVRC2012_validation_ground_truth.txt`` holds the ILSVRC2012_ID (1-1000) of validation image
  ``i`` on line ``i``, and ``data/meta.mat`` (MATLAB) maps each ID to its WordNet id. The IDs are not in
  sorted-WNID order: class 1 is n02119789 (kit fox), not n01440764.
- Kaggle's ImageNet Object Localization Challenge: ``LOC_val_solution.csv`` (header
  ``ImageId,PredictionString``; each row an image id and its boxes, ``wnid x0 y0 x1 y1`` repeated), in
  the top folder beside ``ILSVRC/Data/CLS-LOC/{train,val,test}``.

Both give ``{image stem: wnid}``; a file that does not parse is a one-line :class:`SecvitError`.
"""

from __future__ import annotations

import csv
import io
import re
import tarfile
from pathlib import Path

from secvit.errors import SecvitError

DEVKIT = "ILSVRC2012_devkit_t12"
DEVKIT_ARCHIVE = f"{DEVKIT}.tar.gz"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"
KAGGLE_CSV = "LOC_val_solution.csv"
KAGGLE_IMAGES = ("ILSVRC", "Data", "CLS-LOC")  # below Kaggle's top folder
WNID = re.compile(r"n\d{8}")
VAL_STEM = "ILSVRC2012_val_{:08d}"


def _devkit_files(devkit: Path) -> tuple[bytes, bytes]:
    """(meta.mat, ground truth) bytes of an extracted devkit folder or of its archive."""
    if devkit.is_dir():
        try:
            return (devkit / META).read_bytes(), (devkit / GROUND_TRUTH).read_bytes()
        except OSError as e:
            raise SecvitError(f"ImageNet devkit {devkit} lacks {Path(e.filename).relative_to(devkit)}; extract {DEVKIT_ARCHIVE} again") from None
    wanted = {META: None, GROUND_TRUTH: None}
    try:
        with tarfile.open(devkit, "r:*") as tar:
            for member in tar:
                for name in wanted:
                    if member.isfile() and member.name.endswith(name):
                        wanted[name] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise SecvitError(f"ImageNet devkit archive {devkit} cannot be read ({type(e).__name__}: {e}); download {DEVKIT_ARCHIVE} again") from None
    missing = [name for name, data in wanted.items() if data is None]
    if missing:
        raise SecvitError(f"ImageNet devkit archive {devkit} has no {missing[0]}; download {DEVKIT_ARCHIVE} again")
    return wanted[META], wanted[GROUND_TRUTH]


def _id_to_wnid(meta: bytes, where: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of the 1000 leaf synsets of the devkit's meta.mat."""
    try:
        from scipy.io import loadmat

        synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
        rows = [(int(s["ILSVRC2012_ID"]), str(s["WNID"]), int(s["num_children"])) for s in synsets]
    except Exception as e:  # scipy raises many types for a damaged .mat file
        raise SecvitError(f"{where}: {META} is not the devkit's synset table ({type(e).__name__}); extract {DEVKIT_ARCHIVE} again") from None
    leaves = {i: wnid for i, wnid, children in rows if children == 0}
    if not leaves or not all(WNID.fullmatch(w) for w in leaves.values()):
        raise SecvitError(f"{where}: {META} lists no leaf synsets with WordNet ids; extract {DEVKIT_ARCHIVE} again")
    return leaves


def read_devkit(devkit: Path) -> dict[str, str]:
    """``{ILSVRC2012_val_00000001: wnid, ...}`` from the devkit folder or archive at ``devkit``."""
    meta, truth = _devkit_files(devkit)
    wnids = _id_to_wnid(meta, devkit)
    labels = {}
    for number, line in enumerate(truth.decode("ascii", "replace").splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        if not text.isdigit() or int(text) not in wnids:
            raise SecvitError(
                f"{devkit}: line {number} of {GROUND_TRUTH} is {text[:20]!r}, not a class id 1-{max(wnids)}; extract {DEVKIT_ARCHIVE} again"
            )
        labels[VAL_STEM.format(number)] = wnids[int(text)]
    if not labels:
        raise SecvitError(f"{devkit}: {GROUND_TRUTH} is empty; extract {DEVKIT_ARCHIVE} again")
    return labels


def read_kaggle(path: Path) -> dict[str, str]:
    """``{ImageId: wnid}`` of Kaggle's ``LOC_val_solution.csv`` (the class is the first box's wnid)."""
    hint = "download it again from the Kaggle competition's data page"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise SecvitError(f"{path} cannot be read ({type(e).__name__}); {hint}") from None
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
        raise SecvitError(f"{path} does not start with the header ImageId,PredictionString; {hint}")
    labels = {}
    for number, row in enumerate(rows, 2):
        if not row:
            continue
        wnid = row[1].split()[0] if len(row) > 1 and row[1].split() else ""
        if not WNID.fullmatch(wnid):
            raise SecvitError(f"{path}: line {number} has no WordNet id (n########) as its first label; {hint}")
        labels[row[0].strip()] = wnid
    if not labels:
        raise SecvitError(f"{path} lists no images; {hint}")
    return labels

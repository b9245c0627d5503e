"""fashion_cnn: Fashion-MNIST (28x28 grayscale clothing, 10 classes) from its original gzipped IDX
files, and a ~225k-parameter CNN trained from scratch.

Splits: the official test file (10,000 images) is the validation set, so accuracy compares with
published figures; the calibration set is held out of the official training file (stratified,
seeded); the rest of that file is the train set.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.data import LABELS, Prepared
from stages.errors import EvidenceError, ParamsError
from stages.models.options import FASHION_DIR
from stages.models.options import FashionParams as Params
from stages.models.vision import INPUT, ImagePreset, class_slices, low_light

if TYPE_CHECKING:
    import torch

STUDENT = {"channels": [16, 32], "hidden": 64}  # distill's default student
SIDE = 28  # pixels per side
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ALL_FILES = [name for pair in FILES.values() for name in pair]
CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# Slice names go into file names and CSV cells: no "/" or spaces.
CLASS_SLUGS = [
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
]
HOW_TO_GET = (
    "install the files with `apt-get install dataset-fashion-mnist` (they go to "
    f"{FASHION_DIR}), or set model.data_dir to a folder holding {', '.join(ALL_FILES)}"
)
# IDX element types (the third magic byte), all big-endian
_IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """One gzipped IDX file (magic 0 0 type ndim, big-endian uint32 dims, then the data)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise EvidenceError(f"{path} is missing: {HOW_TO_GET}") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise EvidenceError(f"{path} is not a readable .gz file ({e}): {HOW_TO_GET}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES:
        raise EvidenceError(f"{path} is not an IDX file (bad magic {raw[:4]!r}): {HOW_TO_GET}")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise EvidenceError(f"{path} is truncated in its header: {HOW_TO_GET}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise EvidenceError(
            f"{path} holds {len(raw) - header} data bytes but its header {list(dims)} says "
            f"{expected}: the file is truncated or corrupt; {HOW_TO_GET}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 N x 1 x 28 x 28 in [0, 1] and int64 labels of one official split."""
    image_file, label_file = (folder / name for name in FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE) or images.dtype != np.uint8:
        raise EvidenceError(
            f"{image_file} holds {images.dtype} images of shape {list(images.shape)}, not "
            f"uint8 N x {SIDE} x {SIDE}: it is not a Fashion-MNIST image file; {HOW_TO_GET}"
        )
    if labels.shape != (len(images),):
        raise EvidenceError(
            f"{label_file} holds labels of shape {list(labels.shape)} for {len(images)} images "
            f"in {image_file.name}: the files do not belong together; {HOW_TO_GET}"
        )
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise EvidenceError(
            f"{label_file} has label {int(labels.max())}; Fashion-MNIST labels are 0..9"
        )
    x = (images.astype(np.float32) / 255.0)[:, None, :, :]
    return x, labels.astype(np.int64)


def check_files(data_dir: str) -> Path:
    """The data folder, or an error naming what is missing and how to get it."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise EvidenceError(
            f"model.data_dir = {data_dir!r}: no such folder, so there is no Fashion-MNIST to "
            f"read; {HOW_TO_GET}"
        )
    missing = [name for name in ALL_FILES if not (folder / name).is_file()]
    if missing:
        raise EvidenceError(
            f"model.data_dir = {data_dir!r} lacks {', '.join(missing)}; {HOW_TO_GET}"
        )
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stratified_pick(y: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of row indices into (picked `size`, rest), each in file order."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    picked, rest = train_test_split(rows, train_size=size, random_state=seed, stratify=y)
    return np.sort(picked), np.sort(rest)


def prepare(p: Params, seed: int) -> Prepared:
    """Read the IDX files; train / calibration from the training file, validation from the test
    file; per-class slices and the low_light set."""
    folder = check_files(p.data_dir)
    x_pool, y_pool = load_split(folder, "train")
    x_val, y_val = load_split(folder, "test")
    if p.max_train_rows and p.max_train_rows < len(y_pool):
        keep, _ = _stratified_pick(y_pool, p.max_train_rows, seed)
        x_pool, y_pool = x_pool[keep], y_pool[keep]
    if p.calibration_size + 10 > len(y_pool):
        raise ParamsError(
            f"model.calibration_size = {p.calibration_size} leaves fewer than 10 training rows "
            f"of the {len(y_pool)} in {folder / FILES['train'][0]}: lower it"
        )
    if p.max_validation_rows and p.max_validation_rows < len(y_val):
        keep, _ = _stratified_pick(y_val, p.max_validation_rows, seed)
        x_val, y_val = x_val[keep], y_val[keep]
    cal, train = _stratified_pick(y_pool, p.calibration_size, seed)

    validation: dict[str, np.ndarray] = {INPUT: x_val, LABELS: y_val}
    slices = class_slices(validation, CLASS_SLUGS, CLASS_NAMES)
    dark_slice, dark_set = low_light(x_val, y_val, p.low_light_scale, p.low_light_gamma)
    slices.append(dark_slice)
    sets = {
        "train": {INPUT: x_pool[train], LABELS: y_pool[train]},
        "calibration": {INPUT: x_pool[cal], LABELS: y_pool[cal]},
        "validation": validation,
        "low_light": dark_set,
    }
    info = {
        "source": f"Fashion-MNIST IDX files in {folder}",
        "validation_source": "the official test file (t10k)",
        "files_sha256": {name: _sha256(folder / name) for name in ALL_FILES},
        "image_shape": [1, SIDE, SIDE],
    }
    return Prepared([INPUT], list(CLASS_NAMES), sets, slices, info)


def build(p: Params, num_classes: int) -> torch.nn.Module:
    """conv 3x3 -> pool -> conv 3x3 -> pool -> fc -> classes (28 -> 26 -> 13 -> 11 -> 5)."""
    import torch
    from torch import nn

    c1, c2 = p.channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 5 * 5, p.hidden),
        nn.ReLU(),
        nn.Linear(p.hidden, num_classes),
    ).to(torch.float32)


class Fashion(ImagePreset):
    Params = Params
    STUDENT = STUDENT
    SIDE = SIDE
    SCALE = 4
    prepare = staticmethod(prepare)
    build = staticmethod(build)


PRESET = Fashion()

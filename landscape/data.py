"""Datasets by name: an embedded default, synthetic sets, and standard files the user already has.

Nothing is ever downloaded. ``load_dataset(name, data_dir=..., train_size=..., seed=...)`` returns
a :class:`Dataset` whose tensors live on the CPU (inputs float32 and normalized; labels int64 for
classification, float32 ``[n, d]`` targets for regression), ready to be moved to a device once.

=================  ===========  ============  =======================================
name               input_shape  task          source
=================  ===========  ============  =======================================
``digits``         (1, 8, 8)    10 classes    scikit-learn ``load_digits`` (embedded)
``mnist``          (1, 28, 28)  10 classes    IDX files in ``data_dir``
``fashion-mnist``  (1, 28, 28)  10 classes    IDX files in ``data_dir``
``cifar10``        (3, 32, 32)  10 classes    python pickle batches in ``data_dir``
``cifar100``       (3, 32, 32)  100 classes   python pickle batches in ``data_dir``
``spirals``        (2,)         2 classes     synthetic, from ``seed``
``teacher``        (10,)        regression    synthetic, from ``seed`` (MSE)
=================  ===========  ============  =======================================

A missing or malformed file raises a one-line :class:`~landscape.errors.LandscapeError` that
names the file and what was expected.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.errors import LandscapeError, check_positive, unknown_name

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "Dataset",
    "DatasetInfo",
    "augment_crop_flip",
    "load_dataset",
    "read_idx",
]


@dataclass
class Dataset:
    """A dataset's train and test splits as CPU tensors, and how to rebuild it.

    ``x_*`` are float32 normalized inputs of shape ``[n, *input_shape]``; ``y_*`` are int64
    class labels ``[n]`` (``task == "classification"``, ``loss == "cross_entropy"``) or float32
    targets ``[n, num_outputs]`` (``task == "regression"``, ``loss == "mse"``).
    ``load_dataset(**spec)`` rebuilds identical tensors.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    task: str
    num_outputs: int
    input_shape: tuple[int, ...]
    spec: dict
    loss: str

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of the ``"train"`` or ``"test"`` split."""
        if name == "train":
            return self.x_train, self.y_train
        if name == "test":
            return self.x_test, self.y_test
        raise unknown_name("split", name, ("train", "test"))

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
                f"input_shape={self.input_shape}, task={self.task!r}, "
                f"num_outputs={self.num_outputs}, spec={self.spec})")


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: a one-line description and whether ``data_dir`` is required."""

    description: str
    needs_data_dir: bool
    loader: Callable[[Path | None, int], tuple[np.ndarray, ...]]


#: Per-channel (mean, std) of the pixel values in [0, 1], used to normalize the file datasets:
#: ``x = (pixel / 255 - mean[c]) / std[c]``. (``digits`` uses its own train-set statistics.)
#: To pad augmented crops with black as torchvision does before normalizing, use
#: ``fill = -mean / std``.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


# --------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_KINDS = {2051: "images", 2049: "labels"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic bytes (whatever its name)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise LandscapeError(f"{path}: file not found") from None
    except OSError as e:
        raise LandscapeError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
            return g.read()
    except EOFError:
        raise LandscapeError(f"{path}: truncated gzip file (ended before the end-of-stream "
                             "marker)") from None
    except (OSError, zlib.error) as e:
        raise LandscapeError(f"{path}: not a valid gzip file ({e})") from None


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a native-endian numpy array.

    The header is 2 zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32; the data follow in C order. ``magic`` (e.g. 2051 for uint8 images of 3 dims, 2049
    for uint8 labels of 1 dim) checks the first 4 bytes. The size must match the dimensions
    exactly; any mismatch raises a one-line LandscapeError naming the file. Cost: one read of
    the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise LandscapeError(f"{path}: truncated: expected an IDX header of at least 4 bytes, "
                             f"found {len(data)}")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        kind = f" ({_IDX_KINDS[magic]})" if magic in _IDX_KINDS else ""
        raise LandscapeError(f"{path}: expected IDX magic number {magic}{kind}, found {found}")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise LandscapeError(f"{path}: expected an IDX file (magic number 0x0000 type ndim, "
                             f"e.g. 2051 for images), found magic number {found}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise LandscapeError(f"{path}: truncated: expected an IDX header of {header} bytes for "
                             f"{ndim} dimensions, found {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    found_size = len(data) - header
    if found_size < expected:
        raise LandscapeError(f"{path}: truncated: expected {expected} bytes of data for shape "
                             f"{shape}, found {found_size}")
    if found_size > expected:
        raise LandscapeError(f"{path}: expected {expected} bytes of data for shape {shape}, "
                             f"found {found_size} ({found_size - expected} trailing bytes)")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find_idx_file(folder: Path, base: str, dataset: str) -> Path:
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    needed = ", ".join(b for pair in _IDX_FILES.values() for b in pair)
    raise LandscapeError(f"{folder / base}[.gz]: file not found; dataset {dataset!r} needs "
                         f"{needed} (gzipped or not) in {folder}")


def _idx_folder(data_dir: Path, subdir: str) -> Path:
    """``data_dir`` itself, or torchvision's ``data_dir/<subdir>/raw`` layout if that has them."""
    tv = data_dir / subdir / "raw"
    has = any((data_dir / f"{_IDX_FILES['train'][0]}{s}").is_file() for s in ("", ".gz"))
    if not has and tv.is_dir():
        return tv
    return data_dir


def _load_idx_pair(folder: Path, split: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    image_file, label_file = (_find_idx_file(folder, b, dataset) for b in _IDX_FILES[split])
    images = read_idx(image_file, magic=2051)
    labels = read_idx(label_file, magic=2049)
    if images.shape[1:] != (28, 28):
        raise LandscapeError(f"{image_file}: expected 28x28 images, found "
                             f"{'x'.join(map(str, images.shape[1:]))}")
    if len(labels) != len(images):
        raise LandscapeError(f"{label_file}: expected {len(images)} labels (one per image in "
                             f"{image_file.name}), found {len(labels)}")
    if len(labels) and labels.max() > 9:
        raise LandscapeError(f"{label_file}: expected labels 0..9, found {int(labels.max())}")
    return images[:, None], labels.astype(np.int64)


def _idx_loader(name: str, subdir: str) -> Callable[[Path | None, int], tuple[np.ndarray, ...]]:
    def load(data_dir: Path | None, seed: int) -> tuple[np.ndarray, ...]:
        folder = _idx_folder(_require_dir(data_dir, name), subdir)
        x_tr, y_tr = _load_idx_pair(folder, "train", name)
        x_te, y_te = _load_idx_pair(folder, "test", name)
        return _normalize_pixels(x_tr, name), y_tr, _normalize_pixels(x_te, name), y_te
    return load


# --------------------------------------------------------------------------------------------
# CIFAR python pickle batches
# --------------------------------------------------------------------------------------------

def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray,
                                           ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    import _codecs
    allowed[("_codecs", "encode")] = _codecs.encode
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file cannot run code."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _read_cifar_batch(path: Path, label_key: str, num_classes: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    what = f"a CIFAR python pickle batch (a dict with 'data' and {label_key!r})"
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise LandscapeError(f"{path}: file not found") from None
    except OSError as e:
        raise LandscapeError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # any unpickling failure is a malformed file, never a traceback
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LandscapeError(f"{path}: expected {what}; cannot unpickle it ({detail})") from None
    if not isinstance(batch, dict):
        raise LandscapeError(f"{path}: expected {what}, found a {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise LandscapeError(f"{path}: expected {what}, found keys {sorted(map(str, batch))}")
    data, labels = batch["data"], batch[label_key]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        found = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise LandscapeError(f"{path}: expected 'data' as a uint8 array of shape [n, 3072], "
                             f"found {found}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError):  # e.g. 2**70: beyond any class index
        raise LandscapeError(f"{path}: expected {label_key!r} as a list of integers in "
                             f"0..{num_classes - 1}") from None
    if len(labels) != len(data):
        raise LandscapeError(f"{path}: expected {len(data)} {label_key!r} (one per image), "
                             f"found {len(labels)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise LandscapeError(f"{path}: expected {label_key!r} in 0..{num_classes - 1}, found "
                             f"{int(labels.min())}..{int(labels.max())}")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_loader(name: str, folder_name: str, train_files: Sequence[str], test_file: str,
                  label_key: str, num_classes: int
                  ) -> Callable[[Path | None, int], tuple[np.ndarray, ...]]:
    def load(data_dir: Path | None, seed: int) -> tuple[np.ndarray, ...]:
        folder = _require_dir(data_dir, name)
        if not (folder / test_file).exists() and (folder / folder_name).is_dir():
            folder = folder / folder_name
        missing = [f for f in (*train_files, test_file) if not (folder / f).is_file()]
        if missing:
            raise LandscapeError(f"{folder / missing[0]}: file not found; dataset {name!r} needs "
                                 f"{', '.join((*train_files, test_file))} in {folder} (or in "
                                 f"{folder_name}/ under it)")
        parts = [_read_cifar_batch(folder / f, label_key, num_classes) for f in train_files]
        x_tr = np.concatenate([p[0] for p in parts])
        y_tr = np.concatenate([p[1] for p in parts])
        x_te, y_te = _read_cifar_batch(folder / test_file, label_key, num_classes)
        return _normalize_pixels(x_tr, name), y_tr, _normalize_pixels(x_te, name), y_te
    return load


# --------------------------------------------------------------------------------------------
# Embedded and synthetic data
# --------------------------------------------------------------------------------------------

#: The fixed ``digits`` split: 20% test, stratified, ``random_state`` 0 (independent of ``seed``).
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_STATE = 0


def _load_digits(data_dir: Path | None, seed: int) -> tuple[np.ndarray, ...]:
    """scikit-learn's 1,797 8x8 digits (pixels 0..16), a fixed stratified 80/20 split
    (1,437 train / 360 test, ``train_test_split(..., stratify=y, random_state=0)``: the same for
    every ``seed``), pixels / 16 standardized by the train split's scalar mean and std."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.reshape(-1, 1, 8, 8) / 16.0
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=DIGITS_TEST_FRACTION, stratify=y,
                                              random_state=DIGITS_SPLIT_STATE)
    mean, std = x_tr.mean(), x_tr.std()
    return (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te


#: Sizes and settings of the synthetic datasets (fixed; the data depend only on ``seed``).
SPIRALS = {"n_train": 1000, "n_test": 500, "turns": 1.5, "noise": 0.05}
TEACHER = {"n_train": 1000, "n_test": 500, "dim": 10, "hidden": 32, "noise": 0.1}


def _spiral_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    per_class = n // 2
    y = np.repeat(np.arange(2), per_class)
    t = rng.uniform(0.0, 1.0, size=len(y))
    radius = 0.1 + 0.9 * t
    angle = 2 * np.pi * SPIRALS["turns"] * t + np.pi * y
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    x = x + SPIRALS["noise"] * rng.standard_normal(x.shape)
    order = rng.permutation(len(y))
    return x[order], y[order]


def _load_spirals(data_dir: Path | None, seed: int) -> tuple[np.ndarray, ...]:
    """Two interleaved spirals in the plane (Lang & Witbrock's benchmark, here 1.5 turns each).

    Class ``k`` at ``t ~ U(0, 1)``: radius ``0.1 + 0.9 t``, angle ``3 pi t + k pi``, plus
    N(0, 0.05^2) noise per coordinate; 1,000 train and 500 test points, classes balanced, all
    drawn from ``numpy.random.default_rng(seed)``; then standardized by the train split's scalar
    mean and std (as ``digits``), which keeps the spirals' shape.
    """
    rng = np.random.default_rng(seed)
    x_tr, y_tr = _spiral_points(rng, SPIRALS["n_train"])
    x_te, y_te = _spiral_points(rng, SPIRALS["n_test"])
    mean, std = x_tr.mean(), x_tr.std()
    return (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te


def _load_teacher(data_dir: Path | None, seed: int) -> tuple[np.ndarray, ...]:
    """Regression on a random teacher: ``x ~ N(0, I_10)``,
    ``y = w2 . tanh(W1 x + b1) + N(0, 0.1^2)`` with a 10-32-1 teacher (``W1 ~ N(0, 4/10)``,
    ``b1 ~ N(0, 0.25)``, ``w2 ~ N(0, 1/32)``); 1,000 train and 500 test samples; the teacher
    and the samples are drawn from ``numpy.random.default_rng(seed)``. y is float32 ``[n, 1]``
    (std ~0.9; a linear fit explains ~88% of its variance, the noise ~1%).
    """
    rng = np.random.default_rng(seed)
    d, h = TEACHER["dim"], TEACHER["hidden"]
    w1 = 2.0 * rng.standard_normal((h, d)) / math.sqrt(d)
    b1 = 0.5 * rng.standard_normal(h)
    w2 = rng.standard_normal((1, h)) / math.sqrt(h)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, d))
        y = np.tanh(x @ w1.T + b1) @ w2.T + TEACHER["noise"] * rng.standard_normal((n, 1))
        return x, y

    x_tr, y_tr = sample(TEACHER["n_train"])
    x_te, y_te = sample(TEACHER["n_test"])
    return x_tr, y_tr, x_te, y_te


# --------------------------------------------------------------------------------------------
# Registry and loading
# --------------------------------------------------------------------------------------------

def _require_dir(data_dir: Path | None, name: str) -> Path:
    if data_dir is None:
        raise LandscapeError(f"dataset {name!r} needs data_dir (a directory holding its files; "
                             "nothing is downloaded)")
    if not data_dir.exists():
        raise LandscapeError(f"{data_dir}: data directory not found (dataset {name!r})")
    if not data_dir.is_dir():
        raise LandscapeError(f"{data_dir}: expected a data directory for dataset {name!r}, "
                             "found a file")
    return data_dir


def _normalize_pixels(x: np.ndarray, name: str) -> np.ndarray:
    mean, std = (np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1)
                 for v in NORMALIZATION[name])
    return (x.astype(np.float32) / np.float32(255.0) - mean) / std


_CLASSIFICATION = {"digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10),
                   "fashion-mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
                   "cifar100": ((3, 32, 32), 100), "spirals": ((2,), 2)}
_REGRESSION = {"teacher": ((TEACHER["dim"],), 1)}

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("scikit-learn 8x8 handwritten digits, 1,797 images (embedded; "
                          "the default)", False, _load_digits),
    "mnist": DatasetInfo("MNIST IDX files (gzipped or not) in data_dir", True,
                         _idx_loader("mnist", "MNIST")),
    "fashion-mnist": DatasetInfo("Fashion-MNIST IDX files (gzipped or not) in data_dir", True,
                                 _idx_loader("fashion-mnist", "FashionMNIST")),
    "cifar10": DatasetInfo("CIFAR-10 python batches (cifar-10-batches-py) in data_dir", True,
                           _cifar_loader("cifar10", "cifar-10-batches-py",
                                         [f"data_batch_{i}" for i in range(1, 6)],
                                         "test_batch", "labels", 10)),
    "cifar100": DatasetInfo("CIFAR-100 python files (cifar-100-python) in data_dir", True,
                            _cifar_loader("cifar100", "cifar-100-python", ["train"], "test",
                                          "fine_labels", 100)),
    "spirals": DatasetInfo("two interleaved 2D spirals, 1,000 train / 500 test (synthetic, "
                           "from seed)", False, _load_spirals),
    "teacher": DatasetInfo("regression on a random 10-32-1 tanh teacher + noise, 1,000 train / "
                           "500 test (synthetic, from seed; MSE)", False, _load_teacher),
}


def _subset_indices(y: np.ndarray, n: int, seed: int, stratify: bool) -> np.ndarray:
    """``n`` sorted indices into ``y``; class proportions kept (largest remainders) if stratify."""
    rng = np.random.default_rng(seed)
    if not stratify:
        return np.sort(rng.permutation(len(y))[:n])
    classes, counts = np.unique(y, return_counts=True)
    quota = n * counts / len(y)
    take = np.floor(quota).astype(np.int64)
    remainder_order = np.argsort(-(quota - take), kind="stable")
    take[remainder_order[: n - int(take.sum())]] += 1
    chosen = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def load_dataset(name: str = "digits", *, data_dir: str | Path | None = None,
                 train_size: int | None = None, seed: int = 0) -> Dataset:
    """Load a dataset by name (see :data:`DATASETS`) as normalized CPU tensors.

    ``data_dir`` is where the file datasets live (ignored, and recorded as None, for
    ``digits``, ``spirals`` and ``teacher``); for CIFAR it may be the extracted folder or its
    parent, for MNIST the folder with the IDX files or torchvision's root (``MNIST/raw``).
    ``train_size`` keeps a fixed random subset of the training split, stratified by class for
    classification, drawn from ``seed``; the test split and the normalization statistics are
    never subsampled. ``seed`` also generates the synthetic datasets; the ``digits`` train/test
    split is fixed and does not depend on it. Cost: reading the files once (CIFAR-10: ~180 MB
    uint8 -> 737 MB float32).
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise unknown_name("dataset", str(name), DATASETS)
    info = DATASETS[key]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise LandscapeError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    if train_size is not None:
        if isinstance(train_size, bool) or not isinstance(train_size, (int, np.integer)):
            raise LandscapeError(f"train_size must be a positive integer, got {train_size!r}")
        check_positive("train_size", train_size)
        train_size = int(train_size)
    folder = Path(data_dir).expanduser().resolve() if data_dir is not None else None
    if not info.needs_data_dir:
        folder = None

    x_tr, y_tr, x_te, y_te = info.loader(folder, seed)
    for split, y in (("train", y_tr), ("test", y_te)):
        if len(y) == 0:
            raise LandscapeError(f"dataset {key!r}: the {split} split has no samples"
                                 + (f" (files in {folder})" if folder else ""))
    regression = key in _REGRESSION
    input_shape, num_outputs = (_REGRESSION if regression else _CLASSIFICATION)[key]
    if train_size is not None:
        if train_size > len(y_tr):
            raise LandscapeError(f"train_size {train_size} is larger than the {len(y_tr)} "
                                 f"training samples of dataset {key!r}")
        idx = _subset_indices(y_tr, train_size, seed, stratify=not regression)
        x_tr, y_tr = x_tr[idx], y_tr[idx]

    def y_tensor(y: np.ndarray) -> Tensor:
        if regression:
            return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32).reshape(len(y), -1))
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))

    def x_tensor(x: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    spec = {"name": key, "data_dir": None if folder is None else str(folder),
            "train_size": train_size, "seed": seed}
    return Dataset(name=key, x_train=x_tensor(x_tr), y_train=y_tensor(y_tr),
                   x_test=x_tensor(x_te), y_test=y_tensor(y_te),
                   task="regression" if regression else "classification",
                   num_outputs=num_outputs, input_shape=input_shape, spec=spec,
                   loss="mse" if regression else "cross_entropy")


# --------------------------------------------------------------------------------------------
# Augmentation on the device
# --------------------------------------------------------------------------------------------

def augment_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4, *,
                      flip: bool = True, fill: float | Sequence[float] = 0.0) -> Tensor:
    """CIFAR-style augmentation of a batch ``x[N, C, H, W]`` on its own device, no Python loop.

    Each image is padded by ``padding`` pixels of ``fill`` (a scalar or one value per channel;
    0 pads with the normalized mean, ``-mean / std`` with black as torchvision's
    ``RandomCrop(H, padding)`` does before normalization), cropped back to ``H x W`` at a
    uniformly random offset in ``0..2 * padding`` per axis, and, if ``flip``, mirrored
    left-right with probability 1/2 (``RandomHorizontalFlip``). Random numbers come from
    ``generator`` (on any device). Cost: one padded copy and one gather, O(N C (H+2p)(W+2p)).
    """
    if x.ndim != 4:
        raise LandscapeError(f"augment_crop_flip expects images [N, C, H, W], got shape "
                             f"{tuple(x.shape)}")
    if padding < 0:
        raise LandscapeError(f"padding must be >= 0, got {padding}")
    n, c, h, w = x.shape
    gen_device = generator.device
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=gen_device)
    flips = torch.rand(n, generator=generator, device=gen_device) < 0.5
    offsets, flips = offsets.to(x.device), flips.to(x.device)
    if not flip:
        flips = torch.zeros_like(flips)

    padded = x.new_empty((n, c, h + 2 * padding, w + 2 * padding))
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1)
    if fill_t.numel() not in (1, c):
        raise LandscapeError(f"fill needs 1 or {c} values, got {fill_t.numel()}")
    padded.copy_(fill_t.view(1, -1, 1, 1).expand_as(padded))
    padded[:, :, padding:padding + h, padding:padding + w] = x

    rows = offsets[0, :, None] + torch.arange(h, device=x.device)            # [N, H]
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flips[:, None], cols.flip(0), cols) + offsets[1, :, None]  # [N, W]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]

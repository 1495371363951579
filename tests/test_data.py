"""Tests for landscape.data: loaders checked against the raw files and independent references."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

from landscape.data import (
    DATASETS,
    NORMALIZATION,
    augment_crop_flip,
    load_dataset,
    read_idx,
)
from landscape.errors import LandscapeError

SHARED_DATA = Path(os.environ.get("LANDSCAPE_TEST_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
MNIST_DIR = SHARED_DATA / "mnist"
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
needs_mnist = pytest.mark.skipif(
    not all((MNIST_DIR / f).is_file() for f in MNIST_TEST_FILES),
    reason=f"real MNIST test files not found in {MNIST_DIR} (set LANDSCAPE_TEST_DATA)")


# ---------------------------------------------------------------------------- helpers

def idx_bytes(array: np.ndarray, type_code: int = 0x08, magic: int | None = None) -> bytes:
    """An IDX file written by hand with struct (big-endian header and data)."""
    fmt = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    head = struct.pack(">I", magic) if magic is not None else struct.pack(
        ">HBB", 0, type_code, array.ndim)
    dims = b"".join(struct.pack(">I", d) for d in array.shape)
    return head + dims + array.astype(fmt).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = False,
                seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_y": rng.integers(0, 10, n_train).astype(np.uint8),
              "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_y": rng.integers(0, 10, n_test).astype(np.uint8)}
    arrays["train_y"][:10] = np.arange(10)  # every class present
    for prefix, split in (("train", "train"), ("t10k", "test")):
        write(folder / f"{prefix}-images-idx3-ubyte", idx_bytes(arrays[f"{split}_x"]), gz)
        write(folder / f"{prefix}-labels-idx1-ubyte", idx_bytes(arrays[f"{split}_y"]), gz)
    return arrays


def write_cifar(folder: Path, files: list[str], label_key: str, num_classes: int, n: int = 4,
                seed: int = 0) -> dict[str, dict]:
    """Tiny CIFAR-style pickles with bytes keys, as the original python-2 pickles have."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in files:
        batch = {b"batch_label": b"tiny", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key.encode(): rng.integers(0, num_classes, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    return batches


CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ---------------------------------------------------------------------------- real MNIST

@needs_mnist
def test_read_idx_on_real_mnist_test_files_gives_10000_images_and_known_label_counts():
    images = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", magic=2051)
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", magic=2049)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                            1009]
    assert images.max() == 255 and images.min() == 0


@needs_mnist
def test_mnist_with_only_test_files_names_the_missing_train_file():
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("mnist", data_dir=MNIST_DIR)
    one_line_error(excinfo, str(MNIST_DIR / "train-images-idx3-ubyte"))


@needs_mnist
def test_mnist_standard_normalization_gives_real_images_zero_mean_unit_std(tmp_path):
    for prefix in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (tmp_path / f"{prefix}-{kind}-ubyte.gz").symlink_to(
                MNIST_DIR / f"t10k-{kind}-ubyte.gz")
    ds = load_dataset("mnist", data_dir=tmp_path)
    raw = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz").astype(np.float64) / 255
    expected = (raw - 0.1307) / 0.3081
    assert ds.x_test.shape == (10000, 1, 28, 28) and ds.x_test.dtype == torch.float32
    np.testing.assert_allclose(ds.x_test[:, 0].numpy(), expected, atol=1e-6)
    # The published constants are those of the 60k training images; the 10k test images
    # are close to them: normalized mean ~0.006, std ~1.008.
    assert abs(ds.x_test.double().mean().item()) < 0.02
    assert abs(ds.x_test.double().std().item() - 1) < 0.02
    assert torch.bincount(ds.y_test).tolist()[1] == 1135 and ds.y_test.dtype == torch.int64


# ---------------------------------------------------------------------------- IDX format

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("type_code, dtype", [(0x08, np.uint8), (0x0B, np.int16),
                                              (0x0D, np.float32)])
def test_read_idx_recovers_arrays_written_big_endian(tmp_path, gz, type_code, dtype):
    rng = np.random.default_rng(1)
    array = (rng.integers(0, 250, (3, 4, 5)) - (0 if dtype == np.uint8 else 120)).astype(dtype)
    path = write(tmp_path / "a-idx3", idx_bytes(array, type_code), gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_and_fashion_mnist_from_idx_files_match_pixels_and_standard_constants(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    for name, (mean, std) in (("mnist", (0.1307, 0.3081)), ("fashion-mnist", (0.2860, 0.3530))):
        ds = load_dataset(name, data_dir=tmp_path)
        assert ds.input_shape == (1, 28, 28) and ds.num_outputs == 10
        assert ds.task == "classification" and ds.loss == "cross_entropy"
        for split in ("train", "test"):
            x, y = ds.split(split)
            assert x.dtype == torch.float32 and y.dtype == torch.int64
            assert x.shape == (len(arrays[f"{split}_x"]), 1, 28, 28)
            np.testing.assert_allclose(x[:, 0].numpy(),
                                       (arrays[f"{split}_x"] / 255 - mean) / std, atol=1e-6)
            np.testing.assert_array_equal(y.numpy(), arrays[f"{split}_y"])


def test_mnist_is_found_in_torchvision_layout(tmp_path):
    arrays = write_mnist(tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train_y"])


def _malformed_cases() -> dict[str, tuple[bytes, str]]:
    good = idx_bytes(np.zeros((10, 28, 28), np.uint8))
    labels = idx_bytes(np.zeros(10, np.uint8))
    return {
        "wrong magic": (idx_bytes(np.zeros((10, 28, 28), np.uint8), magic=2049),
                        "expected IDX magic number 2051 (images), found 2049"),
        "truncated data": (good[:-5], "truncated: expected 7840 bytes of data"),
        "truncated header": (good[:10], "truncated: expected an IDX header of 16 bytes"),
        "empty": (b"", "truncated: expected an IDX header of at least 4 bytes, found 0"),
        "trailing bytes": (good + b"xyz", "3 trailing bytes"),
        "truncated gzip": (gzip.compress(good)[:-20], "truncated gzip file"),
        "bad gzip": (b"\x1f\x8b" + b"not gzip at all", "not a valid gzip file"),
        "wrong image size": (idx_bytes(np.zeros((10, 32, 32), np.uint8)),
                             "expected 28x28 images, found 32x32"),
        "labels for images": (labels, "expected IDX magic number 2051 (images), found 2049"),
    }


@pytest.mark.parametrize("case", ["wrong magic", "truncated data", "truncated header", "empty",
                                  "trailing bytes", "truncated gzip", "bad gzip",
                                  "wrong image size", "labels for images"])
def test_malformed_idx_file_is_a_one_line_error_naming_the_file(tmp_path, case):
    write_mnist(tmp_path)
    data, expected = _malformed_cases()[case]
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(data)
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("mnist", data_dir=tmp_path)
    one_line_error(excinfo, str(bad), expected)


def test_label_count_mismatch_names_the_labels_file(tmp_path):
    write_mnist(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("mnist", data_dir=tmp_path)
    one_line_error(excinfo, "train-labels-idx1-ubyte", "expected 20 labels", "found 19")


def test_missing_or_absent_data_dir_is_a_one_line_error(tmp_path):
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("mnist")
    one_line_error(excinfo, "needs data_dir")
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path / "nowhere")
    one_line_error(excinfo, str(tmp_path / "nowhere"), "not found")
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    one_line_error(excinfo, str(tmp_path / "train-images-idx3-ubyte"), "file not found")


# ---------------------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_cifar10_pickles_are_reshaped_channel_first_and_normalized_per_channel(tmp_path,
                                                                                point_at):
    folder = tmp_path / "cifar-10-batches-py"
    batches = write_cifar(folder, CIFAR10_FILES, "labels", 10)
    ds = load_dataset("cifar10", data_dir=folder if point_at == "folder" else tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.num_outputs == 10
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    # The row layout is 1024 red, then 1024 green, then 1024 blue values, each row-major.
    data = batches["data_batch_2"][b"data"]
    for n, c, h, w in [(0, 0, 0, 0), (1, 1, 5, 7), (3, 2, 31, 30), (2, 0, 17, 2)]:
        expected = (data[n, c * 1024 + h * 32 + w] / 255 - mean[c]) / std[c]
        assert ds.x_train[4 + n, c, h, w].item() == pytest.approx(expected, abs=1e-6)
    labels = sum((batches[f][b"labels"] for f in CIFAR10_FILES[:5]), [])
    assert ds.y_train.tolist() == labels and ds.y_test.tolist() == batches["test_batch"][b"labels"]


def test_cifar100_uses_fine_labels_and_its_own_constants(tmp_path):
    folder = tmp_path / "cifar-100-python"
    batches = write_cifar(folder, ["train", "test"], "fine_labels", 100, n=6)
    ds = load_dataset("cifar100", data_dir=tmp_path)
    assert ds.num_outputs == 100 and ds.y_train.tolist() == batches["train"][b"fine_labels"]
    raw = batches["test"][b"data"].reshape(6, 3, 32, 32) / 255
    expected = (raw - np.array([0.5071, 0.4865, 0.4409])[:, None, None]) / np.array(
        [0.2673, 0.2564, 0.2762])[:, None, None]
    np.testing.assert_allclose(ds.x_test.numpy(), expected, atol=1e-6)


def test_cifar_missing_batch_or_bad_pickle_is_a_one_line_error_naming_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, CIFAR10_FILES, "labels", 10)
    (folder / "data_batch_3").unlink()
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    one_line_error(excinfo, str(folder / "data_batch_3"), "file not found")

    (folder / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    one_line_error(excinfo, str(folder / "data_batch_3"), "CIFAR python pickle batch")

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8),
                                                        b"labels": [0, 1]}))
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    one_line_error(excinfo, str(folder / "data_batch_3"), "shape [n, 3072]", "(2, 100)")

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    one_line_error(excinfo, str(folder / "data_batch_3"), "'labels'")


def py2_pickle(data: np.ndarray, label_key: bytes, labels: list[int]) -> bytes:
    """A protocol-2 pickle as python 2's cPickle wrote the CIFAR files (numpy.core names, str)."""
    n = len(data)
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R("
             b"K\x01J" + struct.pack("<i", n) + b"M\x00\x0c\x86cnumpy\ndtype\nU\x02u1K\x00K\x01"
             b"\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T"
             + struct.pack("<I", data.size) + data.tobytes() + b"tb")
    label_list = b"](" + b"".join(b"K" + bytes([k]) for k in labels) + b"e"
    return (b"\x80\x02}(U\x04data" + array + b"U" + bytes([len(label_key)]) + label_key
            + label_list + b"U\x0bbatch_labelU\x04tinyu.")


def test_cifar_reads_python2_pickles_as_distributed(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_cifar(folder, ["train"], "fine_labels", 100)
    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    (folder / "test").write_bytes(py2_pickle(data, b"fine_labels", [7, 99, 0]))
    ds = load_dataset("cifar100", data_dir=folder)
    assert ds.y_test.tolist() == [7, 99, 0]
    expected = (data.reshape(3, 3, 32, 32)[:, 1] / 255 - 0.4865) / 0.2564
    np.testing.assert_allclose(ds.x_test[:, 1].numpy(), expected, atol=1e-6)


class _RunsCode:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_cifar(folder, ["train", "test"], "fine_labels", 100)
    evil = _RunsCode()
    evil.target = str(tmp_path / "pwned")
    (folder / "test").write_bytes(pickle.dumps({b"data": evil}))
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("cifar100", data_dir=folder)
    one_line_error(excinfo, str(folder / "test"), "refusing to load global")
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------- digits

def _undo_affine(x: np.ndarray, lo: float, step: float) -> np.ndarray:
    levels = (x - lo) / step
    assert np.abs(levels - np.round(levels)).max() < 1e-3  # an affine image of integers 0..16
    return np.round(levels).astype(np.int64)


def test_digits_split_partitions_the_1797_images_stratified_and_standardized():
    ds = load_dataset()
    assert ds.name == "digits" and ds.input_shape == (1, 8, 8) and ds.num_outputs == 10
    assert len(ds.x_train) + len(ds.x_test) == 1797 and len(ds.x_test) == 360
    x_tr, x_te = ds.x_train.double().numpy(), ds.x_test.double().numpy()
    assert abs(x_tr.mean()) < 1e-6 and abs(x_tr.std() - 1) < 1e-5
    # Pixels are integers 0..16 and both 0 and 16 occur, so min and max recover the affine map.
    lo, step = x_tr.min(), (x_tr.max() - x_tr.min()) / 16
    raw = np.concatenate([_undo_affine(x_tr, lo, step), _undo_affine(x_te, lo, step)])
    labels = torch.cat([ds.y_train, ds.y_test]).numpy()
    ref = load_digits()
    got = sorted(zip(map(tuple, raw.reshape(1797, 64)), labels.tolist()))
    want = sorted(zip(map(tuple, ref.data.astype(np.int64)), ref.target.tolist()))
    assert got == want  # train + test is exactly the dataset, each image with its label
    counts, test_counts = np.bincount(ref.target), np.bincount(ds.y_test.numpy())
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1)  # stratified


def test_digits_split_is_fixed_and_independent_of_seed():
    a, b, c = load_dataset("digits"), load_dataset("digits"), load_dataset("digits", seed=7)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert torch.equal(getattr(a, name), getattr(c, name))


# ---------------------------------------------------------------------------- train_size, spec

def _row_index(full: torch.Tensor, rows: torch.Tensor) -> list[int]:
    lookup = {tuple(r): i for i, r in enumerate(full.reshape(len(full), -1).tolist())}
    return [lookup[tuple(r)] for r in rows.reshape(len(rows), -1).tolist()]


def test_train_size_is_a_seeded_stratified_subset_of_the_training_split():
    full = load_dataset("digits")
    sub = load_dataset("digits", train_size=100, seed=3)
    assert len(sub.x_train) == 100 and torch.equal(sub.x_test, full.x_test)
    idx = _row_index(full.x_train, sub.x_train)
    assert len(set(idx)) == 100 and torch.equal(full.y_train[idx], sub.y_train)
    share = np.bincount(full.y_train.numpy(), minlength=10) * 100 / len(full.y_train)
    assert np.all(np.abs(np.bincount(sub.y_train.numpy(), minlength=10) - share) < 1)
    again, other = load_dataset("digits", train_size=100, seed=3), load_dataset(
        "digits", train_size=100, seed=4)
    assert torch.equal(again.x_train, sub.x_train) and not torch.equal(other.x_train, sub.x_train)
    tiny = load_dataset("digits", train_size=3)  # fewer samples than classes still works
    assert len(set(tiny.y_train.tolist())) == 3


def test_train_size_larger_than_the_split_or_not_positive_is_an_error():
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("digits", train_size=1438)
    one_line_error(excinfo, "1438", "1437")
    with pytest.raises(LandscapeError):
        load_dataset("spirals", train_size=0)
    with pytest.raises(LandscapeError):
        load_dataset("spirals", train_size=2.5)
    assert len(load_dataset("teacher", train_size=1000).x_train) == 1000


@pytest.mark.parametrize("kwargs", [{"name": "digits", "train_size": 50, "seed": 2},
                                    {"name": "spirals", "seed": 5},
                                    {"name": "teacher", "train_size": 64, "seed": 1},
                                    {"name": "mnist", "train_size": 12, "seed": 1},
                                    {"name": "cifar10"}])
def test_spec_is_json_and_rebuilds_identical_tensors(tmp_path, kwargs):
    if kwargs["name"] == "mnist":
        write_mnist(tmp_path, gz=True)
        kwargs = {**kwargs, "data_dir": str(tmp_path)}
    if kwargs["name"] == "cifar10":
        write_cifar(tmp_path / "cifar-10-batches-py", CIFAR10_FILES, "labels", 10)
        kwargs = {**kwargs, "data_dir": tmp_path}
    ds = load_dataset(**kwargs)
    spec = json.loads(json.dumps(ds.spec))
    again = load_dataset(**spec)
    assert again.spec == ds.spec and again.name == ds.name
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(again, name), getattr(ds, name))


# ---------------------------------------------------------------------------- synthetic

def test_spirals_are_balanced_seeded_and_separable_by_nearest_neighbours():
    ds = load_dataset("spirals", seed=0)
    assert ds.input_shape == (2,) and ds.x_train.shape == (1000, 2) and ds.x_test.shape == (500, 2)
    assert torch.bincount(ds.y_train).tolist() == [500, 500]
    assert torch.bincount(ds.y_test).tolist() == [250, 250]
    knn = KNeighborsClassifier(5).fit(ds.x_train.numpy(), ds.y_train.numpy())
    assert knn.score(ds.x_test.numpy(), ds.y_test.numpy()) > 0.95
    # A linear classifier cannot separate interleaved spirals.
    w = torch.linalg.lstsq(torch.cat([ds.x_train, torch.ones(1000, 1)], 1),
                           ds.y_train.float()[:, None] * 2 - 1).solution
    linear = ((torch.cat([ds.x_test, torch.ones(500, 1)], 1) @ w)[:, 0] > 0).long()
    assert (linear == ds.y_test).float().mean() < 0.75
    assert not torch.equal(load_dataset("spirals", seed=1).x_train, ds.x_train)


def test_teacher_is_a_seeded_mse_regression_with_gaussian_inputs():
    ds = load_dataset("teacher", seed=0)
    assert ds.task == "regression" and ds.loss == "mse" and ds.num_outputs == 1
    assert ds.input_shape == (10,) and ds.x_train.shape == (1000, 10)
    assert ds.y_train.shape == (1000, 1) and ds.y_train.dtype == torch.float32
    x = ds.x_train.double()
    assert x.mean(0).abs().max() < 0.15  # N(0, 1): standard error of a mean is 0.03
    assert (torch.cov(x.T) - torch.eye(10)).abs().max() < 0.2
    # y is a smooth function of x: 5-nearest-neighbour regression explains most of its variance.
    from sklearn.neighbors import KNeighborsRegressor
    knn = KNeighborsRegressor(5).fit(ds.x_train.numpy(), ds.y_train.numpy())
    assert knn.score(ds.x_test.numpy(), ds.y_test.numpy()) > 0.5
    other = load_dataset("teacher", seed=1)
    assert not torch.equal(other.y_train, ds.y_train)


def test_unknown_dataset_or_split_suggests_close_names():
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("fashion_mnst")
    one_line_error(excinfo, "unknown dataset", "'fashion-mnist'")
    with pytest.raises(LandscapeError) as excinfo:
        load_dataset("spirals").split("tset")
    one_line_error(excinfo, "'test'")
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100",
                             "spirals", "teacher", "modadd"}
    assert set(NORMALIZATION) <= set(DATASETS)


# ---------------------------------------------------------------------------- augmentation

def test_augment_without_padding_or_flip_is_the_identity():
    x = torch.randn(6, 3, 5, 7)
    assert torch.equal(augment_crop_flip(x, torch.Generator().manual_seed(0), padding=0,
                                         flip=False), x)


def test_augment_without_padding_flips_about_half_the_images():
    x = torch.randn(400, 2, 4, 4)
    out = augment_crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ mirrored)
    assert 150 < int(mirrored.sum()) < 250


def test_augment_outputs_are_windows_of_the_zero_padded_input_at_all_offsets():
    p, x = 2, torch.randn(300, 3, 6, 5)
    out = augment_crop_flip(x, torch.Generator().manual_seed(1), padding=p)
    padded = F.pad(x, (p, p, p, p))  # zeros, as torchvision RandomCrop(padding=p)
    found = set()
    for n in range(len(x)):
        matches = [(i, j, f) for i in range(2 * p + 1) for j in range(2 * p + 1) for f in (0, 1)
                   if torch.equal(out[n], (lambda win: win.flip(-1) if f else win)(
                       padded[n, :, i:i + 6, j:j + 5]))]
        assert len(matches) >= 1, n
        found.update(matches)
    assert {(i, j) for i, j, _ in found} == {(i, j) for i in range(5) for j in range(5)}
    assert {f for *_, f in found} == {0, 1}


def test_augment_is_reproducible_from_the_generator_and_pads_with_fill():
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    a = augment_crop_flip(x, torch.Generator().manual_seed(5), padding=4)
    b = augment_crop_flip(x, torch.Generator().manual_seed(5), padding=4)
    assert torch.equal(a, b) and a.dtype == torch.float64 and a.shape == x.shape
    fill = (-1.0, 2.0, 3.5)
    out = augment_crop_flip(torch.zeros(64, 3, 2, 2), torch.Generator().manual_seed(0),
                            padding=4, fill=fill)
    # A 2x2 image padded by 4: most crops hold padding only, equal to the channel's fill.
    for c, value in enumerate(fill):
        assert set(out[:, c].unique().tolist()) <= {0.0, value}
        assert (out[:, c] == value).any()


def test_train_help_names_every_built_in_dataset() -> None:
    from _helpers import invoke

    result = invoke("train", "-h")
    assert result.exit_code == 0
    listed = " ".join(result.output.split())   # click wraps the help text
    for name in DATASETS:
        assert f" {name}," in listed or f" {name}." in listed, name

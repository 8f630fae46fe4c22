"""Original-format readers: each decodes exactly what a tiny archive in that format holds, and bad
files fail with one DataError naming the problem."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from anytime.data import DataError, read_dataset
from anytime.data.archives import extract
from anytime.data.digits import materialise_digits
from anytime.data.formats.cifar import ArrayUnpickler
from tests.fixtures.datasets import make_tar, write_cifar, write_imagefolder, write_mnist, write_svhn


def assert_split(raw, split: str, x: np.ndarray, y: np.ndarray) -> None:
    np.testing.assert_array_equal(raw.splits[split].images, x)
    np.testing.assert_array_equal(raw.splits[split].labels, y)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_datasets_decode_exactly(tmp_path: Path, name: str, gz: bool) -> None:
    truth = write_mnist(tmp_path, gz=gz)
    raw = read_dataset(name, tmp_path)
    assert raw.image_shape == (28, 28, 1) and raw.encoding == "raw" and len(raw.class_names) == 10
    for split, (x, y) in truth.items():
        assert_split(raw, split, x, y)


def test_digits_materialised_as_idx_with_fixed_split(tmp_path: Path) -> None:
    materialise_digits(tmp_path / "a")
    materialise_digits(tmp_path / "b")
    raw = read_dataset("digits", tmp_path / "a")
    assert raw.image_shape == (8, 8, 1)
    assert len(raw.splits["train"]) + len(raw.splits["test"]) == 1797
    assert raw.splits["train"].images.max() == 255
    again = read_dataset("digits", tmp_path / "b")
    np.testing.assert_array_equal(raw.splits["test"].labels, again.splits["test"].labels)


@pytest.mark.parametrize("kind", ["binary", "python"])
@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_both_distributions_decode_exactly(tmp_path: Path, kind: str, classes: int) -> None:
    src = tmp_path / f"cifar-{classes}-batches"
    truth = write_cifar(src, classes=classes, kind=kind)
    extract(make_tar(src, tmp_path / "cifar.tar.gz"), tmp_path / "raw")
    raw = read_dataset(f"cifar{classes}", tmp_path / "raw")
    assert raw.image_shape == (32, 32, 3)
    assert raw.class_names == truth["class_names"]
    for split in ("train", "test"):
        assert_split(raw, split, *truth[split])


def test_svhn_mat_decodes_and_maps_label_10_to_0(tmp_path: Path) -> None:
    truth = write_svhn(tmp_path)
    raw = read_dataset("svhn", tmp_path)
    for split in ("train", "test"):
        assert_split(raw, split, *truth[split])
    assert 10 not in raw.splits["train"].labels


def test_imagefolder_keeps_encoded_files_and_sorted_classes(tmp_path: Path) -> None:
    truth = write_imagefolder(tmp_path / "imgs", classes=("zebra", "ant"))
    raw = read_dataset("imagefolder", tmp_path, image_size=16)
    assert raw.class_names == ["ant", "zebra"] and raw.encoding == "encoded"
    assert raw.image_shape == (16, 16, 3)
    for split in ("train", "test"):
        stored = raw.splits[split].image_bytes(np.arange(len(raw.splits[split])))
        pairs = sorted(zip(stored, raw.splits[split].labels.tolist(), strict=True))
        expected = sorted((data, 1 - label) for data, label in truth[split])  # zebra/ant re-sorted
        assert pairs == expected


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    src = tmp_path / "batches"
    write_cifar(src, classes=10, kind="python")
    (src / "data_batch_2").write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2: refusing to unpickle (__builtin__|builtins)\.print"):
        read_dataset("cifar10", src)


def test_restricted_unpickler_reads_numpy_arrays_any_protocol() -> None:
    import io

    obj = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "names": [b"a", "b"], "t": (1, 2.0)}
    for protocol in (2, 4, 5):
        loaded = ArrayUnpickler(io.BytesIO(pickle.dumps(obj, protocol=protocol)), encoding="bytes").load()
        np.testing.assert_array_equal(loaded[b"data"], obj[b"data"])
        assert loaded["names"] == obj["names"]


def test_idx_truncated_file_is_reported(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: truncated or corrupt"):
        read_dataset("mnist", tmp_path)


def test_idx_truncated_gzip_is_reported(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: corrupt or truncated"):
        read_dataset("mnist", tmp_path)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    from anytime.data.formats.idx import write_idx

    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29, dtype=np.uint8))
    with pytest.raises(DataError, match="has 30 images but train-labels-idx1-ubyte has 29 labels"):
        read_dataset("mnist", tmp_path)


def test_idx_bad_magic(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(gzip.compress(b"not idx"))
    with pytest.raises(DataError, match="bad magic"):
        read_dataset("mnist", tmp_path)


def test_cifar_binary_truncated(tmp_path: Path) -> None:
    write_cifar(tmp_path, classes=10, kind="binary")
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"data_batch_1\.bin: truncated or corrupt"):
        read_dataset("cifar10", tmp_path)


def test_cifar_python_truncated_pickle(tmp_path: Path) -> None:
    write_cifar(tmp_path, classes=100, kind="python")
    path = tmp_path / "train"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="train: corrupt or truncated pickle"):
        read_dataset("cifar100", tmp_path)


def test_cifar_python_label_count_mismatch(tmp_path: Path) -> None:
    write_cifar(tmp_path, classes=10, kind="python")
    batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [1, 2, 3]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="test_batch: 4 images but 3 labels"):
        read_dataset("cifar10", tmp_path)


def test_svhn_corrupt_mat_and_count_mismatch(tmp_path: Path) -> None:
    import scipy.io

    write_svhn(tmp_path)
    scipy.io.savemat(
        tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 5), np.uint8), "y": np.ones((4, 1))}
    )
    with pytest.raises(DataError, match=r"test_32x32\.mat: 5 images but 4 labels"):
        read_dataset("svhn", tmp_path)
    (tmp_path / "train_32x32.mat").write_bytes(b"MATLAB garbage" * 10)
    with pytest.raises(DataError, match=r"train_32x32\.mat: corrupt or truncated"):
        read_dataset("svhn", tmp_path)


def test_missing_files_and_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no train images file"):
        read_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'imagenet21k'"):
        read_dataset("imagenet21k", tmp_path)

"""Tests for experiments/in_memory.py (the in-memory data sets and their loaders)."""

import os
import pathlib

import numpy as np
import pytest

from experiments.data import in_memory as ip


def _indexed_dataset(labels, num_classes):
    """Image i holds the value i, so a row can be traced back to its source index."""
    n = len(labels)
    images = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    return ip.Dataset(images, np.asarray(labels, np.int32), num_classes, [0.0], [1.0], "idx")


# ----------------------------------------------------------------------------- profiles


@pytest.mark.parametrize(
    "n_max, num_classes, ratio, total",
    [
        (5000, 10, 100, 12_406),  # CIFAR-10-LT r=100
        (5000, 10, 10, 20_431),  # CIFAR-10-LT r=10
        (500, 100, 100, 10_847),  # CIFAR-100-LT r=100
        (500, 100, 10, 19_573),  # CIFAR-100-LT r=10
    ],
)
def test_longtail_profile_matches_published_sizes(n_max, num_classes, ratio, total):
    counts = ip.longtail_class_counts(n_max, num_classes, ratio)
    assert counts.dtype == np.int64 and counts.shape == (num_classes,)
    assert counts.sum() == total
    assert counts[0] == n_max and counts[-1] == n_max // ratio
    assert np.all(np.diff(counts) <= 0)


def test_longtail_profile_validates_arguments():
    np.testing.assert_array_equal(ip.longtail_class_counts(7, 3, 1), [7, 7, 7])
    with pytest.raises(ValueError, match="imbalance_ratio"):
        ip.longtail_class_counts(100, 10, 0.5)
    with pytest.raises(ValueError, match="num_classes"):
        ip.longtail_class_counts(100, 1, 10)
    with pytest.raises(ValueError, match="n_max"):
        ip.longtail_class_counts(0, 10, 10)


@pytest.mark.parametrize("per_class, num_classes", [(5000, 10), (500, 100)])
@pytest.mark.parametrize("ratio", [10, 100])
def test_make_longtail_exact_counts(per_class, num_classes, ratio):
    labels = np.tile(np.arange(num_classes), per_class)
    lt = ip.make_longtail(_indexed_dataset(labels, num_classes), ratio, seed=3)
    np.testing.assert_array_equal(
        lt.class_counts, ip.longtail_class_counts(per_class, num_classes, ratio)
    )


def test_make_longtail_seeded_deterministic_and_paired():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 2000)
    ds = _indexed_dataset(labels, 5)
    a = ip.make_longtail(ds, 20, seed=1)
    b = ip.make_longtail(ds, 20, seed=1)
    c = ip.make_longtail(ds, 20, seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    np.testing.assert_array_equal(a.class_counts, c.class_counts)
    src = a.images.reshape(-1).astype(np.int64)
    np.testing.assert_array_equal(a.labels, labels[src])  # images still paired with labels
    assert np.all(np.diff(src) > 0)  # no duplicates, original order kept
    assert ip.make_longtail(ds, 1, seed=0) is ds


# ----------------------------------------------------------------------------- digits


def test_digits_longtail_defaults():
    train, test = ip.load_digits_longtail(seed=0)
    assert train.images.dtype == np.float32 and train.images.shape[1:] == (8, 8, 1)
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    np.testing.assert_array_equal(test.class_counts, np.full(10, ip.DIGITS_DEFAULT_TEST_PER_CLASS))
    counts = train.class_counts
    np.testing.assert_array_equal(counts, [138, 105, 78, 57, 42, 31, 23, 17, 12, 9])
    assert (counts > 100).any() and ((counts >= 20) & (counts <= 100)).any()
    assert (counts < 20).any()
    # No image is in both splits (load_digits has no duplicate images).
    train_rows = {row.tobytes() for row in train.images}
    assert not any(row.tobytes() in train_rows for row in test.images)
    # Normalisation constants come from the training split.
    np.testing.assert_allclose(train.mean, [train.images.mean()], rtol=1e-5)
    np.testing.assert_allclose(train.std, [train.images.std()], rtol=1e-4)
    np.testing.assert_array_equal(test.mean, train.mean)
    # Seeded.
    again, _ = ip.load_digits_longtail(seed=0)
    other, _ = ip.load_digits_longtail(seed=1)
    np.testing.assert_array_equal(again.images, train.images)
    assert not np.array_equal(other.images, train.images)


def test_digits_test_per_class_argument():
    train, test = ip.load_digits_longtail(imbalance_ratio=1, test_per_class=10, seed=0)
    np.testing.assert_array_equal(test.class_counts, np.full(10, 10))
    assert len(train) + len(test) == 1797


# ----------------------------------------------------------------------------- tfds


@pytest.mark.parametrize("name, num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_tfds_loader_under_mock_data(name, num_classes, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=24):
        ds = ip.load_tfds_image_classification(name, split="train", data_dir=str(tmp_path))
        ds_dl = ip.load_tfds_image_classification(name, split="test", download=True)
    assert ds.images.shape == (24, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (24,) and ds.labels.dtype == np.int32
    assert ds.num_classes == num_classes
    assert ds.labels.min() >= 0 and ds.labels.max() < num_classes
    assert ds.mean.shape == ds.std.shape == (3,) and ds.mean.dtype == np.float32
    expected_mean = ip.CIFAR10_MEAN if name == "cifar10" else ip.CIFAR100_MEAN
    np.testing.assert_allclose(ds.mean, expected_mean)
    assert len(ds_dl) == 24


def test_tfds_loader_not_prepared_fails_fast(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ip.DatasetNotPreparedError) as info:
        ip.load_tfds_image_classification("cifar10", split="train", data_dir=str(tmp_path))
    message = str(info.value)
    assert "download_and_prepare()" in message and "--config.data.download=True" in message
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing was downloaded


def test_tfds_loader_rejects_unknown_names():
    with pytest.raises(ValueError, match="unsupported"):
        ip.load_tfds_image_classification("mnist", split="train")


# ----------------------------------------------------------------------------- multi-label


def test_multilabel_digits():
    train, test = ip.load_multilabel_digits(
        num_train=2000, num_test=500, imbalance_ratio=10, seed=0
    )
    assert train.images.shape == (2000, 8, 24, 1) and test.images.shape == (500, 8, 24, 1)
    assert train.images.dtype == np.float32
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    assert train.labels.shape == (2000, 10) and train.num_classes == 10
    for ds in (train, test):
        assert set(np.unique(ds.labels)) <= {0, 1}
        positives = ds.labels.sum(axis=1)
        assert positives.min() == 1 and positives.max() == 3
        # Each positive class is drawn in exactly one non-empty 8x8 slot.
        slots = ds.images[..., 0].reshape(len(ds), 8, 3, 8).transpose(0, 2, 1, 3)
        np.testing.assert_array_equal((slots.max(axis=(2, 3)) > 0).sum(axis=1), positives)
    counts = train.class_counts
    assert counts.argmax() == 0 and counts.argmin() == 9 and counts[0] > 4 * counts[9]
    assert test.class_counts.max() < 1.5 * test.class_counts.min()  # uniform-ish test

    # Disjoint source digits: no 8x8 slot of a test image occurs in a training image.
    def slot_set(ds):
        slots = ds.images[..., 0].reshape(len(ds), 8, 3, 8).transpose(0, 2, 1, 3)
        slots = slots.reshape(-1, 8, 8)
        return {s.tobytes() for s in slots if s.any()}

    assert not slot_set(train) & slot_set(test)
    again, _ = ip.load_multilabel_digits(num_train=2000, num_test=500, imbalance_ratio=10, seed=0)
    np.testing.assert_array_equal(again.images, train.images)
    np.testing.assert_array_equal(again.labels, train.labels)


def test_voc_image_level_multilabel_on_mocked_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10):
        voc = ip.load_tfds_voc(split="trainval", image_size=24)
    assert voc.images.shape == (10, 24, 24, 3) and voc.images.dtype == np.uint8
    assert voc.labels.shape == (10, 20) and set(np.unique(voc.labels)) <= {0, 1}
    assert voc.is_multilabel and voc.num_classes == 20
    np.testing.assert_array_equal(voc.class_counts, voc.labels.sum(0))


# ----------------------------------------------------------------------------- Fashion-MNIST


def _write_idx(path, array, *, gz=True):
    """An unsigned-byte IDX file, written by hand from the format's definition."""
    import gzip

    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        pathlib.Path(path).write_bytes(data)


def _fake_fashion_dir(tmp_path, per_class=30, test_per_class=4, gz=True):
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
    images = rng.integers(0, 256, (labels.size, 28, 28), dtype=np.uint8)
    test_labels = np.repeat(np.arange(10), test_per_class).astype(np.uint8)
    test_images = rng.integers(0, 256, (test_labels.size, 28, 28), dtype=np.uint8)
    for stem, array in (
        ("train-images-idx3-ubyte", images),
        ("train-labels-idx1-ubyte", labels),
        ("t10k-images-idx3-ubyte", test_images),
        ("t10k-labels-idx1-ubyte", test_labels),
    ):
        _write_idx(tmp_path / stem, array, gz=gz)
    return images, labels, test_images, test_labels


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path, gz):
    images, labels, test_images, test_labels = _fake_fashion_dir(tmp_path, gz=gz)
    train = ip.load_fashion_mnist("train", idx_dir=str(tmp_path))
    test = ip.load_fashion_mnist("test", idx_dir=str(tmp_path))
    np.testing.assert_array_equal(train.images[..., 0], images)
    np.testing.assert_array_equal(train.labels, labels)
    np.testing.assert_array_equal(test.images[..., 0], test_images)
    assert train.images.shape == (300, 28, 28, 1) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int32 and train.num_classes == 10
    np.testing.assert_allclose(train.mean, [0.2860]) and np.testing.assert_allclose(
        test.std, [0.3530]
    )


def test_fashion_mnist_rejects_broken_idx(tmp_path):
    _fake_fashion_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        ip.load_fashion_mnist("train", idx_dir=str(tmp_path))
    path.write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)  # float32 type code
    with pytest.raises(ValueError, match="unsigned-byte IDX"):
        ip.load_fashion_mnist("train", idx_dir=str(tmp_path))
    with pytest.raises(ValueError, match="'train' or 'test'"):
        ip.load_fashion_mnist("validation", idx_dir=str(tmp_path))


def test_fashion_mnist_longtail_splits(tmp_path):
    _fake_fashion_dir(tmp_path, per_class=30)
    kwargs = dict(imbalance_ratio=5.0, validation_per_class=5, idx_dir=str(tmp_path))
    train, validation, test = ip.load_fashion_mnist_longtail(seed=0, **kwargs)
    other_train, other_validation, _ = ip.load_fashion_mnist_longtail(seed=1, **kwargs)
    # n_c = floor(25 * 5^(-c/9)) of the 25 images per class left after validation.
    want = [int(25 * 5.0 ** (-c / 9)) for c in range(10)]
    np.testing.assert_array_equal(train.class_counts, want)
    np.testing.assert_array_equal(validation.class_counts, np.full(10, 5))
    np.testing.assert_array_equal(test.class_counts, np.full(10, 4))
    # The validation split is the same for every seed; no validation image is trained on.
    np.testing.assert_array_equal(validation.images, other_validation.images)
    assert not np.array_equal(train.images, other_train.images)
    as_rows = lambda d: {row.tobytes() for row in d.images}  # noqa: E731
    assert not as_rows(validation) & (as_rows(train) | as_rows(other_train))


def test_fashion_mnist_missing_everywhere_fails_fast_with_both_routes(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ip.DatasetNotPreparedError) as info:
        ip.load_fashion_mnist("train", idx_dir=str(tmp_path), data_dir=str(tmp_path))
    message = str(info.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing was downloaded
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--config.data.fashion_mnist_dir" in message and "--config.data.download=True" in message


def test_fashion_mnist_from_tfds_under_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        ds = ip.load_fashion_mnist("test", idx_dir=str(tmp_path))
    assert ds.images.shape == (40, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.min() >= 0 and ds.labels.max() < 10


_DEBIAN_FILES = pathlib.Path(ip.FASHION_MNIST_IDX_DIR) / "train-images-idx3-ubyte.gz"


@pytest.mark.skipif(
    not _DEBIAN_FILES.exists() and not os.environ.get("LPJAX_REQUIRE_FASHION_MNIST"),
    reason="apt-get install dataset-fashion-mnist (CI sets LPJAX_REQUIRE_FASHION_MNIST)",
)
def test_real_fashion_mnist_longtail_counts():
    train, validation, test = ip.load_fashion_mnist_longtail(imbalance_ratio=100, seed=0)
    np.testing.assert_array_equal(
        train.class_counts, [5500, 3297, 1976, 1184, 710, 425, 255, 153, 91, 55]
    )
    assert len(validation) == 5000 and len(test) == 10_000
    np.testing.assert_array_equal(test.class_counts, np.full(10, 1000))
    # The published per-pixel statistics of the 60k training images.
    full = ip.load_fashion_mnist("train")
    assert len(full) == 60_000
    np.testing.assert_allclose(full.images.mean() / 255, 0.2860, atol=1e-4)

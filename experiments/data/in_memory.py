"""The small data sets, held in host memory, and the long-tailed profiles.

Every small data set is a pair of NumPy arrays (CIFAR fits easily: 50k x 32x32x3 uint8)
wrapped in a :class:`Dataset`; :mod:`experiments.data.pipeline` makes the batches
(``ArraySplit``) and :mod:`experiments.data.registry` names the data sets. The large benchmarks
(ImageNet-LT, iNaturalist 2018, COCO) are streamed instead (:mod:`experiments.data.tfds_splits`).

Loaders:

* :func:`load_tfds_image_classification` -- CIFAR-10 / CIFAR-100 from tensorflow-datasets
  (TensorFlow is imported lazily, only there, and never gets a GPU);
* :func:`load_digits_longtail` -- scikit-learn's 8x8 digits, long-tailed, with a balanced
  held-out test split (no download needed; the CPU-sized benchmark);
* :func:`load_multilabel_digits` -- 1..3 digits side by side on an 8x24 canvas, multi-hot
  labels with long-tailed class frequencies;
* :func:`load_fashion_mnist_longtail` -- Fashion-MNIST, long-tailed, with a balanced
  validation split held out of the training pool (from the original IDX files, e.g.
  Debian's ``dataset-fashion-mnist``, or from tensorflow-datasets);
* :func:`load_tfds_voc` -- PASCAL VOC as image-level multi-label classification.

:func:`longtail_class_counts` / :func:`make_longtail` build the exponential long-tailed
profiles of the LDAM and logit-adjustment papers (CIFAR-10-LT / CIFAR-100-LT).
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import pathlib

import numpy as np

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DIGITS_DEFAULT_IMBALANCE_RATIO",
    "DIGITS_DEFAULT_TEST_PER_CLASS",
    "FASHION_MNIST_IDX_DIR",
    "FASHION_MNIST_VALIDATION_PER_CLASS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Dataset",
    "DatasetNotPreparedError",
    "load_digits_longtail",
    "load_fashion_mnist",
    "load_fashion_mnist_longtail",
    "load_multilabel_digits",
    "load_tfds_image_classification",
    "longtail_class_counts",
    "make_longtail",
]

# Standard per-channel statistics of the training images, in [0, 1] units.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
FASHION_MNIST_MEAN = (0.2860,)  # the 60k training images
FASHION_MNIST_STD = (0.3530,)
_TFDS_STATS = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
}

# Digits defaults. load_digits has 174..183 images per class; holding out 40 per class
# leaves 134..143, so n_max = 143 and the r = 15 profile (capped by what each class has) is
#   train per class = [138, 105, 78, 57, 42, 31, 23, 17, 12, 9]   (512 images)
#   test per class  = 40 each                                      (400 images)
# i.e. with the usual shot groups (many > 100, medium 20..100, few < 20):
#   many = {0, 1}, medium = {2, 3, 4, 5, 6}, few = {7, 8, 9}.
# The counts depend only on these two numbers, not on the seed.
DIGITS_DEFAULT_IMBALANCE_RATIO = 15.0
DIGITS_DEFAULT_TEST_PER_CLASS = 40

# Fashion-MNIST: where Debian's package dataset-fashion-mnist puts the four original IDX
# files, and the balanced validation split held out of each class's 6,000 training images
# before the long-tailed subsampling (so n_max = 5,500 and no validation image is ever
# trained on, at any ratio or seed).
FASHION_MNIST_IDX_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_VALIDATION_PER_CLASS = 500
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The validation split is the same for every run: it is drawn with this fixed seed.
_FASHION_MNIST_VALIDATION_SEED = 20_230_101

# Fraction of each digit class's source images reserved for the multi-label test split.
_MULTILABEL_TEST_SOURCE_FRACTION = 1.0 / 3.0
_DIGIT_SIZE = 8

# Images per tfds read; batch_size=-1 is avoided on purpose (see the loader).
_TFDS_READ_CHUNK = 10_000


class DatasetNotPreparedError(RuntimeError):
    """A tensorflow-datasets data set is not on disk and downloading was not allowed."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An in-memory image data set.

    Attributes:
      images: ``[N, H, W, C]`` uint8 (0..255) or float32 (0..1).
      labels: int32 ``[N]`` class ids, or ``[N, num_classes]`` 0/1 multi-hot (stored as given).
      num_classes: number of classes.
      mean, std: float32 ``[C]`` per-channel normalization constants in [0, 1] units.
      name: a short human-readable name.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    name: str

    def __post_init__(self):
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        if images.ndim != 4:
            raise ValueError(f"images must be NHWC, got shape {images.shape}.")
        if labels.shape[:1] != images.shape[:1] or labels.ndim not in (1, 2):
            raise ValueError(
                f"labels must be [N] or [N, C] with N = {images.shape[0]}, got {labels.shape}."
            )
        if labels.ndim == 2 and labels.shape[1] != self.num_classes:
            raise ValueError(
                f"multi-hot labels have {labels.shape[1]} columns, expected {self.num_classes}."
            )
        channels = images.shape[-1]
        mean = np.asarray(self.mean, np.float32).reshape(-1)
        std = np.asarray(self.std, np.float32).reshape(-1)
        if mean.shape != (channels,) or std.shape != (channels,):
            raise ValueError(f"mean and std must have shape [{channels}].")
        if np.any(std <= 0):
            raise ValueError("std must be positive.")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "num_classes", int(self.num_classes))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def is_multilabel(self) -> bool:
        return self.labels.ndim == 2

    @property
    def class_counts(self) -> np.ndarray:
        """int64 ``[num_classes]``: images per class (positives per class if multi-label)."""
        if self.is_multilabel:
            return (self.labels != 0).sum(axis=0).astype(np.int64)
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)


# --------------------------------------------------------------------------------------
# Long-tailed profiles.


def longtail_class_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> np.ndarray:
    """Exponential long-tailed profile ``n_c = floor(n_max * r ** (-c / (C - 1)))``.

    Computed exactly as the LDAM reference code does
    (``int(img_max * imb_factor ** (cls_idx / (cls_num - 1.0)))`` with ``imb_factor = 1/r``),
    which reproduces the published sizes: CIFAR-10-LT has 12,406 (r=100) / 20,431 (r=10)
    training images and CIFAR-100-LT 10,847 (r=100) / 19,573 (r=10).

    Returns:
      int64 ``[num_classes]``, non-increasing, ``n_0 = n_max``.
    """
    if isinstance(n_max, bool) or int(n_max) != n_max or n_max < 1:
        raise ValueError(f"n_max must be an integer >= 1, got {n_max!r}.")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
    imbalance_ratio = float(imbalance_ratio)
    if not math.isfinite(imbalance_ratio) or imbalance_ratio < 1.0:
        raise ValueError(
            f"imbalance_ratio must be a finite number >= 1 (n_max / n_min), "
            f"got {imbalance_ratio!r}."
        )
    n_max, num_classes = int(n_max), int(num_classes)
    imb_factor = 1.0 / imbalance_ratio
    counts = [int(n_max * (imb_factor ** (c / (num_classes - 1.0)))) for c in range(num_classes)]
    return np.asarray(counts, dtype=np.int64)


def max_imbalance_ratio(n_max: int, num_classes: int) -> float:
    """The largest ratio whose profile (:func:`longtail_class_counts`) keeps an image in
    every class: ``n_max``, or just below it where rounding takes the last image."""
    ratio = float(n_max)
    while longtail_class_counts(n_max, num_classes, ratio).min() < 1:
        ratio = float(np.nextafter(ratio, 0.0))
    return ratio


def make_longtail(dataset: Dataset, imbalance_ratio: float, *, seed: int) -> Dataset:
    """Subsamples a single-label data set to the exponential long-tailed profile.

    ``n_max`` is the largest class count; class ``c`` keeps the first
    ``min(n_c, available_c)`` of its images in the order of
    ``np.random.default_rng(seed).permutation(N)`` (on a balanced set such as CIFAR that is
    exactly ``n_c``). The kept images stay in their original relative order. Ratio 1 returns
    ``dataset`` unchanged.
    """
    if dataset.is_multilabel:
        raise ValueError("make_longtail needs single-label data; use a multi-label sampler.")
    if float(imbalance_ratio) < 1.0:
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio!r}.")
    if float(imbalance_ratio) == 1.0:
        return dataset
    available = dataset.class_counts
    targets = longtail_class_counts(int(available.max()), dataset.num_classes, imbalance_ratio)
    targets = np.minimum(targets, available)
    if np.any(targets == 0):
        empty = np.flatnonzero(targets == 0).tolist()
        n_max = int(available.max())
        most = max_imbalance_ratio(n_max, dataset.num_classes)
        can = f"at most {n_max}" if most == n_max else f"just below {n_max} ({most!r})"
        if available.min() == 0:
            can = "none: a class has no image"
        raise ValueError(
            f"config.data.imbalance_ratio = {imbalance_ratio:g} leaves classes {empty} of "
            f"{dataset.name!r} without any image (at most {n_max} per class); the ratio it can "
            f"hold: {can}."
        )
    order = np.random.default_rng(seed).permutation(len(dataset))
    ordered_labels = dataset.labels[order]
    keep = np.concatenate(
        [order[ordered_labels == c][: targets[c]] for c in range(dataset.num_classes)]
    )
    keep.sort()
    return dataclasses.replace(
        dataset,
        images=dataset.images[keep],
        labels=dataset.labels[keep],
        name=f"{dataset.name}_lt{float(imbalance_ratio):g}",
    )


# --------------------------------------------------------------------------------------
# Loaders.


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = images.astype(np.float64)
    if images.dtype == np.uint8:
        x = x / 255.0
    mean = x.mean(axis=(0, 1, 2))
    std = np.maximum(x.std(axis=(0, 1, 2)), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 scikit-learn digits as float32 ``[N, 8, 8, 1]`` in [0, 1] and int32 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]
    return images, digits.target.astype(np.int32)


def _per_class_split(
    labels: np.ndarray, num_classes: int, test_count, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split; ``test_count(n_c)`` images of each class go to the test side.

    Returns sorted (train_indices, test_indices).
    """
    train, test = [], []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(idx.size)]
        k = test_count(idx.size)
        if not 0 < k < idx.size:
            raise ValueError(
                f"cannot hold out {k} of the {idx.size} images of class {c}; "
                "both sides of the split need at least one image."
            )
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits_longtail(
    *,
    imbalance_ratio: float = DIGITS_DEFAULT_IMBALANCE_RATIO,
    test_per_class: int = DIGITS_DEFAULT_TEST_PER_CLASS,
    seed: int = 0,
) -> tuple[Dataset, Dataset]:
    """Long-tailed scikit-learn digits with a balanced held-out test split.

    Images are float32 ``[N, 8, 8, 1]`` in [0, 1] (the raw 0..16 values / 16). First a seeded
    ``test_per_class`` images of every class are held out (balanced test set); the rest is
    made long-tailed with :func:`make_longtail` (same seed). mean/std come from the training
    split. With the defaults (ratio 15, 40 test images per class) the training split has
    ``[138, 105, 78, 57, 42, 31, 23, 17, 12, 9]`` images per class (512), so the shot groups
    many (> 100) = {0, 1}, medium (20..100) = {2..6} and few (< 20) = {7, 8, 9} are all
    non-empty; the test split has 400 images.
    """
    if int(test_per_class) != test_per_class or test_per_class < 1:
        raise ValueError(f"test_per_class must be an integer >= 1, got {test_per_class!r}.")
    images, labels = _load_sklearn_digits()
    num_classes = 10
    rng = np.random.default_rng([seed, 0])
    train_idx, test_idx = _per_class_split(labels, num_classes, lambda n: int(test_per_class), rng)
    full_train = Dataset(
        images=images[train_idx],
        labels=labels[train_idx],
        num_classes=num_classes,
        mean=np.zeros(1),
        std=np.ones(1),
        name="digits",
    )
    train = make_longtail(full_train, imbalance_ratio, seed=seed)
    mean, std = _channel_stats(train.images)
    train = dataclasses.replace(train, mean=mean, std=std)
    test = Dataset(
        images=images[test_idx],
        labels=labels[test_idx],
        num_classes=num_classes,
        mean=mean,
        std=std,
        name="digits_test",
    )
    return train, test


def _open_tfds_split(name: str, split: str, data_dir: str | None, download: bool):
    """``(builder, tf.data.Dataset of examples)`` for a split, never touching the network
    unless ``download`` (a missing data set raises :class:`DatasetNotPreparedError` at once).

    Works under ``tfds.testing.mock_data`` (which ignores ``data_dir``, makes
    ``download_and_prepare`` a no-op and fakes the data in ``as_dataset``): the prepared
    check is done by tfds's own ``as_dataset`` (which the mock patches), and
    ``builder.is_prepared()`` only decides whether a failure there means "not prepared".
    """
    try:
        import tensorflow as tf
    except ImportError as error:  # the `train` extra alone: tfds's readers need TensorFlow
        raise DatasetNotPreparedError(
            f"Reading the tensorflow-datasets data set {name!r} needs TensorFlow, which is "
            f"not installed ({error}).\nInstall the prepare extra: pip install -c "
            f'constraints.txt -e ".[prepare]"'
        ) from None

    try:  # TensorFlow only feeds NumPy here; the accelerators belong to JAX.
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialised; nothing to do
        pass
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    prepared = builder.is_prepared()
    try:
        return builder, builder.as_dataset(split=split, shuffle_files=False)
    except Exception as err:  # an unprepared set: any failure here means "not prepared"
        if prepared:
            raise
        dir_arg = "" if data_dir is None else f", data_dir={str(data_dir)!r}"
        raise DatasetNotPreparedError(
            f"The tensorflow-datasets data set {name!r} is not prepared in "
            f"{builder.data_dir_root} and download=False, so nothing was downloaded. Prepare "
            f"it once on a machine with internet access:\n"
            f'  python -c "import tensorflow_datasets as tfds; '
            f"tfds.builder('{name}'{dir_arg}).download_and_prepare()\"\n"
            f"(copy the folder to this machine if needed), or pass --config.data.download=True "
            f"to let the trainer download it."
        ) from err


def _read_all(ds, to_image_and_label) -> tuple[np.ndarray, np.ndarray]:
    """Maps examples to ``(image, label)`` and reads the whole split into NumPy.

    Read in fixed chunks, not ``batch_size=-1``: tfds would batch by the split size, which
    is 0 under mock_data, i.e. by sys.maxsize, and TensorFlow aborts the process.
    """
    import tensorflow_datasets as tfds

    ds = ds.map(to_image_and_label).batch(_TFDS_READ_CHUNK)
    chunks = list(tfds.as_numpy(ds))
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def load_tfds_image_classification(
    name: str, *, split: str, data_dir: str | None = None, download: bool = False
) -> Dataset:
    """Loads a tensorflow-datasets image classification split ("cifar10", "cifar100").

    The whole split is read into memory (uint8 NHWC images, int32 labels). With
    ``download=False`` (the default) the network is never touched: if the data set is not
    prepared in ``data_dir`` a :class:`DatasetNotPreparedError` saying how to prepare it is
    raised at once. ``download=True`` calls ``builder.download_and_prepare()`` first.
    """
    if name not in _TFDS_STATS:
        raise ValueError(f"unsupported data set {name!r}; expected one of {sorted(_TFDS_STATS)}.")
    builder, ds = _open_tfds_split(name, split, data_dir, download)
    images, labels = _read_all(ds, lambda ex: (ex["image"], ex["label"]))
    mean, std = _TFDS_STATS[name]
    return Dataset(
        images=images.astype(np.uint8, copy=False),
        labels=labels.astype(np.int32),
        num_classes=builder.info.features["label"].num_classes,
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        name=name if split == "train" else f"{name}_{split}",
    )


def _read_idx(path: pathlib.Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format; ``.gz`` or not) as a uint8 array of its shape.

    Header: two zero bytes, the type code (0x08 = unsigned byte), the number of
    dimensions, then each dimension as a big-endian uint32.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{str(path)!r} is not an unsigned-byte IDX file.")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(shape):
        raise ValueError(f"{str(path)!r} is truncated: shape {shape}, {len(data) - offset} bytes.")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _find_idx(directory: pathlib.Path, stem: str) -> pathlib.Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def load_fashion_mnist(
    split: str, *, idx_dir: str | None = None, data_dir: str | None = None, download: bool = False
) -> Dataset:
    """One Fashion-MNIST split (``"train"``, 60k, or ``"test"``, 10k) as uint8 ``[N, 28, 28, 1]``.

    Sources, in order:

    1. the original IDX files (``train-images-idx3-ubyte[.gz]`` ...) in ``idx_dir``
       (default :data:`FASHION_MNIST_IDX_DIR`, where ``apt-get install dataset-fashion-mnist``
       puts them on Debian and Ubuntu) -- no network, no TensorFlow;
    2. tensorflow-datasets' ``fashion_mnist`` in ``data_dir`` (prepared, or downloaded if
       ``download``; same images in the same order).

    If neither has the data a :class:`DatasetNotPreparedError` says how to get it.
    """
    if split not in _FASHION_MNIST_FILES:
        raise ValueError(f"Fashion-MNIST split must be 'train' or 'test'; got {split!r}.")
    directory = pathlib.Path(idx_dir or FASHION_MNIST_IDX_DIR)
    image_file, label_file = (_find_idx(directory, stem) for stem in _FASHION_MNIST_FILES[split])
    if image_file and label_file:
        images, labels = _read_idx(image_file), _read_idx(label_file)
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"{str(directory)!r}: images {images.shape} and labels {labels.shape} do not match."
            )
        images = images[..., None]
    else:
        try:
            _, ds = _open_tfds_split("fashion_mnist", split, data_dir, download)
        except DatasetNotPreparedError as error:
            missing = [
                f"{stem}[.gz]"
                for stem in _FASHION_MNIST_FILES[split]
                if not _find_idx(directory, stem)
            ]
            tfds_route = (
                "tensorflow-datasets needs TensorFlow, which is not installed"
                if "needs TensorFlow" in str(error)
                else "tensorflow-datasets has not prepared it"
            )
            raise DatasetNotPreparedError(
                f"Fashion-MNIST's IDX files are not in {str(directory)!r} (looked for "
                f"{', '.join(missing)}), and {tfds_route}.\nOffline: `apt-get install "
                f"dataset-fashion-mnist` (Debian/Ubuntu; {FASHION_MNIST_IDX_DIR}), or put the "
                f"IDX files in a folder and pass --config.data.fashion_mnist_dir=FOLDER; with "
                f'network: install the prepare extra (pip install -e ".[prepare]", for '
                f"tfds) and pass --config.data.download=True."
            ) from None
        images, labels = _read_all(ds, lambda ex: (ex["image"], ex["label"]))
    return Dataset(
        images=images.astype(np.uint8, copy=False),
        labels=labels.astype(np.int32),
        num_classes=10,
        mean=np.asarray(FASHION_MNIST_MEAN, np.float32),
        std=np.asarray(FASHION_MNIST_STD, np.float32),
        name="fashion_mnist" if split == "train" else f"fashion_mnist_{split}",
    )


def load_fashion_mnist_longtail(
    *,
    imbalance_ratio: float,
    seed: int,
    validation_per_class: int = FASHION_MNIST_VALIDATION_PER_CLASS,
    idx_dir: str | None = None,
    data_dir: str | None = None,
    download: bool = False,
) -> tuple[Dataset, Dataset, Dataset]:
    """Long-tailed Fashion-MNIST: ``(train, validation, test)``.

    1. ``validation_per_class`` images of every class (500: 5,000 in all) are held out of
       the 60k training images with a fixed seed -- the same balanced validation split for
       every run, never trained on at any ratio;
    2. the remaining 5,500 per class are made long-tailed with :func:`make_longtail`
       (``n_c = floor(5500 r^(-c/9))``, the images chosen by ``seed``): 13,646 images at
       r = 100 (5500, 3297, 1976, 1184, 710, 425, 255, 153, 91, 55), 15,395 at r = 50 and
       22,474 at r = 10;
    3. the 10k test split stays balanced (1,000 per class).

    Hyperparameters are chosen on the validation split; the test split is only reported.
    """
    full = load_fashion_mnist("train", idx_dir=idx_dir, data_dir=data_dir, download=download)
    test = load_fashion_mnist("test", idx_dir=idx_dir, data_dir=data_dir, download=download)
    rng = np.random.default_rng(_FASHION_MNIST_VALIDATION_SEED)
    pool_idx, val_idx = _per_class_split(
        full.labels, full.num_classes, lambda n: int(validation_per_class), rng
    )
    pool = dataclasses.replace(full, images=full.images[pool_idx], labels=full.labels[pool_idx])
    validation = dataclasses.replace(
        full,
        images=full.images[val_idx],
        labels=full.labels[val_idx],
        name="fashion_mnist_validation",
    )
    train = make_longtail(pool, imbalance_ratio, seed=seed)
    return train, validation, test


# ImageNet statistics, the usual normalization for natural photographs such as VOC's.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_tfds_voc(
    *,
    split: str,
    image_size: int,
    year: str = "2007",
    data_dir: str | None = None,
    download: bool = False,
) -> Dataset:
    """PASCAL VOC as image-level multi-label classification (tensorflow-datasets ``voc``).

    An image's label set is the set of its object classes (20 classes, multi-hot). Images
    are resized (bilinear, aspect ratio not kept) to ``image_size`` x ``image_size`` and
    held in memory as uint8: VOC 2007 trainval at 128 pixels takes 250 MB. Splits:
    ``"trainval"`` / ``"train"`` / ``"validation"`` / ``"test"``. Same download rules as
    :func:`load_tfds_image_classification`.
    """
    import tensorflow as tf

    name = f"voc/{year}"
    builder, ds = _open_tfds_split(name, split, data_dir, download)
    num_classes = builder.info.features["objects"]["label"].num_classes

    def to_image_and_label(example):
        image = tf.image.resize(example["image"], (image_size, image_size), antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        counts = tf.reduce_sum(
            tf.one_hot(example["objects"]["label"], num_classes, dtype=tf.int32), axis=0
        )
        labels = tf.minimum(counts, 1)  # several objects of a class: one positive label
        return image, labels

    images, labels = _read_all(ds, to_image_and_label)
    return Dataset(
        images=images,
        labels=labels.astype(np.int32),
        num_classes=num_classes,
        mean=np.asarray(IMAGENET_MEAN, np.float32),
        std=np.asarray(IMAGENET_STD, np.float32),
        name=f"voc{year}_{split}",
    )


def load_multilabel_digits(
    *,
    num_train: int,
    num_test: int,
    digits_per_image: tuple[int, int] = (1, 3),
    imbalance_ratio: float,
    seed: int,
) -> tuple[Dataset, Dataset]:
    """Multi-label digits: 1..3 real digits side by side, multi-hot labels, long-tailed.

    Each image is an ``8 x (8 * hi)`` canvas (``8 x 24`` for the default ``(1, 3)``) of
    ``hi`` slots; ``k ~ U{lo..hi}`` *distinct* digit classes are drawn per image and put in
    ``k`` random slots (empty slots are zero), each as a random real scikit-learn digit of
    that class. Labels are int32 ``[N, 10]`` multi-hot (exactly ``k`` positives).

    * Train: classes drawn with probabilities proportional to ``r ** (-c / 9)`` (successive
      sampling without replacement, via Gumbel top-k), so positive counts are long-tailed
      with class 0 the head and class 9 the tail.
    * Test: uniform class probabilities (a balanced-ish set, the usual choice for per-class
      AP evaluation of multi-label long-tailed models).
    * The source digit images are split per class (seeded, one third to test) *before*
      composing, so no train and test image share a source digit.

    Images are float32 ``[N, 8, 8 * hi, 1]`` in [0, 1]; mean/std from the training split.
    """
    lo, hi = (int(v) for v in digits_per_image)
    num_classes = 10
    if not 1 <= lo <= hi <= num_classes:
        raise ValueError(f"digits_per_image must satisfy 1 <= lo <= hi <= 10, got {(lo, hi)}.")
    if num_train < 1 or num_test < 1:
        raise ValueError("num_train and num_test must be >= 1.")
    imbalance_ratio = float(imbalance_ratio)
    if not math.isfinite(imbalance_ratio) or imbalance_ratio < 1.0:
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio!r}.")

    images, labels = _load_sklearn_digits()
    rng = np.random.default_rng([seed, 0])
    train_src, test_src = _per_class_split(
        labels,
        num_classes,
        lambda n: int(round(n * _MULTILABEL_TEST_SOURCE_FRACTION)),
        rng,
    )
    classes = np.arange(num_classes)
    train_probs = imbalance_ratio ** (-classes / (num_classes - 1.0))
    test_probs = np.ones(num_classes)

    def compose(src, num, probs, rng):
        src_labels = labels[src]
        # Source indices of each class, concatenated; class c occupies [start_c, start_c + m_c).
        by_class = src[np.argsort(src_labels, kind="stable")]
        sizes = np.bincount(src_labels, minlength=num_classes)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

        k = rng.integers(lo, hi + 1, size=num)
        gumbel = rng.gumbel(size=(num, num_classes))
        drawn = np.argsort(-(np.log(probs / probs.sum()) + gumbel), axis=1)[:, :hi]
        active = np.arange(hi)[None, :] < k[:, None]  # [num, hi]
        slots = np.argsort(rng.random((num, hi)), axis=1)  # slot of the j-th drawn digit
        pick = rng.random((num, hi))
        source = by_class[starts[drawn] + (pick * sizes[drawn]).astype(np.int64)]

        canvas = np.zeros((num, hi, _DIGIT_SIZE, _DIGIT_SIZE), np.float32)
        rows = np.broadcast_to(np.arange(num)[:, None], (num, hi))
        canvas[rows[active], slots[active]] = images[source[active], ..., 0]
        canvas = canvas.transpose(0, 2, 1, 3).reshape(num, _DIGIT_SIZE, hi * _DIGIT_SIZE, 1)

        multi_hot = np.zeros((num, num_classes), np.int32)
        multi_hot[rows[active], drawn[active]] = 1
        return canvas, multi_hot

    train_x, train_y = compose(train_src, int(num_train), train_probs, rng)
    test_x, test_y = compose(test_src, int(num_test), test_probs, rng)
    mean, std = _channel_stats(train_x)
    train = Dataset(train_x, train_y, num_classes, mean, std, "multilabel_digits")
    test = Dataset(test_x, test_y, num_classes, mean, std, "multilabel_digits_test")
    return train, test

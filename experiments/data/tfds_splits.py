"""Large image data sets streamed from tensorflow-datasets ``array_record`` files.

:func:`open_tfds_split` opens a prepared split with ``tfds``'s random-access data source,
images left encoded (``SkipDecoding``): a record is read, and its JPEG decoded, only when a
batch needs it -- in the grain threads or worker processes of
:mod:`experiments.data.pipeline`. Reading needs no TensorFlow (the read-only builder comes
from the prepared files' metadata); only preparing a data set does (``pip install
".[prepare]"``, then ``tfds build``: README, "Preparing the large data sets").

Class counts are read once from the labels alone (no image is decoded) and cached next to
the prepared files, in ``lpjax_class_counts_<split>.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from experiments.data import image_transforms, in_memory, pipeline

__all__ = ["TfdsSplit", "open_tfds_split", "preparation_command"]

# Threads reading labels for the class counts (I/O bound: records are read, not decoded).
_LABEL_READ_THREADS = 16


def preparation_command(name: str, data_dir: str | None, *, manual_dir: bool = False) -> str:
    """The shell command that prepares ``name`` for this pipeline."""
    parts = ["tfds build", name, "--file_format=array_record"]
    if data_dir:
        parts.append(f"--data_dir={data_dir}")
    if manual_dir:
        parts.append("--manual_dir=DIR")
    return " ".join(parts)


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsSplit:
    """A split read record by record from a tfds data source; images decoded on demand.

    Preprocessing (ImageNet statistics for normalization):

    * ``crop=True`` (ImageNet-LT, iNaturalist): training images get a random-resized crop
      and a random flip when ``augment``; evaluation images (and training images without
      ``augment``) the resize-256 / centre-crop-224 of :mod:`experiments.data.image_transforms`;
    * ``crop=False`` (COCO, as ASL): every image resized whole to ``image_size`` squared,
      training images flipped at random when ``augment``.

    A training example's randomness is ``np.random.default_rng([seed, step, 2, row])``
    with ``row`` its row of the global batch, whatever the number of processes.

    Attributes:
      source: random access to the examples (``"image"`` encoded bytes, and ``"label"`` or
        ``"objects"/"label"``).
      name: a short human-readable name.
      num_classes: number of classes.
      image_size: side of the square images returned.
      is_multilabel: labels are the multi-hot set of ``example["objects"]["label"]``.
      crop: ImageNet-style crops rather than a plain resize.
      augment: random crops (if ``crop``) and flips for training.
      counts_cache: JSON file caching :attr:`class_counts` (None: not cached).
    """

    source: Sequence
    name: str
    num_classes: int
    image_size: int
    is_multilabel: bool = False
    crop: bool = True
    augment: bool = True
    counts_cache: pathlib.Path | None = None
    mean: np.ndarray = dataclasses.field(
        default_factory=lambda: np.asarray(in_memory.IMAGENET_MEAN, np.float32)
    )
    std: np.ndarray = dataclasses.field(
        default_factory=lambda: np.asarray(in_memory.IMAGENET_STD, np.float32)
    )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    def __len__(self) -> int:
        return len(self.source)

    def label(self, example) -> np.ndarray:
        """int32 class id, or int32 ``[num_classes]`` multi-hot of the example's objects."""
        if not self.is_multilabel:
            return np.int32(example["label"])
        multi_hot = np.zeros(self.num_classes, np.int32)
        multi_hot[np.asarray(example["objects"]["label"], np.int64)] = 1
        return multi_hot

    @functools.cached_property
    def class_counts(self) -> np.ndarray:
        """int64 ``[num_classes]``: images (positives) per class, from the labels alone."""
        cached = _read_counts(self.counts_cache, len(self), self.num_classes)
        if cached is not None:
            return cached
        counts = _count_labels(self.source, self.label, self.num_classes)
        _write_counts(self.counts_cache, len(self), counts)
        return counts

    def _example(self, index, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """Reads one record; returns its preprocessed uint8 image and its label."""
        example = self.source[int(index)]
        image = image_transforms.decode_rgb(example["image"])
        height, width, _ = image.shape
        if not self.crop:
            box = (0, 0, height, width)
        elif rng is not None:
            box = image_transforms.random_resized_crop_box(height, width, rng)
        else:
            box = image_transforms.center_crop_box(height, width)
        flip = rng is not None and bool(rng.random() < 0.5)
        image = image_transforms.crop_resize(image, box, self.image_size, flip=flip)
        return image, self.label(example)

    def _rows(self, indices, rngs) -> tuple[np.ndarray, np.ndarray]:
        images, labels = zip(
            *(self._example(i, rng) for i, rng in zip(indices, rngs, strict=True)), strict=True
        )
        return pipeline.normalize(np.stack(images), self.mean, self.std), np.stack(labels)

    def train_rows(self, indices, *, seed, step, rows, global_batch_size):
        del global_batch_size  # each example's randomness depends on its row alone
        if not self.augment:
            return self.eval_rows(indices)
        rngs = [np.random.default_rng([seed, step, 2, row]) for row in range(rows.start, rows.stop)]
        return self._rows(indices, rngs)

    def eval_rows(self, indices):
        return self._rows(indices, [None] * len(indices))


def _count_labels(source: Sequence, label, num_classes: int) -> np.ndarray:
    """Counts labels over the whole source with grain threads (records read, not decoded)."""
    import grain

    labels = grain.MapDataset.source(source).map(label)
    read = grain.ReadOptions(num_threads=_LABEL_READ_THREADS, prefetch_buffer_size=1024)
    counts = np.zeros(num_classes, np.int64)
    for value in labels.to_iter_dataset(read):
        if np.ndim(value):
            counts += value != 0
        else:
            counts[value] += 1
    return counts


def _read_counts(path: pathlib.Path | None, num_examples: int, num_classes: int):
    if path is None or not path.exists():
        return None
    cached = json.loads(path.read_text())
    counts = np.asarray(cached["class_counts"], np.int64)
    if cached["num_examples"] != num_examples or counts.shape != (num_classes,):
        return None  # prepared again since: count again
    return counts


def _write_counts(path: pathlib.Path | None, num_examples: int, counts: np.ndarray) -> None:
    if path is None:
        return
    record = {"num_examples": num_examples, "class_counts": counts.tolist()}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError:  # a read-only data directory: count again next time
        pass


def open_tfds_split(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    download: bool = False,
    manual_dir: bool = False,
):
    """``(source, features, counts_cache)`` of a prepared split, images left encoded.

    A data set prepared in ``data_dir`` (or tfds's default directories) is opened from its
    files alone, without its builder code and without TensorFlow. Otherwise, if
    ``download``, tfds downloads and prepares it (``array_record``; needs TensorFlow);
    if not, :class:`~experiments.data.in_memory.DatasetNotPreparedError` names the command
    that prepares it, before anything is read or downloaded. Under
    ``tfds.testing.mock_data`` the mocked source is returned.

    Args:
      name: tfds name, e.g. ``"imagenet_lt"`` or ``"coco/2017"``.
      split: tfds split name.
      data_dir: tfds data directory (None: tfds's default).
      download: let tfds download and prepare the data set.
      manual_dir: the data set needs files downloaded by hand (named in the error).

    Returns:
      The random-access source, the data set's ``FeaturesDict``, and the path of the class
      counts cache (None when there are no prepared files to put it next to).
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import file_adapters, read_only_builder

    decoders = {"image": tfds.decode.SkipDecoding()}
    try:
        builder = read_only_builder.builder_from_files(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        builder = None
    if builder is not None:
        if builder.info.file_format != file_adapters.FileFormat.ARRAY_RECORD:
            raise in_memory.DatasetNotPreparedError(
                f"{name!r} is prepared in {builder.data_dir} as {builder.info.file_format.value}"
                f", but streaming needs array_record. Convert it once:\n  tfds convert_format "
                f"--dataset_version_dir={builder.data_dir} --out_file_format=array_record"
            )
        source = builder.as_data_source(split, decoders=decoders)
        counts_cache = pathlib.Path(builder.data_dir) / f"lpjax_class_counts_{split}.json"
        return source, builder.info.features, counts_cache
    command = preparation_command(name, data_dir, manual_dir=manual_dir)
    try:  # the builder code: a mocked data set, or one to download
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
        if download:
            builder.download_and_prepare()
        source = builder.as_data_source(split, decoders=decoders)
    except Exception as error:  # not prepared, or no TensorFlow to run the builder code
        if download:
            raise
        where = data_dir or "tfds's default data directory (~/tensorflow_datasets)"
        raise in_memory.DatasetNotPreparedError(
            f"The tensorflow-datasets data set {name!r} is not prepared (array_record) in "
            f"{where}, and download=False, so nothing was downloaded. Prepare it once "
            f'(pip install -c constraints.txt -e ".[prepare]"):\n  {command}\n'
            f"(README: Preparing the large data sets)."
        ) from error
    counts_cache = None
    if download:  # prepared just now
        counts_cache = pathlib.Path(builder.data_dir) / f"lpjax_class_counts_{split}.json"
    return source, builder.info.features, counts_cache

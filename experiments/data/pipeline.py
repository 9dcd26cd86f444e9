"""Deterministic, resumable, multi-host batches read with grain from random-access splits.

A *split* is anything with random access to its examples (:class:`ArraySplit` over an
in-memory :class:`~experiments.data.in_memory.Dataset`;
:class:`~experiments.data.tfds_splits.TfdsSplit` over a tensorflow-datasets ``array_record``
data source). The training batch at global step ``s`` is a *pure function* of
``(seed, s)``:

* epoch ``e = s // steps_per_epoch``; its order is
  ``np.random.default_rng([seed, e]).permutation(N)`` (the remainder is dropped);
* the global batch is the ``s % steps_per_epoch``-th slice of that order, and process ``p``
  of ``P`` takes rows ``[p * G / P, (p + 1) * G / P)`` of it, so each host reads only its
  own examples;
* augmentation randomness is a function of ``(seed, s, global row)``, so the union of what
  all processes see does not depend on the number of processes.

:func:`train_batches` maps that function over the steps with grain
(``MapDataset.range(num_steps).map(...)[start_step:]``): a run resumed at step ``s`` builds
the pipeline from ``s`` and sees exactly the batches of an uninterrupted run, with no
iterator state to checkpoint. Batches are made in background threads (``ReadOptions``) or
worker processes (``mp_prefetch``) and prefetched; the order never depends on either.

Host memory: the one per-example array is the epoch permutation (8 bytes per example, in
the trainer and in each worker process: 3.5 MB for iNaturalist 2018's 437k training
images); images are read when their batch is made, so memory does not grow with the data
set (``tests/experiments/test_pipeline.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from experiments.data import in_memory

__all__ = [
    "ArraySplit",
    "LoaderOptions",
    "Split",
    "eval_batch",
    "eval_batches",
    "local_rows",
    "normalize",
    "num_eval_batches",
    "steps_per_epoch",
    "train_batch",
    "train_batches",
]

# Augmentation of in-memory images (CIFAR recipe): reflect-pad by 4, random crop back to
# HxW, random h-flip.
_AUGMENT_PAD = 4
_AUGMENT_MIN_SIZE = 16  # smaller images (8x8 digits) are never cropped or flipped


class Split(Protocol):
    """What the pipeline needs of a split: its size, its shapes and batched reads.

    Attributes:
      name: a short human-readable name.
      num_classes: number of classes.
      image_shape: ``(H, W, C)`` of the images the reads return.
      is_multilabel: labels are ``[num_classes]`` multi-hot rather than class ids.
      class_counts: int64 ``[num_classes]``, images (positives) per class.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    is_multilabel: bool

    @property
    def class_counts(self) -> np.ndarray: ...

    def __len__(self) -> int: ...

    def train_rows(
        self, indices: np.ndarray, *, seed: int, step: int, rows: slice, global_batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augmented, normalized float32 images and labels of ``indices`` (this process's
        ``rows`` of the global batch at ``step``)."""
        ...

    def eval_rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalized float32 images and labels of ``indices``, without augmentation."""
        ...


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x / 255 - mean) / std`` for uint8 images, ``(x - mean) / std`` for float32 ones.

    Args:
      images: ``[..., C]`` uint8 (0..255) or float32 (0..1).
      mean, std: float32 ``[C]`` in [0, 1] units.

    Returns:
      float32 array of the shape of ``images``.
    """
    scale = 1.0 / std
    if images.dtype == np.uint8:
        scale = scale / 255.0
    return images.astype(np.float32) * scale.astype(np.float32) - (mean / std).astype(np.float32)


normalise = normalize  # deprecated spelling


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit:
    """A split held in host memory (digits, Fashion-MNIST, CIFAR, VOC).

    Training augmentation (``augment=True``, only for images of at least 16x16 -- the 8x8
    digits are never cropped or flipped): reflect-pad 4, random HxW crop, random horizontal
    flip, the offsets and flips of the whole global batch drawn from
    ``np.random.default_rng([seed, step, 1])`` and then sliced to this process's rows.

    Attributes:
      dataset: the images and labels.
      augment: crop and flip training images.
    """

    dataset: in_memory.Dataset
    augment: bool = False

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.dataset.images.shape[1:])

    @property
    def is_multilabel(self) -> bool:
        return self.dataset.is_multilabel

    @property
    def class_counts(self) -> np.ndarray:
        return self.dataset.class_counts

    def __len__(self) -> int:
        return len(self.dataset)

    def train_rows(self, indices, *, seed, step, rows, global_batch_size):
        images = self.dataset.images[indices]
        _, height, width, _ = images.shape
        if self.augment and min(height, width) >= _AUGMENT_MIN_SIZE:
            offset_y, offset_x, flip = _augment_params(seed, step, global_batch_size)
            images = _crop_flip(images, offset_y[rows], offset_x[rows], flip[rows])
        return self._normalize(images), self.dataset.labels[indices]

    def eval_rows(self, indices):
        return self._normalize(self.dataset.images[indices]), self.dataset.labels[indices]

    def _normalize(self, images):
        return normalize(images, self.dataset.mean, self.dataset.std)


def _augment_params(
    seed: int, step: int, global_batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop offsets (y, x) in ``[0, 2 * pad]`` and flip flags for the whole global batch."""
    rng = np.random.default_rng([seed, step, 1])
    offsets = rng.integers(0, 2 * _AUGMENT_PAD + 1, size=(2, global_batch_size))
    flips = rng.random(global_batch_size) < 0.5
    return offsets[0], offsets[1], flips


def _crop_flip(
    images: np.ndarray, offset_y: np.ndarray, offset_x: np.ndarray, flip: np.ndarray
) -> np.ndarray:
    """Reflect-pads by ``_AUGMENT_PAD``, crops HxW at the offsets, then flips horizontally."""
    _, h, w, _ = images.shape
    p = _AUGMENT_PAD
    padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    rows = offset_y[:, None] + np.arange(h)[None, :]  # [B, H]
    cols = offset_x[:, None] + np.arange(w)[None, :]  # [B, W]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    batch = np.arange(images.shape[0])[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


# --------------------------------------------------------------------------------------
# Batches as pure functions of the step.


def steps_per_epoch(split: Split, global_batch_size: int) -> int:
    """Full global batches per epoch (the remainder of each epoch's order is dropped)."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}.")
    if len(split) < global_batch_size:
        raise ValueError(
            f"the data set has {len(split)} examples, fewer than one global batch "
            f"of {global_batch_size}."
        )
    return len(split) // global_batch_size


def local_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
    """Rows ``[p * G / P, (p + 1) * G / P)`` of a global batch that process ``p`` reads."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"need 0 <= process_index < process_count, got {process_index} / {process_count}."
        )
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by the "
            f"process count {process_count}."
        )
    local = global_batch_size // process_count
    return slice(process_index * local, (process_index + 1) * local)


_EPOCH_ORDER_LOCK = threading.Lock()  # threads making batches compute an order once


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    with _EPOCH_ORDER_LOCK:
        return _cached_epoch_order(seed, epoch, n)


@functools.lru_cache(maxsize=2)
def _cached_epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def train_batch(
    split: Split,
    step: int,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
    """This process's rows of the global training batch at ``step`` (pure in seed, step).

    Args:
      split: the training split; it decides the augmentation.
      step: global step, >= 0.
      global_batch_size: examples in the batch of all processes together.
      seed: orders the epochs and draws the augmentation.
      process_index, process_count: this process and how many there are.

    Returns:
      ``{"image": float32 [local, H, W, C], "label": [local] or [local, num_classes]}``
      where ``local = global_batch_size // process_count``.
    """
    if int(step) != step or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}.")
    step, seed = int(step), int(seed)
    rows = local_rows(global_batch_size, process_index, process_count)
    epoch, within = divmod(step, steps_per_epoch(split, global_batch_size))
    order = _epoch_order(seed, epoch, len(split))
    indices = order[within * global_batch_size : (within + 1) * global_batch_size][rows]
    images, labels = split.train_rows(
        indices, seed=seed, step=step, rows=rows, global_batch_size=global_batch_size
    )
    return {"image": images, "label": labels}


def num_eval_batches(split: Split, global_batch_size: int) -> int:
    """Global evaluation batches covering the split (the last one padded)."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}.")
    return -(-len(split) // global_batch_size)


def eval_batch(
    split: Split,
    index: int,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
    """This process's rows of the ``index``-th global evaluation batch, in split order.

    Returns:
      ``image`` (normalized float32), ``label`` and ``mask`` (bool, False on the padding
      rows past the end of the split, whose image and label are zeros).
    """
    rows = local_rows(global_batch_size, process_index, process_count)
    start = index * global_batch_size
    positions = np.arange(start + rows.start, start + rows.stop)
    mask = positions < len(split)
    local = rows.stop - rows.start
    image = np.zeros((local, *split.image_shape), np.float32)
    label_shape = (split.num_classes,) if split.is_multilabel else ()
    label = np.zeros((local, *label_shape), np.int32)
    if mask.any():
        image[mask], label[mask] = split.eval_rows(positions[mask])
    return {"image": image, "label": label, "mask": mask}


# --------------------------------------------------------------------------------------
# grain: threads or worker processes, prefetch.


@dataclasses.dataclass(frozen=True)
class LoaderOptions:
    """How batches are made; never what they contain.

    Attributes:
      num_workers: worker processes making batches (0: threads of this process). Workers
        pay off for JPEG decoding; in-memory splits are fastest in-process.
      num_threads: threads making batches in each process (0: on demand, in the caller).
      prefetch_batches: batches made ahead of the training step, per process or worker.
    """

    num_workers: int = 0
    num_threads: int = 2
    prefetch_batches: int = 2

    def __post_init__(self):
        for name in ("num_workers", "num_threads", "prefetch_batches"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")


def _iterate(dataset, options: LoaderOptions) -> Iterator[dict[str, np.ndarray]]:
    import grain

    if options.num_threads == 0:
        return iter(dataset)
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(
            num_threads=options.num_threads,
            prefetch_buffer_size=max(options.prefetch_batches, options.num_threads),
        )
    )
    if options.num_workers:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; we use none
            flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=options.num_workers,
                per_worker_buffer_size=max(options.prefetch_batches, 1),
            )
        )
    return iter(iter_dataset)


def train_batches(
    split: Split,
    *,
    start_step: int,
    num_steps: int,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    options: LoaderOptions = LoaderOptions(),
) -> Iterator[dict[str, np.ndarray]]:
    """:func:`train_batch` of steps ``start_step .. num_steps - 1``, in order, via grain.

    Args:
      split: the training split.
      start_step: the first step (a resumed run's checkpointed step).
      num_steps: one past the last step.
      global_batch_size, seed, process_index, process_count: as for :func:`train_batch`.
      options: threads, worker processes and prefetch.

    Returns:
      An iterator of ``num_steps - start_step`` batches, each equal to
      ``train_batch(split, step, ...)``.
    """
    import grain

    if not 0 <= start_step <= num_steps:
        raise ValueError(f"need 0 <= start_step <= num_steps, got {start_step} / {num_steps}.")
    local_rows(global_batch_size, process_index, process_count)  # fail here, not in a worker
    steps_per_epoch(split, global_batch_size)
    make = functools.partial(
        train_batch,
        split,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    return _iterate(grain.MapDataset.range(num_steps).map(make)[start_step:], options)


def eval_batches(
    split: Split,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    options: LoaderOptions = LoaderOptions(),
) -> Iterator[dict[str, np.ndarray]]:
    """:func:`eval_batch` of every global evaluation batch, in order, via grain.

    Every process yields the same number of batches.
    """
    import grain

    local_rows(global_batch_size, process_index, process_count)
    make = functools.partial(
        eval_batch,
        split,
        global_batch_size=global_batch_size,
        process_index=process_index,
        process_count=process_count,
    )
    count = num_eval_batches(split, global_batch_size)
    return _iterate(grain.MapDataset.range(count).map(make), options)

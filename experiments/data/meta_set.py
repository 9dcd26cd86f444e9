"""The meta set of Meta-LPL: a small balanced set held out of the training pool.

``per_class`` images of every class are taken from the validation split when the data
set has one (it keeps the rest, so hyperparameters are still chosen on images no method
trains on), else from the training split (which keeps the rest). The test split is never
touched. Only the methods that use a meta set hold one out (``meta_lpl``, ``la_meta_lpl``
and the two controls, :mod:`experiments.methods`): every other method trains and
validates on the splits as they are. In-memory data sets only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.data import in_memory, pipeline

# Fixed, so that the meta set drawn from a validation split is the same for every run.
_VALIDATION_META_SEED = 0


def _take_per_class(
    dataset: in_memory.Dataset, per_class: int, seed: int
) -> tuple[in_memory.Dataset, in_memory.Dataset]:
    """``(rest, meta)``: the first ``per_class`` images of each class, in a seeded order,
    go to ``meta``."""
    if dataset.is_multilabel:
        raise ValueError("a meta set needs single-label data (class ids).")
    rng = np.random.default_rng([seed, 7])
    meta, rest = [], []
    for c in range(dataset.num_classes):
        idx = np.flatnonzero(dataset.labels == c)
        if idx.size <= per_class:
            raise ValueError(
                f"cannot hold out a meta set of {per_class} images per class: class {c} of "
                f"{dataset.name} has {idx.size}; lower config.meta.per_class."
            )
        idx = idx[rng.permutation(idx.size)]
        meta.append(idx[:per_class])
        rest.append(idx[per_class:])

    def subset(indices, suffix):
        indices = np.sort(np.concatenate(indices))
        return dataclasses.replace(
            dataset,
            images=dataset.images[indices],
            labels=dataset.labels[indices],
            name=f"{dataset.name}{suffix}",
        )

    return subset(rest, ""), subset(meta, "_meta")


def _concatenate(first: in_memory.Dataset, second: in_memory.Dataset) -> in_memory.Dataset:
    return dataclasses.replace(
        first,
        images=np.concatenate([first.images, second.images]),
        labels=np.concatenate([first.labels, second.labels]),
        name=f"{first.name}+meta",
    )


def hold_out(
    train: pipeline.Split,
    validation: pipeline.Split | None,
    *,
    per_class: int,
    seed: int,
    into_training: bool = False,
) -> tuple[pipeline.Split, pipeline.Split | None, pipeline.ArraySplit]:
    """``(train, validation, meta)`` with a balanced meta set of ``per_class`` per class.

    The meta set comes from ``validation`` if there is one (drawn with a fixed seed: the
    same for every run), else from ``train`` (drawn with ``seed``). ``into_training``
    adds it to the training split as well (the control "trained on training + meta
    images"). The meta split is never augmented.

    Raises:
      ValueError: a streamed data set, multi-label data, ``per_class < 1``, or a class
        with too few images.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"config.meta.per_class must be an int >= 1; got {per_class!r}.")
    for split in (train, validation):
        if split is not None and not isinstance(split, pipeline.ArraySplit):
            raise ValueError(
                f"a meta set is held out of in-memory data sets only; {split.name} is streamed."
            )
    if validation is not None:
        rest, meta = _take_per_class(validation.dataset, per_class, _VALIDATION_META_SEED)
        validation = dataclasses.replace(validation, dataset=rest)
    else:
        rest, meta = _take_per_class(train.dataset, per_class, seed)
        train = dataclasses.replace(train, dataset=rest)
    if into_training:
        train = dataclasses.replace(train, dataset=_concatenate(train.dataset, meta))
    return train, validation, pipeline.ArraySplit(meta, augment=False)

"""The data sets the trainer knows: ``config.data.name`` -> ``(train, validation, test)``.

Each entry builds the three splits of :mod:`experiments.data.pipeline` from the config
(``validation`` is None where the benchmark has none). Adding a data set is one entry here
and one config file.

Small data sets are held in memory (:class:`~experiments.data.pipeline.ArraySplit`); the
large long-tailed benchmarks are streamed from tensorflow-datasets ``array_record`` files
(:class:`~experiments.data.tfds_splits.TfdsSplit`):

==================  ==========================  =======  =========================
name                tfds splits (train / test)  classes  preparation
==================  ==========================  =======  =========================
``imagenet_lt``     train / test (+validation)  1,000    ImageNet archives by hand
``inaturalist2018`` train / validation          8,142    downloaded by tfds
``coco2017``        train / validation          80       downloaded by tfds
==================  ==========================  =======  =========================

ImageNet-LT's ``test`` is the literature's test set (ImageNet's 50,000 validation images);
its ``validation`` split (20,000 held-out training images) is for choosing
hyperparameters. iNaturalist 2018 and COCO report on their ``validation`` split (their test
labels are not public).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import ml_collections

from experiments.data import in_memory, pipeline, tfds_splits

__all__ = ["NAMES", "DatasetEntry", "Splits", "is_multilabel", "load"]


class Splits(NamedTuple):
    """A run's data. ``validation`` may be None; ``held_out`` is a split a method holds
    out of the training pool for its own use (Meta-LPL's meta set), None for the others."""

    train: pipeline.Split
    validation: pipeline.Split | None
    test: pipeline.Split
    held_out: pipeline.Split | None = None


class DatasetEntry(NamedTuple):
    """One data set: how to build its splits from a config, and its label type."""

    build: Callable[[ml_collections.ConfigDict], Splits]
    multilabel: bool = False


def _in_memory(config, train, validation, test) -> Splits:
    def wrap(dataset, augment=False):
        return None if dataset is None else pipeline.ArraySplit(dataset, augment)

    return wrap(train, config.data.augment), wrap(validation), wrap(test)


def _tfds_kwargs(config) -> dict:
    return dict(data_dir=config.data.data_dir or None, download=config.data.download)


def _digits_lt(config) -> Splits:
    train, test = in_memory.load_digits_longtail(
        imbalance_ratio=config.data.imbalance_ratio, seed=config.seed
    )
    return _in_memory(config, train, None, test)


def _fashion_mnist_lt(config) -> Splits:
    train, validation, test = in_memory.load_fashion_mnist_longtail(
        imbalance_ratio=config.data.imbalance_ratio,
        seed=config.seed,
        idx_dir=config.data.fashion_mnist_dir or None,
        **_tfds_kwargs(config),
    )
    return _in_memory(config, train, validation, test)


def _multilabel_digits(config) -> Splits:
    train, test = in_memory.load_multilabel_digits(
        num_train=config.data.multilabel_num_train,
        num_test=config.data.multilabel_num_test,
        imbalance_ratio=config.data.imbalance_ratio,
        seed=config.seed,
    )
    return _in_memory(config, train, None, test)


def _cifar(name, config) -> Splits:
    train, test = (
        in_memory.load_tfds_image_classification(name, split=split, **_tfds_kwargs(config))
        for split in ("train", "test")
    )
    train = in_memory.make_longtail(train, config.data.imbalance_ratio, seed=config.seed)
    return _in_memory(config, train, None, test)


def _voc2007(config) -> Splits:
    train, test = (
        in_memory.load_tfds_voc(
            split=split, image_size=config.data.image_size, **_tfds_kwargs(config)
        )
        for split in ("trainval", "test")
    )
    return _in_memory(config, train, None, test)


def _streamed(
    tfds_name: str,
    splits: tuple[str, str | None, str],
    config,
    *,
    multilabel: bool = False,
    crop: bool = True,
    manual_dir: bool = False,
) -> Splits:
    """``(train, validation, test)`` streamed from the tfds splits named in ``splits``."""

    def open_split(split, train):
        if split is None:
            return None
        source, features, counts_cache = tfds_splits.open_tfds_split(
            tfds_name, split, manual_dir=manual_dir, **_tfds_kwargs(config)
        )
        label = features["objects"]["label"] if multilabel else features["label"]
        display = tfds_name.replace("/", "")
        return tfds_splits.TfdsSplit(
            source=source,
            name=display if train else f"{display}_{split}",
            num_classes=label.num_classes,
            image_size=config.data.image_size,
            is_multilabel=multilabel,
            crop=crop,
            augment=train and config.data.augment,
            counts_cache=counts_cache,
        )

    train, validation, test = splits
    return open_split(train, True), open_split(validation, False), open_split(test, False)


def _streamed_entry(tfds_name: str, splits, *, multilabel: bool = False, **options) -> DatasetEntry:
    """The entry of a data set streamed from tfds (``options``: ``crop``, ``manual_dir``)."""
    build = functools.partial(_streamed, tfds_name, splits, multilabel=multilabel, **options)
    return DatasetEntry(build, multilabel=multilabel)


_REGISTRY: dict[str, DatasetEntry] = {
    "digits_lt": DatasetEntry(_digits_lt),
    "fashion_mnist_lt": DatasetEntry(_fashion_mnist_lt),
    "multilabel_digits": DatasetEntry(_multilabel_digits, multilabel=True),
    "cifar10": DatasetEntry(functools.partial(_cifar, "cifar10")),
    "cifar100": DatasetEntry(functools.partial(_cifar, "cifar100")),
    "voc2007": DatasetEntry(_voc2007, multilabel=True),
    "imagenet_lt": _streamed_entry("imagenet_lt", ("train", "validation", "test"), manual_dir=True),
    "inaturalist2018": _streamed_entry("i_naturalist2018", ("train", None, "validation")),
    # ASL's recipe: the whole image resized, no crop.
    "coco2017": _streamed_entry(
        "coco/2017", ("train", None, "validation"), multilabel=True, crop=False
    ),
}

NAMES = tuple(_REGISTRY)


def _entry(name: str) -> DatasetEntry:
    return _REGISTRY[name]  # a known name: experiments.config.names checks it, from NAMES


def is_multilabel(name: str) -> bool:
    """Whether the data set ``name`` has multi-hot labels."""
    return _entry(name).multilabel


def load(config: ml_collections.ConfigDict) -> Splits:
    """The :class:`Splits` of ``config.data.name``; ``validation`` may be None.

    Hyperparameters are chosen on ``validation`` where there is one, never on ``test``.

    Raises:
      in_memory.DatasetNotPreparedError: the data set is not on disk (the message
        names the command that prepares it).
    """
    return Splits(*_entry(config.data.name).build(config))

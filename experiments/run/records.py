"""A config as the record a run keeps: flat ``{dotted.key: value}`` items and canonical JSON.

Standard library only; a config is anything with ``to_dict()`` (an ``ml_collections``
``ConfigDict``) or a mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# Keys that never change a run's numbers, so a run may be resumed with other values: how
# batches are made (never what they contain: experiments/data/pipeline.py), where the data
# is read from, how processes find each other, and how many checkpoints are kept and how
# often. They are also left out of the default work directory's name.
# run.log_every_steps is not one: results.json's loss-variation median is over its windows.
RESUME_TOLERANT_KEYS = (
    "data.workers",
    "data.threads",
    "data.prefetch_batches",
    "data.fashion_mnist_dir",
    "data.data_dir",
    "data.download",
    "run.distributed",
    "run.keep_checkpoints",
    "run.checkpoint_every_steps",
)


def _as_dict(config) -> Mapping:
    return config.to_dict() if hasattr(config, "to_dict") else config


def flat_items(config, prefix: str = "") -> dict:
    """The leaves of a (nested) config as ``{dotted.key: value}`` (``optim.batch_size``)."""
    items = {}
    for key, value in _as_dict(config).items():
        if isinstance(value, Mapping) or hasattr(value, "to_dict"):
            items.update(flat_items(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def to_json(config) -> str:
    """The config as canonical JSON (sorted keys; tuples as lists)."""
    return json.dumps(_as_dict(config), sort_keys=True, indent=2)


def canonical_items(config) -> dict:
    """``{dotted.key: value}`` of a config as its JSON record holds it (tuples as lists)."""
    return flat_items(json.loads(json.dumps(_as_dict(config), sort_keys=True)))


DATA_KEY = "data_fingerprint"  # config.json's record of the data, beside the config's keys


def config_of_record(record: Mapping) -> dict:
    """A ``config.json`` record without the data fingerprint: the config alone."""
    return {k: v for k, v in record.items() if k != DATA_KEY}


def _short(value) -> str:
    if isinstance(value, str) and len(value) == 64:  # a sha256
        return value[:8]
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def data_differences(previous: Mapping | None, current: Mapping | None) -> list[str]:
    """What differs between two data fingerprints (:mod:`experiments.data.fingerprint`),
    as ``split field old -> new`` texts (digests shortened to 8 hex digits); ``[]`` when
    either is unknown (a run recorded before fingerprints)."""
    if not isinstance(previous, Mapping) or not isinstance(current, Mapping):
        return []
    differences = []
    for split in sorted(set(previous) | set(current)):
        old, new = previous.get(split), current.get(split)
        if old == new:
            continue
        if not isinstance(old, Mapping) or not isinstance(new, Mapping):
            differences.append(f"{split}: {_short(old)} -> {_short(new)}")
            continue
        for field in sorted(set(old) | set(new)):
            if old.get(field) != new.get(field):
                what = f"{split} {field}"
                differences.append(f"{what} {_short(old.get(field))} -> {_short(new.get(field))}")
    return differences

"""``validate_config``: what a locked config cannot know, checked once before a run writes.

The base config is a locked ``ConfigDict`` (:mod:`experiments.config.base`): merging a
run's config into it refuses unknown fields and values of the wrong type. Here, only what
a lock cannot know: finite numbers, ranges, the allowed names (one table,
:mod:`experiments.config.names`) and rules between fields. A mistake is one
:class:`~experiments.run.errors.UserError` sentence naming the field; options that have
no effect on the run are returned as notes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import ml_collections

from experiments import methods
from experiments.config import base as base_lib
from experiments.config import names
from experiments.data import registry as data_registry
from experiments.run.errors import UserError
from experiments.run.records import flat_items

# (config field, value) -> the fields only that choice uses.
_FIELDS_USED_ONLY_BY = {
    ("optim.schedule", "multistep"): ("optim.milestones", "optim.decay_factor"),
    ("optim.name", "sgd"): ("optim.momentum", "optim.nesterov"),
}
_CHOICE_NAMES = {"optim.schedule": "schedule", "optim.name": "optimizer"}  # as notes say them

_POSITIVE_FIELDS = (
    "optim.num_epochs",
    "optim.batch_size",
    "run.eval_batch_size",
    "run.log_every_steps",
    "run.checkpoint_every_steps",
    "run.keep_checkpoints",
    "run.eval_every_epochs",
    "data.image_size",
    "data.multilabel_num_train",
    "data.multilabel_num_test",
)
_NON_NEGATIVE_FIELDS = (
    "seed",  # numpy's generators refuse negative seeds
    "data.workers",
    "data.threads",
    "data.prefetch_batches",
)
# JAX's PRNG key takes a signed 64-bit seed (jax.random.key(2**63) overflows).
SEED_LIMIT = 2**63


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(default) -> str:
    """What a field of this default must hold, in words."""
    if isinstance(default, bool):
        return "True or False"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a finite number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, Sequence) and default and all(map(_is_number, default)):
        return f"a sequence of finite numbers, e.g. {tuple(default)}"
    return "a tuple"


def check_values(config: ml_collections.ConfigDict) -> None:
    """Every field is a base field and holds a value of its type; numbers are finite.

    The types are the locked base config's own (a merge into it refuses a wrong one);
    the lock lets through ``True`` for an integer, NaN and infinities, and a sequence of
    non-numbers: those are refused here.

    Raises:
      UserError: naming the first field that is wrong.
    """
    locked = base_lib.get_base_config()
    base, given = flat_items(locked), flat_items(config)
    unknown, missing = sorted(set(given) - set(base)), sorted(set(base) - set(given))
    if unknown:
        new = names.renamed(unknown[0])
        hint = f"it is now config.{new}" if new else "a misspelt name in the config file?"
        raise UserError(
            f"config.{unknown[0]} is not a config field ({hint}); --help lists every field."
        )
    if missing:
        raise UserError(
            f"config.{missing[0]} is missing (a config starts from base.get_base_config())."
        )
    for key, default in base.items():
        value = given[key]
        *blocks, field = key.split(".")
        block = locked
        for name in blocks:
            block = block[name]
        try:
            block[field] = value  # the lock's type check
            ok = not (isinstance(value, bool) and not isinstance(default, bool))
        except TypeError:
            ok = False
        if ok and isinstance(default, float):
            ok = math.isfinite(value)
        elif ok and isinstance(default, Sequence) and default and all(map(_is_number, default)):
            ok = all(_is_number(v) and math.isfinite(v) for v in value)
        if not ok:
            raise UserError(f"config.{key} must be {_kind(default)}; got {value!r}.")


def validate_config(
    config: ml_collections.ConfigDict, *, reference: ml_collections.ConfigDict | None = None
) -> list[str]:
    """Checks the whole config before anything is written; returns notes on ignored options.

    Notes: a field that only another choice of schedule or optimizer uses, set away from
    the base config's value (``experiments/config/base.py``); with ``reference``, also
    every field of a method block that the chosen method does not read, set away from
    its value in ``reference``.

    Args:
      config: the run's config.
      reference: the config the run was made from before command-line overrides (its
        file's ``get_config()``). A config file may set the blocks of the methods it is
        meant to be switched to (e.g. ``ldam.drw_start_epoch``), so the blocks are
        compared with it, not with the base config; None: no notes on method blocks.

    Raises:
      UserError: naming the first field that is wrong.
    """

    def fail(message):
        raise UserError(message)

    check_values(config)
    names.check_names(config)
    data, method = config.data.name, config.method.name
    multilabel = data_registry.is_multilabel(data)
    if multilabel != methods.is_multilabel(method):
        kind = "multi-label" if multilabel else "single-label"
        fail(f"config.method.name {method!r} does not apply to the {kind} {data}.")
    for field in _POSITIVE_FIELDS:
        if names.get(config, field) < 1:
            fail(f"config.{field} must be >= 1; got {names.get(config, field)}.")
    for field in _NON_NEGATIVE_FIELDS:
        if names.get(config, field) < 0:
            fail(f"config.{field} must be >= 0; got {names.get(config, field)}.")
    run, optim = config.run, config.optim
    if config.seed >= SEED_LIMIT:
        fail(f"config.seed must be < 2**63 (JAX's PRNG key holds 64 bits); got {config.seed}.")
    if not 0 <= optim.momentum < 1:
        fail(f"config.optim.momentum must be in [0, 1); got {optim.momentum}.")
    if run.checkpoint_every_steps % run.log_every_steps:
        fail(
            "config.run.checkpoint_every_steps must be a multiple of config.run.log_every_steps "
            f"(so a checkpoint never splits a logging window); got "
            f"{run.checkpoint_every_steps} and {run.log_every_steps}."
        )
    for field in ("optim.batch_size", "run.eval_batch_size"):
        if names.get(config, field) % jax.device_count():
            fail(
                f"config.{field} ({names.get(config, field)}) must be divisible by the number of "
                f"devices ({jax.device_count()})."
            )
    if optim.learning_rate <= 0 or optim.weight_decay < 0:
        fail("config.optim.learning_rate must be > 0 and config.optim.weight_decay >= 0.")
    if optim.warmup_epochs < 0:
        fail(f"config.optim.warmup_epochs must be >= 0; got {optim.warmup_epochs}.")
    if optim.decay_factor <= 0:
        fail(f"config.optim.decay_factor must be > 0; got {optim.decay_factor}.")
    if optim.schedule == "onecycle" and not 0 < optim.warmup_epochs < optim.num_epochs:
        fail(
            "config.optim.schedule = 'onecycle' rises over config.optim.warmup_epochs, which "
            f"must lie strictly between 0 and num_epochs = {optim.num_epochs}; got "
            f"{optim.warmup_epochs}."
        )
    if optim.schedule == "multistep" and any(m <= 0 for m in optim.milestones):
        fail(f"config.optim.milestones must be > 0; got {tuple(optim.milestones)}.")
    if config.data.imbalance_ratio < 1:
        fail(f"config.data.imbalance_ratio must be >= 1; got {config.data.imbalance_ratio}.")
    try:
        methods.check_blocks(config)
    except ValueError as error:
        fail(str(error))
    notes = _schedule_notes(optim) + _ignored_field_notes(config, reference)
    if method == "lpl_varied" and config.lpl.split_rule == "mean":
        notes.append(
            "method lpl_varied with config.lpl.split_rule = 'mean' (the paper's LPL with "
            "varied bounds on balanced data) is the run of lpl_mean: it trains lpl_mean."
        )
    return notes


def _schedule_notes(optim: ml_collections.ConfigDict) -> list[str]:
    notes = []
    if optim.warmup_epochs > optim.num_epochs:
        notes.append(
            f"config.optim.warmup_epochs = {optim.warmup_epochs} > num_epochs: the learning "
            "rate never reaches config.optim.learning_rate."
        )
    if optim.schedule == "multistep":
        late = [m for m in optim.milestones if m >= optim.num_epochs]
        if late:
            notes.append(
                f"config.optim.milestones {late} lie beyond num_epochs = {optim.num_epochs}."
            )
    return notes


def _ignored_field_notes(config, reference) -> list[str]:
    """Fields the run does not use, set away from their defaults."""
    defaults = base_lib.get_base_config()
    notes = []
    for (option, value), fields in _FIELDS_USED_ONLY_BY.items():
        chosen = names.get(config, option)
        if chosen != value:
            notes += [
                f"config.{f} = {names.get(config, f)!r} is ignored by the {chosen} "
                f"{_CHOICE_NAMES[option]}."
                for f in fields
                if names.get(config, f) != names.get(defaults, f)
            ]
    if reference is None:
        return notes
    method = config.method.name
    read = methods.entry(method).blocks
    for block in methods.BLOCK_NAMES:
        if block in read:
            continue
        given = flat_items(config[block], f"{block}.")
        before = flat_items(reference[block], f"{block}.")
        notes += [
            f"config.{key} = {value!r} is ignored: method {method} does not read config.{block}."
            for key, value in given.items()
            if value != before.get(key)
        ]
    return notes

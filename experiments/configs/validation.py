"""``validate_config``: the whole config checked before a run writes anything.

Not a config file: the checks that sit beside the configs. Every field is checked
against the base config (``experiments/configs/common.py``): it exists there and holds
the same type; every number is finite (NaN and infinities are refused: ``x <= 0`` is
False for NaN); every sequence holds numbers. Every name is looked up in its registry
(methods, data sets, models, optimizers, schedules, split rules); a mistake is one
:class:`~experiments.workdir.UserError` sentence naming the field, and options that
have no effect on the run are returned as notes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import ml_collections

from experiments import configuration, methods, models, optimizers
from experiments import workdir as workdir_lib
from experiments.configs import common
from experiments.data import registry as data_registry

MODEL_DTYPES = ("float32", "bfloat16")

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
    "optim.momentum",
)


def _enumerated_fields() -> dict[str, tuple[str, ...]]:
    """Every field that names one of a fixed set of choices, with the set."""
    return {
        "data.name": data_registry.NAMES,
        "method.name": methods.NAMES,
        "model.name": tuple(models.MODELS),
        "model.dtype": MODEL_DTYPES,
        "optim.name": optimizers.OPTIMIZERS,
        "optim.schedule": optimizers.SCHEDULES,
        "lpl.split_rule": methods.SPLIT_RULES,
    }


def _get(config: ml_collections.ConfigDict, field: str):
    *blocks, name = field.split(".")
    for block in blocks:
        config = config[block]
    return config[name]


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_values(config: ml_collections.ConfigDict) -> None:
    """Every field exists in the base config and holds a value of its type; numbers are
    finite, sequences hold finite numbers.

    Raises:
      workdir_lib.UserError: naming the first field that is wrong.
    """
    base = configuration.flat_items(common.get_base_config())
    given = configuration.flat_items(config)
    unknown, missing = sorted(set(given) - set(base)), sorted(set(base) - set(given))
    if unknown:
        raise workdir_lib.UserError(
            f"config.{unknown[0]} is not a config field (a misspelt name in the config "
            "file?); --help lists every field."
        )
    if missing:
        raise workdir_lib.UserError(
            f"config.{missing[0]} is missing (a config starts from common.get_base_config())."
        )
    for key, default in base.items():
        value = given[key]
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "True or False"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, kind = _is_number(value) and math.isfinite(value), "a finite number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        elif isinstance(default, Sequence) and default and all(map(_is_number, default)):
            ok = not isinstance(value, str | bytes) and isinstance(value, Sequence)
            ok = ok and all(_is_number(v) and math.isfinite(v) for v in value)
            kind = f"a sequence of finite numbers, e.g. {tuple(default)}"
        elif isinstance(default, Sequence):  # of strings, or empty
            ok, kind = not isinstance(value, str | bytes) and isinstance(value, Sequence), "a tuple"
        else:  # a type the base config does not use (e.g. None): nothing to check
            continue
        if not ok:
            raise workdir_lib.UserError(f"config.{key} must be {kind}; got {value!r}.")


def validate_config(
    config: ml_collections.ConfigDict, *, reference: ml_collections.ConfigDict | None = None
) -> list[str]:
    """Checks the whole config before anything is written; returns notes on ignored options.

    Notes: a field that only another choice of schedule or optimizer uses, set away from
    the base config's value (``experiments/configs/common.py``); with ``reference``, also
    every field of a method block that the chosen method does not read, set away from
    its value in ``reference``.

    Args:
      config: the run's config.
      reference: the config the run was made from before command-line overrides (its
        file's ``get_config()``). A config file may set the blocks of the methods it is
        meant to be switched to (e.g. ``ldam.drw_start_epoch``), so the blocks are
        compared with it, not with the base config; None: no notes on method blocks.

    Raises:
      workdir_lib.UserError: naming the first field that is wrong.
    """

    def fail(message):
        raise workdir_lib.UserError(message)

    check_values(config)
    data, method = config.data.name, config.method.name
    if data not in data_registry.NAMES:
        fail(f"config.data.name {data!r} is unknown; valid: {', '.join(data_registry.NAMES)}.")
    if method not in methods.NAMES:
        fail(f"config.method.name {method!r} is unknown; valid: {', '.join(methods.NAMES)}.")
    multilabel = data_registry.is_multilabel(data)
    if multilabel != methods.is_multilabel(method):
        kind = "multi-label" if multilabel else "single-label"
        fail(f"config.method.name {method!r} does not apply to the {kind} {data}.")
    if config.model.name not in models.MODELS:
        valid = ", ".join(models.MODELS)
        fail(f"config.model.name {config.model.name!r} is unknown; valid: {valid}.")
    if config.model.dtype not in MODEL_DTYPES:
        valid = ", ".join(MODEL_DTYPES)
        fail(f"config.model.dtype must be one of {valid}; got {config.model.dtype!r}.")
    for field in _POSITIVE_FIELDS:
        if _get(config, field) < 1:
            fail(f"config.{field} must be >= 1; got {_get(config, field)}.")
    for field in _NON_NEGATIVE_FIELDS:
        if _get(config, field) < 0:
            fail(f"config.{field} must be >= 0; got {_get(config, field)}.")
    run, optim = config.run, config.optim
    if run.checkpoint_every_steps % run.log_every_steps:
        fail(
            "config.run.checkpoint_every_steps must be a multiple of config.run.log_every_steps "
            f"(so a checkpoint never splits a logging window); got "
            f"{run.checkpoint_every_steps} and {run.log_every_steps}."
        )
    for field in ("optim.batch_size", "run.eval_batch_size"):
        if _get(config, field) % jax.device_count():
            fail(
                f"config.{field} ({_get(config, field)}) must be divisible by the number of "
                f"devices ({jax.device_count()})."
            )
    if optim.learning_rate <= 0 or optim.weight_decay < 0:
        fail("config.optim.learning_rate must be > 0 and config.optim.weight_decay >= 0.")
    if optim.warmup_epochs < 0:
        fail(f"config.optim.warmup_epochs must be >= 0; got {optim.warmup_epochs}.")
    if optim.decay_factor <= 0:
        fail(f"config.optim.decay_factor must be > 0; got {optim.decay_factor}.")
    if optim.name not in optimizers.OPTIMIZERS:
        valid = ", ".join(optimizers.OPTIMIZERS)
        fail(f"config.optim.name must be one of {valid}; got {optim.name!r}.")
    if optim.schedule not in optimizers.SCHEDULES:
        fail(
            "config.optim.schedule must be multistep, cosine or constant, or onecycle; "
            f"got {optim.schedule!r}."
        )
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
    for field, valid in _enumerated_fields().items():  # the rest, whatever the method
        if _get(config, field) not in valid:
            fail(f"config.{field} must be one of {', '.join(valid)}; got {_get(config, field)!r}.")
    try:
        methods.check_blocks(config)
    except ValueError as error:
        fail(str(error))
    return _schedule_notes(optim) + _ignored_field_notes(config, reference)


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
    defaults = common.get_base_config()
    notes = []
    for (option, value), fields in _FIELDS_USED_ONLY_BY.items():
        chosen = _get(config, option)
        if chosen != value:
            notes += [
                f"config.{f} = {_get(config, f)!r} is ignored by the {chosen} "
                f"{_CHOICE_NAMES[option]}."
                for f in fields
                if _get(config, f) != _get(defaults, f)
            ]
    if reference is None:
        return notes
    method = config.method.name
    read = methods.entry(method).blocks
    for block in methods.BLOCK_NAMES:
        if block in read:
            continue
        given = configuration.flat_items(config[block], f"{block}.")
        before = configuration.flat_items(reference[block], f"{block}.")
        notes += [
            f"config.{key} = {value!r} is ignored: method {method} does not read config.{block}."
            for key, value in given.items()
            if value != before.get(key)
        ]
    return notes

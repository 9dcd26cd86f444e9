"""The config's names: one table of allowed values, built from the registries, and renames.

Every field that names a choice is checked here, once, against the list its registry
keeps (methods and their blocks, data sets, models, optimizers, schedules); nothing else
re-checks a name. Keys and method names of older releases are mapped to their new ones,
so that an old command either keeps working or fails in one line naming the new key.
"""

from __future__ import annotations

from experiments import methods, models, optimizers
from experiments.data import registry as data_registry
from experiments.run.errors import UserError

MODEL_DTYPES = ("float32", "bfloat16")

# Keys of lpjax 0.1 (flat) and their nested successors: an old key fails in one line
# naming the new one.
RENAMED_KEYS = {
    "method": "method.name",
    "dataset": "data.name",
    "imbalance_ratio": "data.imbalance_ratio",
    "model": "model.name",
    "num_epochs": "optim.num_epochs",
    "batch_size": "optim.batch_size",
    "learning_rate": "optim.learning_rate",
    "weight_decay": "optim.weight_decay",
    "la_tau": "la.tau",
    "isda_lambda": "isda.lambda_0",
    "data_workers": "data.workers",
    "lpl.split": "lpl.split_rule",
}


def allowed_values() -> dict[str, tuple[str, ...]]:
    """``{config field: its allowed values}`` for every field that names a choice."""
    return {
        "data.name": data_registry.NAMES,
        "method.name": (*methods.NAMES, *methods.ALIASES),
        "model.name": tuple(models.MODELS),
        "model.dtype": MODEL_DTYPES,
        "optim.name": optimizers.OPTIMIZERS,
        "optim.schedule": optimizers.SCHEDULES,
        **methods.ALLOWED_VALUES,
    }


def get(config, field: str):
    """``config``'s value of the dotted ``field`` (``"optim.name"``)."""
    *blocks, name = field.split(".")
    for block in blocks:
        config = config[block]
    return config[name]


def check_names(config) -> None:
    """Every field that names a choice holds one of its allowed values.

    Raises:
      UserError: naming the field, its allowed values and the value given.
    """
    for field, valid in allowed_values().items():
        value = get(config, field)
        if value not in valid:
            raise UserError(f"config.{field} must be one of {', '.join(valid)}; got {value!r}.")


def renamed(key: str) -> str | None:
    """The new name of an old config key (a leaf name alone is matched too), else None."""
    if key in RENAMED_KEYS:
        return RENAMED_KEYS[key]
    leaves = {old.rpartition(".")[2]: new for old, new in RENAMED_KEYS.items() if "." in old}
    return leaves.get(key)

"""The trainer built on lpjax: ``python -m experiments.train`` (experiments/README.md).

Rooms: :mod:`~experiments.main` (the command line), :mod:`~experiments.train` (the
loop), :mod:`~experiments.step` (train state and step), :mod:`~experiments.models`,
:mod:`~experiments.optimizers`, :mod:`~experiments.metrics`, :mod:`~experiments.plots`,
:mod:`experiments.methods`, :mod:`experiments.data`, :mod:`experiments.config`,
:mod:`experiments.run` (work directory, lock, console, metric writer) and
``experiments/configs/`` (config files only).
"""

import importlib
import warnings

# Modules of earlier releases: old name -> where it lives now.
_MOVED = {
    "configuration": "experiments.config.command_line",
    "console": "experiments.run.console",
    "metric_writer": "experiments.run.metric_writer",
    "train_step": "experiments.step",
    "workdir": "experiments.run.workdir",
}


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(
            f"experiments.{name} is deprecated; use {_MOVED[name]}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")

"""The trainer built on lpjax: ``python -m experiments.train`` (experiments/README.md).

Rooms: :mod:`~experiments.main` (the command line), :mod:`~experiments.train` (the
loop), :mod:`~experiments.step` (train state and step), :mod:`~experiments.models`,
:mod:`~experiments.optimizers`, :mod:`~experiments.metrics`, :mod:`~experiments.plots`,
:mod:`experiments.methods`, :mod:`experiments.data`, :mod:`experiments.config`,
:mod:`experiments.run` (work directory, lock, console, metric writer) and
``experiments/configs/`` (config files only).
"""

import importlib
import runpy
import warnings

# Modules of earlier releases: old name -> where it lives now.
_MOVED = {
    "configuration": "experiments.config.command_line",
    "console": "experiments.run.console",
    "metric_writer": "experiments.run.metric_writer",
    "train_step": "experiments.step",
    "workdir": "experiments.run.workdir",
}


def moved_modules(package: str, moved: dict[str, str]):
    """A module ``__getattr__`` for ``package``: ``package.OLD`` imports ``moved[OLD]``, with a
    ``DeprecationWarning`` naming it."""

    def __getattr__(name: str):
        if name in moved:
            warnings.warn(
                f"{package}.{name} is deprecated; use {moved[name]}.",
                DeprecationWarning,
                stacklevel=2,
            )
            return importlib.import_module(moved[name])
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def forward_module(old: str, new: str, namespace: dict) -> None:
    """A module that moved: ``python -m OLD`` runs ``NEW`` (with a ``DeprecationWarning``),
    and importing ``OLD`` gives ``NEW``'s public names."""
    if namespace["__name__"] == "__main__":
        warnings.warn(f"{old} is deprecated; use {new}.", DeprecationWarning, stacklevel=2)
        runpy.run_module(new, run_name="__main__", alter_sys=True)
        return
    module = importlib.import_module(new)
    namespace.update({k: v for k, v in vars(module).items() if not k.startswith("__")})


__getattr__ = moved_modules(__name__, _MOVED)

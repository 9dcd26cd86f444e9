"""The shipped experiment configs: every module here is a config file with ``get_config()``.

``--config NAME`` names one (``experiments.config.command_line``). The code that builds
them lives in :mod:`experiments.config`: the base config (``experiments.config.base``),
the shared recipes (``experiments.config.recipes``) and the rules
(``experiments.config.rules``).
"""

import importlib
import warnings

# Modules that lived here before the config code moved to experiments.config.
_MOVED = {
    "common": "experiments.config.base",
    "recipes": "experiments.config.recipes",
    "validation": "experiments.config.rules",
}


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(
            f"experiments.configs.{name} is deprecated; use {_MOVED[name]}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'experiments.configs' has no attribute {name!r}")

"""The shipped experiment configs: every module here is a config file with ``get_config()``.

``--config NAME`` names one (``experiments.config.command_line``). The code that builds
them lives in :mod:`experiments.config`: the base config (``experiments.config.base``),
the shared recipes (``experiments.config.recipes``) and the rules
(``experiments.config.rules``).
"""

from experiments import moved_modules

# Modules that lived here before the config code moved to experiments.config.
__getattr__ = moved_modules(
    __name__,
    {
        "common": "experiments.config.base",
        "recipes": "experiments.config.recipes",
        "validation": "experiments.config.rules",
    },
)

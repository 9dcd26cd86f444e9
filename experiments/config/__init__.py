"""The config: one locked ``ConfigDict`` and what a lock cannot check.

* :mod:`~experiments.config.base` -- ``get_base_config()``: every field, its default and
  comment, locked (no field can be added, each keeps its type);
* :mod:`~experiments.config.names` -- one table of the allowed names, built from the
  registries (methods, data sets, models, optimizers, schedules), and renamed keys;
* :mod:`~experiments.config.rules` -- ``validate_config``: finite numbers, ranges and
  rules between fields, each checked once; notes on options a run ignores;
* :mod:`~experiments.config.command_line` -- ``--config FILE`` and ``--config.KEY=VALUE``
  (absl's ``config_flags``), the default work directory;
* :mod:`~experiments.config.recipes` -- the paper's training recipes, which the config
  files in ``experiments/configs/`` (config files only) are made of.
"""

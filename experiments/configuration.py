"""Experiment configs: ``get_config()`` files with ``--config.KEY=VALUE`` overrides.

The command line is parsed by ``ml_collections.config_flags`` (absl), as in flax's
examples: ``--config PATH`` names a config file, ``--config.lpl.epsilon=0.2`` overrides a
field (parsed to the field's type), ``--workdir DIR`` names the work directory. Errors
become one ``ValueError`` sentence naming the bad argument (the trainer prints it as
``error: ...``).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import ml_collections
from absl import flags
from ml_collections import config_flags

DEFAULT_CONFIG = pathlib.Path(__file__).parent / "configs" / "default.py"


def load_config(path: str | pathlib.Path | None = None) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of the config file at ``path`` (the default config if None)."""
    path = pathlib.Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    spec = importlib.util.spec_from_file_location(f"_lpjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"Config file {str(path)!r} defines no get_config().")
    return module.get_config()


def flat_items(config: Mapping | ml_collections.ConfigDict, prefix: str = "") -> dict:
    """The leaves of a (nested) config as ``{dotted.key: value}`` (``optim.batch_size``)."""
    items = {}
    for key, value in config.items():
        if isinstance(value, Mapping | ml_collections.ConfigDict):
            items.update(flat_items(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


class CommandLine(NamedTuple):
    """What the command line asks for."""

    config: ml_collections.ConfigDict  # the config file's, with the overrides applied
    workdir: pathlib.Path | None  # --workdir, if given
    name: str  # the config file's stem (default without --config)
    file_config: ml_collections.ConfigDict  # the config file's, without the overrides


def parse_command_line(argv: Sequence[str]) -> CommandLine:
    """The config, work directory and config name from ``--config``, ``--workdir`` and
    ``--config.KEY=VALUE`` overrides."""
    argv = list(argv)
    config_path = _value_of("--config", argv)
    file_config = load_config(config_path)  # a clear error for a missing file or get_config()

    def define(flag_values: flags.FlagValues, sys_argv: list[str]):
        config_flags.DEFINE_config_file(
            "config",
            str(DEFAULT_CONFIG),
            "Experiment config file (a get_config()); --config.KEY=VALUE overrides a field.",
            flag_values=flag_values,
            sys_argv=sys_argv,
        )
        flags.DEFINE_string(
            "workdir",
            None,
            "Work directory (default: workdirs/<config>_<method>_seed<seed>).",
            flag_values=flag_values,
        )

    flag_values = _parse(define, argv, lambda: file_config)
    workdir = flag_values.workdir
    name = pathlib.Path(config_path).stem if config_path else DEFAULT_CONFIG.stem
    return CommandLine(
        flag_values.config, pathlib.Path(workdir) if workdir else None, name, file_config
    )


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, str]
) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``{dotted.key: text}`` overrides, parsed as on the command line."""
    argv = [f"--config.{key}={value}" for key, value in overrides.items()]

    def define(flag_values: flags.FlagValues, sys_argv: list[str]):
        config_flags.DEFINE_config_dict(
            "config",
            ml_collections.ConfigDict(config.to_dict()),
            flag_values=flag_values,
            sys_argv=sys_argv,
        )

    return _parse(define, argv, lambda: config).config


def _value_of(name: str, argv: list[str]) -> str | None:
    """The value of ``name`` in ``argv`` (``--name=value`` or ``--name value``), else None."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return arg.partition("=")[2]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _parse(define, argv: list[str], config_fn) -> flags.FlagValues:
    """Flags made by ``define(flag_values, sys_argv)``, parsed from ``argv``.

    absl's errors (raised while the overrides are defined or parsed) become one
    ``ValueError`` naming the bad argument.
    """
    flag_values = flags.FlagValues()
    sys_argv = ["train", *argv]
    try:
        define(flag_values, sys_argv)
        flag_values(sys_argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(_explain(argv, config_fn(), error)) from None
    return flag_values


def _explain(argv: list[str], config: ml_collections.ConfigDict, error: Exception) -> str:
    """A sentence naming the argument absl refused: an unknown key, value or flag."""
    valid = flat_items(config)
    for arg in argv:
        name, has_value, text = arg.partition("=")
        if not name.startswith("--config."):
            continue
        key = name[len("--config.") :]
        if key not in valid:
            return f"Unknown config key {key!r}. Valid keys: {', '.join(sorted(valid))}."
        if has_value and key in str(error):
            kind = type(valid[key]).__name__
            return f"Cannot parse {text!r} for config key {key!r} (a {kind}): {error}"
    for arg in argv:
        name = arg.partition("=")[0]
        if name.startswith("-") and name not in ("--config", "--workdir"):
            if not name.startswith("--config."):
                return (
                    f"Unrecognised argument {arg!r}; expected --config PATH, --workdir DIR or "
                    "--config.KEY=VALUE."
                )
    return f"Cannot parse the command line {' '.join(argv)!r}: {error}"


def to_json(config: ml_collections.ConfigDict) -> str:
    """The config as canonical JSON (sorted keys; tuples as lists)."""
    return json.dumps(config.to_dict(), sort_keys=True, indent=2)

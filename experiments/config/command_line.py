"""The command line's config: ``get_config()`` files with ``--config.KEY=VALUE`` overrides.

The command line is parsed by ``ml_collections.config_flags`` (absl), as in flax's
examples: ``--config PATH`` names a config file, ``--config.lpl.epsilon=0.2`` overrides a
field (parsed to the field's type), ``--workdir DIR`` names the work directory. Errors
become one ``ValueError`` sentence naming the bad argument (the trainer prints it as
``error: ...``).

A relative ``--config`` path is read from the current directory; a bare name (``--config
fashion_mnist_lt_r100``) or a path under ``experiments/configs/`` that is not there names
a config shipped with the package, so the trainer runs from any directory.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import ml_collections
from absl import flags
from ml_collections import config_flags

from experiments.config import names
from experiments.run.errors import one_line
from experiments.run.records import (  # noqa: F401 - part of this module's interface
    RESUME_TOLERANT_KEYS,
    canonical_items,
    flat_items,
    to_json,
)

CONFIG_DIR = pathlib.Path(__file__).parent.parent / "configs"  # config files only
DEFAULT_CONFIG = CONFIG_DIR / "default.py"


def shipped_configs() -> list[str]:
    """The names of the config files shipped in ``experiments/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")


def resolve_config_path(path: str | pathlib.Path) -> pathlib.Path:
    """``path`` if it is a file (relative to the current directory), else the shipped config
    it names (``NAME``, ``NAME.py`` or ``experiments/configs/NAME.py``), else an error."""
    path = pathlib.Path(path)
    if path.is_file():
        return path
    parent = path.parent.as_posix()
    if parent in (".", "configs", "experiments/configs") and path.stem != "__init__":
        shipped = CONFIG_DIR / f"{path.stem}.py"
        if path.suffix in ("", ".py") and shipped.is_file():
            return shipped
    raise FileNotFoundError(
        f"Config file {str(path)!r} does not exist (shipped configs, by name: "
        f"{', '.join(shipped_configs())})."
    )


def _run_config_file(path: pathlib.Path) -> object:
    """The value of the config file's ``get_config()``; a file that does not import, has
    no ``get_config``, raises or exits is one ``ValueError`` naming the file."""
    name = repr(str(path))
    spec = importlib.util.spec_from_file_location(f"_lpjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    stage = "importing it"
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ValueError(f"Config file {name} defines no get_config().")
        stage = "in get_config()"
        return module.get_config()
    except ValueError as error:
        if str(error).startswith("Config file "):
            raise
        return _config_file_error(name, stage, error)
    except SyntaxError as error:
        raise ValueError(
            f"Config file {name} does not parse: {error.msg} (line {error.lineno})."
        ) from None
    except SystemExit as error:
        raise ValueError(
            f"Config file {name} called sys.exit({error.code!r}) {stage}; a config file "
            "only defines get_config()."
        ) from None
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as error:  # noqa: BLE001 - a config file's own failure: one line
        return _config_file_error(name, stage, error)


def _config_file_error(name: str, stage: str, error: BaseException):
    if isinstance(error, AttributeError | KeyError):  # a field the locked base config lacks
        found = re.search(r'Key "([^"]+)" does not exist', str(error))
        if found:
            key = found.group(1)
            new = names.renamed(key)
            hint = f"it is now config.{new}" if new else "a misspelt name? --help lists every field"
            raise ValueError(
                f"Config file {name} sets {key!r}, which is not a config field ({hint})."
            ) from None
    if isinstance(error, TypeError) and stage == "in get_config()":  # a value of another type
        raise ValueError(f"Config file {name}: {one_line(error, 150)}") from None
    message = one_line(error, 120).rstrip(".")
    kind = type(error).__name__
    raise ValueError(f"Config file {name} raised {kind} {stage}: {message}.") from None


def load_config(path: str | pathlib.Path | None = None) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of the config file at ``path`` (the default config if None;
    a shipped config's name or ``experiments/configs/NAME.py`` from any directory).

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file does not import, defines no ``get_config``, raises or exits in
        it, or returns something other than an ``ml_collections.ConfigDict``.
    """
    path = resolve_config_path(path) if path else DEFAULT_CONFIG
    config = _run_config_file(path)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(
            f"Config file {str(path)!r}: get_config() returned {type(config).__name__}, not an "
            "ml_collections.ConfigDict (start from base.get_base_config())."
        )
    return config


class CommandLine(NamedTuple):
    """What the command line asks for."""

    config: ml_collections.ConfigDict  # the config file's, with the overrides applied
    workdir: pathlib.Path | None  # --workdir, if given
    name: str  # the config file's stem (default without --config)
    file_config: ml_collections.ConfigDict  # the config file's, without the overrides


def parse_command_line(argv: Sequence[str]) -> CommandLine:
    """The config, work directory and config name from ``--config``, ``--workdir`` and
    ``--config.KEY=VALUE`` overrides.

    Raises:
      ValueError: an unknown key or flag, a value that does not parse, or a positional
        argument (``python -m experiments.train CONFIG.py`` without ``--config``).
      FileNotFoundError: the config file does not exist.
    """
    argv = list(argv)
    given = _values_of("--config", argv)
    if len(given) > 1:
        raise ValueError(
            f"--config is given {len(given)} times ({', '.join(given)}); give one config file "
            "(and --config.KEY=VALUE overrides)."
        )
    config_path = _value_of("--config", argv)
    if config_path:  # absl reads the file again: give it the path that was found
        resolved = str(resolve_config_path(config_path))
        argv = _set_value_of("--config", resolved, argv)
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
            "Work directory (default: workdirs/<config>_<method>_seed<seed>[_<hash>]).",
            flag_values=flag_values,
        )

    flag_values, positional = _parse(define, argv, lambda: file_config)
    workdir = flag_values.workdir
    if positional:
        arg = positional[0]
        hint = (
            f"; to name a config file write --config {arg}"
            if arg.endswith(".py") or (CONFIG_DIR / f"{arg}.py").is_file()
            else " (expected --config PATH, --workdir DIR or --config.KEY=VALUE)"
        )
        raise ValueError(f"Unexpected argument {arg!r}{hint}.")
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

    return _parse(define, argv, lambda: config)[0].config


def default_workdir(parsed: CommandLine) -> pathlib.Path:
    """``workdirs/<config>_<method>_seed<seed>``, plus ``_<hash>`` when the overrides change
    anything else: the first 8 hex digits of the sha256 of the resolved config (as JSON,
    without :data:`RESUME_TOLERANT_KEYS`), so each distinct config gets its own directory,
    and the same command always finds it again."""
    config = parsed.config
    name = f"{parsed.name}_{config.method.name}_seed{config.seed}"
    ignored = {"method.name", "seed", *RESUME_TOLERANT_KEYS}
    resolved = {k: v for k, v in canonical_items(config).items() if k not in ignored}
    own = {k: v for k, v in canonical_items(parsed.file_config).items() if k not in ignored}
    if resolved != own:
        text = json.dumps(resolved, sort_keys=True)
        name += "_" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return pathlib.Path("workdirs") / name


def _set_value_of(name: str, value: str, argv: list[str]) -> list[str]:
    """``argv`` with the value of ``name`` replaced (both forms of :func:`_value_of`)."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            argv[i] = f"{name}={value}"
            return argv
        if arg == name and i + 1 < len(argv):
            argv[i + 1] = value
            return argv
    return argv


def _values_of(name: str, argv: list[str]) -> list[str]:
    """Every value of ``name`` in ``argv`` (both forms of :func:`_value_of`)."""
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            values.append(arg.partition("=")[2])
        elif arg == name and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def _value_of(name: str, argv: list[str]) -> str | None:
    """The value of ``name`` in ``argv`` (``--name=value`` or ``--name value``), else None."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return arg.partition("=")[2]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _parse(define, argv: list[str], config_fn) -> tuple[flags.FlagValues, list[str]]:
    """Flags made by ``define(flag_values, sys_argv)``, parsed from ``argv``, and the
    positional arguments left over.

    absl's errors (raised while the overrides are defined or parsed) become one
    ``ValueError`` naming the bad argument.
    """
    flag_values = flags.FlagValues()
    sys_argv = ["train", *argv]
    try:
        define(flag_values, sys_argv)
        positional = flag_values(sys_argv)[1:]
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(_explain(argv, config_fn(), error)) from None
    return flag_values, positional


def _nearest(key: str, valid) -> str:
    """The valid keys nearest to ``key`` (difflib), as a suggestion, and where the rest are."""
    near = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    if not near:  # the field's name in any block, or the block's fields
        field, block = key.rpartition(".")[2], key.partition(".")[0]
        near = difflib.get_close_matches(field, [k.rpartition(".")[2] for k in valid], n=3)
        near = [k for k in valid if k.rpartition(".")[2] in near][:3]
        near = near or [k for k in sorted(valid) if k.startswith(f"{block}.")][:3]
    hint = f"did you mean {' or '.join(near)}? " if near else ""
    return f"{hint}--help lists every key."


def _explain(argv: list[str], config: ml_collections.ConfigDict, error: Exception) -> str:
    """A sentence naming the argument absl refused: an unknown key, value or flag."""
    valid = flat_items(config)
    if "before a value for --config was specified" in str(error):
        return "--config PATH must come before the --config.KEY=VALUE overrides."
    for arg in argv:
        name, has_value, text = arg.partition("=")
        if not name.startswith("--config."):
            continue
        key = name[len("--config.") :]
        if key not in valid and names.renamed(key):
            return f"Unknown config key {key!r}: it is now {names.renamed(key)!r}."
        if key not in valid:
            return f"Unknown config key {key!r}; {_nearest(key, valid)}"
        if has_value and key in str(error):
            kind = type(valid[key]).__name__
            return f"Cannot parse {text!r} for config key {key!r} (a {kind}): {error}"
    for arg in argv:
        name = arg.partition("=")[0]
        if name.startswith("-") and name not in ("--config", "--workdir"):
            if not name.startswith("--config."):
                return (
                    f"Unrecognized argument {arg!r}; expected --config PATH, --workdir DIR or "
                    "--config.KEY=VALUE."
                )
    return f"Cannot parse the command line {' '.join(argv)!r}: {error}"

"""Experiment configs: load a ``get_config()`` file and apply ``--config.KEY=VALUE`` overrides."""

from __future__ import annotations

import ast
import importlib.util
import json
import pathlib
from collections.abc import Mapping

import ml_collections

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
    """The leaves of a (nested) config as ``{dotted.key: value}`` (``lpl.epsilon``)."""
    items = {}
    for key, value in config.items():
        if isinstance(value, Mapping | ml_collections.ConfigDict):
            items.update(flat_items(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, str]
) -> ml_collections.ConfigDict:
    """Sets ``config[key] = value`` for dotted keys, parsing each value to the field's type.

    Unknown keys raise ``ValueError`` listing the valid ones; a value that does
    not parse as the field's type raises ``ValueError`` naming the field.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    valid = sorted(flat_items(config))
    for key, text in overrides.items():
        if key not in valid:
            raise ValueError(f"Unknown config key {key!r}. Valid keys: {', '.join(valid)}.")
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = _parse_like(node[leaf], text, key)
    return config


def _parse_like(current, text: str, key: str):
    """Parses ``text`` as a value of the type of ``current``."""
    try:
        if isinstance(current, bool):
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        if isinstance(current, (tuple, list)):
            value = ast.literal_eval(text)
            value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
            return type(current)(value)
    except (ValueError, SyntaxError) as error:
        raise ValueError(
            f"Cannot parse {text!r} for config key {key!r} (a {type(current).__name__})."
        ) from error
    return ast.literal_eval(text)


def to_json(config: ml_collections.ConfigDict) -> str:
    """The config as canonical JSON (sorted keys; tuples as lists)."""
    return json.dumps(config.to_dict(), sort_keys=True, indent=2)

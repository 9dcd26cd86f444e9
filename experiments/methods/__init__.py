"""The methods of the paper as lpjax losses: what ``--config.method.name`` selects.

* :mod:`~experiments.methods.registry` -- name -> entry (builder, config blocks read,
  label type, model options), and the method blocks' defaults (``config.la``,
  ``config.lpl``, ...); adding a method starts there;
* :mod:`~experiments.methods.method` -- :class:`Method` (what the train step needs) and
  :class:`MethodInputs` (what a builder may use besides its blocks);
* :mod:`~experiments.methods.single_label`, :mod:`~experiments.methods.multilabel`,
  :mod:`~experiments.methods.meta` (Meta-LPL and its controls) -- the builders.
"""

from experiments.methods.method import MetaLearning, Method, MethodInputs
from experiments.methods.registry import (
    BLOCK_NAMES,
    NAMES,
    SPLIT_RULES,
    MethodEntry,
    check_blocks,
    default_blocks,
    entry,
    is_multilabel,
    make_method,
    meta_set_of,
    model_options,
)

__all__ = [
    "BLOCK_NAMES",
    "NAMES",
    "SPLIT_RULES",
    "Method",
    "MethodEntry",
    "MethodInputs",
    "MetaLearning",
    "check_blocks",
    "default_blocks",
    "entry",
    "is_multilabel",
    "make_method",
    "meta_set_of",
    "model_options",
]

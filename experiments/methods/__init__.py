"""The methods of the paper as lpjax losses: what ``--config.method.name`` selects.

* :mod:`~experiments.methods.registry` -- name -> entry (builder, config blocks read,
  label type, model options), and the method blocks' defaults (``config.la``,
  ``config.lpl``, ...); adding a method starts there;
* :mod:`~experiments.methods.method` -- :class:`Method` (a transform, a loss and the
  hooks of its protocol, each with the plain protocol as default: ``make_step``,
  ``extra_inputs``, ``summarize_window``, ``tracked``, ``logit_offsets``) and
  :class:`MethodInputs` (what a builder may use besides its blocks);
* :mod:`~experiments.methods.single_label`, :mod:`~experiments.methods.multilabel`,
  :mod:`~experiments.methods.meta` (Meta-LPL and its controls) -- the builders.
"""

from experiments.methods import registry as _registry
from experiments.methods.method import Method, MethodInputs, StepContext
from experiments.methods.registry import *  # noqa: F403 - the registry's names, listed there

__all__ = ["Method", "MethodInputs", "StepContext", *_registry.__all__]

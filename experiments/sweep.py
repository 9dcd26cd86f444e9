"""Deprecated: moved to :mod:`studies.sweep` (``python -m studies.sweep``)."""

from experiments import forward_module

forward_module("experiments.sweep", "studies.sweep", globals())

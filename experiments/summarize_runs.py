"""Deprecated: moved to :mod:`studies.summarize_runs` (``python -m studies.summarize_runs``)."""

from experiments import forward_module

forward_module("experiments.summarize_runs", "studies.summarize_runs", globals())

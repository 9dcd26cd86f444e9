"""Deprecated: moved to :mod:`studies.fashion_mnist_study` (run it with ``python -m``)."""

from experiments import forward_module

forward_module("experiments.fashion_mnist_study", "studies.fashion_mnist_study", globals())

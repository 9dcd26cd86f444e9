"""Deprecated: moved to :mod:`studies.fashion_mnist_study` (run it with ``python -m``)."""

import runpy
import warnings

if __name__ == "__main__":
    warnings.warn(
        "experiments.fashion_mnist_study is deprecated; use studies.fashion_mnist_study.",
        DeprecationWarning,
        stacklevel=1,
    )
    runpy.run_module("studies.fashion_mnist_study", run_name="__main__", alter_sys=True)
else:
    from studies.fashion_mnist_study import *  # noqa: F403

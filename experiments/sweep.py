"""Deprecated: moved to :mod:`studies.sweep`; run ``python -m studies.sweep``."""

import runpy
import warnings

if __name__ == "__main__":
    warnings.warn(
        "experiments.sweep is deprecated; use studies.sweep.", DeprecationWarning, stacklevel=1
    )
    runpy.run_module("studies.sweep", run_name="__main__", alter_sys=True)
else:
    from studies.sweep import *  # noqa: F403

"""Deprecated: moved to :mod:`studies.summarize_runs`; run ``python -m studies.summarize_runs``."""

import runpy
import warnings

if __name__ == "__main__":
    warnings.warn(
        "experiments.summarize_runs is deprecated; use studies.summarize_runs.",
        DeprecationWarning,
        stacklevel=1,
    )
    runpy.run_module("studies.summarize_runs", run_name="__main__", alter_sys=True)
else:
    from studies.summarize_runs import *  # noqa: F403

"""Study tooling built on the trainer: sweeps, the Fashion-MNIST-LT study, summaries.

Not part of the installed package (``experiments`` is): these drive
``python -m experiments.train`` over grids and write the reports under ``docs/results``.

* :mod:`~studies.sweep` -- a grid of (config, method, seed), run and summarized;
* :mod:`~studies.summarize_runs` -- tables and figures of finished runs;
* :mod:`~studies.fashion_mnist_study` -- the validation-then-test study of
  ``docs/results/fashion_mnist_lt``.
"""

"""Run infrastructure: what keeps a run safe and visible, knowing nothing of training.

* :mod:`~experiments.run.errors` -- the exceptions a run ends with (one line each);
* :mod:`~experiments.run.lock` -- ``WORKDIR/.lock`` (standard library only, so a locked
  work directory is refused before JAX is imported);
* :mod:`~experiments.run.records` -- a config as the flat JSON record a run keeps;
* :mod:`~experiments.run.workdir` -- ``config.json``, stop signals, orbax checkpoints and
  their digests;
* :mod:`~experiments.run.console` -- one-line messages; third-party output to
  ``WORKDIR/details.log``;
* :mod:`~experiments.run.metric_writer` -- ``metrics.jsonl`` and TensorBoard events.

Nothing here imports the trainer (a test walks the imports).
"""

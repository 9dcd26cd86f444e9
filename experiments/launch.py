"""Deprecated: the ``lpjax-train`` command's old home (:func:`experiments.main.entry_point`)."""

from experiments.main import entry_point as main  # noqa: F401

"""Experiment code: models, configs and the trainer built on lpjax."""

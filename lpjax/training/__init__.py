"""Data-parallel training with lpjax (needs the ``train`` extra: flax).

``make_train_step`` builds a jitted Optax train step over a one-dimensional
``"data"`` mesh with ``jax.shard_map``; the lpjax loss is called with
``axis_name="data"`` so class statistics cover the global batch, and the
same code runs on one device, eight, or a multi-host TPU slice.
"""

from lpjax.training._step import (
    CPU_FAST_CONVOLUTIONS,
    DATA_AXIS,
    TrainState,
    create_train_state,
    global_batch,
    make_data_mesh,
    make_predict_step,
    make_train_step,
)

__all__ = (
    "CPU_FAST_CONVOLUTIONS",
    "DATA_AXIS",
    "TrainState",
    "create_train_state",
    "global_batch",
    "make_data_mesh",
    "make_predict_step",
    "make_train_step",
)

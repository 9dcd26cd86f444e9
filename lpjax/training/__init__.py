"""Data-parallel training with lpjax (needs the ``train`` extra: flax).

``make_train_step`` builds a jitted Optax train step over a one-dimensional
``"data"`` mesh with ``jax.shard_map``; the lpjax loss is called with
``axis_name="data"`` so class statistics cover the global batch, and the
same code runs on one device, eight, or a multi-host TPU slice. The model is
given as :class:`ModelFns` (``linen_model_fns`` and ``nnx_model_fns`` build them for
Flax linen and nnx models).
"""

from lpjax.training._step import (
    DATA_AXIS,
    ModelFns,
    TrainState,
    create_train_state,
    global_batch,
    linen_model_fns,
    make_data_mesh,
    make_predict_step,
    make_train_step,
    nnx_model_fns,
)

__all__ = (
    "DATA_AXIS",
    "ModelFns",
    "TrainState",
    "create_train_state",
    "global_batch",
    "linen_model_fns",
    "make_data_mesh",
    "make_predict_step",
    "make_train_step",
    "nnx_model_fns",
)

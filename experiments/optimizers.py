"""The optimizer and learning-rate schedule a config names (optax)."""

from __future__ import annotations

import ml_collections
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "constant", "onecycle")


def make_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int):
    """The learning-rate schedule ``step -> rate`` of ``config.optim`` (see
    :func:`make_optimizer`)."""
    total_steps = optim.num_epochs * steps_per_epoch
    warmup_steps = optim.warmup_epochs * steps_per_epoch
    if optim.schedule == "onecycle":
        main = optax.cosine_onecycle_schedule(
            max(total_steps, 1), optim.learning_rate, pct_start=warmup_steps / max(total_steps, 1)
        )
    elif optim.schedule == "multistep":
        main = optax.piecewise_constant_schedule(
            optim.learning_rate,
            {int(m * steps_per_epoch): optim.decay_factor for m in optim.milestones},
        )
    elif optim.schedule == "cosine":
        main = optax.cosine_decay_schedule(optim.learning_rate, max(total_steps - warmup_steps, 1))
    else:  # "constant" (experiments.config.names checked the name: one of SCHEDULES)
        main = optax.constant_schedule(optim.learning_rate)
    schedule = main
    if warmup_steps and optim.schedule != "onecycle":
        warmup = optax.linear_schedule(0.0, optim.learning_rate, warmup_steps)
        if optim.schedule == "multistep":  # milestones count from the start of training
            schedule = optax.join_schedules(
                [warmup, lambda step: main(step + warmup_steps)], [warmup_steps]
            )
        else:
            schedule = optax.join_schedules([warmup, main], [warmup_steps])
    return schedule


def make_optimizer(optim: ml_collections.ConfigDict, steps_per_epoch: int):
    """``(optimizer, lr schedule)`` of the config's ``optim`` block (``config.optim``).

    ``optim.name`` is the optimizer, ``optim.schedule`` the learning-rate schedule.

    ``sgd`` (momentum, optionally Nesterov) and ``adam`` take the weight decay as an L2
    term added to the gradient once (PyTorch's ``weight_decay``); ``adamw`` decouples it
    (Loshchilov & Hutter, ICLR 2019; ``optax.adamw``, decay scaled by the learning rate).
    ``onecycle`` is Smith & Topin's one-cycle policy as PyTorch's ``OneCycleLR`` (used by
    ASL, Ridnik et al., ICCV 2021): cosine rise from lr / 25 over the first
    ``warmup_epochs``, then cosine decay to lr / 25e4; its warm-up is part of the cycle.
    """
    schedule = make_schedule(optim, steps_per_epoch)
    if optim.name == "adamw":
        return optax.adamw(schedule, weight_decay=optim.weight_decay), schedule
    if optim.name == "sgd":
        update = optax.sgd(schedule, momentum=optim.momentum, nesterov=optim.nesterov)
    else:  # "adam" (one of OPTIMIZERS)
        update = optax.adam(schedule)
    return optax.chain(optax.add_decayed_weights(optim.weight_decay), update), schedule

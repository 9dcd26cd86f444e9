"""The optimizer and learning-rate schedule a config names (optax)."""

from __future__ import annotations

import ml_collections
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "constant", "onecycle")


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """``(optimizer, lr schedule)`` named by ``config.optimizer`` and ``config.schedule``.

    ``sgd`` (momentum, optionally Nesterov) and ``adam`` take the weight decay as an L2
    term added to the gradient once (PyTorch's ``weight_decay``); ``adamw`` decouples it
    (Loshchilov & Hutter, ICLR 2019; ``optax.adamw``, decay scaled by the learning rate).
    ``onecycle`` is Smith & Topin's one-cycle policy as PyTorch's ``OneCycleLR`` (used by
    ASL, Ridnik et al., ICCV 2021): cosine rise from lr / 25 over the first
    ``warmup_epochs``, then cosine decay to lr / 25e4; its warm-up is part of the cycle.
    """
    total_steps = config.num_epochs * steps_per_epoch
    warmup_steps = config.warmup_epochs * steps_per_epoch
    if config.schedule == "onecycle":
        main = optax.cosine_onecycle_schedule(
            max(total_steps, 1), config.learning_rate, pct_start=warmup_steps / max(total_steps, 1)
        )
    elif config.schedule == "multistep":
        main = optax.piecewise_constant_schedule(
            config.learning_rate,
            {int(m * steps_per_epoch): config.decay_factor for m in config.milestones},
        )
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(config.learning_rate, max(total_steps - warmup_steps, 1))
    elif config.schedule == "constant":
        main = optax.constant_schedule(config.learning_rate)
    else:
        raise ValueError(
            f"config.schedule must be multistep, cosine or constant, or onecycle; "
            f"got {config.schedule!r}."
        )
    schedule = main
    if warmup_steps and config.schedule != "onecycle":
        warmup = optax.linear_schedule(0.0, config.learning_rate, warmup_steps)
        if config.schedule == "multistep":  # milestones count from the start of training
            schedule = optax.join_schedules(
                [warmup, lambda step: main(step + warmup_steps)], [warmup_steps]
            )
        else:
            schedule = optax.join_schedules([warmup, main], [warmup_steps])
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay), schedule
    if config.optimizer == "sgd":
        update = optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov)
    elif config.optimizer == "adam":
        update = optax.adam(schedule)
    else:
        raise ValueError(
            f"config.optimizer must be one of {', '.join(OPTIMIZERS)}; got {config.optimizer!r}."
        )
    return optax.chain(optax.add_decayed_weights(config.weight_decay), update), schedule

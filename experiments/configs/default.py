"""The offline default: LA + LPL (varied bounds) on long-tailed scikit-learn digits.

Real data that ships with scikit-learn, no download: 10 classes of 8x8 images,
a balanced test split of 40 per class, the training split long-tailed at
ratio 15 (138 ... 9 images per class, all three shot groups present). A small
CNN: a fresh run took 19 s on two shared CPU cores, start-up and compilation included.
"""

from experiments.config import base


def get_config():
    config = base.get_base_config()
    config.method.name = "la_lpl"  # the paper's best long-tail method: LA, then LPL
    config.data.name = "digits_lt"  # scikit-learn digits, long-tailed, balanced test split
    config.data.imbalance_ratio = 15.0  # training counts 138, 105, 78, 57, 42, 31, 23, 17, 12, 9
    config.data.augment = False  # 8x8 digits are not cropped or flipped
    config.model.name = "small_cnn"  # three conv layers, 24k parameters
    config.optim.num_epochs = 60  # 480 steps; 5 s of the run's 19 s on two CPU cores
    config.optim.batch_size = 64  # 8 steps per epoch on the 512 training images
    config.optim.learning_rate = 0.05  # peak rate of the cosine schedule
    config.optim.weight_decay = 5e-4  # a small network on little data: stronger decay
    config.optim.schedule = "cosine"  # smooth decay to zero
    config.optim.warmup_epochs = 2  # linear warm-up
    config.ldam.drw_start_epoch = 48  # ldam_drw: re-weight the last fifth of training
    config.lpl.split_rule = "longtail"  # head/tail split by training counts
    config.lpl.num_head_classes = 3  # the three most frequent digits (138, 105, 78) are head
    config.lpl.epsilon = 0.2  # base bound: 10 inner steps of 0.02
    config.lpl.delta_epsilon = 0.6  # varied bounds: up to 0.8 (40 steps) for the extremes
    config.lpl.step_size = 0.02  # inner PGD step alpha
    config.run.log_every_steps = 8  # once an epoch
    config.run.checkpoint_every_steps = 80  # every 10 epochs
    config.run.eval_every_epochs = 10  # test accuracy every 10 epochs and at the end
    config.run.eval_batch_size = 400  # the whole test split in one batch
    return config

"""The offline default: LA + LPL (varied bounds) on long-tailed scikit-learn digits.

Real data that ships with scikit-learn, no download: 10 classes of 8x8 images,
a balanced test split of 40 per class, the training split long-tailed at
ratio 15 (138 ... 9 images per class, all three shot groups present). A small
CNN trains in about a minute on two CPU cores.
"""

from experiments.configs import common


def get_config():
    config = common.get_base_config()
    config.method = "la_lpl"
    config.dataset = "digits_lt"
    config.imbalance_ratio = 15.0  # training counts 138, 105, 78, 57, 42, 31, 23, 17, 12, 9
    config.model = "small_cnn"
    config.augment = False  # 8x8 digits are not cropped or flipped
    config.num_epochs = 60
    config.batch_size = 64  # 8 steps per epoch on the 512 training images
    config.learning_rate = 0.05
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.warmup_epochs = 2
    config.drw_start_epoch = 48  # ldam_drw: re-weight the last fifth of training
    config.lpl.split = "longtail"
    config.lpl.num_head_classes = 3  # the three most frequent digits are head
    config.lpl.epsilon = 0.2
    config.lpl.delta_epsilon = 0.6
    config.lpl.step_size = 0.02
    config.log_every_steps = 8  # once an epoch
    config.checkpoint_every_steps = 80  # every 10 epochs
    config.eval_every_epochs = 10
    config.eval_batch_size = 400
    return config

"""The paper's CIFAR training recipes (docs/method.md, section 7), shared by the config files."""

from experiments.configs import common

# Balanced CIFAR, the authors' recipes per network family:
# (epochs, lr milestones in epochs, decay factor, weight decay).
_BALANCED_SCHEDULES = {
    "resnet": (160, (80, 120), 0.1, 1e-4),  # ResNet-32 / ResNet-110
    "se_resnet": (200, (80, 120, 160), 0.1, 1e-4),  # SE-ResNet-110
    "wrn": (240, (60, 120, 160, 200), 0.2, 5e-4),  # WRN-16-8 / WRN-28-10 (dropout 0.3 in model)
}


def balanced_cifar(dataset: str, model: str, family: str):
    """LPL (mean rule, varied bounds) on balanced CIFAR with the authors' recipe for ``family``."""
    epochs, milestones, decay_factor, weight_decay = _BALANCED_SCHEDULES[family]
    config = common.get_base_config()
    config.method = "lpl_varied"  # the paper's best on balanced CIFAR (vs isda, lpl_fixed, ce)
    config.dataset = dataset  # tensorflow-datasets cifar10 / cifar100, 50k train / 10k test
    config.imbalance_ratio = 1.0  # balanced: the full training set
    config.model = model
    config.augment = True  # pad-4 reflect crop + horizontal flip, as the authors' code
    config.num_epochs = epochs  # the family's recipe
    config.batch_size = 128  # authors' batch size
    config.learning_rate = 0.1  # authors' peak rate
    config.momentum = 0.9  # SGD momentum
    config.nesterov = True  # Nesterov momentum, as the authors' code
    config.weight_decay = weight_decay  # the family's weight decay
    config.schedule = "multistep"  # step decay
    config.milestones = milestones  # epochs of the family's lr decays
    config.decay_factor = decay_factor  # the family's decay factor
    config.warmup_epochs = 0  # no warm-up in the balanced recipes
    config.isda_lambda = 0.5  # ISDA's lambda_0 for CIFAR (Wang et al. 2019), used with method=isda
    config.lpl.split = "balanced"  # the mean rule: classes harder than the batch mean are maximised
    config.lpl.epsilon = 0.2  # base bound: 20 inner steps at step 0.01 (code: 20-40 steps)
    config.lpl.delta_epsilon = 0.2  # varied bounds add 0.2 |tau - q_c| <= 0.2: at most 40 steps
    config.lpl.step_size = 0.01  # inner step alpha, within the authors' 0.005-0.01
    config.log_every_steps = 50  # 390 steps an epoch: about 8 log lines an epoch
    config.checkpoint_every_steps = 2000  # about every 5 epochs (a multiple of log_every_steps)
    config.eval_every_epochs = 10  # test accuracy is only logged; results use the final epoch
    config.eval_batch_size = 1000  # divides the 10k test images and any 1/2/4/8-device mesh
    return config


def longtail_cifar(dataset: str, imbalance_ratio: float, *, method: str, num_head_classes: int):
    """ResNet-32 on CIFAR-LT with the LDAM-DRW recipe (used by LA and the LPL paper)."""
    config = common.get_base_config()
    config.method = method  # the paper's best of the column (see the config file)
    config.dataset = dataset  # tensorflow-datasets cifar10 / cifar100, made long-tailed
    config.imbalance_ratio = imbalance_ratio  # n_max / n_min of the exponential profile
    config.model = "resnet32"  # the long-tail literature's CIFAR backbone
    config.augment = True  # pad-4 reflect crop + horizontal flip
    config.num_epochs = 200  # LDAM-DRW recipe (Cao et al. 2019), used by LA and the LPL paper
    config.batch_size = 128  # LDAM-DRW batch size
    config.learning_rate = 0.1  # LDAM-DRW peak rate
    config.momentum = 0.9  # SGD momentum
    config.nesterov = True  # the LPL authors' optimiser (LDAM's own code uses plain momentum)
    config.weight_decay = 2e-4  # LDAM-DRW weight decay (applied once, unlike the authors' code)
    config.schedule = "multistep"  # step decay
    config.milestones = (160, 180)  # lr x0.01 at 160, again at 180 (0.1 -> 1e-3 -> 1e-5)
    config.decay_factor = 0.01  # LDAM-DRW decay factor
    config.warmup_epochs = 5  # LDAM-DRW linear warm-up, needed at lr 0.1 on skewed batches
    config.la_tau = 1.0  # LA temperature of Menon et al. (la, la_posthoc, la_lpl)
    config.ldam_max_margin = 0.5  # LDAM's largest margin (Cao et al.)
    config.ldam_scale = 30.0  # LDAM's logit scale s (Cao et al.'s code)
    config.drw_start_epoch = 160  # ldam_drw: re-weight from the first lr decay, as LDAM-DRW
    config.drw_beta = 0.9999  # ldam_drw: effective-number beta of Cui et al. / LDAM-DRW
    config.lpl.split = "longtail"  # head classes minimised, tail classes maximised (by counts)
    config.lpl.num_head_classes = num_head_classes  # the most frequent classes (config file)
    config.lpl.epsilon = 0.2  # base bound: 20 inner steps at step 0.01 (paper: 0.1-0.2)
    config.lpl.delta_epsilon = 0.3  # varied bounds: up to 0.5, i.e. 50 steps for the extremes
    config.lpl.step_size = 0.01  # inner step alpha: max K_c = 50, the authors' upper count
    config.log_every_steps = 25  # 84 to 159 steps an epoch, by data set and ratio
    config.checkpoint_every_steps = 1000  # every 6 to 12 epochs (a multiple of 25)
    config.eval_every_epochs = 10  # test accuracy is only logged; results use the final epoch
    config.eval_batch_size = 1000  # divides the 10k test images and any 1/2/4/8-device mesh
    return config


def fashion_mnist_longtail(imbalance_ratio: float):
    """A small CNN on long-tailed Fashion-MNIST: the CPU-sized benchmark that tells methods apart.

    About a minute a run on two CPU cores. The LPL settings are the validation winners of
    the study in docs/results/fashion_mnist_lt (chosen on the held-out validation split).
    """
    config = common.get_base_config()
    config.method = "la_lpl"  # LA, then LPL on the adjusted logits
    config.dataset = "fashion_mnist_lt"  # IDX files (Debian's dataset-fashion-mnist) or tfds
    config.imbalance_ratio = imbalance_ratio  # n_c = floor(5500 r^(-c/9)); 500/class validation
    config.model = "small_cnn28"  # 16-32-64 channels at 14x14 and 7x7, 24k parameters
    config.augment = True  # reflect-pad 4, random 28x28 crop, horizontal flip
    config.num_epochs = 15  # ~1,600 (r=100) to ~2,600 (r=10) steps
    config.batch_size = 128  # the CIFAR recipes' batch size
    config.learning_rate = 0.1  # peak rate of the cosine schedule
    config.weight_decay = 5e-4  # a small network: stronger decay than the CIFAR recipes
    config.schedule = "cosine"  # smooth decay to zero
    config.warmup_epochs = 1  # linear warm-up
    config.drw_start_epoch = 12  # ldam_drw: re-weight the last fifth of training
    config.lpl.split = "longtail"  # head/tail split by training counts
    config.lpl.num_head_classes = 4  # the four most frequent classes are head
    config.lpl.epsilon = 0.2  # the study's command line sets each variant's validated bounds
    config.lpl.delta_epsilon = 0.3  # varied bounds (lpl_varied, lpl_balanced, la_lpl)
    config.lpl.step_size = 0.01  # inner step alpha
    config.log_every_steps = 50  # train metrics every 50 steps
    config.checkpoint_every_steps = 500  # a multiple of log_every_steps
    config.eval_every_epochs = 5  # validation and test accuracy every 5 epochs and at the end
    config.eval_batch_size = 1000  # divides the 5,000 validation and 10,000 test images
    return config

"""ResNet-32 on CIFAR-100-LT, ratio 100: LA + LPL (varied bounds), LDAM-DRW recipe.

Top-1 error (%) in the paper (method.md section 7): LDAM-DRW 57.11, LA 56.11,
LPL fixed 58.03, LPL varied 55.75, LA + LPL 53.89; the default method
is the best of its column. Compare with ``--config.method=`` ldam_drw, la,
lpl_fixed, lpl_varied, la_lpl or ce. The training set follows the exponential
profile of LDAM / LA (10,847 images); the test set stays balanced.

Head classes: the 40% most frequent (40 of 100), the authors' split
(their scripts use 40 or 27). At r = 100 they hold 85% of the training
images. A median rule would make half the classes head; the smaller head keeps the
middle classes maximised.

Needs the tensorflow-datasets cifar100 data prepared offline (or
``--config.download=True``).
"""

from experiments.configs import common


def get_config():
    config = common.get_base_config()
    config.method = "la_lpl"  # logit adjustment, then LPL: the paper's best at r = 100
    config.dataset = "cifar100"  # tensorflow-datasets cifar100, made long-tailed below
    config.imbalance_ratio = 100.0  # n_max / n_min = 500 ... 5 images per class
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
    config.lpl.num_head_classes = 40  # 40% most frequent, one of the authors' two splits
    config.lpl.epsilon = 0.2  # base bound: 20 inner steps at step 0.01 (paper: 0.1-0.2)
    config.lpl.delta_epsilon = 0.3  # varied bounds: up to 0.5, i.e. 50 steps for the extremes
    config.lpl.step_size = 0.01  # inner step alpha: max K_c = 50, the authors' upper count
    config.log_every_steps = 25  # 84 steps an epoch
    config.checkpoint_every_steps = 1000  # about every 12 epochs (a multiple of 25)
    config.eval_every_epochs = 10  # test accuracy is only logged; results use the final epoch
    config.eval_batch_size = 1000  # divides the 10k test images and any 1/2/4/8-device mesh
    return config

"""ResNet-110 on balanced CIFAR-10: LPL, mean rule, varied bounds; the authors' recipe.

The paper reports top-1 error (%) 6.33 / 5.83 / 5.72 for ISDA / LPL fixed /
LPL varied (method.md section 7). Switch methods with ``--config.method=isda``
(or ``lpl_fixed``, ``ce``).
Needs the tensorflow-datasets cifar10 data prepared offline (or ``--config.download=True``).
"""

from experiments.configs import common


def get_config():
    config = common.get_base_config()
    config.method = "lpl_varied"  # the paper's best on balanced CIFAR (vs isda, lpl_fixed, ce)
    config.dataset = "cifar10"  # tensorflow-datasets cifar10, 50k train / 10k test images
    config.imbalance_ratio = 1.0  # balanced: the full training set
    config.model = "resnet110"  # He et al.'s CIFAR ResNet, 6n+2 layers with n = 18
    config.augment = True  # pad-4 reflect crop + horizontal flip, as the authors' code
    config.num_epochs = 160  # ResNet recipe of the authors' code
    config.batch_size = 128  # authors' batch size
    config.learning_rate = 0.1  # authors' peak rate
    config.momentum = 0.9  # SGD momentum
    config.nesterov = True  # Nesterov momentum, as the authors' code
    config.weight_decay = 1e-4  # ResNet weight decay
    config.schedule = "multistep"  # step decay
    config.milestones = (80, 120)  # lr x0.1 at epochs 80 and 120
    config.decay_factor = 0.1  # ResNet decay factor
    config.warmup_epochs = 0  # no warm-up in the balanced recipe
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

"""ResNet-32 on balanced CIFAR-10: LPL, mean rule, varied bounds; the authors' recipe.

The paper reports top-1 error (%) 7.09 / 7.01 / 6.66 for ISDA / LPL fixed /
LPL varied (docs/method.md, section 7). Switch methods with ``--config.method.name=isda``
(or ``lpl_fixed``, ``ce``).
Needs the tensorflow-datasets cifar10 data prepared offline (or ``--config.data.download=True``).
"""

from experiments.config import recipes


def get_config():
    return recipes.balanced_cifar(
        "cifar10",  # tensorflow-datasets name
        "resnet32",  # He et al.'s CIFAR ResNet, 6n+2 layers with n = 5
        "resnet",  # recipe family: epochs, lr milestones and decay, weight decay
    )

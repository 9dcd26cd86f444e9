"""ResNet-110 on balanced CIFAR-10: LPL, mean rule, varied bounds; the authors' recipe.

The paper reports top-1 error (%) 6.33 / 5.83 / 5.72 for ISDA / LPL fixed /
LPL varied (docs/method.md, section 7). Switch methods with ``--config.method.name=isda``
(or ``lpl_fixed``, ``ce``).
Needs the tensorflow-datasets cifar10 data prepared offline (or ``--config.data.download=True``).
"""

from experiments.config import recipes


def get_config():
    return recipes.balanced_cifar(
        "cifar10",  # tensorflow-datasets name
        "resnet110",  # He et al.'s CIFAR ResNet, 6n+2 layers with n = 18
        "resnet",  # recipe family: epochs, lr milestones and decay, weight decay
    )

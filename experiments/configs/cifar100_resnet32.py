"""ResNet-32 on balanced CIFAR-100: LPL, mean rule, varied bounds; the authors' recipe.

The paper reports top-1 error (%) 30.27 / 29.59 / 28.53 for ISDA / LPL fixed /
LPL varied (docs/method.md, section 7). Switch methods with ``--config.method.name=isda``
(or ``lpl_fixed``, ``ce``).
Needs the tensorflow-datasets cifar100 data prepared offline (or ``--config.data.download=True``).
"""

from experiments.config import recipes


def get_config():
    return recipes.balanced_cifar(
        "cifar100",  # tensorflow-datasets name
        "resnet32",  # He et al.'s CIFAR ResNet, 6n+2 layers with n = 5
        "resnet",  # recipe family: epochs, lr milestones and decay, weight decay
    )

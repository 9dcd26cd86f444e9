"""SE-ResNet-110 on balanced CIFAR-10: LPL, mean rule, varied bounds; the authors' recipe.

The paper reports top-1 error (%) 5.96 / 5.87 / 5.39 for ISDA / LPL fixed /
LPL varied (docs/method.md, section 7). Switch methods with ``--config.method.name=isda``
(or ``lpl_fixed``, ``ce``).
Needs the tensorflow-datasets cifar10 data prepared offline (or ``--config.data.download=True``).
"""

from experiments.config import recipes


def get_config():
    return recipes.balanced_cifar(
        "cifar10",  # tensorflow-datasets name
        "se_resnet110",  # ResNet-110 with squeeze-and-excitation gates
        "se_resnet",  # recipe family: epochs, lr milestones and decay, weight decay
    )

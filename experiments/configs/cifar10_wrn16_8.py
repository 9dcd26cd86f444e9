"""WRN-16-8 on balanced CIFAR-10: LPL, mean rule, varied bounds; the authors' recipe.

The paper reports top-1 error (%) 4.04 / 3.97 / 3.93 for ISDA / LPL fixed /
LPL varied (docs/method.md, section 7). Switch methods with ``--config.method.name=isda``
(or ``lpl_fixed``, ``ce``).
Needs the tensorflow-datasets cifar10 data prepared offline (or ``--config.data.download=True``).
"""

from experiments.config import recipes


def get_config():
    return recipes.balanced_cifar(
        "cifar10",  # tensorflow-datasets name
        "wrn16_8",  # wide ResNet, depth 16, width x8, dropout 0.3
        "wrn",  # recipe family: epochs, lr milestones and decay, weight decay
    )

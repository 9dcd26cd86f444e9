"""WRN-28-10 on balanced CIFAR-10: LPL, mean rule, varied bounds; the authors' recipe.

The paper reports top-1 error (%) 3.58 / 3.39 / 3.37 for ISDA / LPL fixed /
LPL varied (docs/method.md, section 7). Switch methods with ``--config.method.name=isda``
(or ``lpl_fixed``, ``ce``).
Needs the tensorflow-datasets cifar10 data prepared offline (or ``--config.data.download=True``).
"""

from experiments.config import recipes


def get_config():
    return recipes.balanced_cifar(
        "cifar10",  # tensorflow-datasets name
        "wrn28_10",  # wide ResNet, depth 28, width x10, dropout 0.3
        "wrn",  # recipe family: epochs, lr milestones and decay, weight decay
    )

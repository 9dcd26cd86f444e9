"""ResNet-32 on CIFAR-100-LT, ratio 100: LA + LPL (varied bounds), LDAM-DRW recipe.

Top-1 error (%) in the paper (docs/method.md, section 7): LDAM-DRW 57.11, LA 56.11,
LPL fixed 58.03, LPL varied 55.75, LA + LPL 53.89; the default method
is the best of its column. Compare with ``--config.method.name=`` ldam_drw, la,
lpl_fixed, lpl_varied, la_lpl or ce. The training set follows the exponential
profile of LDAM / LA (10,847 images); the test set stays balanced.

LPL: the authors' settings (lpl-longtail-100/la_lpl_cifar100.py): 27 head classes,
the rarest class's bound 10 (50 steps of 0.2), head bounds scaled by 0.2
(``experiments/config/recipes.py``). ``lpl_fixed`` needs ``--config.lpl.epsilon``.

Needs the tensorflow-datasets cifar100 data prepared offline (or
``--config.data.download=True``).
"""

from experiments.config import recipes


def get_config():
    return recipes.longtail_cifar(
        "cifar100",  # tensorflow-datasets name
        100.0,  # imbalance ratio n_max / n_min
        method="la_lpl",  # the paper's best method of this column
    )

"""ResNet-32 on CIFAR-10-LT, ratio 10: LPL (varied bounds), LDAM-DRW recipe.

Top-1 error (%) in the paper (docs/method.md, section 7): LDAM-DRW 11.63, LA 11.07,
LPL fixed 11.09, LPL varied 10.59 (LA + LPL not reported); the default method
is the best of its column. Compare with ``--config.method.name=`` ldam_drw, la,
lpl_fixed, lpl_varied, la_lpl or ce. The training set follows the exponential
profile of LDAM / LA (20,431 images); the test set stays balanced.

LPL: the authors' settings (lpl-longtail-other/train_lpl_cifar10.py): 4 head classes,
the rarest class's bound 1.5 (10 steps of 0.15), head bounds scaled by 0.6
(``experiments/config/recipes.py``). ``lpl_fixed`` needs ``--config.lpl.epsilon``.

Needs the tensorflow-datasets cifar10 data prepared offline (or
``--config.data.download=True``).
"""

from experiments.config import recipes


def get_config():
    return recipes.longtail_cifar(
        "cifar10",  # tensorflow-datasets name
        10.0,  # imbalance ratio n_max / n_min
        method="lpl_varied",  # the paper's best method of this column
    )

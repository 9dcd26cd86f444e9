"""ResNeXt-50 (32x4d) on ImageNet-LT at 224x224: LA + LPL, the ResNet-50 config's recipe.

ResNeXt-50 (Xie et al., CVPR 2017) is the ImageNet-LT backbone of decoupling (Kang et
al., ICLR 2020) and of the Balanced Softmax comparisons; the recipe is the ResNet-50
config's (90 epochs, batch 512, rate 0.4, cosine, weight decay 5e-4), so the two
backbones compare directly. Switch methods with ``--config.method.name=`` (balanced_softmax,
la, ldam_drw, lpl_varied, ce, ...)::

    python -m experiments.train --config experiments/configs/imagenet_lt_resnext50.py \
        --config.data.data_dir=DATA --config.method.name=balanced_softmax --workdir runs/inlt_x50/bs

Needs the ``imagenet_lt`` data prepared offline (README, "Preparing the large data sets").
"""

from experiments.config import recipes


def get_config():
    return recipes.imagenet_scale_longtail(
        "imagenet_lt",  # the data set registered by the trainer
        "resnext50_32x4d",  # torchvision-layout ResNeXt-50 32x4d, 25.0M parameters
    )

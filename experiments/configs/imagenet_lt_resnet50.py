"""ResNet-50 on ImageNet-LT at 224x224: LA + LPL (varied bounds), the LA recipe, bfloat16.

ImageNet-LT (Liu et al., CVPR 2019): 1,000 classes, 115,846 training images (1,280 to 5
per class), a balanced 50,000-image test set. 90 epochs of SGD at batch 512, rate 0.4
with 5 warm-up epochs and cosine decay, weight decay 5e-4 (Menon et al., ICLR 2021);
accuracy is reported overall and for many-shot (> 100 images), medium and few-shot
classes. One command per method, the method chosen by ``--config.method.name=`` (la_lpl, la,
la_posthoc, balanced_softmax, ldam_drw, lpl_varied, lpl_fixed or ce), e.g.::

    python -m experiments.train --config experiments/configs/imagenet_lt_resnet50.py \
        --config.data.data_dir=DATA --config.method.name=ldam_drw \
        --workdir runs/imagenet_lt/ldam_drw

On a TPU pod slice run the same command on every host with
``--config.run.distributed=True`` (experiments/README.md, "Devices and hosts"); the batch
of 512 is split over all devices. ISDA is not offered at this scale: its per-class
feature covariances (1,000 x 2,048 x 2,048 floats) take 17 GB.
Needs the ``imagenet_lt`` data prepared offline (README, "Preparing the large data sets").
"""

from experiments.config import recipes


def get_config():
    return recipes.imagenet_scale_longtail(
        "imagenet_lt",  # the data set registered by the trainer
        "resnet50",  # torchvision-layout ResNet-50, 25.6M parameters
    )

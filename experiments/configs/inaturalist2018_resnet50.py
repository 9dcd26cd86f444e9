"""ResNet-50 on iNaturalist 2018 at 224x224: LA + LPL (varied bounds), bfloat16.

iNaturalist 2018 (Van Horn et al., CVPR 2018): 8,142 species, 437,513 training images
(1,000 to 2 per class), 24,426 validation images (3 per class) used as the test set.
The ImageNet-LT recipe (90 epochs, batch 512, rate 0.4, 5 warm-up epochs, cosine) with
weight decay 1e-4; LDAM-DRW's re-weighting from epoch 60. The scale LPL's inner solver
was built for: at most 25 steps on ``[512, 8142]`` logits (benchmarks/RESULTS.md,
section 4). One command per method (``--config.method.name=`` la_lpl, la, la_posthoc,
balanced_softmax, ldam_drw, lpl_varied, lpl_fixed or ce)::

    python -m experiments.train --config experiments/configs/inaturalist2018_resnet50.py \
        --config.data.data_dir=DATA --config.method.name=la --workdir runs/inat2018/la

On a TPU pod slice add ``--config.run.distributed=True`` on every host. ISDA is not offered:
its class covariances (8,142 x 2,048 x 2,048 floats) would take 137 GB. Needs the
``inaturalist2018`` data prepared offline (README, "Preparing the large data sets").
"""

from experiments.config import recipes


def get_config():
    return recipes.imagenet_scale_longtail(
        "inaturalist2018",  # the data set registered by the trainer
        "resnet50",  # torchvision-layout ResNet-50 with an 8,142-way classifier
    )

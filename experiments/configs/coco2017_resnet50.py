"""ResNet-50 on MS-COCO 2017 as image-level multi-label classification, ASL's schedule.

80 classes, the label set of an image being the categories of its objects; train2017
(118,287 images) for training, val2017 (5,000) for the mAP on the plain logits. Adam at
rate 1e-4 with a one-cycle schedule, weight decay 1e-4, batch 128, 40 epochs, 224x224,
bfloat16 (Ridnik et al., ICCV 2021; departures in ``recipes.coco_multilabel``: ASL
fine-tunes an ImageNet-pretrained TResNet at 448, this trains a ResNet-50 from scratch,
so its mAP is far below ASL's). One command per method (``--config.method.name=``
lpl_multilabel, asl, focal or bce)::

    python -m experiments.train --config experiments/configs/coco2017_resnet50.py \
        --config.data.data_dir=DATA --config.method.name=asl --workdir runs/coco2017/asl

Needs the ``coco2017`` data prepared offline (README, "Preparing the large data sets").
"""

from experiments.config import recipes


def get_config():
    return recipes.coco_multilabel(
        "resnet50",  # torchvision-layout ResNet-50 with an 80-way sigmoid classifier
    )

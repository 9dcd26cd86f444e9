"""PASCAL VOC 2007 as image-level multi-label classification: multi-label LPL.

trainval (5,011 images) for training, test (4,952) for evaluation, the label set of an
image being its object classes (20 classes; "person" is on 40% of the images, several
classes on under 5%). Images resized to 128 x 128. mAP on the plain logits. Compare
with ``--config.method.name=`` bce, focal or asl. Needs the tensorflow-datasets ``voc/2007``
data prepared offline (or ``--config.data.download=True``). A GPU recipe: on a CPU an epoch
of ResNet-32 at 128 pixels takes tens of minutes.
"""

from experiments.config import base


def get_config():
    config = base.get_base_config()
    config.method.name = "lpl_multilabel"  # the project's multi-label LPL (README)
    config.data.name = "voc2007"  # tensorflow-datasets voc/2007, trainval / test
    config.data.image_size = 128  # resized, aspect ratio not kept
    config.data.augment = True  # pad-4 reflect crop + horizontal flip
    config.model.name = "resnet32"  # CIFAR ResNet; global pooling accepts 128 x 128 inputs
    config.optim.num_epochs = 60  # about 4,700 steps at batch 64
    config.optim.batch_size = 64  # 78 steps an epoch
    config.optim.learning_rate = 0.05  # peak rate of the cosine schedule
    config.optim.weight_decay = 5e-4  # small data set: stronger decay
    config.optim.schedule = "cosine"  # no milestones to tune
    config.optim.warmup_epochs = 2  # linear warm-up
    config.lpl.split_rule = "longtail"  # positives of head classes minimised, of tail maximised
    config.lpl.num_head_classes = 6  # the six most frequent classes are head
    config.lpl.epsilon = 0.2  # base bound of every (class, polarity)
    config.lpl.delta_epsilon = 0.4  # varied bounds up to 0.6 for the extreme classes
    config.lpl.step_size = 0.02  # K = floor(eps / 0.02): 10 to 30 inner steps
    config.run.log_every_steps = 26  # three times an epoch
    config.run.checkpoint_every_steps = 780  # every 10 epochs
    config.run.eval_every_epochs = 10  # mAP every 10 epochs and at the end
    config.run.eval_batch_size = 200  # a multiple of any 1/2/4/8-device mesh
    return config

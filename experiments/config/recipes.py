"""The paper's CIFAR training recipes (docs/method.md, section 7), shared by the config files."""

from experiments.config import base

# Balanced CIFAR, the authors' recipes per network family:
# (epochs, lr milestones in epochs, decay factor, weight decay).
_BALANCED_SCHEDULES = {
    "resnet": (160, (80, 120), 0.1, 1e-4),  # ResNet-32 / ResNet-110
    "se_resnet": (200, (80, 120, 160), 0.1, 1e-4),  # SE-ResNet-110
    "wrn": (240, (60, 120, 160, 200), 0.2, 5e-4),  # WRN-16-8 / WRN-28-10 (dropout 0.3 in model)
}


def balanced_cifar(dataset: str, model: str, family: str):
    """LPL (mean rule, varied bounds) on balanced CIFAR with the authors' recipe for ``family``."""
    epochs, milestones, decay_factor, weight_decay = _BALANCED_SCHEDULES[family]
    config = base.get_base_config()
    config.method.name = "lpl_varied"  # the paper's best on balanced CIFAR (vs isda, lpl_fixed, ce)
    config.data.name = dataset  # tensorflow-datasets cifar10 / cifar100, 50k train / 10k test
    config.data.imbalance_ratio = 1.0  # balanced: the full training set
    config.data.augment = True  # pad-4 reflect crop + horizontal flip, as the authors' code
    config.model.name = model  # the config file's network
    config.optim.num_epochs = epochs  # the family's recipe
    config.optim.batch_size = 128  # authors' batch size
    config.optim.learning_rate = 0.1  # authors' peak rate
    config.optim.momentum = 0.9  # SGD momentum
    config.optim.nesterov = True  # Nesterov momentum, as the authors' code
    config.optim.weight_decay = weight_decay  # the family's weight decay
    config.optim.schedule = "multistep"  # step decay
    config.optim.milestones = milestones  # epochs of the family's lr decays
    config.optim.decay_factor = decay_factor  # the family's decay factor
    config.optim.warmup_epochs = 0  # no warm-up in the balanced recipes
    config.isda.lambda_0 = 0.5  # ISDA's lambda_0 for CIFAR (Wang et al. 2019), for method isda
    config.lpl.split_rule = "mean"  # classes harder than the batch mean are maximised
    config.lpl.epsilon = 0.2  # base bound: 20 inner steps at step 0.01 (code: 20-40 steps)
    config.lpl.delta_epsilon = 0.2  # varied bounds add 0.2 |tau - q_c| <= 0.2: at most 40 steps
    config.lpl.step_size = 0.01  # inner step alpha, within the authors' 0.005-0.01
    config.run.log_every_steps = 50  # 390 steps an epoch: about 8 log lines an epoch
    config.run.checkpoint_every_steps = 2000  # about every 5 epochs (a multiple of log_every_steps)
    config.run.eval_every_epochs = 10  # test accuracy is only logged; results use the final epoch
    config.run.eval_batch_size = 1000  # divides the 10k test images and any 1/2/4/8-device mesh
    return config


# LPL's settings in the authors' long-tail scripts (github.com/limengyang1992/lpl), in
# lpjax's terms. There class i takes about S n_min / n_i steps of alpha (tail) or
# h S n_i / n_max (head), the rarest class S steps: the head/tail rule with eps = 0,
# d_eps = S alpha (the tail budget) and head_scale = h. (Their steps are normalized, by a
# column norm that should be a row norm; lpjax takes the paper's step, lpl.normalize.)
_AUTHORS_LONGTAIL_LPL = {
    # lpl-longtail-other/train_lpl_cifar10.py: LPLLoss() with alpha 0.15 and 10 steps,
    # get_step(split=4, step_size=10) with the head factor 0.6: 4 head classes.
    "cifar10": dict(num_head_classes=4, tail_budget=1.5, head_scale=0.6, step_size=0.15),
    # lpl-longtail-100/la_lpl_cifar100.py with its config.py: alpha 0.2, get_step(split=27,
    # step_size=50) with the head factor 0.2: 27 head classes, the rarest 50 steps.
    "cifar100": dict(num_head_classes=27, tail_budget=10.0, head_scale=0.2, step_size=0.2),
}


def longtail_cifar(dataset: str, imbalance_ratio: float, *, method: str):
    """ResNet-32 on CIFAR-LT with the LDAM-DRW recipe (used by LA and the LPL paper), LPL
    with the authors' head/tail budgets (``_AUTHORS_LONGTAIL_LPL``)."""
    authors = _AUTHORS_LONGTAIL_LPL[dataset]
    config = base.get_base_config()
    config.method.name = method  # the paper's best of the column (see the config file)
    config.data.name = dataset  # tensorflow-datasets cifar10 / cifar100, made long-tailed
    config.data.imbalance_ratio = imbalance_ratio  # n_max / n_min of the exponential profile
    config.data.augment = True  # pad-4 reflect crop + horizontal flip
    config.model.name = "resnet32"  # the long-tail literature's CIFAR backbone
    config.optim.num_epochs = 200  # LDAM-DRW recipe (Cao et al. 2019), used by LA and the LPL paper
    config.optim.batch_size = 128  # LDAM-DRW batch size
    config.optim.learning_rate = 0.1  # LDAM-DRW peak rate
    config.optim.momentum = 0.9  # SGD momentum
    config.optim.nesterov = True  # the LPL authors' optimiser (LDAM's own code uses plain momentum)
    config.optim.weight_decay = 2e-4  # LDAM-DRW's decay (applied once, unlike the authors' code)
    config.optim.schedule = "multistep"  # step decay
    config.optim.milestones = (160, 180)  # lr x0.01 at 160, again at 180 (0.1 -> 1e-3 -> 1e-5)
    config.optim.decay_factor = 0.01  # LDAM-DRW decay factor
    config.optim.warmup_epochs = 5  # LDAM-DRW linear warm-up, needed at lr 0.1 on skewed batches
    config.la.tau = 1.0  # LA temperature of Menon et al. (la, la_posthoc, la_lpl)
    config.ldam.max_margin = 0.5  # LDAM's largest margin (Cao et al.)
    config.ldam.scale = 30.0  # LDAM's logit scale s (Cao et al.'s code)
    config.ldam.drw_start_epoch = 160  # ldam_drw: re-weight from the first lr decay, as LDAM-DRW
    config.ldam.drw_beta = 0.9999  # ldam_drw: effective-number beta of Cui et al. / LDAM-DRW
    config.lpl.split_rule = "longtail"  # head classes minimised, tail classes maximised (by counts)
    config.lpl.num_head_classes = authors["num_head_classes"]  # the authors' split
    config.lpl.epsilon = 0.0  # no base bound: steps in proportion to the count ratios
    config.lpl.delta_epsilon = authors["tail_budget"]  # the rarest class's bound
    config.lpl.head_scale = authors["head_scale"]  # the largest head class: this x tail budget
    config.lpl.step_size = authors["step_size"]  # the authors' alpha
    config.run.log_every_steps = 25  # 84 to 159 steps an epoch, by data set and ratio
    config.run.checkpoint_every_steps = 1000  # every 6 to 12 epochs (a multiple of 25)
    config.run.eval_every_epochs = 10  # test accuracy is only logged; results use the final epoch
    config.run.eval_batch_size = 1000  # divides the 10k test images and any 1/2/4/8-device mesh
    return config


def fashion_mnist_longtail(imbalance_ratio: float):
    """A small CNN on long-tailed Fashion-MNIST: the CPU-sized benchmark that tells methods apart.

    About a minute a run on two CPU cores. The LPL settings are the validation winners of
    the study in docs/results/fashion_mnist_lt (chosen on the held-out validation split).
    """
    config = base.get_base_config()
    config.method.name = "la_lpl"  # LA, then LPL on the adjusted logits
    config.data.name = "fashion_mnist_lt"  # IDX files (Debian's dataset-fashion-mnist) or tfds
    config.data.imbalance_ratio = imbalance_ratio  # n_c = floor(5500 r^(-c/9)); 500/class held out
    config.data.augment = True  # reflect-pad 4, random 28x28 crop, horizontal flip
    config.model.name = "small_cnn28"  # 16-32-64 channels at 14x14 and 7x7, 24k parameters
    config.optim.num_epochs = 15  # ~1,600 (r=100) to ~2,600 (r=10) steps
    config.optim.batch_size = 128  # the CIFAR recipes' batch size
    config.optim.learning_rate = 0.1  # peak rate of the cosine schedule
    config.optim.weight_decay = 5e-4  # a small network: stronger decay than the CIFAR recipes
    config.optim.schedule = "cosine"  # smooth decay to zero
    config.optim.warmup_epochs = 1  # linear warm-up
    config.ldam.drw_start_epoch = 12  # ldam_drw: re-weight the last fifth of training
    config.lpl.split_rule = "longtail"  # head/tail split by training counts
    config.lpl.num_head_classes = 4  # the four most frequent classes are head
    config.lpl.epsilon = 0.2  # the study's command line sets each variant's validated bounds
    config.lpl.delta_epsilon = 0.3  # varied bounds (lpl_varied, lpl_mean, la_lpl)
    config.lpl.step_size = 0.01  # inner step alpha
    config.run.log_every_steps = 50  # train metrics every 50 steps
    config.run.checkpoint_every_steps = 500  # a multiple of log_every_steps
    config.run.eval_every_epochs = 5  # validation and test accuracy every 5 epochs and at the end
    config.run.eval_batch_size = 1000  # divides the 5,000 validation and 10,000 test images
    return config


# ImageNet-scale recipes (ResNet-50 / ResNeXt-50 at 224x224). Sources: logit adjustment's
# ImageNet-LT setup (Menon et al., ICLR 2021: SGD momentum 0.9, batch 512, base rate 0.4,
# linear warm-up for 5 epochs then cosine decay, 90 epochs, weight decay 5e-4) and
# LDAM-DRW (Cao et al., NeurIPS 2019: 90 epochs, re-weighting deferred to epoch 60). Every
# method of a config shares its recipe, as the CIFAR-LT configs share LDAM-DRW's.
_LONGTAIL_IMAGENET_SCALE = {
    # dataset: (weight decay, many-shot classes, log_every_steps, checkpoint_every_steps)
    # ImageNet-LT (Liu et al., CVPR 2019): 115,846 training images, 1,280 to 5 per class,
    # 226 steps an epoch at batch 512; 385 of its 1,000 classes have > 100 images.
    "imagenet_lt": (5e-4, 385, 50, 1000),
    # iNaturalist 2018 (Van Horn et al., CVPR 2018): 437,513 training images, 1,000 to 2 per
    # class, 854 steps an epoch; 842 of its 8,142 classes have > 100 images (the
    # literature's many-shot count). Weight decay 1e-4, ResNet-50's ImageNet value, for a
    # data set four times ImageNet-LT's size (our choice).
    "inaturalist2018": (1e-4, 842, 100, 2000),
}


def imagenet_scale_longtail(dataset: str, model: str):
    """A ResNet at 224x224 on ImageNet-LT or iNaturalist 2018: the LA recipe, bfloat16.

    LPL's head is the literature's many-shot group (classes with more than 100 training
    images, the group the trainer reports as many-shot), so the medium and few-shot
    classes are maximised. The inner solver takes at most 25 steps (step 0.02), half the
    CIFAR recipe's 50: at 8,142 classes each step works on a ``[global batch, C]`` array
    and, on several devices, all-reduces one (benchmarks/RESULTS.md, section 4).
    """
    weight_decay, num_head_classes, log_every, checkpoint_every = _LONGTAIL_IMAGENET_SCALE[dataset]
    config = base.get_base_config()
    config.method.name = "la_lpl"  # LA, then LPL: the paper's best long-tail method
    config.data.name = dataset  # the data set's own long tail, prepared with tfds (README)
    config.data.imbalance_ratio = 1.0  # no further subsampling: the data set is long-tailed
    config.data.image_size = 224  # random-resized crops in training; resize 256, centre 224 in test
    config.data.workers = 16  # JPEG decoding: ~420 images/s a core (benchmarks/RESULTS.md)
    config.data.augment = True  # random-resized crop (Inception-style) + horizontal flip
    config.model.name = model  # torchvision-layout bottleneck ResNet (experiments/models.py)
    config.model.dtype = "bfloat16"  # bfloat16 compute; float32 parameters, BN statistics, logits
    config.optim.name = "sgd"  # LA's optimiser
    config.optim.num_epochs = 90  # LA and LDAM-DRW on ImageNet-LT and iNaturalist 2018
    config.optim.batch_size = 512  # LA's global batch, split over all devices and hosts
    config.optim.learning_rate = 0.4  # LA's base rate for batch 512
    config.optim.momentum = 0.9  # LA
    config.optim.nesterov = True  # as the LA and LPL authors' code (LA's paper says momentum 0.9)
    config.optim.weight_decay = weight_decay  # 5e-4 on ImageNet-LT (LA); 1e-4 on iNaturalist
    config.optim.schedule = "cosine"  # LA: cosine decay after the warm-up
    config.optim.warmup_epochs = 5  # LA: linear warm-up, needed at rate 0.4
    config.la.tau = 1.0  # LA temperature (la, la_posthoc, la_lpl)
    config.ldam.max_margin = 0.5  # LDAM's largest margin (Cao et al.)
    config.ldam.scale = 30.0  # LDAM's logit scale s (Cao et al.'s code)
    config.ldam.drw_start_epoch = 60  # ldam_drw: LDAM-DRW's deferral for 90 epochs
    config.ldam.drw_beta = 0.9999  # ldam_drw: effective-number beta (Cui et al. / LDAM-DRW)
    config.lpl.split_rule = "longtail"  # head classes minimised, the others maximised
    config.lpl.num_head_classes = num_head_classes  # the many-shot classes (> 100 images)
    config.lpl.epsilon = 0.2  # base bound, as the CIFAR-LT recipe (paper: 0.1-0.2)
    config.lpl.delta_epsilon = 0.3  # varied bounds: up to 0.5 for the extreme classes
    config.lpl.step_size = 0.02  # at most 25 inner steps (docstring), within the paper's range
    config.run.log_every_steps = log_every  # a few times an epoch
    config.run.checkpoint_every_steps = checkpoint_every  # every 2-5 epochs
    config.run.eval_every_epochs = 10  # test accuracy is only logged; results use the final epoch
    config.run.eval_batch_size = 1024  # any power-of-two mesh up to 1024 devices; last batch padded
    return config


def coco_multilabel(model: str):
    """MS-COCO 2017 image-level multi-label at 224x224: ASL's optimiser and schedule, bfloat16.

    ASL (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021; its
    train.py): Adam at rate 1e-4 with PyTorch's one-cycle schedule (a fifth of the cycle
    rising), weight decay 1e-4, batch 128, 40 epochs; gamma- = 4, gamma+ = 0, clip 0.05.
    Departures, for the project's model zoo and trainer: ResNet-50 from scratch at 224
    (ASL: ImageNet-pretrained TResNet-L at 448, 86.6 mAP), so expect a far lower mAP; the
    cycle spans the 40 epochs (ASL's spans 80 and stops at 40); weight decay on every
    parameter (ASL skips biases and BN); no EMA, Cutout or RandAugment; the final epoch is
    reported (ASL keeps the best validation mAP).
    """
    config = base.get_base_config()
    config.method.name = "lpl_multilabel"  # the project's multi-label LPL (README)
    config.data.name = "coco2017"  # train2017 (118,287 images) / val2017 (5,000), 80 classes
    config.data.image_size = 224  # images resized whole to 224 x 224, as ASL
    config.data.workers = 16  # JPEG decoding: ~420 images/s a core (benchmarks/RESULTS.md)
    config.data.augment = True  # random horizontal flip of the resized image
    config.model.name = model  # torchvision-layout bottleneck ResNet (experiments/models.py)
    config.model.dtype = "bfloat16"  # bfloat16 compute; float32 parameters, BN statistics, logits
    config.optim.name = "adam"  # ASL: Adam, decay as L2 on the gradient (PyTorch Adam)
    config.optim.num_epochs = 40  # ASL stops after 40 epochs; 924 steps an epoch
    config.optim.batch_size = 128  # ASL's batch
    config.optim.learning_rate = 1e-4  # ASL's peak rate
    config.optim.weight_decay = 1e-4  # ASL
    config.optim.schedule = "onecycle"  # ASL: PyTorch OneCycleLR (cosine rise and decay)
    config.optim.warmup_epochs = 8  # ASL's pct_start 0.2 of the cycle
    config.focal.gamma = 2.0  # focal loss gamma (Lin et al.), for method=focal
    config.asl.gamma_negative = 4.0  # ASL's gamma- for COCO
    config.asl.gamma_positive = 0.0  # ASL's gamma+
    config.asl.clip = 0.05  # ASL's probability margin for negatives
    config.asl.stop_focusing_gradient = True  # ASL's disable_torch_grad_focal_loss
    config.lpl.split_rule = "longtail"  # positives of head classes minimised, of tail maximised
    config.lpl.num_head_classes = 20  # the quarter of classes with the most positive images
    config.lpl.epsilon = 0.2  # base bound of every (class, polarity), as for VOC 2007
    config.lpl.delta_epsilon = 0.4  # varied bounds up to 0.6 for the extreme classes
    config.lpl.step_size = 0.02  # K = floor(eps / 0.02): 10 to 30 inner steps
    config.run.log_every_steps = 100  # about 9 times an epoch
    config.run.checkpoint_every_steps = 2000  # about every 2 epochs
    config.run.eval_every_epochs = 5  # mAP every 5 epochs and at the end
    config.run.eval_batch_size = 1024  # any power-of-two mesh up to 1024 devices; last batch padded
    return config

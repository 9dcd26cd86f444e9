"""The fields of every experiment config: ``get_base_config()``, locked.

Each config file starts from it. It is a locked ``ml_collections.ConfigDict``: a field
that is not here (a misspelt name) cannot be added, and a field keeps its type (a string
for a number is refused). What a lock cannot know (finite numbers, ranges, the allowed
names, rules between fields) is checked once, in :mod:`experiments.config.rules`.

A config is nested: ``config.seed``, then one block per concern (``method``, ``data``,
``model``, ``optim``, ``run``) and one block per family of methods (``la``, ``ldam``,
``isda``, ``focal``, ``asl``, ``lpl``; their fields, defaults and comments are in
``experiments/methods/registry.py``, and a method reads only its own blocks). Override
any field with ``--config.BLOCK.FIELD=VALUE``, e.g. ``--config.method.name=la
--config.la.tau=1.5``.
"""

import ml_collections

from experiments.methods import registry as method_registry


def get_base_config() -> ml_collections.ConfigDict:
    """Every field with its default, locked (fields keep their types; none can be added)."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # data order, augmentation, initialisation and dropout

    # What to train: a name of experiments/methods/registry.py (--help lists them).
    config.method = ml_collections.ConfigDict()
    config.method.name = "ce"  # e.g. ce, la, la_lpl, lpl_mean, ldam_drw; multi-label: bce, ...

    # The data (experiments/data/registry.py) and its input pipeline.
    config.data = ml_collections.ConfigDict()
    config.data.name = "digits_lt"  # a name of experiments/data/registry.py (NAMES)
    config.data.imbalance_ratio = 1.0  # n_max / n_min of the exponential profile; 1 = balanced
    config.data.fashion_mnist_dir = ""  # fashion_mnist_lt: folder of the IDX files ("" = Debian's)
    config.data.data_dir = ""  # tensorflow-datasets directory ("" = tfds default)
    config.data.download = False  # let tfds download and prepare the data set (needs network)
    config.data.multilabel_num_train = 4000  # multilabel_digits: composed training images
    config.data.multilabel_num_test = 1000  # multilabel_digits: composed test images
    config.data.image_size = 128  # voc2007, imagenet_lt, inaturalist2018, coco2017: image side
    config.data.augment = True  # pad-4 crop + flip (in-memory images of at least 16x16);
    # random-resized crop + flip (imagenet_lt, inaturalist2018); flip (coco2017)
    # The input pipeline (experiments/data/pipeline.py): how batches are made, never what
    # they contain, so changing these keeps a run's batches (and resume) exact.
    config.data.workers = 0  # grain worker processes (0 = trainer's threads; JPEG sets: 8-16)
    config.data.threads = 2  # threads making batches in each process (0 = none)
    config.data.prefetch_batches = 2  # batches made ahead of the train step, per process/worker

    # The network (experiments/models.py).
    config.model = ml_collections.ConfigDict()
    config.model.name = "small_cnn"  # resnet32 | resnet110 | se_resnet110 | wrn16_8 | ...
    config.model.dtype = "float32"  # computation dtype of the model: float32 | bfloat16

    # Optimisation (experiments/optimizers.py); weight decay on all parameters.
    config.optim = ml_collections.ConfigDict()
    config.optim.name = "sgd"  # sgd | adam (decay as L2 on the gradient) | adamw (decoupled)
    config.optim.num_epochs = 30  # training epochs (an epoch drops the last partial batch)
    config.optim.batch_size = 128  # global batch size, split over all devices and hosts
    config.optim.learning_rate = 0.1  # peak learning rate
    config.optim.momentum = 0.9  # SGD momentum (sgd only)
    config.optim.nesterov = True  # Nesterov momentum (sgd only)
    config.optim.weight_decay = 1e-4  # added to the gradient as L2 (sgd, adam); adamw: decoupled
    config.optim.schedule = "multistep"  # multistep | cosine | constant | onecycle (cosine up/down)
    config.optim.milestones = (20, 25)  # epochs at which multistep multiplies the rate by decay
    config.optim.decay_factor = 0.1  # multistep factor
    config.optim.warmup_epochs = 0  # linear warm-up from 0 over this many epochs (onecycle: rise)

    # Method hyperparameters: config.la, .ldam, .isda, .focal, .asl, .lpl, each commented
    # where it is defined (experiments/methods/registry.py).
    for name, block in method_registry.default_blocks().items():
        config[name] = block

    # Book-keeping of the run (experiments/train.py, experiments/run/).
    config.run = ml_collections.ConfigDict()
    config.run.log_every_steps = 10  # train metrics are averaged and written every this many steps
    config.run.checkpoint_every_steps = 100  # a multiple of log_every_steps
    config.run.keep_checkpoints = 2  # checkpoints kept in WORKDIR/checkpoints
    config.run.eval_every_epochs = 5  # evaluate on the test split every this many epochs (and last)
    # The authors' protocol, emulated (the study's emulation table only): the best epoch on
    # test is a selection on the test split, never a valid estimate.
    config.run.eval_test_every_epoch = False  # evaluate every epoch; results.json: epoch_history
    config.run.eval_batch_size = 500  # global batch size of evaluation
    config.run.cpu_fast_convolutions = True  # on CPU: XLA's conv kernels, ~1.7x faster (benchmarks)
    config.run.distributed = False  # jax.distributed.initialize() (multi-host; experiments/README)
    config.lock()
    return config

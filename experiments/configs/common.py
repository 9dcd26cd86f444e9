"""Fields shared by every experiment config; each config file starts from these."""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # What to train.
    config.method = "ce"  # see experiments/methods.py: METHODS (single-label) / MULTILABEL_METHODS
    config.dataset = "digits_lt"  # see experiments/data/registry.py (NAMES)
    config.fashion_mnist_dir = ""  # fashion_mnist_lt: folder of the IDX files ("" = Debian's)
    config.imbalance_ratio = 1.0  # n_max / n_min of the exponential profile; 1 = balanced
    config.data_dir = ""  # tensorflow-datasets directory ("" = tfds default)
    config.multilabel_num_train = 4000  # multilabel_digits: composed training images
    config.multilabel_num_test = 1000  # multilabel_digits: composed test images
    config.image_size = 128  # voc2007, imagenet_lt, inaturalist2018, coco2017: image side
    config.download = False  # let tfds download and prepare the data set (needs network)
    # Input pipeline (experiments/pipeline.py): how batches are made, never what
    # they contain, so changing these keeps a run's batches (and resume) exact.
    config.data_workers = 0  # grain worker processes (0 = trainer's threads; JPEG sets: 8-16)
    config.data_threads = 2  # threads making batches in each process (0 = none)
    config.prefetch_batches = 2  # batches made ahead of the train step, per process/worker
    config.model = "small_cnn"  # resnet32 | resnet110 | se_resnet110 | wrn16_8 | wrn28_10 | ...
    config.dtype = "float32"  # computation dtype of the model: float32 | bfloat16
    config.augment = True  # pad-4 crop + flip (in-memory images of at least 16x16); random-
    # resized crop + flip (imagenet_lt, inaturalist2018); flip (coco2017)
    config.seed = 0  # data order, augmentation, initialisation and dropout

    # Optimisation (experiments/train.py: make_optimizer); weight decay on all parameters.
    config.optimizer = "sgd"  # sgd | adam (decay as L2 on the gradient) | adamw (decoupled)
    config.num_epochs = 30  # training epochs (an epoch drops the last partial batch)
    config.batch_size = 128  # global batch size, split over all devices and hosts
    config.learning_rate = 0.1  # peak learning rate
    config.momentum = 0.9  # SGD momentum (sgd only)
    config.nesterov = True  # Nesterov momentum (sgd only)
    config.weight_decay = 1e-4  # added to the gradient as L2 (sgd, adam); adamw: decoupled
    config.schedule = "multistep"  # multistep | cosine | constant | onecycle (cosine up, down)
    config.milestones = (20, 25)  # epochs at which multistep multiplies the rate by decay_factor
    config.decay_factor = 0.1  # multistep factor
    config.warmup_epochs = 0  # linear warm-up from 0 over this many epochs (onecycle: its rise)

    # Method hyperparameters (used by the methods that need them).
    config.la_tau = 1.0  # logit adjustment temperature (la, la_posthoc, la_lpl)
    config.ldam_max_margin = 0.5  # LDAM's largest margin
    config.ldam_scale = 30.0  # LDAM's logit scale s
    config.drw_start_epoch = 20  # ldam_drw: epoch from which class-balanced weights apply
    config.drw_beta = 0.9999  # ldam_drw: effective-number beta
    config.isda_lambda = 0.5  # ISDA's lambda_0 (ramped linearly over training)
    config.focal_gamma = 2.0  # focal loss gamma (multi-label)
    config.asl_gamma_negative = 4.0  # ASL gamma for negatives (multi-label)
    config.asl_gamma_positive = 0.0  # ASL gamma for positives
    config.asl_clip = 0.05  # ASL probability margin for negatives
    config.asl_stop_focusing_gradient = True  # ASL: focusing weights constant (authors' code)

    config.lpl = ml_collections.ConfigDict()
    config.lpl.split = "longtail"  # longtail (head/tail by class counts) | balanced (mean rule)
    config.lpl.epsilon = 0.1  # base bound eps of every class
    config.lpl.delta_epsilon = 0.2  # d_eps of varied bounds (lpl_varied, la_lpl); 0 = fixed
    config.lpl.step_size = 0.01  # inner PGD step alpha; K_c = floor(eps_c / alpha)
    config.lpl.num_head_classes = 4  # longtail split: this many most frequent classes are head
    config.lpl.head_scale = 1.0  # longtail split: factor of every head bound (authors: 0.2-0.6)
    config.lpl.normalize = False  # inner step: False = the paper's (Eq. 11/12), True = unit step
    # Adaptive LPL (lpl_adaptive, la_lpl_adaptive; docs/method.md, section 8): lpl.epsilon is
    # every class's initial bound; each bound then steers its class's log loss ratio
    # log(L'_c / L_c) toward s_c * adaptive_target (signs from lpl.split).
    config.lpl.adaptive_target = 0.3  # kappa: target |log(L'_c / L_c)| of every signed class
    config.lpl.adaptive_rate = 0.05  # eta: a bound changes by at most a factor e^eta a step
    config.lpl.max_epsilon = 10.0  # bounds stay in [step_size, max_epsilon]

    # Book-keeping.
    config.log_every_steps = 10  # train metrics are averaged and written every this many steps
    config.checkpoint_every_steps = 100  # a multiple of log_every_steps
    config.keep_checkpoints = 2  # checkpoints kept in WORKDIR/checkpoints
    config.eval_every_epochs = 5  # evaluate on the test split every this many epochs (and last)
    config.eval_batch_size = 500  # global batch size of evaluation
    config.cpu_fast_convolutions = True  # on CPU: XLA's conv kernels, ~1.7x faster (benchmarks)
    config.distributed = False  # jax.distributed.initialize() (multi-host, TPU pods); README
    return config

"""The trainer's data: the registry of data sets, where they come from, how they are batched.

* :mod:`~experiments.data.registry` -- ``config.data.name`` -> ``(train, validation, test)``;
* :mod:`~experiments.data.in_memory` -- small data sets held in host memory (digits,
  Fashion-MNIST, CIFAR, VOC) and their long-tailed versions;
* :mod:`~experiments.data.tfds_splits` -- large data sets read record by record from
  tensorflow-datasets ``array_record`` files (ImageNet-LT, iNaturalist 2018, COCO), with
  :mod:`~experiments.data.image_transforms` (JPEG decoding and augmentation);
* :mod:`~experiments.data.pipeline` -- the grain pipeline: batches pure in (seed, step),
  per-host rows, threads or worker processes, prefetch;
* :mod:`~experiments.data.fingerprint` -- what a run trains on, recorded in its work
  directory so that a resume on other data is refused.
"""

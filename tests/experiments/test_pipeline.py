"""Tests for experiments/data/pipeline.py: step-indexed batches, grain iteration, memory."""

import io
import tracemalloc

import numpy as np
import pytest
import reference as ref

from experiments.data import in_memory as ip
from experiments.data import pipeline as gp
from experiments.data import tfds_splits


def _toy_dataset(n=64, size=32, channels=3, num_classes=10, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    else:
        images = rng.random((n, size, size, channels), dtype=np.float32)
    labels = (np.arange(n) % num_classes).astype(np.int32)
    mean, std = ip._channel_stats(images)
    return ip.Dataset(images, labels, num_classes, mean, std, "toy")


def _indexed_split(labels, num_classes):
    """Image i holds the value i, so a row can be traced back to its source index."""
    n = len(labels)
    images = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    dataset = ip.Dataset(images, np.asarray(labels, np.int32), num_classes, [0.0], [1.0], "idx")
    return gp.ArraySplit(dataset)


# ----------------------------------------------------------------------------- batches


def test_train_batch_deterministic_and_epoch_coverage():
    split = _indexed_split(np.arange(103) % 7, 7)
    g = 10
    spe = gp.steps_per_epoch(split, g)
    assert spe == 10
    kw = dict(global_batch_size=g, seed=5)
    b0 = gp.train_batch(split, 0, **kw)
    np.testing.assert_array_equal(b0["image"], gp.train_batch(split, 0, **kw)["image"])
    assert not np.array_equal(b0["image"], gp.train_batch(split, 1, **kw)["image"])
    assert not np.array_equal(b0["image"], gp.train_batch(split, 0, **{**kw, "seed": 6})["image"])
    for epoch in range(2):
        batches = [gp.train_batch(split, epoch * spe + s, **kw) for s in range(spe)]
        seen = np.concatenate([b["image"].ravel() for b in batches]).astype(np.int64)
        assert len(np.unique(seen)) == spe * g  # every sample at most once
        expected = np.random.default_rng([5, epoch]).permutation(103)[: spe * g]
        np.testing.assert_array_equal(seen, expected)
        labels = np.concatenate([b["label"] for b in batches])
        np.testing.assert_array_equal(labels, split.dataset.labels[seen])


@pytest.mark.parametrize("augment", [False, True])
def test_train_batch_process_slices_concatenate(augment):
    split = gp.ArraySplit(_toy_dataset(n=40), augment)
    kw = dict(global_batch_size=16, seed=3)
    for step in (0, 1, 7):
        full = gp.train_batch(split, step, **kw)
        parts = [
            gp.train_batch(split, step, process_index=p, process_count=4, **kw) for p in range(4)
        ]
        assert parts[0]["image"].shape == (4, 32, 32, 3)
        for key in ("image", "label"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])


def test_train_batch_validation():
    split = gp.ArraySplit(_toy_dataset(n=20))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        gp.train_batch(split, 0, global_batch_size=32, seed=0)
    with pytest.raises(ValueError, match="divisible"):
        gp.train_batch(split, 0, global_batch_size=10, seed=0, process_count=3)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        gp.train_batch(split, -1, global_batch_size=10, seed=0)
    with pytest.raises(ValueError, match="start_step <= num_steps"):
        gp.train_batches(split, start_step=5, num_steps=4, global_batch_size=10, seed=0)
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        gp.LoaderOptions(num_workers=-1)


_REFERENCE_CASES = {
    "cifar-like uint8 32x32x3": dict(n=70, size=32, channels=3, dtype=np.uint8),
    "fashion-mnist-like uint8 28x28x1": dict(n=50, size=28, channels=1, dtype=np.uint8),
    "digits-like float32 8x8x1": dict(n=45, size=8, channels=1, dtype=np.float32),
}


@pytest.mark.parametrize("case", sorted(_REFERENCE_CASES))
@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("processes", [1, 4])
def test_batches_equal_the_reference_implementation(case, augment, processes):
    """Same order, crops, flips and normalization as the specification (tests/reference.py),
    through grain, across epoch boundaries and for every process's slice."""
    dataset = _toy_dataset(**_REFERENCE_CASES[case])
    split = gp.ArraySplit(dataset, augment)
    g, seed, steps = 16, 7, 7  # 2-4 steps an epoch: the run crosses epochs
    for process in range(processes):
        batches = gp.train_batches(
            split,
            start_step=0,
            num_steps=steps,
            global_batch_size=g,
            seed=seed,
            process_index=process,
            process_count=processes,
        )
        for step, batch in enumerate(batches):
            images, labels = ref.train_batch(
                dataset.images,
                dataset.labels,
                dataset.mean,
                dataset.std,
                step,
                batch_size=g,
                seed=seed,
                augment=augment,
                process=process,
                processes=processes,
            )
            np.testing.assert_array_equal(batch["label"], labels)
            assert batch["image"].dtype == np.float32
            np.testing.assert_allclose(batch["image"], images, rtol=0, atol=1e-5)


def test_augmentation_moves_pixels_and_normalizes():
    split = gp.ArraySplit(_toy_dataset(n=64), augment=True)
    plain = gp.ArraySplit(split.dataset, augment=False)
    kw = dict(global_batch_size=64, seed=11)
    assert not np.array_equal(
        gp.train_batch(split, 4, **kw)["image"], gp.train_batch(plain, 4, **kw)["image"]
    )
    big = gp.ArraySplit(_toy_dataset(n=512, seed=1), augment=True)
    x = gp.train_batch(big, 0, global_batch_size=512, seed=0)["image"]
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0.0, atol=0.05)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1.0, atol=0.05)


def test_eval_batches_padding_and_mask():
    split = _indexed_split(np.arange(23) % 4, 4)
    batches = list(gp.eval_batches(split, global_batch_size=8))
    assert len(batches) == gp.num_eval_batches(split, 8) == 3
    assert all(b["image"].shape == (8, 1, 1, 1) for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.dtype == bool and mask.sum() == 23 and not mask[23:].any()
    images = np.concatenate([b["image"] for b in batches]).ravel()
    np.testing.assert_array_equal(images[mask], np.arange(23))
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels[mask], split.dataset.labels)
    per_process = [
        list(gp.eval_batches(split, global_batch_size=8, process_index=p, process_count=2))
        for p in range(2)
    ]
    assert len(per_process[0]) == len(per_process[1]) == 3
    for j in range(3):
        for key in ("image", "label", "mask"):
            np.testing.assert_array_equal(
                np.concatenate([per_process[0][j][key], per_process[1][j][key]]), batches[j][key]
            )
    # The last global batch covers 16..23: process 1 gets 20, 21, 22 and one padding row.
    np.testing.assert_array_equal(per_process[1][2]["mask"], [True, True, True, False])
    np.testing.assert_array_equal(per_process[1][2]["image"][3], 0.0)


# ----------------------------------------------------------------------------- grain


@pytest.mark.parametrize(
    "options", [gp.LoaderOptions(num_threads=0), gp.LoaderOptions(num_threads=3)]
)
def test_resumed_iterator_sees_the_batches_of_an_uninterrupted_one(options):
    split = gp.ArraySplit(_toy_dataset(n=40), augment=True)
    kw = dict(num_steps=9, global_batch_size=8, seed=2, options=options)
    whole = list(gp.train_batches(split, start_step=0, **kw))
    resumed = list(gp.train_batches(split, start_step=6, **kw))
    assert len(whole) == 9 and len(resumed) == 3
    for step, batch in enumerate(whole):
        expected = gp.train_batch(split, step, global_batch_size=8, seed=2)
        np.testing.assert_array_equal(batch["image"], expected["image"])
    for a, b in zip(whole[6:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


@pytest.mark.slow
def test_worker_processes_make_the_same_batches():
    split = gp.ArraySplit(_toy_dataset(n=40), augment=True)
    kw = dict(start_step=2, num_steps=8, global_batch_size=8, seed=2)
    in_process = list(gp.train_batches(split, **kw))
    workers = list(gp.train_batches(split, options=gp.LoaderOptions(num_workers=2), **kw))
    assert len(workers) == 6
    for a, b in zip(in_process, workers, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])


# ----------------------------------------------------------------------------- memory


class _SyntheticJpegs:
    """``n`` examples made on demand from their index: a 64x48 JPEG and a label.

    Stands in for a tfds data source: nothing per example is held.
    """

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        from PIL import Image

        rng = np.random.default_rng(index)
        encoded = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(encoded, "JPEG")
        return {"image": encoded.getvalue(), "label": index % 10}


def _peak_bytes_of_a_few_batches(num_examples):
    split = tfds_splits.TfdsSplit(_SyntheticJpegs(num_examples), "synthetic", 10, image_size=32)
    tracemalloc.start()
    try:
        for _ in gp.train_batches(
            split,
            start_step=3,
            num_steps=6,
            global_batch_size=16,
            seed=0,
            options=gp.LoaderOptions(num_threads=2),
        ):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_host_memory_does_not_grow_with_the_number_of_examples():
    small, large = 20_000, 200_000
    _peak_bytes_of_a_few_batches(small)  # imports and caches out of the way
    growth = _peak_bytes_of_a_few_batches(large) - _peak_bytes_of_a_few_batches(small)
    # The epoch permutation takes 8 bytes an example; holding the decoded images would
    # take 64 * 48 * 3 bytes each (1.7 GB more).
    assert growth < 16 * (large - small), growth
    assert growth < 64 * 48 * 3 * (large - small) / 500

"""Images per second of the input pipeline alone (no model): grain vs the in-memory loop.

    python -m benchmarks.input_pipeline [--steps 20] [--repeats 3] [--workers 2] [--out F]

Two workloads, each timed interleaved in one process (A, B, C, A, B, C, ...):

* **CIFAR, 32x32** (10,000 random uint8 images in memory, pad-4 crop + flip, batch 128).
  Baseline: the trainer's former loop, one ``train_batch(step)`` call after another in the
  training thread. Variants: the same batches through grain with threads, and with worker
  processes.
* **224x224 JPEG decode + augment** (synthetic 500x375 JPEGs, as an average ImageNet image;
  random-resized crop + flip, batch 64). Baseline: the in-memory way, images decoded and
  resized to 224 beforehand and held in memory (what ``voc2007`` does), pad-4 crop + flip.
  Variants: the streamed split decoding each JPEG when its batch is made, in the training
  thread, with grain threads, and with grain worker processes.

A figure is the median over ``--repeats`` of ``--steps`` batches, after one untimed batch
(worker start-up and the first epoch's order are not counted). ``x baseline`` is the ratio
of images per second to the workload's baseline.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np

from benchmarks import _common
from experiments.data import in_memory, pipeline, tfds_splits

_JPEG_SHAPE = (375, 500, 3)  # height, width of an average ImageNet photograph
_NUM_DISTINCT_JPEGS = 32


class _SyntheticJpegs:
    """A random-access source of ``n`` examples cycling through a few encoded JPEGs."""

    def __init__(self, n: int):
        from PIL import Image

        rng = np.random.default_rng(0)
        self.n, self.jpegs = n, []
        for _ in range(_NUM_DISTINCT_JPEGS):
            # Smooth images compress like photographs (random noise would not).
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize(_JPEG_SHAPE[1::-1], Image.Resampling.BICUBIC)
            encoded = io.BytesIO()
            image.save(encoded, "JPEG", quality=90)
            self.jpegs.append(encoded.getvalue())

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"image": self.jpegs[index % _NUM_DISTINCT_JPEGS], "label": index % 1000}


def _in_memory(n: int, size: int) -> pipeline.ArraySplit:
    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.int32)
    dataset = in_memory.Dataset(images, labels, 10, [0.5] * 3, [0.25] * 3, f"random{size}")
    return pipeline.ArraySplit(dataset, augment=True)


def _loop(split, *, start_step, num_steps, global_batch_size, seed):
    """The trainer's former input loop: one pure ``train_batch`` call a step, in-thread."""
    for step in range(start_step, num_steps):
        yield pipeline.train_batch(split, step, global_batch_size=global_batch_size, seed=seed)


def _grain(options: pipeline.LoaderOptions):
    def batches(split, **kwargs):
        return pipeline.train_batches(split, options=options, **kwargs)

    return batches


def _images_per_second(make_batches, split, *, batch_size: int, steps: int) -> float:
    batches = make_batches(
        split, start_step=0, num_steps=steps + 1, global_batch_size=batch_size, seed=0
    )
    next(batches)  # start-up, not timed
    start = time.perf_counter()
    for _ in batches:
        pass
    return steps * batch_size / (time.perf_counter() - start)


def _measure(workload: str, variants: dict, *, batch_size: int, steps: int, repeats: int):
    samples = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            make_batches, split = variants[name]
            samples[name].append(
                _images_per_second(make_batches, split, batch_size=batch_size, steps=steps)
            )
    baseline = statistics.median(samples[names[0]])
    return [
        {
            "bench": "input_pipeline",
            "workload": workload,
            "variant": name,
            "batch_size": batch_size,
            "steps": steps,
            "images_per_second": statistics.median(values),
            "x_baseline": statistics.median(values) / baseline,
        }
        for name, values in samples.items()
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each variant")
    parser.add_argument("--workers", type=int, default=2, help="grain worker processes")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)

    emit = _common.Emitter(args.out)
    emit({"bench": "input_pipeline_machine", **_common.machine_info()})
    threads = pipeline.LoaderOptions(num_threads=2)
    workers = pipeline.LoaderOptions(num_workers=args.workers, num_threads=1)
    cifar = _in_memory(10_000, 32)
    jpegs = tfds_splits.TfdsSplit(_SyntheticJpegs(100_000), "jpegs", 1000, image_size=224)
    pre_resized = _in_memory(64 * (args.steps + 1), 224)
    workloads = {
        ("cifar 32x32", 128): {
            "in-memory loop (baseline)": (_loop, cifar),
            "grain, 2 threads": (_grain(threads), cifar),
            f"grain, {args.workers} workers": (_grain(workers), cifar),
        },
        ("224x224 jpeg decode + augment", 64): {
            "in-memory, pre-resized (baseline)": (_loop, pre_resized),
            "jpeg, in the training thread": (_loop, jpegs),
            "jpeg, grain 2 threads": (_grain(threads), jpegs),
            f"jpeg, grain {args.workers} workers": (_grain(workers), jpegs),
        },
    }
    rows = []
    for (workload, batch_size), variants in workloads.items():
        for record in _measure(
            workload, variants, batch_size=batch_size, steps=args.steps, repeats=args.repeats
        ):
            rows.append(emit(record))
    _common.print_table(
        "Input pipeline alone: images per second (median), ratio to the workload's baseline",
        rows,
        ["workload", "variant", "images_per_second", "x_baseline"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

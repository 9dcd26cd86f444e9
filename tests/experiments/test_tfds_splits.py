"""Tests for the streamed data sets: image_transforms, tfds_splits and the registry.

Mocked data (``tfds.testing.mock_data``) for ImageNet-LT, iNaturalist 2018 and COCO 2017;
a tiny data set really prepared as ``array_record`` for the read path without TensorFlow.
"""

import io
import json
import math
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from experiments import main as main_lib
from experiments import train as train_lib
from experiments.config import command_line as configuration
from experiments.config import names
from experiments.data import image_transforms, in_memory, registry, tfds_splits
from experiments.data import pipeline as gp

tfds = pytest.importorskip("tensorflow_datasets")

REPO = pathlib.Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- transforms


def test_random_resized_crop_boxes_follow_the_specification():
    rng = np.random.default_rng(0)
    height, width = 300, 400
    areas, ratios = [], []
    for _ in range(2000):
        top, left, h, w = image_transforms.random_resized_crop_box(height, width, rng)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        areas.append(h * w / (height * width))
        ratios.append(w / h)
    # Rounding to whole pixels moves the bounds by well under 5 %.
    assert 0.08 * 0.95 <= min(areas) and max(areas) <= 1.0
    assert 0.75 * 0.95 <= min(ratios) and max(ratios) <= 4 / 3 * 1.05
    # A box that fits at the first draw is the draw itself (torchvision's order of draws).
    spec = np.random.default_rng(1)
    area = 1000 * 1000 * spec.uniform(0.08, 1.0)
    ratio = math.exp(spec.uniform(math.log(3 / 4), math.log(4 / 3)))
    w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
    top, left = spec.integers(0, 1000 - h + 1), spec.integers(0, 1000 - w + 1)
    box = image_transforms.random_resized_crop_box(1000, 1000, np.random.default_rng(1))
    assert box == (top, left, h, w)
    # No draw fits a 10 x 1000 strip: the centre crop with the ratio clamped to 4/3.
    assert image_transforms.random_resized_crop_box(10, 1000, rng) == (0, 493, 10, 13)


def test_eval_box_is_resize_256_then_centre_224():
    top, left, h, w = image_transforms.center_crop_box(256, 512)
    # Shorter side 256 -> 256 (scale 1), centre 224 x 224.
    assert (top, left, h, w) == (16, 144, 224, 224)
    assert image_transforms.center_crop_box(512, 1024)[2] == 448  # scale 1/2


def test_crop_resize_takes_the_box_and_flips():
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :30] = 200  # left half bright
    left = image_transforms.crop_resize(image, (0, 0, 40, 24), 16)  # the filter reads 1-2 px out
    assert left.shape == (16, 16, 3) and np.all(left == 200)
    whole = image_transforms.crop_resize(image, (0, 0, 40, 60), 16)
    np.testing.assert_array_equal(whole[:, :6], 200)
    np.testing.assert_array_equal(whole[:, -6:], 0)
    flipped = image_transforms.crop_resize(image, (0, 0, 40, 60), 16, flip=True)
    np.testing.assert_array_equal(flipped, whole[:, ::-1])


def test_decode_rgb_converts_grey_images():
    from PIL import Image

    encoded = io.BytesIO()
    Image.fromarray(np.full((5, 7), 90, np.uint8)).save(encoded, "PNG")
    decoded = image_transforms.decode_rgb(encoded.getvalue())
    assert decoded.shape == (5, 7, 3) and np.all(decoded == 90)


# ----------------------------------------------------------------------------- not prepared


def test_not_prepared_fails_fast_naming_the_command(tmp_path):
    with pytest.raises(in_memory.DatasetNotPreparedError) as info:
        tfds_splits.open_tfds_split("imagenet_lt", "train", data_dir=str(tmp_path), manual_dir=True)
    message = str(info.value)
    assert f"tfds build imagenet_lt --file_format=array_record --data_dir={tmp_path}" in message
    assert "--manual_dir=DIR" in message and '".[prepare]"' in message
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing was downloaded


def test_trainer_reports_an_unprepared_data_set_in_one_line(tmp_path, capsys):
    args = [
        "--config.data.name=coco2017",
        "--config.method.name=bce",
        f"--config.data.data_dir={tmp_path}",
    ]
    assert main_lib.main([*args, "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "tfds build coco/2017 --file_format=array_record" in err


# ----------------------------------------------------------------------------- mocked data


def _mock_data(name, num_examples):
    """``tfds.testing.mock_data`` for ``name``; for COCO with a hand-made source.

    tfds's generated COCO examples cannot be read with the image left encoded (the mock
    draws the ``objects`` fields with different lengths), so COCO gets ``num_examples``
    random PNGs with the objects ``{i % 80, 7 i % 80}``.
    """
    if name != "coco2017":
        return tfds.testing.mock_data(num_examples=num_examples)
    from PIL import Image

    def as_data_source(self, split, decoders=None, **kwargs):
        rng = np.random.default_rng(0)
        examples = []
        for i in range(num_examples):
            encoded = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(encoded, "PNG")
            labels = np.asarray([i % 80, 7 * i % 80], np.int64)
            examples.append({"image": encoded.getvalue(), "objects": {"label": labels}})
        return examples

    return tfds.testing.mock_data(num_examples=num_examples, as_data_source_fn=as_data_source)


def _config(dataset, overrides=None):
    config = configuration.load_config()
    defaults = {"data.name": dataset, "data.image_size": "32", "data.imbalance_ratio": "1.0"}
    return configuration.apply_overrides(config, {**defaults, **(overrides or {})})


@pytest.mark.parametrize(
    "name, num_classes, multilabel, splits",
    [
        ("imagenet_lt", 1000, False, ("imagenet_lt", "imagenet_lt_validation", "imagenet_lt_test")),
        ("inaturalist2018", 8142, False, ("i_naturalist2018", None, "i_naturalist2018_validation")),
        ("coco2017", 80, True, ("coco2017", None, "coco2017_validation")),
    ],
)
def test_registry_streams_the_large_data_sets(name, num_classes, multilabel, splits):
    with _mock_data(name, 12):
        train, validation, test, _ = registry.load(_config(name))
        counts = train.class_counts
        batch = gp.train_batch(train, 1, global_batch_size=4, seed=0)
        evaluation = next(gp.eval_batches(test, global_batch_size=8))
    assert registry.is_multilabel(name) == multilabel
    assert [s and s.name for s in (train, validation, test)] == list(splits)
    assert len(train) == len(test) == 12 and train.num_classes == num_classes
    assert train.image_shape == (32, 32, 3) and train.is_multilabel == multilabel
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
    assert evaluation["image"].shape == (8, 32, 32, 3) and evaluation["mask"].all()
    assert counts.shape == (num_classes,) and counts.dtype == np.int64
    if multilabel:  # multi-hot of the objects' labels {i % 80, 7 i % 80}
        expected = np.zeros((12, num_classes), np.int64)
        for i in range(12):
            expected[i, [i % 80, 7 * i % 80]] = 1
        np.testing.assert_array_equal(counts, expected.sum(0))
        np.testing.assert_array_equal(evaluation["label"][:8], expected[:8])
        order = np.random.default_rng([0, 0]).permutation(12)  # step 1 of epoch 0
        np.testing.assert_array_equal(batch["label"], expected[order[4:8]])
    else:
        assert batch["label"].shape == (4,) and counts.sum() == 12
    # Augmented training images differ between steps of the same examples' epochs.
    assert not np.array_equal(batch["image"], evaluation["image"][:4])


def test_unknown_dataset_names_the_valid_ones():
    config = _config("digits_lt")
    config.data.name = "imagenet"
    with pytest.raises(ValueError, match="data.name must be one of .*imagenet_lt.*'imagenet'"):
        names.check_names(config)  # checked once, by the config, from registry.NAMES
    assert {"imagenet_lt", "inaturalist2018", "coco2017", "digits_lt"} <= set(registry.NAMES)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, method, num_classes",
    [("imagenet_lt", "ce", 1000), ("inaturalist2018", "ce", 8142), ("coco2017", "asl", 80)],
)
def test_end_to_end_on_mocked_data(tmp_path, name, method, num_classes):
    config = _config(
        name,
        {
            "method.name": method,
            "optim.num_epochs": "1",
            "optim.batch_size": "16",
            "run.eval_batch_size": "16",
            "run.log_every_steps": "1",
            "run.checkpoint_every_steps": "3",
            "run.eval_every_epochs": "1",
            "optim.warmup_epochs": "0",
        },
    )
    with _mock_data(name, 48):
        results = train_lib.train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["dataset"] == name and saved["num_steps"] == 3
    assert len(saved["class_counts"]) == num_classes and np.isfinite(saved["final_train_loss"])
    if name == "coco2017":
        assert len(saved["per_class_ap"]) == num_classes and 0.0 <= saved["mAP"] <= 1.0
    else:
        assert len(saved["per_class_accuracy"]) == num_classes
        assert 0.0 <= saved["accuracy"] <= 1.0
        # Mocked counts are 0 or 1 image a class: every class with images is few-shot.
        assert saved["many_shot_accuracy"] is None and saved["few_shot_accuracy"] is not None
    assert (tmp_path / "checkpoints" / "3").is_dir()


# ----------------------------------------------------------------------------- prepared data


_BUILDER = textwrap.dedent(
    """
    import io
    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

    def jpeg(i):
        out = io.BytesIO()
        Image.fromarray(np.full((40 + i, 30, 3), 10 * i, np.uint8)).save(out, "JPEG")
        return out.getvalue()

    class TinyJpegs(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(encoding_format="jpeg"),
                        "label": tfds.features.ClassLabel(num_classes=5),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(20):
                yield i, {"image": jpeg(i), "label": i % 5 if i < 15 else 0}

    for file_format, data_dir in zip(("array_record", "tfrecord"), sys.argv[1:]):
        TinyJpegs(data_dir=data_dir, file_format=file_format).download_and_prepare()
    """
)

_READER = textwrap.dedent(
    """
    import json, sys
    from experiments.data import pipeline, tfds_splits

    source, features, cache = tfds_splits.open_tfds_split(
        "tiny_jpegs", "train", data_dir=sys.argv[1]
    )
    split = tfds_splits.TfdsSplit(
        source, "tiny", features["label"].num_classes, image_size=16, counts_cache=cache
    )
    batches = pipeline.train_batches(
        split, start_step=0, num_steps=5, global_batch_size=8, seed=0
    )
    batches = list(batches)
    eval_rows = split.eval_rows(list(range(20)))[0]
    print(json.dumps({
        "tensorflow_imported": "tensorflow" in sys.modules,
        "counts": split.class_counts.tolist(),
        "cache": str(cache),
        "batches": len(batches),
        "shape": list(batches[0]["image"].shape),
        "eval_pixels": sorted(float(image.mean()) for image in eval_rows),
    }))
    """
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """``(array_record data_dir, tfrecord data_dir)`` of a tiny prepared data set."""
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("tfds")
    dirs = [str(root / "array_record"), str(root / "tfrecord")]
    script = "import sys\n" + _BUILDER
    subprocess.run([sys.executable, "-c", script, *dirs], check=True, capture_output=True)
    return dirs


@pytest.mark.slow
def test_prepared_array_record_is_read_without_tensorflow(prepared):
    run = subprocess.run(
        [sys.executable, "-c", _READER, prepared[0]],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["tensorflow_imported"] is False
    assert out["counts"] == [8, 3, 3, 3, 3] and out["batches"] == 5
    assert out["shape"] == [8, 16, 16, 3]
    # Constant images of value 10 i (tfds stores them in its own order), normalized.
    mean, std = np.asarray(in_memory.IMAGENET_MEAN), np.asarray(in_memory.IMAGENET_STD)
    expected = [np.mean((10 * i / 255 - mean) / std) for i in range(20)]
    np.testing.assert_allclose(out["eval_pixels"], expected, atol=0.03)
    cache = pathlib.Path(out["cache"])
    assert json.loads(cache.read_text()) == {"num_examples": 20, "class_counts": [8, 3, 3, 3, 3]}


@pytest.mark.slow
def test_tfrecord_preparation_is_refused_with_the_conversion_command(prepared):
    with pytest.raises(in_memory.DatasetNotPreparedError, match="tfds convert_format"):
        tfds_splits.open_tfds_split("tiny_jpegs", "train", data_dir=prepared[1])


def test_class_counts_cache_is_used_and_checked(tmp_path):
    cache = tmp_path / "counts.json"
    cache.write_text(json.dumps({"num_examples": 3, "class_counts": [2, 1]}))
    source = [{"image": b"", "label": 0}] * 3
    cached = tfds_splits.TfdsSplit(source, "s", 2, image_size=8, counts_cache=cache)
    np.testing.assert_array_equal(cached.class_counts, [2, 1])  # from the file, not the labels
    stale = tfds_splits.TfdsSplit(source + source, "s", 2, image_size=8, counts_cache=cache)
    np.testing.assert_array_equal(stale.class_counts, [6, 0])  # 6 examples now: counted again
    assert json.loads(cache.read_text())["num_examples"] == 6
    assert math.isclose(stale.class_counts.sum(), 6)

"""Per-image decoding and ImageNet-style crops, in NumPy and Pillow (no TensorFlow).

* training: random-resized crop (area 8 %-100 % of the image, aspect ratio 3/4-4/3, as
  torchvision's ``RandomResizedCrop``) resized to ``size x size``, then a random flip;
* evaluation: the shorter side resized to ``size * 8 / 7`` (256 for 224) and the centre
  ``size x size`` cropped -- done as one bilinear resample of the equivalent box of the
  original image;
* plain resize (multi-label COCO, as ASL): the whole image to ``size x size``, aspect ratio
  not kept.

A box is ``(top, left, height, width)`` in pixels of the decoded image.
"""

from __future__ import annotations

import io
import math

import numpy as np

__all__ = [
    "EVAL_RESIZE_RATIO",
    "center_crop_box",
    "crop_resize",
    "decode_rgb",
    "random_resized_crop_box",
]

EVAL_RESIZE_RATIO = 8 / 7  # evaluation resizes the shorter side to size * 8 / 7 (224 -> 256)
_CROP_AREA = (0.08, 1.0)
_CROP_ASPECT_RATIO = (3 / 4, 4 / 3)
_CROP_ATTEMPTS = 10


def decode_rgb(encoded: bytes) -> np.ndarray:
    """A JPEG / PNG image as uint8 ``[H, W, 3]`` RGB (grey and CMYK images converted)."""
    from PIL import Image

    with Image.open(io.BytesIO(encoded)) as image:
        return np.asarray(image.convert("RGB"))


def random_resized_crop_box(
    height: int, width: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop`` box: area 8-100 %, aspect ratio 3/4-4/3.

    Up to ten draws of ``(area, log aspect ratio)``; the first box that fits is placed
    uniformly. If none fits, the centre crop with the aspect ratio clamped to the range.

    Args:
      height, width: size of the image.
      rng: the example's random generator.

    Returns:
      ``(top, left, crop_height, crop_width)``.
    """
    area = height * width
    log_ratio = (math.log(_CROP_ASPECT_RATIO[0]), math.log(_CROP_ASPECT_RATIO[1]))
    for _ in range(_CROP_ATTEMPTS):
        target_area = area * rng.uniform(*_CROP_AREA)
        ratio = math.exp(rng.uniform(*log_ratio))
        crop_width = round(math.sqrt(target_area * ratio))
        crop_height = round(math.sqrt(target_area / ratio))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return top, left, crop_height, crop_width
    ratio = width / height
    if ratio < _CROP_ASPECT_RATIO[0]:
        crop_width, crop_height = width, round(width / _CROP_ASPECT_RATIO[0])
    elif ratio > _CROP_ASPECT_RATIO[1]:
        crop_height, crop_width = height, round(height * _CROP_ASPECT_RATIO[1])
    else:
        crop_height, crop_width = height, width
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def center_crop_box(height: int, width: int) -> tuple[float, float, float, float]:
    """The box that resizing the shorter side to ``size * 8 / 7`` and centre-cropping
    ``size x size`` keeps: a centred square of side ``min(height, width) * 7 / 8``."""
    side = min(height, width) / EVAL_RESIZE_RATIO
    return (height - side) / 2, (width - side) / 2, side, side


def crop_resize(image: np.ndarray, box, size: int, *, flip: bool = False) -> np.ndarray:
    """Bilinear (antialiased) resample of ``box`` of ``image`` to uint8 ``[size, size, 3]``.

    Args:
      image: uint8 ``[H, W, 3]``.
      box: ``(top, left, height, width)``, in pixels (fractions allowed).
      size: output side.
      flip: mirror the result horizontally.
    """
    from PIL import Image

    top, left, height, width = box
    resized = Image.fromarray(image).resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + width, top + height)
    )
    out = np.asarray(resized)
    return out[:, ::-1] if flip else out

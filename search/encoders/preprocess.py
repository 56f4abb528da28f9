"""Image geometry shared by inference and training: open_clip's "shortest" resize mode."""

from __future__ import annotations

import numpy as np
from PIL import Image

PIL_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def resize_center_crop(
    image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BICUBIC
) -> np.ndarray:
    """The short side to `size` pixels, then the centred size×size square, as uint8 HxWx3.

    Matches torchvision's Resize(int) (long side truncated) and CenterCrop (offsets rounded),
    which open_clip's preprocessing uses, on PIL images.
    """
    w, h = image.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), resample)
    top = round((new_h - size) / 2.0)
    left = round((new_w - size) / 2.0)
    return np.asarray(image.crop((left, top, left + size, top + size)))

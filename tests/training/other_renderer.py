"""Shapes drawn by code other than the generator: numpy masks, no Pillow drawing.

Other anti-aliasing (analytic coverage by 4×4 supersampled masks or none), other
sizes, plain or noisy backgrounds, PNG or JPEG: what a model that learned the
concepts, not the generator's pixels, must still recognise.
"""

from __future__ import annotations

import numpy as np

RGB = {
    "red": (230, 20, 30),
    "green": (30, 150, 40),
    "blue": (20, 60, 200),
    "yellow": (250, 220, 20),
    "purple": (120, 40, 160),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "orange": (250, 120, 10),
}
CENTRES = {
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "center": (0.5, 0.5),
}


def _inside(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Membership on coordinates scaled so the shape spans [-1, 1]."""
    if shape == "circle":
        return x**2 + y**2 <= 1
    if shape == "ring":
        r2 = x**2 + y**2
        return (r2 <= 1) & (r2 >= 0.42)
    if shape == "square":
        return (abs(x) <= 0.75) & (abs(y) <= 0.75)
    if shape == "cross":
        return ((abs(x) <= 0.3) & (abs(y) <= 0.95)) | ((abs(y) <= 0.3) & (abs(x) <= 0.95))
    if shape == "triangle":
        return (y <= 0.6) & (y >= -0.95 + 1.6 * abs(x))
    raise ValueError(shape)


def draw(
    shape: str,
    colour: str,
    position: str,
    size: str,
    side: int,
    rng: np.random.Generator,
    antialias: bool,
) -> np.ndarray:
    grey = rng.uniform(90, 170)
    image = np.full((side, side, 3), grey, np.float32)
    if rng.random() < 0.5:
        image += rng.normal(0, 6, image.shape)
    factor = 4 if antialias else 1
    coords = (np.arange(side * factor) + 0.5) / (side * factor)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    cx, cy = CENTRES[position]
    radius = 0.09 if size == "small" else 0.17
    mask = _inside(shape, (x - cx) / radius, (y - cy) / radius).astype(np.float32)
    coverage = mask.reshape(side, factor, side, factor).mean(axis=(1, 3))[..., None]
    image = image * (1 - coverage) + np.asarray(RGB[colour], np.float32) * coverage
    return np.clip(image, 0, 255).astype(np.uint8)

"""A small generated image library for `xmodal demo`: coloured shapes on varied backgrounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    top, bottom = rng.integers(120, 250, 3), rng.integers(60, 200, 3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = top * (1 - ramp) + bottom * ramp + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill
) -> None:
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((left + right) // 2, top), (right, bottom), (left, bottom)], fill=fill)


def generate_demo_library(folder: Path, count: int = 72, seed: int = 0) -> Path:
    """Write `count` JPEGs and a metadata.jsonl (colour, shape) into folder; idempotent."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata_path = folder / "metadata.jsonl"
    if metadata_path.exists():
        return metadata_path
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(count):
        colour = list(COLOURS)[index % len(COLOURS)]
        shape = SHAPES[(index // len(COLOURS)) % len(SHAPES)]
        size = (int(rng.integers(280, 400)), int(rng.integers(220, 300)))
        image = _background(rng, size)
        side = int(min(size) * rng.uniform(0.35, 0.6))
        left = int(rng.integers(0, size[0] - side))
        top = int(rng.integers(0, size[1] - side))
        _draw_shape(
            ImageDraw.Draw(image), shape, (left, top, left + side, top + side), COLOURS[colour]
        )
        image = image.filter(ImageFilter.GaussianBlur(0.6))
        name = f"{index:03d}-{colour}-{shape}.jpg"
        image.save(folder / name, "JPEG", quality=int(rng.integers(80, 95)))
        lines.append(json.dumps({"file": name, "colour": colour, "shape": shape, "n": index}))
    metadata_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return metadata_path

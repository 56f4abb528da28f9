"""Explanations of a hit: what the picture shows, which words of the query it
supports, and where in the picture the evidence lies (a heatmap PNG)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .base import Reranker, WordSupport

# A word counts as shown (or as contradicted) when the picture moves the model's
# log-probability of it by this many nats against a blank picture (docs/rerank.md).
SUPPORT_NATS = 1.0
HEATMAP_SIDE = 384  # pixels of the served heatmap's longer side, at most
# Dark blue -> red -> yellow: low evidence stays readable, the peak stands out.
_COLOURS = np.array(
    [(20, 20, 90), (70, 30, 160), (200, 40, 90), (245, 130, 30), (250, 240, 80)], np.float32
)


@dataclass
class Explanation:
    model: str
    description: str  # what the model says the picture shows
    words: list[WordSupport]  # per word of the query, the picture's evidence for it
    confirmed: list[str]  # words the picture shows
    contradicted: list[str]  # words the picture argues against
    summary: str


def explain_picture(
    reranker: Reranker, query: str, image: Image.Image, max_words: int = 40
) -> Explanation:
    description = reranker.describe([image], max_words)[0]
    words = reranker.word_support(query, image)
    confirmed = [w.word for w in words if w.support >= SUPPORT_NATS]
    contradicted = [w.word for w in words if w.support <= -SUPPORT_NATS]
    return Explanation(
        reranker.spec,
        description,
        words,
        confirmed,
        contradicted,
        summary(description, confirmed, contradicted),
    )


def summary(description: str, confirmed: list[str], contradicted: list[str]) -> str:
    said = f"The picture shows {description.strip().rstrip('.')}." if description.strip() else ""
    parts = [said]
    if confirmed:
        parts.append(f"It supports {_quoted(confirmed)} in the query.")
    if contradicted:
        parts.append(f"It does not support {_quoted(contradicted)}.")
    if not confirmed and not contradicted:
        parts.append("No word of the query is clearly supported or contradicted by it.")
    return " ".join(p for p in parts if p)


def _quoted(words: list[str]) -> str:
    quoted = [f'"{w.strip(",.;:!?")}"' for w in words]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def overlay(view: Image.Image, grid: np.ndarray) -> Image.Image:
    """The heatmap over the picture as the model saw it, as an RGB image."""
    view = view.convert("RGB")
    view.thumbnail((HEATMAP_SIDE, HEATMAP_SIDE))
    cells = Image.fromarray((np.clip(grid, 0, 1) * 255).astype(np.uint8), "L")
    heat = np.asarray(cells.resize(view.size, Image.Resampling.BILINEAR), np.float32) / 255.0
    # Interpolate the colour ramp at each pixel's heat.
    position = heat * (len(_COLOURS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_COLOURS) - 2)
    t = (position - low)[..., None]
    colour = _COLOURS[low] * (1 - t) + _COLOURS[low + 1] * t
    alpha = (0.15 + 0.6 * heat)[..., None]
    mixed = np.asarray(view, np.float32) * (1 - alpha) + colour * alpha
    return Image.fromarray(mixed.clip(0, 255).astype(np.uint8))


def heatmap_png(reranker: Reranker, query: str, image: Image.Image) -> bytes:
    grid = reranker.heatmap(query, image)
    buffer = io.BytesIO()
    overlay(reranker.view(image), grid).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def peak(grid: np.ndarray) -> tuple[float, float]:
    """(x, y) of the hottest cell's centre as fractions of the model's view."""
    row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return (col + 0.5) / grid.shape[1], (row + 0.5) / grid.shape[0]

"""Held-out scenes for judging a reranker, drawn by code of their own.

Two sets, each deterministic from a seed:

- swapped-colour pairs: a query naming two objects ("a red square on the left and a
  yellow star on the right", phrased several ways), the picture it describes, and its
  twin, where the two objects' colours are exchanged and nothing else changes (same
  shapes, places, sizes, background and noise);
- single-object scenes with the object's bounding box (where a heatmap's peak for a
  query naming the object should fall).

Each item carries its `shapes.Scene`, so a generated description can be checked
(`names_exactly`). The pictures are drawn here, not by `shapes.render`: numpy coverage
masks with their own shape proportions, palette, backgrounds, anti-aliasing and canvas
sizes, and no JPEG, so that held-out figures do not reward memorising the training
renderer's pixels. Only the concepts' names (colours, shapes, sizes, positions) and the
`Scene` type come from shapes.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from xmodal.synthetic.shapes import (
    SHAPES,
    SIZES,
    UNSEEN_COMBINATIONS,
    Scene,
    ShapeObject,
)

# shapes.py's colour names, with RGB values of this module's own.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 45),
    "green": (50, 150, 70),
    "blue": (45, 90, 205),
    "yellow": (235, 205, 50),
    "orange": (235, 125, 40),
    "purple": (125, 60, 160),
    "white": (240, 240, 235),
    "black": (25, 25, 30),
}
SIDES = (72, 96, 112, 128, 160, 200)
_CENTRES = {
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "center": (0.5, 0.5),
}
_RADIUS = {"small": (0.085, 0.11), "large": (0.15, 0.175)}  # as a fraction of the side
_PLACE_WORDS = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "up top"),
    "bottom": ("at the bottom", "down below"),
    "center": ("in the middle", "in the center"),
}

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; x1, y1 exclusive


@dataclass(frozen=True, eq=False)
class SwappedPair:
    """`query` describes `image` (showing `scene`); `twin` shows `twin_scene`: the same
    picture with the two objects' colours exchanged."""

    query: str
    scene: Scene
    twin_scene: Scene
    image: Image.Image
    twin: Image.Image
    boxes: tuple[Box, Box]  # of scene.objects, the same in both pictures


@dataclass(frozen=True, eq=False)
class SingleObject:
    query: str
    scene: Scene
    image: Image.Image
    box: Box


# -- geometry ----------------------------------------------------------------------
def _star(points: int, inner: float) -> list[tuple[float, float]]:
    corners = []
    for i in range(points * 2):
        radius = 1.0 if i % 2 == 0 else inner
        angle = -math.pi / 2 + i * math.pi / points
        corners.append((radius * math.cos(angle), radius * math.sin(angle)))
    return corners


def _inside_polygon(u: np.ndarray, v: np.ndarray, corners: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd crossing test of every (u, v) against a closed polygon."""
    inside = np.zeros(u.shape, bool)
    for (ua, va), (ub, vb) in zip(corners, corners[1:] + corners[:1], strict=True):
        crosses = (va > v) != (vb > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = ua + (v - va) * (ub - ua) / (vb - va)
        inside ^= crosses & (u < at)
    return inside


def _inside(shape: str, u: np.ndarray, v: np.ndarray, hole: float) -> np.ndarray:
    """Membership of coordinates in units of the object's radius (0 at its centre)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= hole * hole)
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.76
    if shape == "cross":
        arm = 0.3
        return ((abs(u) <= arm) & (abs(v) <= 0.92)) | ((abs(v) <= arm) & (abs(u) <= 0.92))
    if shape == "triangle":
        corners = [(0.0, -1.08), (0.94, 0.54), (-0.94, 0.54)]
        return _inside_polygon(u, v, corners)
    if shape == "star":
        return _inside_polygon(u, v, _star(5, 0.48))
    raise ValueError(f"unknown shape {shape!r}")


@dataclass(frozen=True)
class _Placement:
    cx: float  # pixels
    cy: float
    radius: float
    angle: float
    hole: float


def _place(o: ShapeObject, side: int, rng: np.random.Generator) -> _Placement:
    ax, ay = _CENTRES[o.position]
    return _Placement(
        cx=(ax + rng.uniform(-0.035, 0.035)) * side,
        cy=(ay + rng.uniform(-0.035, 0.035)) * side,
        radius=rng.uniform(*_RADIUS[o.size]) * side,
        angle=0.0 if o.shape in ("circle", "ring") else rng.uniform(-0.3, 0.3),
        hole=rng.uniform(0.5, 0.62),
    )


def _coverage(shape: str, place: _Placement, side: int, factor: int) -> np.ndarray:
    """Fraction of each pixel the shape covers, from factor x factor samples per pixel."""
    offsets = (np.arange(factor) + 0.5) / factor
    coords = (np.arange(side)[:, None] + offsets[None, :]).reshape(-1)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    dx, dy = (x - place.cx) / place.radius, (y - place.cy) / place.radius
    cos, sin = math.cos(place.angle), math.sin(place.angle)
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos  # rotated back into the shape's frame
    hits = _inside(shape, u, v, place.hole).astype(np.float32)
    return hits.reshape(side, factor, side, factor).mean(axis=(1, 3))


def _box(coverage: np.ndarray) -> Box:
    rows = np.flatnonzero(coverage.any(axis=1))
    cols = np.flatnonzero(coverage.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _backdrop(side: int, rng: np.random.Generator) -> np.ndarray:
    """Grey-ish backgrounds of kinds shapes.py does not draw: two-tone, vignette, flat."""
    base = rng.uniform(95, 170) + rng.uniform(-12, 12, 3)
    kind = int(rng.integers(3))
    y, x = np.mgrid[0:side, 0:side] / side
    if kind == 0:  # two tones, split along a random line
        other = np.clip(base + rng.uniform(-30, 30), 85, 180)
        split = (x - 0.5) * math.cos(rng.uniform(0, math.pi)) + (y - 0.5) * rng.uniform(-1, 1)
        pixels = np.where((split > rng.uniform(-0.2, 0.2))[..., None], base, other)
    elif kind == 1:  # vignette: darker or lighter towards the corners
        edge = ((x - 0.5) ** 2 + (y - 0.5) ** 2)[..., None] * 2
        pixels = base + edge * rng.uniform(-45, 30)
    else:
        pixels = np.broadcast_to(base, (side, side, 3))
    return np.asarray(pixels, np.float32)


def _draw(
    objects: tuple[ShapeObject, ...],
    fills: list[np.ndarray],
    coverages: list[np.ndarray],
    backdrop: np.ndarray,
    noise: np.ndarray,
) -> Image.Image:
    pixels = backdrop.copy()
    for coverage, fill in zip(coverages, fills, strict=True):
        alpha = coverage[..., None]
        pixels = pixels * (1 - alpha) + fill * alpha
    return Image.fromarray(np.clip(np.rint(pixels + noise), 0, 255).astype(np.uint8))


def _layout(
    objects: tuple[ShapeObject, ...], rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[np.ndarray]]:
    """Coverage of each object, the backdrop, the noise and each object's fill colour."""
    side = int(rng.choice(SIDES))
    factor = int(rng.choice([1, 3, 5]))  # 1: aliased edges
    coverages = [_coverage(o.shape, _place(o, side, rng), side, factor) for o in objects]
    backdrop = _backdrop(side, rng)
    noise = rng.normal(0, rng.uniform(0, 8), (side, side, 3)).astype(np.float32)
    fills = [np.asarray(PALETTE[o.colour], np.float32) + rng.normal(0, 7, 3) for o in objects]
    return coverages, backdrop, noise, fills


# -- queries -----------------------------------------------------------------------
def _thing(o: ShapeObject, with_size: bool) -> str:
    return f"a {o.size} {o.colour} {o.shape}" if with_size else f"a {o.colour} {o.shape}"


def _pair_query(first: ShapeObject, second: ShapeObject, rng: np.random.Generator) -> str:
    """A query for two objects, `first` left of (or above) `second`, in varied words."""
    with_size = bool(rng.random() < 0.3)
    a, b = _thing(first, with_size), _thing(second, with_size)
    templates: tuple[str, ...]
    if first.position == "left":
        templates = (
            f"{a} on the left and {b} on the right",
            f"{a} to the left of {b}",
            f"{b} to the right of {a}",
            f"{a} and {b}",
            f"{b} and {a}",
            f"on the left {a}, on the right {b}",
            f"{a} next to {b}",
        )
    else:
        templates = (
            f"{a} at the top and {b} at the bottom",
            f"{a} above {b}",
            f"{b} below {a}",
            f"{a} and {b}",
            f"{b} and {a}",
            f"{a} over {b}",
        )
    return str(rng.choice(templates))


def _single_query(o: ShapeObject, rng: np.random.Generator) -> str:
    where = str(rng.choice(_PLACE_WORDS[o.position]))
    templates = (
        f"a {o.colour} {o.shape}",
        f"the {o.colour} {o.shape}",
        f"a {o.size} {o.colour} {o.shape}",
        f"a {o.colour} {o.shape} {where}",
        f"a {o.size} {o.colour} {o.shape} {where}",
    )
    return str(rng.choice(templates))


def _allowed(combinations: list[tuple[str, str]], split: str) -> bool:
    unseen = any(c in UNSEEN_COMBINATIONS for c in combinations)
    if split == "seen":
        return not unseen
    if split == "unseen":
        return unseen
    raise ValueError(f"split must be 'seen' or 'unseen', not {split!r}")


# -- the sets ----------------------------------------------------------------------
def swapped_pairs(count: int, seed: int, split: str = "seen") -> list[SwappedPair]:
    """`count` swapped-colour pairs. "seen": neither picture holds a colour-shape
    combination training leaves out; "unseen": the described picture holds one."""
    rng = np.random.default_rng([seed, 0x5A1, 0 if split == "seen" else 1])
    pairs: list[SwappedPair] = []
    while len(pairs) < count:
        first_colour, second_colour = rng.choice(list(PALETTE), size=2, replace=False)
        first_shape, second_shape = rng.choice(SHAPES, size=2, replace=False)
        combos = [
            (str(first_colour), str(first_shape)),
            (str(second_colour), str(second_shape)),
            (str(second_colour), str(first_shape)),
            (str(first_colour), str(second_shape)),
        ]
        if not _allowed(combos if split == "seen" else combos[:2], split):
            continue
        places = ("left", "right") if rng.random() < 0.7 else ("top", "bottom")
        sizes = [str(s) for s in rng.choice(SIZES, size=2)]
        objects = tuple(
            ShapeObject(colour, shape, size, place)
            for (colour, shape), size, place in zip(combos[:2], sizes, places, strict=True)
        )
        first, second = objects
        twin_objects = (  # each object keeps its shape, size and place, takes the other's colour
            ShapeObject(second.colour, first.shape, first.size, first.position),
            ShapeObject(first.colour, second.shape, second.size, second.position),
        )
        coverages, backdrop, noise, fills = _layout(objects, rng)
        pairs.append(
            SwappedPair(
                query=_pair_query(objects[0], objects[1], rng),
                scene=Scene(objects),
                twin_scene=Scene(twin_objects),
                image=_draw(objects, fills, coverages, backdrop, noise),
                twin=_draw(twin_objects, fills[::-1], coverages, backdrop, noise),
                boxes=(_box(coverages[0]), _box(coverages[1])),
            )
        )
    return pairs


def single_objects(count: int, seed: int, split: str = "seen") -> list[SingleObject]:
    """`count` one-object scenes, each with the object's bounding box."""
    rng = np.random.default_rng([seed, 0x51, 0 if split == "seen" else 1])
    items: list[SingleObject] = []
    while len(items) < count:
        o = ShapeObject(
            str(rng.choice(list(PALETTE))),
            str(rng.choice(SHAPES)),
            str(rng.choice(SIZES)),
            str(rng.choice(list(_CENTRES))),
        )
        if not _allowed([o.combination], split):
            continue
        coverages, backdrop, noise, fills = _layout((o,), rng)
        image = _draw((o,), fills, coverages, backdrop, noise)
        items.append(SingleObject(_single_query(o, rng), Scene((o,)), image, _box(coverages[0])))
    return items


# -- checking a description ----------------------------------------------------------
_WORDS = re.compile(r"[a-z]+")


def named_objects(text: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs a description names: each shape word with the last
    colour word said since the previous shape ("a large red square" -> red square)."""
    named, colour = [], None
    for word in _WORDS.findall(text.lower()):
        if word in PALETTE:
            colour = word
        elif word.rstrip("s") in SHAPES or word in SHAPES:
            named.append((colour or "", word if word in SHAPES else word.rstrip("s")))
            colour = None
    return named


def names_exactly(text: str, scene: Scene) -> bool:
    """Whether `text` names exactly the scene's objects' colours and shapes (each once,
    in any order, nothing else)."""
    return sorted(named_objects(text)) == sorted(o.combination for o in scene.objects)

"""Captioned pictures of coloured shapes, deterministic from a seed.

Each scene holds one or two objects; each object has a colour, a shape, a size
and a position, and each scene gets a caption in varied English. Rendering varies
on purpose (canvas size, anti-aliasing, rotation, background, blur, noise, JPEG
quality) so that a model trained on these learns the concepts, not the pixels.

Some colour-shape combinations are held out (`UNSEEN_COMBINATIONS`): training
never shows them, so evaluation can measure composition of known concepts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (35, 75, 220),
    "yellow": (240, 215, 35),
    "orange": (245, 135, 25),
    "purple": (135, 50, 175),
    "white": (250, 250, 250),
    "black": (12, 12, 12),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
UNSEEN_COMBINATIONS = frozenset(
    {
        ("purple", "star"),
        ("green", "ring"),
        ("orange", "triangle"),
        ("white", "cross"),
        ("blue", "square"),
    }
)

# Centre of each position as a fraction of the canvas (x, y).
ANCHORS = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
ANCHOR_JITTER = 0.05  # an object's centre lies within this of its anchor, along each axis
SIZE_RANGE = {"small": (0.15, 0.2), "large": (0.3, 0.38)}  # diameter / canvas side
_POSITION_PHRASES = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the center", "in the middle", "at the center"),
}


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    size: str
    position: str

    @property
    def combination(self) -> tuple[str, str]:
        return (self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]

    @property
    def unseen(self) -> bool:
        return any(o.combination in UNSEEN_COMBINATIONS for o in self.objects)


def random_scene(rng: np.random.Generator, split: str = "train") -> Scene:
    """A scene for a split: "train"/"seen" avoid the held-out combinations, "unseen" has one."""
    two = rng.random() < 0.35
    while True:
        count = 2 if two else 1
        positions = rng.choice(POSITIONS, size=count, replace=False)
        if count == 2 and {"center"} & set(positions):
            continue  # two objects are always on opposite sides: left/right or top/bottom
        if count == 2 and {positions[0], positions[1]} not in (
            {"left", "right"},
            {"top", "bottom"},
        ):
            continue
        objects = tuple(
            ShapeObject(
                str(rng.choice(list(COLOURS))),
                str(rng.choice(SHAPES)),
                str(rng.choice(SIZES)),
                str(position),
            )
            for position in positions
        )
        if count == 2 and objects[0].combination == objects[1].combination:
            continue
        scene = Scene(objects)
        if (split == "unseen") == scene.unseen:
            return scene


def _object_phrase(o: ShapeObject, rng: np.random.Generator, with_size: bool = True) -> str:
    size = f"{o.size} " if with_size else ""
    return f"a {size}{o.colour} {o.shape}"


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A full caption: every attribute of every object is said."""
    if len(scene.objects) == 1:
        (o,) = scene.objects
        where = str(rng.choice(_POSITION_PHRASES[o.position]))
        thing = _object_phrase(o, rng)
        templates: tuple[str, ...] = (
            f"{thing} {where}",
            f"there is {thing} {where}",
            f"a picture of {thing} {where}",
            f"{where}, {thing}",
            f"a {o.colour} {o.shape}, {o.size}, {where}",
            f"one {o.size} {o.colour} {o.shape} {where}",
        )
        return str(rng.choice(templates))
    first, second = scene.objects
    if first.position in ("right", "bottom"):
        first, second = second, first  # say it left-to-right / top-to-bottom
    relation = "to the left of" if first.position == "left" else "above"
    a, b = _object_phrase(first, rng), _object_phrase(second, rng)
    templates = (
        f"two objects: {a} {relation} {b}",
        f"{a} {relation} {b}",
        f"there is {a} {relation} {b}",
        f"{b} {'to the right of' if relation == 'to the left of' else 'below'} {a}",
    )
    return str(rng.choice(templates))


def partial_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A shorter caption that leaves some attributes out ("a red circle", "a star on the left")."""
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    kind = int(rng.integers(4))
    if kind == 0:
        return f"a {o.colour} {o.shape}"
    if kind == 1:
        return f"a {o.shape} {rng.choice(_POSITION_PHRASES[o.position])}"
    if kind == 2:
        return f"a {o.size} {o.shape}"
    return f"something {o.colour}"


# The one wording `description` uses for each position.
PLACES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
_READING_ORDER = {"left": 0, "top": 0, "center": 0, "right": 1, "bottom": 1}


def description(scene: Scene) -> str:
    """The canonical full description: every object's size, colour, shape and position,
    left to right / top to bottom, in one fixed wording ("a large red square on the left
    and a small yellow star on the right"), so that a describer's output can be checked."""
    ordered = sorted(scene.objects, key=lambda o: _READING_ORDER[o.position])
    return " and ".join(f"a {o.size} {o.colour} {o.shape} {PLACES[o.position]}" for o in ordered)


# -- rendering ---------------------------------------------------------------
def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Muted backgrounds (every object colour, white and black included, stays visible)."""
    kind = int(rng.integers(4))
    pixels: np.ndarray
    base = rng.uniform(70, 190) + rng.uniform(-18, 18, 3)  # grey with a faint tint
    if kind == 0:  # flat
        pixels = np.broadcast_to(base, (side, side, 3)).astype(np.float32)
    elif kind == 1:  # gradient
        other = np.clip(base + rng.uniform(-50, 50) + rng.uniform(-12, 12, 3), 60, 200)
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:side, 0:side] / max(side - 1, 1) - 0.5
        t = np.clip(x * math.cos(angle) + y * math.sin(angle) + 0.5, 0, 1)
        pixels = base * (1 - t[..., None]) + other * t[..., None]
    elif kind == 2:  # noise
        pixels = base + rng.normal(0, rng.uniform(8, 25), (side, side, 3))
    else:  # texture: soft stripes or checks
        y, x = np.mgrid[0:side, 0:side]
        period = rng.uniform(6, 24) * side / 128
        if rng.random() < 0.5:
            wave = np.sin((x + y * rng.uniform(-1, 1)) / period * 2 * math.pi)
        else:
            wave = np.sign(np.sin(x / period * math.pi) * np.sin(y / period * math.pi))
        pixels = base + wave[..., None] * rng.uniform(8, 22)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        points = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
        scale = r
    elif shape == "triangle":
        points = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
        scale = r * 1.05
    elif shape == "star":
        points = []
        for i in range(10):
            radius = 1.0 if i % 2 == 0 else 0.45
            a = i * math.pi / 5 - math.pi / 2
            points.append((radius * math.cos(a), radius * math.sin(a)))
        scale = r * 1.1
    else:  # cross: a plus sign of arm width 1/3
        w = 1 / 3
        points = [
            (-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w),
            (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w),
        ]  # fmt: skip
        scale = r * 0.95
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + scale * (x * cos - y * sin), cy + scale * (x * sin + y * cos)) for x, y in points]


def _jittered_colour(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.asarray(COLOURS[colour], dtype=np.float32)
    jitter = rng.normal(0, 10, 3) + rng.uniform(-12, 12)
    return tuple(int(v) for v in np.clip(base + jitter, 0, 255))  # type: ignore[return-value]


def render(scene: Scene, rng: np.random.Generator, side: int | None = None) -> Image.Image:
    """Draw a scene; rendering parameters are drawn from `rng`."""
    side = side or int(rng.integers(64, 257))
    supersample = int(rng.choice([1, 2, 3, 4]))  # 1: aliased edges, >1: anti-aliased
    big = side * supersample
    canvas = Image.fromarray(_background(rng, side)).resize((big, big), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for o in scene.objects:
        ax, ay = ANCHORS[o.position]
        cx = (ax + rng.uniform(-ANCHOR_JITTER, ANCHOR_JITTER)) * big
        cy = (ay + rng.uniform(-ANCHOR_JITTER, ANCHOR_JITTER)) * big
        r = rng.uniform(*SIZE_RANGE[o.size]) * big / 2
        fill = _jittered_colour(o.colour, rng)
        angle = rng.uniform(-0.35, 0.35)
        if o.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif o.shape == "ring":
            draw.ellipse(
                (cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(1, int(r * 0.35))
            )
        else:
            draw.polygon(_polygon(o.shape, cx, cy, r, angle), fill=fill)
    image = canvas.resize((side, side), Image.Resampling.LANCZOS) if supersample > 1 else canvas
    if rng.random() < 0.4:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * side / 128))
    if rng.random() < 0.5:
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(
            0, rng.uniform(2, 10), (side, side, 3)
        )
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return image


def jpeg_bytes(image: Image.Image, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(45, 96)))
    return buffer.getvalue()


@dataclass(frozen=True)
class CaptionedImage:
    index: int
    scene: Scene
    caption: str
    jpeg: bytes


def generate(count: int, seed: int, split: str = "train") -> Iterator[CaptionedImage]:
    """`count` captioned JPEGs of a split ("train", "seen" or "unseen"); same seed, same bytes."""
    # Each split has its own stream, so a test split never repeats a training scene's noise.
    offset = {"train": 0, "seen": 1, "unseen": 2}[split]
    rng = np.random.default_rng([seed, offset])
    for index in range(count):
        scene = random_scene(rng, "unseen" if split == "unseen" else "train")
        image = render(scene, rng)
        yield CaptionedImage(index, scene, caption(scene, rng), jpeg_bytes(image, rng))

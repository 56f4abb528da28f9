"""The library `xmodal demo` serves: captioned shapes and captioned sounds, with their
attributes as metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xmodal.synthetic import sounds
from xmodal.synthetic.shapes import Scene, ShapeObject, generate, jpeg_bytes, render

DEMO_SEED = 7


DEMO_SOUND_RATE = 16000  # the reference audio model's rate: nothing to resample

# Twins that differ only in which shape has which colour: a contrastive model ranks
# them about alike for "a red square to the left of a yellow star"; the demo shows the
# reranker telling them apart.
SWAPPED_TWINS = {
    "twin-red-square-yellow-star.jpg": (("red", "square"), ("yellow", "star")),
    "twin-yellow-square-red-star.jpg": (("yellow", "square"), ("red", "star")),
}


def write_demo_library(folder: Path, count: int = 240, sound_count: int = 60) -> Path:
    """JPEGs and WAVs plus a metadata.jsonl (caption; colours and shapes, or sound kinds);
    skipped when already written."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata_path = folder / "metadata.jsonl"
    if metadata_path.exists():
        return metadata_path
    lines = []
    seen = list(generate(count - count // 6, DEMO_SEED, "train"))
    unseen = list(generate(count // 6, DEMO_SEED, "unseen"))
    for number, item in enumerate(seen + unseen):
        first = item.scene.objects[0]
        name = f"{number:03d}-{first.colour}-{first.shape}.jpg"
        (folder / name).write_bytes(item.jpeg)
        lines.append(
            json.dumps(
                {
                    "file": name,
                    "caption": item.caption,
                    "colours": sorted({o.colour for o in item.scene.objects}),
                    "shapes": sorted({o.shape for o in item.scene.objects}),
                    "objects": len(item.scene.objects),
                }
            )
        )
    for number, (name, (left, right)) in enumerate(SWAPPED_TWINS.items()):
        scene = Scene((ShapeObject(*left, "large", "left"), ShapeObject(*right, "large", "right")))
        rng = np.random.default_rng([DEMO_SEED, 99, number])
        (folder / name).write_bytes(jpeg_bytes(render(scene, rng, side=192), rng))
        lines.append(
            json.dumps(
                {
                    "file": name,
                    "caption": f"a {left[0]} {left[1]} to the left of a {right[0]} {right[1]}",
                    "colours": sorted({left[0], right[0]}),
                    "shapes": sorted({left[1], right[1]}),
                    "objects": 2,
                }
            )
        )
    for number, clip in enumerate(
        sounds.generate(sound_count, DEMO_SEED, "train", DEMO_SOUND_RATE)
    ):
        kinds = sorted({event.kind for event in clip.spec.events})
        name = f"sound-{number:03d}-{'-'.join(kinds)}.wav"
        sounds.write_wav(folder / name, clip.samples, DEMO_SOUND_RATE)
        lines.append(json.dumps({"file": name, "caption": clip.caption, "sounds": kinds}))
    metadata_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return metadata_path

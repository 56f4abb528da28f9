"""The reference reranker's trainer (tiny sizes, a few steps) and its held-out sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import train_vlm_reference
from xmodal.synthetic import shapes, swapped_pairs
from xmodal.synthetic.swapped_pairs import PALETTE, names_exactly, single_objects

TINY = [
    "--max-steps", "2", "--train-images", "24", "--batch-size", "8", "--workers", "1",
    "--vision-width", "32", "--vision-layers", "1", "--text-width", "32", "--text-layers", "1",
    "--eval-pairs", "4", "--eval-scenes", "4", "--latency-runs", "1", "--vision-steps", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vlm") / "xmodal-ref-vlm"
    assert train_vlm_reference.main([*TINY, "--out", str(out)]) == 0
    return out


def test_trainer_writes_a_folder_from_pretrained_loads(trained: Path) -> None:
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from xmodal.search.rerank.prompts import CAPTION_PROMPT, chat_prompt, encode

    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    processor = AutoProcessor.from_pretrained(trained)
    model = LlavaForConditionalGeneration.from_pretrained(trained).eval()
    assert next(model.parameters()).dtype == torch.float32
    pair = swapped_pairs.swapped_pairs(1, seed=3)[0]
    prompt = chat_prompt(processor, CAPTION_PROMPT)
    encoded = encode(processor, [pair.image, pair.twin], [prompt] * 2, [pair.query] * 2)
    with torch.inference_mode():
        logits = model(**encoded.inputs).logits
    assert logits.shape[:2] == encoded.inputs["input_ids"].shape
    assert encoded.inputs["pixel_values"].shape[-2:] == (64, 64)


def test_trainer_writes_a_card_with_its_figures(trained: Path) -> None:
    card = json.loads((trained.parent / "xmodal-ref-vlm.card.json").read_text())
    assert card["architecture"] == "xmodal-ref-vlm"
    assert card["steps"] == 2
    assert card["command"].startswith("python -m training.train_vlm_reference")
    assert card["bytes"] == sum(p.stat().st_size for p in trained.iterdir())
    for method in ("caption_likelihood", "vqa_score"):
        assert 0.0 <= card["swapped_pairs"][method] <= 1.0
    assert card["swapped_pairs"]["pairs"] == 4
    assert 0.0 <= card["description"]["colours_and_shapes"] <= 1.0
    assert card["latency_20_candidates"]["forward_ms_median"] > 0


def test_training_batches_ask_only_for_answer_tokens() -> None:
    import argparse

    from training.vlm_parts import build_tokenizer, llava_processor

    rng = np.random.default_rng(0)
    tokenizer = build_tokenizer(train_vlm_reference.tokenizer_corpus(200, 0), vocab_size=400)
    processor = llava_processor(tokenizer, 64, 8)
    scenes = [shapes.random_scene(rng) for _ in range(6)]
    pixels = np.full((6, 64, 64, 3), 128, np.uint8)
    args = argparse.Namespace(partial_captions=0.25, description_captions=0.1, easy_negatives=0.3)
    counts = {"caption": 2, "describe": 2, "vqa": 2}
    encoded, tasks = train_vlm_reference.make_batch(
        processor, pixels, scenes, np.arange(6), counts, rng, args
    )
    assert tasks == ["caption", "caption", "describe", "describe", "vqa", "vqa"]
    for row, task in enumerate(tasks):
        asked = encoded.targets[row][encoded.targets[row] != -100].tolist()
        assert asked[-1] == tokenizer.eos_token_id
        answer = tokenizer.decode(asked[:-1]).strip()
        if task == "describe":
            assert answer == shapes.description(scenes[row])
        if task == "vqa":
            assert answer in ("Yes", "No")


def test_hard_negatives_change_the_scene_and_partial_captions_are_labelled_by_truth() -> None:
    rng = np.random.default_rng(1)
    scene = shapes.Scene(
        (
            shapes.ShapeObject("red", "square", "large", "left"),
            shapes.ShapeObject("yellow", "star", "small", "right"),
        )
    )
    for _ in range(50):
        changed = train_vlm_reference.mutate(scene, rng)
        assert changed is None or set(changed.objects) != set(scene.objects)
    assert train_vlm_reference.partial_is_true("a red square", scene)
    assert not train_vlm_reference.partial_is_true("a yellow square", scene)
    assert train_vlm_reference.partial_is_true("a star on the right side", scene)
    assert not train_vlm_reference.partial_is_true("a star on the left", scene)
    assert train_vlm_reference.partial_is_true("something yellow", scene)


def test_swapped_pairs_are_deterministic_from_their_seed() -> None:
    first = swapped_pairs.swapped_pairs(6, seed=5)
    again = swapped_pairs.swapped_pairs(6, seed=5)
    other = swapped_pairs.swapped_pairs(6, seed=6)
    for a, b in zip(first, again, strict=True):
        assert a.query == b.query and a.scene == b.scene and a.boxes == b.boxes
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert np.array_equal(np.asarray(a.twin), np.asarray(b.twin))
    assert [p.query for p in first] != [p.query for p in other]
    singles = single_objects(4, seed=5)
    assert [s.box for s in singles] == [s.box for s in single_objects(4, seed=5)]


def test_twins_differ_only_by_the_two_objects_colours_swapped() -> None:
    for pair in swapped_pairs.swapped_pairs(20, seed=2):
        a, b = pair.scene.objects
        ta, tb = pair.twin_scene.objects
        assert (ta.colour, tb.colour) == (b.colour, a.colour)
        assert [(o.shape, o.size, o.position) for o in (a, b)] == [
            (o.shape, o.size, o.position) for o in (ta, tb)
        ]
        assert a.colour != b.colour and a.shape != b.shape
        image = np.asarray(pair.image).astype(int)
        twin = np.asarray(pair.twin).astype(int)
        outside = np.ones(image.shape[:2], bool)
        for x0, y0, x1, y1 in pair.boxes:
            outside[y0:y1, x0:x1] = False
        assert np.array_equal(image[outside], twin[outside])  # background, noise: the same
        for (x0, y0, x1, y1), colour, other in zip(
            pair.boxes, (a.colour, b.colour), (b.colour, a.colour), strict=True
        ):
            # Where the described picture shows this object's colour, the twin shows the other's.
            near = _near(image[y0:y1, x0:x1], PALETTE[colour])
            assert near.sum() >= 10
            assert _near(twin[y0:y1, x0:x1], PALETTE[other])[near].mean() > 0.9
        # No colour-shape combination training leaves out, in either picture ("seen").
        assert not pair.scene.unseen and not pair.twin_scene.unseen


def _near(pixels: np.ndarray, rgb: tuple[int, int, int], within: float = 40.0) -> np.ndarray:
    return np.linalg.norm(pixels - np.asarray(rgb), axis=-1) < within


def test_boxes_hold_the_objects_pixels() -> None:
    for item in single_objects(30, seed=4):
        (o,) = item.scene.objects
        pixels = np.asarray(item.image).astype(int)
        x0, y0, x1, y1 = item.box
        assert 0 <= x0 < x1 <= pixels.shape[1] and 0 <= y0 < y1 <= pixels.shape[0]
        near = _near(pixels, PALETTE[o.colour])
        inside = np.zeros(near.shape, bool)
        inside[y0:y1, x0:x1] = True
        assert near.sum() >= 10
        assert near[inside].sum() / near.sum() >= 0.99
        # The box is tight: the object fills a fair part of it (rings and stars less).
        assert near[inside].mean() >= 0.25
        # And it sits where the scene says.
        cx, cy = (x0 + x1) / 2 / pixels.shape[1], (y0 + y1) / 2 / pixels.shape[0]
        expected = {"left": cx < 0.4, "right": cx > 0.6, "top": cy < 0.4, "bottom": cy > 0.6}
        assert expected.get(o.position, 0.4 < cx < 0.6 and 0.4 < cy < 0.6)


def test_a_description_is_checked_by_the_colours_and_shapes_it_names() -> None:
    scene = shapes.Scene(
        (
            shapes.ShapeObject("red", "square", "large", "left"),
            shapes.ShapeObject("yellow", "star", "small", "right"),
        )
    )
    canonical = shapes.description(scene)
    assert canonical == "a large red square on the left and a small yellow star on the right"
    assert names_exactly(canonical, scene)
    assert names_exactly("a small yellow star and a red square", scene)
    assert not names_exactly("a large yellow square on the left and a small red star", scene)
    assert not names_exactly("a large red square on the left", scene)
    assert not names_exactly(canonical + " and a blue circle", scene)


def test_patch_labels_name_what_the_rendered_patches_show() -> None:
    rng = np.random.default_rng(8)
    hits = misses = 0
    for _ in range(40):
        scene = shapes.random_scene(rng, "train")
        pixels = np.asarray(shapes.render(scene, rng, side=64)).astype(int)
        colour, shape = train_vlm_reference.patch_labels(scene, 8)
        assert colour.shape == shape.shape == (64,)
        for o in scene.objects:
            labelled = np.flatnonzero(
                (colour == list(shapes.COLOURS).index(o.colour))
                & (shape == list(shapes.SHAPES).index(o.shape))
            )
            assert len(labelled) == 4  # the patches around the object's anchor
            for patch in labelled:
                row, col = divmod(int(patch), 8)
                block = pixels[row * 8 : row * 8 + 8, col * 8 : col * 8 + 8]
                close = _near(block, shapes.COLOURS[o.colour], within=60).any()
                hits, misses = hits + close, misses + (not close)
        background = np.flatnonzero(colour == len(shapes.COLOURS))
        assert len(background) > 0 and set(shape[background]) == {len(shapes.SHAPES)}
    assert hits / (hits + misses) >= 0.95

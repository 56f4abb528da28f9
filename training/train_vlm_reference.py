"""Train `xmodal-ref-vlm`, the project's small reference reranker, on generated shapes (CPU).

    python -m training.train_vlm_reference --minutes 12.5 --vision-share 0.4 --out search/models/xmodal-ref-vlm

The model is a LLaVA-architecture `LlavaForConditionalGeneration` built from configs
(training/vlm_parts.py): a small CLIP vision tower over 64 px pictures in 8 px patches
(an 8x8 grid of image tokens), a projector and a small Llama language model, with a
byte-level BPE tokenizer trained on generated captions. Three tasks share every batch,
each as cross-entropy on the answer's tokens only, and every sequence is built by the
run-time code (`chat_prompt` + `encode(..., end=True)` from search/rerank/prompts.py),
so training and scoring see the same token layout:

- CAPTION_PROMPT -> a caption of the picture (full most of the time, partial some);
- DESCRIBE_PROMPT -> the canonical full description (`shapes.description`);
- vqa_prompt(caption) -> Yes / No, with hard negatives (colours swapped between the
  two objects, one colour or shape changed, places swapped or changed).

Captioning dominates the first steps: yes/no alone does not get off the ground (a model
this size trained only on yes/no stayed at chance for 4,000 steps), captioning does.
Training pictures are rendered by `shapes.render` ("train" split: no held-out
combination), JPEG-encoded and decoded; evaluation uses pictures drawn by other code
(xmodal/synthetic/swapped_pairs.py). The folder is written with `save_pretrained`,
reloaded with `from_pretrained` and measured; a card (`<out>.card.json`) holds the
command, seed, sizes, timings and figures.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.options import add_training_options, card_basics
from xmodal.search.rerank import CAPTION, VQA
from xmodal.search.rerank.llava import METHOD_CONFIG_KEY
from xmodal.synthetic import shapes
from xmodal.synthetic.swapped_pairs import names_exactly, single_objects, swapped_pairs

ARCH = "xmodal-ref-vlm"
IMAGE_SIZE = 64  # defaults: an 8x8 grid of image tokens
PATCH_SIZE = 8
CHUNK = 500  # pictures per worker job
# Training pictures come from seeds far from the small ones evaluation and tests use.
TRAIN_SEED_BASE = 1_000_000
LATENCY_QUERY = "a large red square on the left and a yellow star"  # 11 words


# -- data ---------------------------------------------------------------------------
def _prepare_chunk(job: tuple[int, int, int, int]) -> tuple[np.ndarray, list[shapes.Scene]]:
    """Render, JPEG round trip, decode and resize/crop to the model's input (uint8)."""
    start, count, seed, side = job
    import torch

    from training.vlm_parts import clip_image_processor
    from xmodal.search.media import decode_image

    torch.set_num_threads(1)
    processor = clip_image_processor(side)
    rng = np.random.default_rng([TRAIN_SEED_BASE + seed, start])
    pixels = np.empty((count, side, side, 3), np.uint8)
    scenes = []
    for i in range(count):
        scene = shapes.random_scene(rng, "train")
        jpeg = shapes.jpeg_bytes(shapes.render(scene, rng), rng)
        # Half decoded in full, half with libjpeg's draft scaling, as an indexer may.
        draft = (side, side) if rng.random() < 0.5 else None
        image = decode_image(jpeg, draft_to=draft).image
        # The processor's own resize and crop, without rescale/normalise: uint8 CHW.
        # Fed back to the processor at this size, these pass through unchanged.
        chw = processor(image, do_rescale=False, do_normalize=False, return_tensors="np")
        pixels[i] = chw["pixel_values"][0].transpose(1, 2, 0)
        scenes.append(scene)
    return pixels, scenes


def build_images(
    count: int, seed: int, workers: int, side: int = IMAGE_SIZE
) -> tuple[np.ndarray, list[shapes.Scene]]:
    """`count` training pictures, `side` px square, prepared in worker processes (in
    this one for 1)."""
    jobs = [(start, min(CHUNK, count - start), seed, side) for start in range(0, count, CHUNK)]
    if workers <= 1:
        parts = [_prepare_chunk(job) for job in jobs]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_prepare_chunk, jobs)
    return np.concatenate([p for p, _ in parts]), [s for _, scenes in parts for s in scenes]


def tokenizer_corpus(count: int, seed: int) -> list[str]:
    """Every kind of text the model reads or writes, from random scenes (no rendering).

    Answers are written as they follow the chat prompt's "ASSISTANT:" (after a space),
    so that " Yes" and " No" are one token each and so is every caption word."""
    from xmodal.search.rerank.prompts import CAPTION_PROMPT, DESCRIBE_PROMPT, NO, YES, vqa_prompt

    rng = np.random.default_rng([TRAIN_SEED_BASE + seed, 99])
    corpus = [f"USER: {CAPTION_PROMPT} ASSISTANT: {YES}", f"{DESCRIBE_PROMPT} ASSISTANT: {NO}"] * 50
    for _ in range(count):
        scene = shapes.random_scene(rng, "train")
        corpus += [
            " " + shapes.caption(scene, rng),
            " " + shapes.partial_caption(scene, rng),
            " " + shapes.description(scene),
        ]
        if rng.random() < 0.1:
            corpus.append(vqa_prompt(shapes.caption(scene, rng)))
    return corpus


# -- what a caption says, for labelling yes/no questions -------------------------------
_PLACE_WORDS = {
    "left": "left",
    "right": "right",
    "top": "top",
    "upper": "top",
    "bottom": "bottom",
    "lower": "bottom",
    "center": "center",
    "middle": "center",
}


def partial_is_true(text: str, scene: shapes.Scene) -> bool:
    """Whether a partial caption (shapes.partial_caption's forms: one object, some of its
    colour, shape, size and place) holds for some object of `scene`."""
    words = re.findall(r"[a-z]+", text.lower())
    wanted: dict[str, str] = {}
    for word in words:
        if word in shapes.COLOURS:
            wanted["colour"] = word
        elif word in shapes.SHAPES:
            wanted["shape"] = word
        elif word in shapes.SIZES:
            wanted["size"] = word
        elif word in _PLACE_WORDS:
            wanted["position"] = _PLACE_WORDS[word]
    return any(all(getattr(o, k) == v for k, v in wanted.items()) for o in scene.objects)


def mutate(scene: shapes.Scene, rng: np.random.Generator) -> shapes.Scene | None:
    """A hard negative: the scene with one thing changed (None when the draw fails)."""
    objects = list(scene.objects)
    i = int(rng.integers(len(objects)))
    o = objects[i]
    if len(objects) == 2:
        kind = str(
            rng.choice(["swap_colours", "colour", "shape", "swap_places"], p=[0.4, 0.2, 0.2, 0.2])
        )
    else:
        kind = str(rng.choice(["colour", "shape", "place"]))
    if kind == "swap_colours":
        a, b = objects
        objects = [
            shapes.ShapeObject(b.colour, a.shape, a.size, a.position),
            shapes.ShapeObject(a.colour, b.shape, b.size, b.position),
        ]
    elif kind == "swap_places":
        a, b = objects
        objects = [
            shapes.ShapeObject(a.colour, a.shape, a.size, b.position),
            shapes.ShapeObject(b.colour, b.shape, b.size, a.position),
        ]
    elif kind == "colour":
        colour = str(rng.choice([c for c in shapes.COLOURS if c != o.colour]))
        objects[i] = shapes.ShapeObject(colour, o.shape, o.size, o.position)
    elif kind == "shape":
        shape = str(rng.choice([s for s in shapes.SHAPES if s != o.shape]))
        objects[i] = shapes.ShapeObject(o.colour, shape, o.size, o.position)
    else:
        place = str(rng.choice([p for p in shapes.POSITIONS if p != o.position]))
        objects[i] = shapes.ShapeObject(o.colour, o.shape, o.size, place)
    changed = shapes.Scene(tuple(objects))
    if set(changed.objects) == set(scene.objects) or changed.unseen:
        return None  # nothing changed, or it names a combination training leaves out
    return changed


def vqa_example(
    scene: shapes.Scene,
    other: shapes.Scene,
    rng: np.random.Generator,
    partial_share: float,
    easy_share: float,
) -> tuple[str, bool]:
    """A question about `scene` and its answer: half true captions, half negatives, of
    which `easy_share` are another picture's (`other`) captions and the rest hard ones."""
    if rng.random() < 0.5:
        if rng.random() < partial_share:
            return shapes.partial_caption(scene, rng), True
        return shapes.caption(scene, rng), True
    if rng.random() < easy_share:
        if rng.random() < partial_share:
            text = shapes.partial_caption(other, rng)
            return text, partial_is_true(text, scene)
        # True only when the other picture's objects are all in this one, as they are.
        return shapes.caption(other, rng), set(other.objects) <= set(scene.objects)
    changed = None
    while changed is None:
        changed = mutate(scene, rng)
    if rng.random() < partial_share:
        text = shapes.partial_caption(changed, rng)  # may still hold: labelled by the scene
        return text, partial_is_true(text, scene)
    return shapes.caption(changed, rng), False


def caption_example(
    scene: shapes.Scene, rng: np.random.Generator, partial_share: float, description_share: float
) -> str:
    """A caption: partial, the canonical description's wording, or shapes.caption's."""
    draw = rng.random()
    if draw < partial_share:
        return shapes.partial_caption(scene, rng)
    if draw < partial_share + description_share:
        return shapes.description(scene)
    return shapes.caption(scene, rng)


def task_counts(
    batch_size: int, step: int, planned_steps: int, args: argparse.Namespace
) -> dict[str, int]:
    """Rows of each task in this step's batch: no yes/no questions in the first steps."""
    vqa = 0 if step < args.caption_only * planned_steps else round(args.vqa_share * batch_size)
    describe = round(args.describe_share * batch_size)
    return {"caption": batch_size - vqa - describe, "describe": describe, "vqa": vqa}


def make_batch(
    processor: Any,
    pixels: np.ndarray,
    scenes: list[shapes.Scene],
    rows: np.ndarray,
    counts: dict[str, int],
    rng: np.random.Generator,
    args: argparse.Namespace,
) -> tuple[Any, list[str]]:
    """Encoded sequences (through the run-time `encode`) and each row's task."""
    from xmodal.search.rerank.prompts import (
        CAPTION_PROMPT,
        DESCRIBE_PROMPT,
        NO,
        YES,
        chat_prompt,
        encode,
        vqa_prompt,
    )

    tasks = [task for task, n in counts.items() for _ in range(n)]
    prompts, answers = [], []
    for row, task in zip(rows, tasks, strict=True):
        scene = scenes[row]
        if task == "caption":
            prompts.append(chat_prompt(processor, CAPTION_PROMPT))
            answers.append(
                caption_example(scene, rng, args.partial_captions, args.description_captions)
            )
        elif task == "describe":
            prompts.append(chat_prompt(processor, DESCRIBE_PROMPT))
            answers.append(shapes.description(scene))
        else:
            other = scenes[int(rng.integers(len(scenes)))]
            question, truth = vqa_example(
                scene, other, rng, args.partial_captions, args.easy_negatives
            )
            prompts.append(chat_prompt(processor, vqa_prompt(question)))
            answers.append(YES if truth else NO)
    images = [pixels[row] for row in rows]
    return encode(processor, images, prompts, answers, end=True), tasks


def sequence_losses(logits: Any, targets: Any) -> Any:
    """Mean cross-entropy over each sequence's answer tokens (batch,)."""
    import torch

    shifted = targets[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), shifted, ignore_index=-100, reduction="none"
    )
    asked = (shifted != -100).float()
    return (losses * asked).sum(dim=1) / asked.sum(dim=1).clamp(min=1)


def learning_rate(step: int, peak: float, warmup: int, planned_steps: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, planned_steps - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: Any, lr: float) -> Any:
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


# -- the vision tower's warm-up: what each patch shows ------------------------------
IGNORE = -100
_COLOURS = list(shapes.COLOURS)
_SHAPES = list(shapes.SHAPES)
# No part of an object lies farther than this from its anchor (as a share of the side):
# the centre's jitter along both axes plus the largest radius (stars reach 1.1 radii).
_REACH = shapes.ANCHOR_JITTER * math.sqrt(2) + max(shapes.SIZE_RANGE["large"]) / 2 * 1.1


def patch_labels(scene: shapes.Scene, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Per patch (row-major over the grid), the colour and shape index of the object
    whose anchor the patch touches (it holds part of the object), len(classes) for
    patches no object reaches (background), IGNORE for the uncertain rest."""
    edges = np.arange(grid + 1) / grid
    colour = np.full((grid, grid), len(_COLOURS))
    shape = np.full((grid, grid), len(_SHAPES))
    spans = []
    for o in scene.objects:
        ax, ay = shapes.ANCHORS[o.position]
        # Distance from the anchor to the nearest point of each patch, per axis.
        dx = np.maximum(0, np.maximum(edges[:-1] - ax, ax - edges[1:]))
        dy = np.maximum(0, np.maximum(edges[:-1] - ay, ay - edges[1:]))
        distance = np.hypot(dy[:, None], dx[None, :])
        colour[distance < _REACH] = IGNORE
        shape[distance < _REACH] = IGNORE
        spans.append((o, distance <= 1e-9))
    for o, touching in spans:
        colour[touching] = _COLOURS.index(o.colour)
        shape[touching] = _SHAPES.index(o.shape)
    return colour.reshape(-1), shape.reshape(-1)


def patch_loss(head: Any, features: Any, colour: Any, shape: Any) -> Any:
    """Cross-entropy of each patch's colour and shape (background patches weigh 0.1:
    they outnumber the objects' patches)."""
    import torch

    logits = head(features)
    n_colour = len(_COLOURS) + 1
    weights = [torch.ones(n_colour), torch.ones(len(_SHAPES) + 1)]
    for w in weights:
        w[-1] = 0.1
    colour_loss = torch.nn.functional.cross_entropy(
        logits[..., :n_colour].flatten(0, 1), colour.flatten(), weights[0], ignore_index=IGNORE
    )
    shape_loss = torch.nn.functional.cross_entropy(
        logits[..., n_colour:].flatten(0, 1), shape.flatten(), weights[1], ignore_index=IGNORE
    )
    return colour_loss + shape_loss


def patch_head(model: Any) -> Any:
    import torch

    width = model.config.vision_config.hidden_size
    return torch.nn.Linear(width, len(_COLOURS) + 1 + len(_SHAPES) + 1)


def vision_features(model: Any, pixel_values: Any) -> Any:
    """The patch features the projector receives (the CLS token left out)."""
    layer = model.config.vision_feature_layer
    out = model.model.vision_tower(pixel_values, output_hidden_states=True)
    return out.hidden_states[layer][:, 1:]


def warm_up_vision(
    model: Any,
    head: Any,
    processor: Any,
    pixels: np.ndarray,
    labels: tuple[Any, Any],
    seconds: float,
    max_steps: int,
    args: argparse.Namespace,
    rng: np.random.Generator,
) -> tuple[int, float]:
    """Train the vision tower alone to say each patch's colour and shape, for `seconds`
    (or `max_steps`), warming up then decaying its learning rate (cosine) over the steps
    planned from the measured pace: LLaVA starts from a trained vision encoder, and from
    scratch the language model takes hundreds of steps to start reading random patch
    features. Shapes are learnt slowly: a probe of held-out pictures' object patches named
    the shape right 0.84 / 0.92 / 0.96 of the time after 1,200 / 1,600 / 2,400 steps."""
    import torch

    parameters = list(model.model.vision_tower.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(
        parameters, lr=args.vision_lr, betas=(0.9, 0.98), weight_decay=0.05
    )
    started = time.time()
    planned = max_steps or 100_000  # by time: planned from the pace at step 30
    step, loss = 0, float("nan")
    while step < planned:
        rows = rng.integers(len(pixels), size=args.vision_batch_size)
        pixel_values = processor.image_processor([pixels[r] for r in rows], return_tensors="pt")[
            "pixel_values"
        ]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.vision_lr, 50, planned)
        with autocast(args):
            features = vision_features(model, pixel_values)
        value = patch_loss(head, features.float(), labels[0][rows], labels[1][rows])
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        loss = value.item() if step == 0 else 0.98 * loss + 0.02 * value.item()
        step += 1
        if not max_steps and time.time() - started >= seconds:
            break  # the budget holds even before the first plan, or if the pace drops
        if not max_steps and (step == 30 or step % 100 == 0):
            pace = (time.time() - started) / step
            planned = max(step + 1, int(seconds / pace))
        if step % 200 == 0:
            print(
                f"vision step {step}/{planned} patch loss {loss:.3f} {time.time() - started:.0f}s",
                flush=True,
            )
    return step, loss


def autocast(args: argparse.Namespace) -> Any:
    """bfloat16 matrix products on CPUs that have them (about 1.2x the steps here); the
    weights, the optimiser and the losses stay float32."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)


# -- measuring -----------------------------------------------------------------------
def caption_scores(
    model: Any, processor: Any, images: Sequence[Any], queries: Sequence[str], batch: int = 40
) -> list[float]:
    """Sum of log p(query tokens) as the answer to CAPTION_PROMPT, per picture."""
    import torch

    from xmodal.search.rerank.prompts import CAPTION_PROMPT, answer_logprobs, chat_prompt, encode

    prompt = chat_prompt(processor, CAPTION_PROMPT)
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            encoded = encode(
                processor,
                images[start : start + batch],
                [prompt] * len(images[start : start + batch]),
                queries[start : start + batch],
            )
            logits = model(**encoded.inputs).logits
            scores += answer_logprobs(logits, encoded.targets).sum(dim=1).tolist()
    return scores


def vqa_scores(
    model: Any, processor: Any, images: Sequence[Any], queries: Sequence[str], batch: int = 40
) -> list[float]:
    """VQAScore: P(Yes) normalised over {Yes, No} at the answer's first position."""
    import torch

    from xmodal.search.rerank.prompts import NO, YES, answer_text, chat_prompt, encode, vqa_prompt

    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            chunk = queries[start : start + batch]
            prompts = [chat_prompt(processor, vqa_prompt(q)) for q in chunk]
            yes, no = (
                processor.tokenizer(answer_text(prompts[0], word), add_special_tokens=False)[
                    "input_ids"
                ]
                for word in (YES, NO)
            )
            if len(yes) != 1 or len(no) != 1:
                raise ValueError("Yes and No must be one token each")
            encoded = encode(processor, images[start : start + batch], prompts, [YES] * len(chunk))
            logits = model(**encoded.inputs).logits
            first = (encoded.targets != -100).float().argmax(dim=1)  # the answer's position
            at = logits[torch.arange(len(chunk)), first - 1]
            pair = torch.stack([at[:, yes[0]], at[:, no[0]]], dim=1).float()
            scores += torch.softmax(pair, dim=1)[:, 0].tolist()
    return scores


def swapped_accuracy(model: Any, processor: Any, pairs: Sequence[Any]) -> dict[str, float]:
    """How often the described picture outscores its colour-swapped twin, by each method."""
    images = [p.image for p in pairs] + [p.twin for p in pairs]
    queries = [p.query for p in pairs] * 2
    n = len(pairs)
    figures = {}
    for name, method in (("caption_likelihood", caption_scores), ("vqa_score", vqa_scores)):
        scores = method(model, processor, images, queries)
        figures[name] = round(sum(scores[i] > scores[n + i] for i in range(n)) / n, 4)
    return figures


def describe(
    model: Any, processor: Any, images: Sequence[Any], max_new_tokens: int = 24, batch: int = 50
) -> list[str]:
    """Greedy descriptions (DESCRIBE_PROMPT); every prompt is the same length: no padding."""
    import torch

    from xmodal.search.rerank.prompts import DESCRIBE_PROMPT, chat_prompt

    prompt = chat_prompt(processor, DESCRIBE_PROMPT)
    texts: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            chunk = list(images[start : start + batch])
            inputs = processor(images=chunk, text=[prompt] * len(chunk), return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new = out[:, inputs["input_ids"].shape[1] :]
            texts += [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
    return texts


def description_accuracy(
    model: Any, processor: Any, items: Sequence[tuple[Any, shapes.Scene]]
) -> dict[str, Any]:
    texts = describe(model, processor, [image for image, _ in items])
    named = [names_exactly(t, scene) for t, (_, scene) in zip(texts, items, strict=True)]
    exact = [t == shapes.description(scene) for t, (_, scene) in zip(texts, items, strict=True)]
    return {
        "scenes": len(items),
        "colours_and_shapes": round(sum(named) / len(items), 4),
        "exact_canonical": round(sum(exact) / len(items), 4),
        "examples": [
            {"expected": shapes.description(scene), "generated": t}
            for t, (_, scene) in list(zip(texts, items, strict=True))[:4]
        ],
    }


def forward_latency(
    model: Any, processor: Any, images: Sequence[Any], runs: int
) -> dict[str, float]:
    """Median ms of one batched forward over the candidates (CAPTION_PROMPT, a 10+ word
    query), and of preprocessing (encode) plus that forward."""
    import torch

    from xmodal.search.rerank.prompts import CAPTION_PROMPT, chat_prompt, encode

    prompt = chat_prompt(processor, CAPTION_PROMPT)

    def encoded() -> Any:
        return encode(processor, images, [prompt] * len(images), [LATENCY_QUERY] * len(images))

    forward, total = [], []
    with torch.inference_mode():
        inputs = encoded().inputs
        for _ in range(3):
            model(**inputs)
        for _ in range(runs):
            started = time.perf_counter()
            model(**inputs)
            forward.append(time.perf_counter() - started)
        for _ in range(runs):
            started = time.perf_counter()
            model(**encoded().inputs)
            total.append(time.perf_counter() - started)
    return {
        "candidates": len(images),
        "query_words": len(LATENCY_QUERY.split()),
        "forward_ms_median": round(statistics.median(forward) * 1000, 1),
        "preprocess_and_forward_ms_median": round(statistics.median(total) * 1000, 1),
        "runs": runs,
    }


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def evaluate(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The saved folder, reloaded as a user would load it, on held-out pictures."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(folder)
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    seen = swapped_pairs(args.eval_pairs, args.eval_seed, "seen")
    unseen = swapped_pairs(args.eval_pairs // 2, args.eval_seed, "unseen")
    singles = single_objects(args.eval_scenes // 2, args.eval_seed, "seen")
    scenes = [(s.image, s.scene) for s in singles]
    scenes += [(p.image, p.scene) for p in seen[: args.eval_scenes - len(singles)]]
    figures: dict[str, Any] = {
        "eval_seed": args.eval_seed,
        "swapped_pairs": {"pairs": len(seen), **swapped_accuracy(model, processor, seen)},
        "swapped_pairs_unseen_combinations": {
            "pairs": len(unseen),
            **swapped_accuracy(model, processor, unseen),
        },
        "description": description_accuracy(model, processor, scenes),
        "latency_20_candidates": forward_latency(
            model,
            processor,
            ([p.image for p in seen] + [p.twin for p in seen])[:20],
            args.latency_runs,
        ),
    }
    pair = figures["swapped_pairs"]
    figures["swapped_pairs"]["better"] = max(
        ("caption_likelihood", "vqa_score"), key=lambda k: pair[k]
    )
    return figures


# -- training -------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("search/models/xmodal-ref-vlm"))
    add_training_options(parser, batch_size=32, lr=2e-3, minutes=12.0)
    parser.add_argument("--train-images", type=int, default=40_000)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--patch-size", type=int, default=PATCH_SIZE)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--vision-share", type=float, default=0.4, help="share of --minutes for the vision warm-up"
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bfloat16 autocast for the forward passes",
    )
    parser.add_argument("--vision-steps", type=int, default=0, help="warm-up steps (0: by time)")
    parser.add_argument("--vision-lr", type=float, default=3e-3)
    parser.add_argument("--vision-batch-size", type=int, default=64)
    parser.add_argument(
        "--patch-loss", type=float, default=0.5, help="weight of the patch labels after warm-up"
    )
    parser.add_argument("--describe-share", type=float, default=0.25)
    parser.add_argument("--vqa-share", type=float, default=0.3)
    parser.add_argument(
        "--easy-negatives",
        type=float,
        default=0.3,
        help="share of yes/no negatives that are another picture's caption",
    )
    parser.add_argument(
        "--caption-only", type=float, default=0.1, help="share of the steps with no yes/no"
    )
    parser.add_argument(
        "--description-captions",
        type=float,
        default=0.1,
        help="share of captions in the canonical description's wording",
    )
    parser.add_argument("--vision-width", type=int, default=128)
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--text-width", type=int, default=160)
    parser.add_argument("--text-layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--eval-pairs", type=int, default=300)
    parser.add_argument("--eval-scenes", type=int, default=200)
    parser.add_argument("--eval-seed", type=int, default=7)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--check-every", type=int, default=300, help="quick held-out look")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    grid = args.image_size // args.patch_size

    started = time.time()
    # Workers fork before torch runs anything: forking after its thread pools start
    # can hang the children.
    pixels, scenes = build_images(args.train_images, args.seed, args.workers, args.image_size)
    data_seconds = time.time() - started
    print(f"data: {len(pixels)} pictures in {data_seconds:.0f} s", flush=True)

    import torch

    from training.vlm_parts import build_tokenizer, llava_model, llava_processor, save_llava

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tokenizer = build_tokenizer(tokenizer_corpus(20_000, args.seed), vocab_size=args.vocab_size)
    processor = llava_processor(tokenizer, args.image_size, args.patch_size)
    sizes = {
        "image_size": args.image_size,
        "patch_size": args.patch_size,
        "vision_width": args.vision_width,
        "vision_layers": args.vision_layers,
        "text_width": args.text_width,
        "text_layers": args.text_layers,
        "heads": args.heads,
    }
    model = llava_model(tokenizer, **sizes, seed=args.seed)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"tokenizer: {len(tokenizer)} tokens; model: {parameters:,} parameters", flush=True)
    labelled = [patch_labels(scene, grid) for scene in scenes]
    labels = (
        torch.from_numpy(np.stack([c for c, _ in labelled])).long(),
        torch.from_numpy(np.stack([s for _, s in labelled])).long(),
    )
    head = patch_head(model)

    budget = args.minutes * 60
    train_started = time.time()
    model.train()
    vision_steps, vision_loss = warm_up_vision(
        model,
        head,
        processor,
        pixels,
        labels,
        budget * args.vision_share,
        args.vision_steps,
        args,
        rng,
    )
    vision_seconds = time.time() - train_started

    # The language model's tasks; the patch labels stay on, lighter, through the
    # projector's input (a hook: the model's own forward computes the features).
    captured: dict[str, Any] = {}
    hook = model.model.multi_modal_projector.register_forward_hook(
        lambda _module, inputs, _output: captured.__setitem__("features", inputs[0])
    )
    optimizer = make_optimizer(torch.nn.ModuleList([model, head]), args.lr)
    check = swapped_pairs(48, args.eval_seed + 1000, "seen")  # a quick look while training
    planned_steps = args.max_steps or 10_000  # replaced from the measured pace at step 30
    step = 0
    task_loss: dict[str, list[float]] = {"caption": [], "describe": [], "vqa": [], "patch": []}
    stage_started = time.time()
    pace_started = stage_started
    remaining = budget - vision_seconds
    while step < planned_steps:
        order = rng.permutation(len(pixels))
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            rows = order[start : start + args.batch_size]
            counts = task_counts(args.batch_size, step, planned_steps, args)
            encoded, tasks = make_batch(processor, pixels, scenes, rows, counts, rng, args)
            lr = learning_rate(step, args.lr, args.warmup, planned_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(args):
                logits = model(**encoded.inputs).logits
            losses = sequence_losses(logits, encoded.targets)
            loss = losses.mean()
            if args.patch_loss:
                patches = patch_loss(
                    head, captured["features"].float(), labels[0][rows], labels[1][rows]
                )
                loss = loss + args.patch_loss * patches
                task_loss["patch"].append(patches.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            for task, value in zip(tasks, losses.tolist(), strict=True):
                task_loss[task].append(value)
            step += 1
            elapsed = time.time() - stage_started
            if step == 10:
                pace_started = time.time()  # the first steps are slower (allocations)
            if not args.max_steps and (step == 30 or step % 100 == 0):
                # Planned at step 30, then revised: the CPU is shared, its pace drifts.
                pace = (time.time() - pace_started) / (step - 10)
                planned_steps = max(args.warmup + 1, int(step + (remaining - elapsed) / pace))
                if step == 30:
                    print(
                        f"planned steps for {remaining / 60:.1f} min: {planned_steps}", flush=True
                    )
            if step % 100 == 0 or step == planned_steps:
                recent = {k: round(float(np.mean(v[-400:])), 3) for k, v in task_loss.items() if v}
                line = f"step {step}/{planned_steps} lr {lr:.2e} {elapsed:.0f}s loss {recent}"
                if args.check_every and step % args.check_every == 0:
                    model.eval()
                    quick = swapped_accuracy(model, processor, check)
                    model.train()
                    line += f" swapped {quick}"
                print(line, flush=True)
            if step >= planned_steps:
                break
    hook.remove()
    train_seconds = time.time() - train_started
    model.eval()

    save_llava(args.out, model, processor)
    figures = evaluate(args.out, args)
    # The reranker's "auto" method is the one measured better here (search/rerank/llava.py).
    better = figures["swapped_pairs"]["better"]
    model.config.update({METHOD_CONFIG_KEY: CAPTION if better == "caption_likelihood" else VQA})
    model.config.save_pretrained(args.out)
    final_loss = {k: round(float(np.mean(v[-400:])), 4) for k, v in task_loss.items() if v}
    card = {
        **card_basics(
            ARCH, "training.train_vlm_reference", argv, args, step, data_seconds, train_seconds
        ),
        "vision_warmup_steps": vision_steps,
        "vision_warmup_seconds": round(vision_seconds, 1),
        "vision_warmup_patch_loss": round(vision_loss, 4),
        "wall_seconds": round(time.time() - started, 1),
        "train_images": args.train_images,
        "sizes": sizes,
        "parameters": parameters,
        "vocab": len(tokenizer),
        "vision_feature_layer": model.config.vision_feature_layer,
        "weights_dtype": "float32",
        "autocast": "bfloat16" if args.bf16 else None,
        "lr": args.lr,
        "task_shares": {
            "caption": round(1 - args.describe_share - args.vqa_share, 3),
            "describe": args.describe_share,
            "vqa": args.vqa_share,
            "no_vqa_first_share_of_steps": args.caption_only,
            "partial_captions": args.partial_captions,
            "vqa_easy_negatives": args.easy_negatives,
            "description_worded_captions": args.description_captions,
            "patch_loss_weight": args.patch_loss,
        },
        "final_loss": final_loss,
        **figures,
        "bytes": folder_bytes(args.out),
    }
    card_path = args.out.parent / f"{args.out.name}.card.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

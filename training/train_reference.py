"""Train `xmodal-ref`, the project's small image-text model, on generated shapes (CPU).

    python -m training.train_reference --minutes 10 --out search/models/xmodal-ref.pt

The architecture is `search/model_configs/xmodal-ref.json`, registered with open_clip;
the loss is open_clip's ClipLoss. Training images go through the same decode and
resize/crop code as indexing, so the model sees what the pipeline will feed it.
The checkpoint is saved in float16 (open_clip loads it into a float32 model) with a
card (`.card.json`) holding the command, seed and figures.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from pathlib import Path

import numpy as np

from training.options import add_training_options, card_basics
from xmodal.search.encoders.preprocess import resize_center_crop
from xmodal.search.media import decode_image
from xmodal.synthetic import shapes

ARCH = "xmodal-ref"
IMAGE_SIZE = 64
MEAN = (
    0.48145466,
    0.4578275,
    0.40821073,
)  # open_clip's defaults, recorded by the checkpoint's config
STD = (0.26862954, 0.26130258, 0.27577711)


def _prepare_chunk(job: tuple[int, int, str, int]) -> tuple[np.ndarray, list[shapes.Scene]]:
    start, count, split, seed = job
    rng = np.random.default_rng([seed, {"train": 0, "seen": 1, "unseen": 2}[split], start])
    pixels = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    scenes = []
    for i in range(count):
        scene = shapes.random_scene(rng, "unseen" if split == "unseen" else "train")
        jpeg = shapes.jpeg_bytes(shapes.render(scene, rng), rng)
        image = decode_image(jpeg, draft_to=(IMAGE_SIZE, IMAGE_SIZE)).image
        pixels[i] = resize_center_crop(image, IMAGE_SIZE)
        scenes.append(scene)
    return pixels, scenes


def build_images(
    count: int, seed: int, split: str, workers: int
) -> tuple[np.ndarray, list[shapes.Scene]]:
    """Render, JPEG-encode, decode and prepare `count` scenes, in worker processes."""
    chunk = 500
    jobs = [(start, min(chunk, count - start), split, seed) for start in range(0, count, chunk)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_prepare_chunk, jobs)
    return np.concatenate([p for p, _ in parts]), [s for _, scenes in parts for s in scenes]


def captions_for(
    scenes: list[shapes.Scene], rng: np.random.Generator, partial_share: float
) -> list[str]:
    return [
        shapes.partial_caption(s, rng) if rng.random() < partial_share else shapes.caption(s, rng)
        for s in scenes
    ]


def to_tensor(pixels: np.ndarray):
    import torch

    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    return (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - mean) / std


def retrieval_recall(model, tokenizer, pixels: np.ndarray, texts: list[str], ks=(1, 5, 10)) -> dict:
    """Text->image recall where image i is the answer to caption i (quick check during training)."""
    import torch

    with torch.inference_mode():
        image_features = torch.cat(
            [model.encode_image(to_tensor(pixels[i : i + 256])) for i in range(0, len(pixels), 256)]
        )
        text_features = torch.cat(
            [model.encode_text(tokenizer(texts[i : i + 256])) for i in range(0, len(texts), 256)]
        )
    image_features = torch.nn.functional.normalize(image_features, dim=-1)
    text_features = torch.nn.functional.normalize(text_features, dim=-1)
    scores = text_features @ image_features.T
    correct = scores.diagonal().unsqueeze(1)
    ranks = (scores > correct).sum(dim=1)  # 0 = first
    return {f"R@{k}": float((ranks < k).float().mean()) for k in ks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("search/models/xmodal-ref.pt"))
    add_training_options(parser, batch_size=256, lr=2e-3)
    parser.add_argument("--train-images", type=int, default=40_000)
    parser.add_argument("--eval-images", type=int, default=500)
    args = parser.parse_args(argv)

    import open_clip
    import torch
    from open_clip.loss import ClipLoss

    from xmodal.search.encoders.open_clip_encoder import register_builtin_configs

    started = time.time()
    torch.manual_seed(args.seed)
    register_builtin_configs()
    rng = np.random.default_rng(args.seed)

    train_pixels, train_scenes = build_images(args.train_images, args.seed, "train", args.workers)
    seen_pixels, seen_scenes = build_images(args.eval_images, args.seed, "seen", args.workers)
    unseen_pixels, unseen_scenes = build_images(args.eval_images, args.seed, "unseen", args.workers)
    seen_texts = [shapes.caption(s, rng) for s in seen_scenes]
    unseen_texts = [shapes.caption(s, rng) for s in unseen_scenes]
    data_seconds = time.time() - started
    print(f"data: {len(train_pixels)} train images in {data_seconds:.0f} s", flush=True)

    model = open_clip.create_model(ARCH)
    tokenizer = open_clip.get_tokenizer(ARCH)
    loss_fn = ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    budget = args.minutes * 60
    steps_per_epoch = len(train_pixels) // args.batch_size
    # Estimate the step count the budget allows after a few steps, then fix the schedule.
    planned_steps = args.max_steps or 10_000
    warmup = 150
    step = 0
    train_started = time.time()
    model.train()
    while True:
        order = rng.permutation(len(train_pixels))
        texts = captions_for(train_scenes, rng, args.partial_captions)
        for batch_index in range(steps_per_epoch):
            rows = order[batch_index * args.batch_size : (batch_index + 1) * args.batch_size]
            images = to_tensor(train_pixels[rows])
            tokens = tokenizer([texts[r] for r in rows])
            if step < warmup:
                lr = args.lr * (step + 1) / warmup
            else:
                lr = (
                    args.lr
                    * 0.5
                    * (
                        1
                        + math.cos(
                            math.pi * min(1.0, (step - warmup) / max(1, planned_steps - warmup))
                        )
                    )
                )
            for group in optimizer.param_groups:
                group["lr"] = lr
            image_features, text_features, logit_scale = model(images, tokens)
            loss = loss_fn(image_features, text_features, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            elapsed = time.time() - train_started
            if step == 20 and not args.max_steps:
                planned_steps = max(warmup + 1, int(budget / (elapsed / step)))
                print(f"planned steps for {args.minutes} min: {planned_steps}", flush=True)
            if step % 100 == 0:
                print(
                    f"step {step}/{planned_steps} loss {loss.item():.3f} lr {lr:.2e} {elapsed:.0f}s",
                    flush=True,
                )
            if step >= planned_steps:
                break
        if step >= planned_steps:
            break
    train_seconds = time.time() - train_started
    model.eval()
    figures = {
        "seen": retrieval_recall(model, tokenizer, seen_pixels, seen_texts),
        "unseen": retrieval_recall(model, tokenizer, unseen_pixels, unseen_texts),
    }
    print(json.dumps(figures), flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, args.out)
    card = {
        **card_basics(
            ARCH, "training.train_reference", argv, args, step, data_seconds, train_seconds
        ),
        "train_images": args.train_images,
        "quick_check_text_to_image": figures,
        "bytes": args.out.stat().st_size,
    }
    args.out.with_suffix(".card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

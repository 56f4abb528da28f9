"""Train `xmodal-ref-audio`, the project's small audio-text (CLAP) model, on generated sounds (CPU).

    python -m training.train_audio_reference --minutes 10 --out search/models/xmodal-ref-audio

The model is a tiny transformers `ClapModel` (a Swin audio tower over log-mel
spectrograms, a RoBERTa text tower) with a byte-level BPE tokenizer trained on
generated captions. Training features come from the very `ClapFeatureExtractor`
call `search/encoders/clap_encoder.py` makes at search time, computed once up front,
so the model sees what the pipeline will feed it. The folder is written with
`save_pretrained`, reloaded through `ClapEncoder` and measured there; a card
(`<out>.card.json`) holds the command, seed and figures.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.options import add_training_options, card_basics
from xmodal.synthetic import sounds

ARCH = "xmodal-ref-audio"
SAMPLE_RATE = 16000  # below CLAP's 48 kHz: the sounds stay under 8 kHz where it matters
WINDOW_SECONDS = 5  # the generated clips' length; an int keeps nb_max_samples an int
NUM_MEL_BINS = 32
SPEC_SIZE = 64  # the Swin input is SPEC_SIZE x SPEC_SIZE; freq_ratio = 64 // 32 = 2
# The model folds SPEC_SIZE * freq_ratio = 128 mel frames into its square input and
# resizes (bicubic) anything shorter; 1 + 80000 // 629 is exactly 128 frames.
HOP_LENGTH = 629
FFT_WINDOW = 1024  # 64 ms: overlaps the hop, and resolves 100-200 Hz hums
PROJECTION_DIM = 128
MAX_TEXT_TOKENS = 32  # RoBERTa positions start after the padding index: 34 slots
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa's ids 0-4
# Training clips come from seeds far from the small ones evaluation and tests use.
TRAIN_SEED_BASE = 1_000_000
CHUNK = 250  # clips per worker job
SOURCE_RATES = (48000, 44100, 22050, 16000)  # training clips are rendered at these


# -- processor -------------------------------------------------------------------
def make_feature_extractor() -> Any:
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=NUM_MEL_BINS,
        sampling_rate=SAMPLE_RATE,
        hop_length=HOP_LENGTH,
        fft_window_size=FFT_WINDOW,
        max_length_s=WINDOW_SECONDS,
        frequency_min=50,
        frequency_max=SAMPLE_RATE // 2,
        truncation="rand_trunc",
        padding="repeatpad",
    )


def caption_sample(count: int, seed: int, partial_share: float) -> list[str]:
    """Captions of random training specs; nothing is rendered, so this is cheap."""
    rng = np.random.default_rng([seed, 7])
    return [
        sounds.caption(
            sounds.random_spec(rng, "train"), rng, partial=bool(rng.random() < partial_share)
        )
        for _ in range(count)
    ]


def train_tokenizer(captions: list[str], folder: Path, vocab_size: int = 1024) -> Any:
    """A byte-level BPE over the captions, wrapped as a RoBERTa tokenizer.

    Every caption word ends up a single token; anything else still tokenizes byte by
    byte. With add_prefix_space, a query's first word is the same token as mid-caption.
    vocab.json and merges.txt are written to `folder` (what older transformers load).
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator(
        captions, vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS)
    )
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(folder))
    trained = json.loads(bpe.to_str())["model"]
    # Pairs, as the tokenizers library takes them (transformers annotates strings).
    merges: Any = [tuple(pair) for pair in trained["merges"]]
    return RobertaTokenizer(
        vocab=trained["vocab"],
        merges=merges,
        add_prefix_space=True,
        model_max_length=MAX_TEXT_TOKENS,
    )


# -- model -----------------------------------------------------------------------
def make_model(vocab_size: int) -> Any:
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig

    text = ClapTextConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=MAX_TEXT_TOKENS + 2,
        hidden_dropout_prob=0.0,  # a short run on endless captions: no need to regularise
        attention_probs_dropout_prob=0.0,
        projection_dim=PROJECTION_DIM,
    )
    # 4x4 patches of the 64x64 folded mel: a 16x16 grid, then 8x8 and 4x4 after merging.
    # Windows of 4 tile every stage (transformers' Swin does not shrink a window that
    # is larger than its stage).
    audio = ClapAudioConfig(
        num_mel_bins=NUM_MEL_BINS,
        spec_size=SPEC_SIZE,
        patch_size=4,
        patch_stride=4,
        window_size=4,
        depths=[1, 2, 2],
        num_attention_heads=[2, 4, 8],
        patch_embeds_hidden_size=32,
        hidden_size=128,  # patch_embeds_hidden_size * 2 ** (len(depths) - 1)
        hidden_dropout_prob=0.0,
        projection_dim=PROJECTION_DIM,
    )
    config = ClapConfig(
        text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=PROJECTION_DIM
    )
    # The captions are lower case and the tokenizer cannot lowercase itself once saved
    # (transformers drops the option on reload): ClapEncoder reads this flag instead.
    config.xmodal_lowercase_text = True
    return ClapModel(config)


# -- data ------------------------------------------------------------------------
def mel_features(extractor: Any, clips: list[np.ndarray]) -> np.ndarray:
    """(n, 1, frames, mels) float32, by the call ClapEncoder.encode_audio makes."""
    limit = int(extractor.nb_max_samples)
    features = extractor(
        [np.asarray(clip, dtype=np.float32)[:limit] for clip in clips],
        sampling_rate=extractor.sampling_rate,
        truncation="rand_trunc",
        return_tensors="np",
    )["input_features"]
    return np.asarray(features, dtype=np.float32)


def as_indexed(samples: np.ndarray, rate: int) -> np.ndarray:
    """A clip as indexing would feed it: stored as 16-bit PCM at `rate`, then resampled
    to the model's rate by the decoder's resampler (search.media.audio), cut to one window."""
    from xmodal.search.media import resample_mono

    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0) / 32767.0
    clip = resample_mono(pcm.astype(np.float32), rate, SAMPLE_RATE)
    window = WINDOW_SECONDS * SAMPLE_RATE
    return np.pad(clip[:window], (0, max(0, window - len(clip))))


def _prepare_chunk(
    job: tuple[int, int, float, int],
) -> tuple[np.ndarray, list[str], list[sounds.SoundSpec]]:
    seed, count, partial_share, rate = job
    items = list(sounds.generate(count, seed, "train", rate, WINDOW_SECONDS, partial_share))
    clips = [as_indexed(item.samples, rate) for item in items]
    features = mel_features(make_feature_extractor(), clips)
    return features, [item.caption for item in items], [item.spec for item in items]


def build_training_set(
    count: int, seed: int, partial_share: float, workers: int
) -> tuple[np.ndarray, list[str], list[sounds.SoundSpec]]:
    """Render `count` training clips and their mel features, in forked worker processes."""
    # Users' files come at many rates: each chunk is rendered at one of them and
    # resampled as indexing would (rendering at the model's rate directly left held-out
    # R@5 through real files 0.13 below that of clips rendered at 16 kHz).
    jobs = [
        (
            TRAIN_SEED_BASE + seed * 10_000 + index,
            min(CHUNK, count - start),
            partial_share,
            SOURCE_RATES[index % len(SOURCE_RATES)],
        )
        for index, start in enumerate(range(0, count, CHUNK))
    ]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_prepare_chunk, jobs)
    features = np.concatenate([f for f, _, _ in parts])
    return features, [c for _, cs, _ in parts for c in cs], [s for _, _, ss in parts for s in ss]


def captions_for(
    specs: list[sounds.SoundSpec], rng: np.random.Generator, partial_share: float
) -> list[str]:
    """Fresh wording every epoch, so the text tower learns concepts, not sentences."""
    return [sounds.caption(s, rng, partial=bool(rng.random() < partial_share)) for s in specs]


# -- training --------------------------------------------------------------------
def meaning_ids(specs: list[sounds.SoundSpec]) -> np.ndarray:
    """One id per distinct thing a full caption can say: arrangement, events in order.

    Level, timing and exact pitch are never captioned, so clips that agree on these
    are indistinguishable to any caption.
    """
    ids: dict[tuple[Any, ...], int] = {}
    keys = [(s.arrangement, tuple((e.kind, *e.attributes) for e in s.events)) for s in specs]
    return np.array([ids.setdefault(key, len(ids)) for key in keys])


def contrastive_loss(
    logits_per_text: Any,
    logits_per_audio: Any,
    captions: list[str],
    meanings: np.ndarray,
    logits_unrelated: Any = None,
) -> Any:
    """Symmetric InfoNCE where every clip a caption describes is a right answer.

    Within a batch, a caption also fits the clips with the same caption text (partial
    captions such as "a hiss" repeat) and those with the same meaning in other words
    ("white noise", "a burst of static"). Plain InfoNCE would push the caption away
    from them, a false negative the model cannot resolve and that only adds noise.

    `logits_unrelated` (clips × texts) scores the clips against texts that describe no
    sound at all: extra wrong answers for every clip, so that unrelated language ends
    up far from every sound. Search calibrates scores against unrelated queries
    (search/calibration.py), and a model that maps any text near some sound leaves
    relevant matches barely above chance.
    """
    import torch

    _, ids = np.unique(np.array(captions), return_inverse=True)
    labels, meaning = torch.from_numpy(ids), torch.from_numpy(meanings)
    same = (labels[:, None] == labels[None, :]) | (meaning[:, None] == meaning[None, :])
    same = same.float()
    targets = same / same.sum(dim=1, keepdim=True)  # symmetric, so it serves both directions
    text_loss = -(targets * torch.log_softmax(logits_per_text, dim=1)).sum(dim=1).mean()
    if logits_unrelated is not None:
        logits_per_audio = torch.cat([logits_per_audio, logits_unrelated], dim=1)
        targets = torch.cat([targets, torch.zeros_like(logits_unrelated)], dim=1)
    audio_loss = -(targets * torch.log_softmax(logits_per_audio, dim=1)).sum(dim=1).mean()
    return (text_loss + audio_loss) / 2


def unrelated_texts(count: int, seed: int) -> list[str]:
    """Language about something other than sound: captions of the generated pictures
    (xmodal/synthetic/shapes.py), which share none of the sounds' concepts. (Not the null
    queries of search/calibration.py, which must stay unseen.)"""
    from xmodal.synthetic import shapes

    rng = np.random.default_rng([seed, 11])
    return [shapes.caption(shapes.random_scene(rng), rng) for _ in range(count)]


def learning_rate(step: int, peak: float, warmup: int, planned_steps: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, planned_steps - warmup))
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: Any, lr: float) -> Any:
    import torch

    # No decay on norms, biases and the logit scales (all below two dimensions).
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def train_step(
    model: Any,
    optimizer: Any,
    tokenizer: Any,
    features: Any,
    texts: list[str],
    meanings: np.ndarray,
    lr: float,
    unrelated: list[str] | None = None,
) -> float:
    import torch

    for group in optimizer.param_groups:
        group["lr"] = lr

    def tokenize(batch: list[str]) -> Any:
        return tokenizer(
            batch, padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
        )

    tokens = tokenize(texts)
    output = model(
        input_ids=tokens["input_ids"],
        attention_mask=tokens["attention_mask"],
        input_features=features,
        is_longer=torch.zeros((len(texts), 1), dtype=torch.bool),
    )
    logits_unrelated = None
    if unrelated:
        other = tokenize(unrelated)
        embeds = model.get_text_features(
            input_ids=other["input_ids"], attention_mask=other["attention_mask"]
        )
        embeds = embeds if isinstance(embeds, torch.Tensor) else embeds.pooler_output
        embeds = torch.nn.functional.normalize(embeds, dim=-1)
        logits_unrelated = model.logit_scale_a.exp() * output.audio_embeds @ embeds.T
    loss = contrastive_loss(
        output.logits_per_text, output.logits_per_audio, texts, meanings, logits_unrelated
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        # As CLIP does: a temperature below 1/100 makes training unstable.
        model.logit_scale_t.clamp_(0, math.log(100))
        model.logit_scale_a.clamp_(0, math.log(100))
    return float(loss.item())


# -- evaluation ------------------------------------------------------------------
def recall_through_encoder(folder: Path, split: str, count: int, seed: int) -> dict[str, float]:
    """Text->audio R@1/5/10 of the saved folder, loaded the way the search engine loads it."""
    from xmodal.search.encoders.clap_encoder import ClapEncoder
    from xmodal.search.evaluation import retrieval_metrics

    encoder = ClapEncoder(f"local-dir:{folder.resolve()}", device="cpu")
    items = list(sounds.generate(count, seed, split, encoder.sample_rate, WINDOW_SECONDS))
    audio = np.concatenate(
        [
            encoder.encode_audio([item.samples for item in items[i : i + 64]], SAMPLE_RATE)
            for i in range(0, len(items), 64)
        ]
    )
    captions = [item.caption for item in items]
    texts = encoder.encode_texts(captions)
    metrics = retrieval_metrics(texts, audio, captions, list(range(len(items))))
    return {f"R@{k}": value for k, value in metrics.text_to_media.recall.items()}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def save_folder(model: Any, processor: Any, vocab_folder: Path, out: Path) -> None:
    """Replace `out` by the model, processor and BPE files; stale files would mislead."""
    if out.exists():
        if not (out / "config.json").is_file():
            raise SystemExit(f"{out} exists and is not a model folder; not overwriting it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(vocab_folder / name, out / name)


# -- main ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("search/models/xmodal-ref-audio"))
    add_training_options(parser, batch_size=128, lr=1e-3)
    parser.add_argument("--train-clips", type=int, default=40_000)
    parser.add_argument("--eval-clips", type=int, default=500)
    parser.add_argument("--eval-seed", type=int, default=7, help="seed of the held-out clips")
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument(
        "--unrelated-texts",
        type=int,
        default=64,
        help="picture captions per batch that must match no sound (0: none)",
    )
    args = parser.parse_args(argv)

    started = time.time()
    # Workers fork before torch runs anything: forking after its thread pools start
    # can hang the children.
    features, first_captions, specs = build_training_set(
        args.train_clips, args.seed, args.partial_captions, args.workers
    )
    data_seconds = time.time() - started
    print(f"data: {len(features)} clips {features.shape[1:]} in {data_seconds:.0f} s", flush=True)

    import torch
    from transformers import ClapProcessor

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    vocab_folder = Path(tempfile.mkdtemp(prefix="xmodal-bpe-"))
    tokenizer = train_tokenizer(
        caption_sample(50_000, args.seed, args.partial_captions), vocab_folder
    )
    processor = ClapProcessor(feature_extractor=make_feature_extractor(), tokenizer=tokenizer)
    model = make_model(len(tokenizer))
    optimizer = make_optimizer(model, args.lr)
    print(
        f"tokenizer: {len(tokenizer)} tokens; model: "
        f"{sum(p.numel() for p in model.parameters()):,} parameters",
        flush=True,
    )

    all_features = torch.from_numpy(features)
    meanings = meaning_ids(specs)
    unrelated = unrelated_texts(20_000, args.seed) if args.unrelated_texts else []
    budget = args.minutes * 60
    steps_per_epoch = len(features) // args.batch_size
    planned_steps = args.max_steps or 10_000  # replaced from the measured pace at step 40
    step, loss = 0, float("nan")
    texts = first_captions
    train_started = time.time()
    pace_started = train_started
    model.train()
    while step < planned_steps:
        order = rng.permutation(len(features))
        for batch in range(steps_per_epoch):
            rows = order[batch * args.batch_size : (batch + 1) * args.batch_size]
            lr = learning_rate(step, args.lr, args.warmup, planned_steps)
            start = (step * args.unrelated_texts) % max(1, len(unrelated) - args.unrelated_texts)
            loss = train_step(
                model,
                optimizer,
                tokenizer,
                all_features[rows],
                [texts[r] for r in rows],
                meanings[rows],
                lr,
                unrelated[start : start + args.unrelated_texts],
            )
            step += 1
            elapsed = time.time() - train_started
            if step == 10:
                pace_started = time.time()  # the first steps are slower (allocations)
            if not args.max_steps and (step == 40 or step % 200 == 0):
                # Planned at step 40, then revised: the CPU is shared, its pace drifts.
                pace = (time.time() - pace_started) / (step - 10)
                planned_steps = max(args.warmup + 1, int(step + (budget - elapsed) / pace))
                if step == 40:
                    print(f"planned steps for {args.minutes} min: {planned_steps}", flush=True)
            if step % 100 == 0:
                print(
                    f"step {step}/{planned_steps} loss {loss:.3f} lr {lr:.2e} {elapsed:.0f}s",
                    flush=True,
                )
            if step >= planned_steps:
                break
        texts = captions_for(specs, rng, args.partial_captions)
    train_seconds = time.time() - train_started
    model.eval()

    save_folder(model, processor, vocab_folder, args.out)
    shutil.rmtree(vocab_folder)
    figures = {
        split: recall_through_encoder(args.out, split, args.eval_clips, args.eval_seed)
        for split in ("seen", "unseen")
    }
    print(json.dumps(figures), flush=True)
    card = {
        **card_basics(
            ARCH, "training.train_audio_reference", argv, args, step, data_seconds, train_seconds
        ),
        "train_clips": args.train_clips,
        "final_loss": round(loss, 4),
        "eval_seed": args.eval_seed,
        "quick_check_text_to_audio": figures,
        "bytes": folder_bytes(args.out),
    }
    card_path = args.out.parent / f"{args.out.name}.card.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

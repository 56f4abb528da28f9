"""How calibrated scores separate relevant queries from nonsense, with the reference models.

    .venv/bin/python bench/calibration.py                 # 40 pictures + 40 sounds, 300 nonsense
    .venv/bin/python bench/calibration.py --items 100 --nonsense 1000

What it does:
  1. writes a library of generated pictures (`xmodal.synthetic.shapes`, held-out seed) and
     generated sounds (`xmodal.synthetic.sounds`, 16 kHz WAVs) and indexes it with `xmodal-ref`
     and `xmodal-ref-audio` into a fresh store;
  2. for every item's own caption, the best calibrated score in its own space and in the
     other space, and whether the merged list puts a hit of the right kind first;
  3. for `--nonsense` queries (half random letter strings, half salads of common words
     the models never saw in captions), the best calibrated score over both spaces;
  4. prints, per threshold, the share of nonsense queries that would return something
     and the share of relevant captions that keep their best hit: the baseline every
     threshold is compared with is the raw cosine, for which no single threshold serves
     both spaces (the spaces' null medians are printed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import parse_args  # noqa: E402  (bench/ is the script folder)

SALAD_WORDS = [
    "table",
    "window",
    "river",
    "music",
    "paper",
    "seven",
    "because",
    "mountain",
    "dream",
    "engine",
    "letter",
    "bottle",
    "garden",
    "quickly",
    "idea",
    "under",
    "cloud",
    "silver",
    "ladder",
    "pencil",
]


def build(items: int, seed: int) -> tuple[object, dict[str, str]]:
    from xmodal.indexer import index_paths
    from xmodal.search import Engine, Store
    from xmodal.search.encoders import create_audio_encoder, create_encoder
    from xmodal.synthetic import shapes, sounds

    folder = Path(tempfile.mkdtemp(prefix="xmodal-calibration-"))
    captions: dict[str, str] = {}
    for item in shapes.generate(items, seed=seed, split="seen"):
        path = folder / f"picture-{item.index:04d}.jpg"
        path.write_bytes(item.jpeg)
        captions[str(path)] = item.caption
    for number, clip in enumerate(sounds.generate(items, seed=seed, split="seen", rate=16000)):
        path = folder / f"sound-{number:04d}.wav"
        sounds.write_wav(path, clip.samples, 16000)
        captions[str(path)] = clip.caption
    engine = Engine(
        Store(tempfile.mkdtemp(prefix="xmodal-calibration-store-")),
        create_encoder("xmodal-ref", device="cpu"),
        audio_encoder=create_audio_encoder("xmodal-ref-audio", device="cpu"),
    )
    index_paths(engine, [folder])
    return engine, captions


def nonsense(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    queries = []
    for index in range(count):
        words = int(rng.integers(1, 4))
        if index % 2:
            queries.append(" ".join(rng.choice(SALAD_WORDS, words + 1)))
        else:
            queries.append(
                " ".join(
                    "".join(rng.choice(letters, int(rng.integers(3, 10)))) for _ in range(words)
                )
            )
    return queries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="pictures, and as many sounds")
    parser.add_argument("--nonsense", type=int, default=300)
    parser.add_argument("--seed", type=int, default=23)
    args = parse_args(parser, argv, items=10, nonsense=20)

    engine, captions = build(args.items, args.seed)

    def best(text: str, kind: str) -> float:
        hits = engine.search_text(text, k=1, kinds=[kind]).hits  # type: ignore[attr-defined]
        return hits[0].calibrated if hits else -np.inf

    for space in ("image-text", "audio-text"):
        calibration = engine.calibration(space)  # type: ignore[attr-defined]
        print(f"{space}: null median {calibration.center:.3f}, sd {calibration.spread:.3f}")
    relevant = []
    for uri, text in captions.items():
        own, other = ("audio", "image") if uri.endswith(".wav") else ("image", "audio")
        first = engine.search_text(text, k=1).hits[0]  # type: ignore[attr-defined]
        right_kind = first.item.kind == own
        relevant.append((own, best(text, own), best(text, other), right_kind))
    for kind in ("image", "audio"):
        rows = [r for r in relevant if r[0] == kind]
        mine = np.array([r[1] for r in rows])
        theirs = np.array([r[2] for r in rows])
        print(
            f"{kind} captions: own space {mine.min():.2f} to {mine.max():.2f} (median "
            f"{np.median(mine):.2f}); other space at most {theirs.max():.2f}; right kind "
            f"first {np.mean([r[3] for r in rows]):.3f}"
        )
    queries = nonsense(args.nonsense, args.seed + 1)
    worst = np.array([max(best(q, "image"), best(q, "audio")) for q in queries])
    kept = np.array([r[1] for r in relevant])
    print(f"nonsense best calibrated: median {np.median(worst):.2f}, max {worst.max():.2f}")
    for threshold in (2.0, 3.0, 4.0, 5.0):
        print(
            f"min_score {threshold:g}: nonsense returning hits {np.mean(worst >= threshold):.3f}, "
            f"relevant captions keeping theirs {np.mean(kept >= threshold):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

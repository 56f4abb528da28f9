"""Write a captioned shapes dataset as a folder of JPEGs with `captions.csv`.

python -m training.make_dataset eval-seen --split seen --count 500
xmodal eval eval-seen --model xmodal-ref
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from xmodal.synthetic.shapes import generate


def write_dataset(folder: Path, count: int, seed: int, split: str) -> Path:
    """Idempotent for the same arguments: existing files are rewritten identically."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in generate(count, seed, split):
        name = f"{split}-{item.index:05d}.jpg"
        (folder / name).write_bytes(item.jpeg)
        rows.append({"file": name, "caption": item.caption})
    captions = folder / "captions.csv"
    with open(captions, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["file", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return captions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a captioned shapes dataset.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--split", choices=["train", "seen", "unseen"], default="seen")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(write_dataset(args.folder, args.count, args.seed, args.split))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

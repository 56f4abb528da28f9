"""Retrieval quality on captioned datasets (images or sounds): readers and metrics.

Formats users have:
  - a folder with `captions.csv` (columns `file`, `caption`; one row per caption,
    several rows per file allowed), files relative to the folder: images or sounds;
  - a COCO-style captions JSON (`images` with `id` and `file_name`, `annotations`
    with `image_id` and `caption`), files relative to an image folder.

Relevance: a caption's relevant images are the images annotated with that exact
caption text (after normalising case and spaces), so identical captions of
different images do not count as misses; an image's relevant captions are its own.
Ranks start at 1: the rank of the best-placed relevant result.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xmodal.search.errors import SourceError

DEFAULT_KS = (1, 5, 10)


@dataclass
class CaptionedDataset:
    images: list[Path]  # absolute paths, one per distinct file (images or sounds)
    captions: list[str]
    caption_image: list[int]  # for each caption, the index of its file

    def __post_init__(self) -> None:
        if not self.images or not self.captions:
            raise SourceError("the dataset has no captioned files")


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def read_captions_csv(path: Path) -> CaptionedDataset:
    csv_path = path / "captions.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise SourceError(f"no captions.csv in {path}")
    base = csv_path.resolve().parent
    index: dict[Path, int] = {}
    captions, caption_image = [], []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
            raise SourceError(f"{csv_path} needs the columns `file` and `caption`")
        for row in reader:
            image = (base / row["file"]).resolve()
            caption_image.append(index.setdefault(image, len(index)))
            captions.append(row["caption"])
    return CaptionedDataset(list(index), captions, caption_image)


def read_coco_captions(path: Path, image_root: Path | None = None) -> CaptionedDataset:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {image["id"]: image["file_name"] for image in data["images"]}
        annotations = [(a["image_id"], a["caption"]) for a in data["annotations"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SourceError(f"{path} is not a COCO captions file: {error}") from error
    root = (image_root or path.parent).resolve()
    index: dict[int, int] = {}
    captions, caption_image = [], []
    for image_id, text in annotations:
        if image_id not in files:
            raise SourceError(f"{path}: a caption refers to unknown image id {image_id}")
        caption_image.append(index.setdefault(image_id, len(index)))
        captions.append(text)
    images = [root / files[image_id] for image_id in index]
    return CaptionedDataset(images, captions, caption_image)


def read_dataset(path: Path, image_root: Path | None = None) -> CaptionedDataset:
    """A folder with captions.csv, a captions CSV, or a COCO captions JSON."""
    if not path.exists():
        raise SourceError(f"no such dataset: {path}")
    if path.suffix.lower() == ".json":
        return read_coco_captions(path, image_root)
    return read_captions_csv(path)


@dataclass
class DirectionMetrics:
    recall: dict[int, float]  # k -> share of queries with a relevant result in the top k
    median_rank: float
    mean_rank: float
    queries: int


@dataclass
class RetrievalMetrics:
    text_to_media: DirectionMetrics  # captions find their image (or sound)
    media_to_text: DirectionMetrics  # images (or sounds) find their captions
    ks: tuple[int, ...] = field(default=DEFAULT_KS)


def best_relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """For each row, 1 + how many non-relevant columns score above the best relevant one."""
    best = np.where(relevant, scores, -np.inf).max(axis=1, keepdims=True)
    return 1 + ((scores > best) & ~relevant).sum(axis=1)


def _summarise(ranks: np.ndarray, ks: tuple[int, ...]) -> DirectionMetrics:
    return DirectionMetrics(
        recall={k: float((ranks <= k).mean()) for k in ks},
        median_rank=float(np.median(ranks)),
        mean_rank=float(ranks.mean()),
        queries=len(ranks),
    )


def retrieval_metrics(
    text_vectors: np.ndarray,
    image_vectors: np.ndarray,
    captions: list[str],
    caption_image: list[int],
    ks: tuple[int, ...] = DEFAULT_KS,
) -> RetrievalMetrics:
    """Text->image and image->text metrics from unit vectors (captions × images)."""
    return metrics_from_scores(text_vectors @ image_vectors.T, captions, caption_image, ks)


def metrics_from_scores(
    scores: np.ndarray,
    captions: list[str],
    caption_image: list[int],
    ks: tuple[int, ...] = DEFAULT_KS,
) -> RetrievalMetrics:
    """Both directions from a captions × files score matrix (e.g. a sound's score is
    its best window's)."""
    n_captions, n_images = scores.shape
    images_of_text: dict[str, set[int]] = defaultdict(set)
    for text, image in zip(captions, caption_image, strict=True):
        images_of_text[_normalise(text)].add(image)
    relevant = np.zeros((n_captions, n_images), dtype=bool)
    for row, text in enumerate(captions):
        relevant[row, list(images_of_text[_normalise(text)])] = True
    text_ranks = best_relevant_ranks(scores, relevant)
    image_ranks = best_relevant_ranks(scores.T, relevant.T)
    return RetrievalMetrics(_summarise(text_ranks, ks), _summarise(image_ranks, ks), ks)

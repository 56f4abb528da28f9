"""`xmodal eval`: index a captioned dataset through the real pipeline, then measure retrieval."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer import IndexOptions, Progress, index_paths
from search import IMAGE_TEXT, Engine, Settings
from search.evaluation import CaptionedDataset, RetrievalMetrics, retrieval_metrics
from search.store import item_id_for

TEXT_BATCH = 256


@dataclass
class EvalReport:
    model: str
    images: int
    captions: int
    failed: list[tuple[str, str]]  # images that could not be indexed (left out of the metrics)
    metrics: RetrievalMetrics


def evaluate(
    dataset: CaptionedDataset,
    settings: Settings,
    keep_store: bool,
    progress: Progress | None = None,
) -> EvalReport:
    """Index the dataset's images (into settings.data when keep_store, else a temporary
    store) and compute text->image and image->text metrics from what the store holds."""
    from api.app import open_engine

    if keep_store:
        return _evaluate_in(open_engine(settings), dataset, settings, progress)
    with tempfile.TemporaryDirectory(prefix="xmodal-eval-") as scratch:
        settings = settings.model_copy(update={"data": Path(scratch)})
        return _evaluate_in(open_engine(settings), dataset, settings, progress)


def _evaluate_in(
    engine: Engine, dataset: CaptionedDataset, settings: Settings, progress: Progress | None
) -> EvalReport:
    report = index_paths(
        engine, dataset.images, IndexOptions.from_settings(settings), progress=progress
    )
    failed = {Path(path) for path, _ in report.failed}
    # Image vectors exactly as stored by the indexer; captions of failed images are dropped.
    keep = [i for i, path in enumerate(dataset.images) if path.resolve() not in failed]
    new_index = {old: new for new, old in enumerate(keep)}
    vectors = np.stack(
        [
            engine.store.item_vectors(IMAGE_TEXT, item_id_for(str(dataset.images[i].resolve())))[0]
            for i in keep
        ]
    )
    pairs = [
        (c, new_index[i])
        for c, i in zip(dataset.captions, dataset.caption_image, strict=True)
        if i in new_index
    ]
    captions = [c for c, _ in pairs]
    text_vectors = np.concatenate(
        [
            engine.encoder.encode_texts(captions[i : i + TEXT_BATCH])
            for i in range(0, len(captions), TEXT_BATCH)
        ]
    )
    metrics = retrieval_metrics(text_vectors, vectors, captions, [i for _, i in pairs])
    return EvalReport(engine.encoder.spec, len(keep), len(captions), report.failed, metrics)

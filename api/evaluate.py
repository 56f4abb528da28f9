"""`xmodal eval`: index a captioned dataset through the real pipeline, then measure retrieval.

A dataset is images (text->image, image->text) or sounds (text->audio, audio->text);
a sound's score for a caption is that of its best window, as in search. With a
reranker, text->image is measured again with each caption's top hits reranked as a
search would rerank them (search/rerank/).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.api.settings import Settings
from xmodal.indexer import DecodeOptions, Progress, index_paths
from xmodal.search import IMAGE_TEXT, Engine
from xmodal.search.encoders import AUDIO_TEXT
from xmodal.search.errors import SourceError
from xmodal.search.evaluation import (
    CaptionedDataset,
    DirectionMetrics,
    RetrievalMetrics,
    metrics_from_scores,
)
from xmodal.search.media import MediaKind, decode_image, media_kind
from xmodal.search.rerank.apply import fused_order
from xmodal.search.rerank.service import Candidate, RerankRequest
from xmodal.search.store import item_id_for

TEXT_BATCH = 256


@dataclass
class EvalReport:
    model: str
    media: MediaKind  # IMAGE or AUDIO
    images: int  # files indexed (images or sounds)
    captions: int
    failed: list[tuple[str, str]]  # files that could not be indexed (left out of the metrics)
    metrics: RetrievalMetrics
    reranked: RerankedMetrics | None = None


@dataclass
class RerankedMetrics:
    """text->image with each caption's top_n reranked."""

    model: str
    method: str
    top_n: int
    weight: float
    pairs: int  # (caption, image) pairs scored
    seconds: float
    text_to_media: DirectionMetrics


def dataset_media(dataset: CaptionedDataset) -> MediaKind:
    """IMAGE or AUDIO: what the dataset's files are (videos are not evaluated)."""
    kinds = {media_kind(path) for path in dataset.images}
    for media in (MediaKind.IMAGE, MediaKind.AUDIO):
        if kinds == {media}:
            return media
    raise SourceError(
        "a dataset is either images or sounds; this one has "
        + ", ".join(sorted(str(k or "unrecognised files") for k in kinds))
    )


def evaluate(
    dataset: CaptionedDataset,
    settings: Settings,
    keep_store: bool,
    progress: Progress | None = None,
    rerank: RerankRequest | None = None,
) -> EvalReport:
    """Index the dataset's files (into settings.data when keep_store, else a temporary
    store) and compute both directions' metrics from what the store holds. For sounds,
    `settings.model` may name the audio model (it is what the user evaluates)."""
    media = dataset_media(dataset)
    if media == MediaKind.AUDIO and settings.model and not settings.audio_model:
        settings = settings.model_copy(update={"audio_model": settings.model, "model": None})
    if keep_store:
        return _evaluate_in(
            Engine.from_settings(settings), dataset, media, settings, progress, rerank
        )
    with tempfile.TemporaryDirectory(prefix="xmodal-eval-") as scratch:
        settings = settings.model_copy(update={"data": Path(scratch)})
        return _evaluate_in(
            Engine.from_settings(settings), dataset, media, settings, progress, rerank
        )


def _evaluate_in(
    engine: Engine,
    dataset: CaptionedDataset,
    media: MediaKind,
    settings: Settings,
    progress: Progress | None,
    rerank: RerankRequest | None = None,
) -> EvalReport:
    space = AUDIO_TEXT if media == MediaKind.AUDIO else IMAGE_TEXT
    encoder = engine.encoder_for(space)
    report = index_paths(
        engine,
        dataset.images,
        settings.indexing,
        progress=progress,
        decode=DecodeOptions.from_settings(settings),
    )
    failed = {Path(path) for path, _ in report.failed}
    keep = [i for i, path in enumerate(dataset.images) if path.resolve() not in failed]
    new_index = {old: new for new, old in enumerate(keep)}
    # Vectors exactly as stored by the indexer; captions of failed files are dropped.
    segments = [
        engine.store.item_vectors(space, item_id_for(str(dataset.images[i].resolve())))
        for i in keep
    ]
    pairs = [
        (c, new_index[i])
        for c, i in zip(dataset.captions, dataset.caption_image, strict=True)
        if i in new_index
    ]
    captions = [c for c, _ in pairs]
    text_vectors = np.concatenate(
        [
            encoder.encode_texts(captions[i : i + TEXT_BATCH])
            for i in range(0, len(captions), TEXT_BATCH)
        ]
    )
    # A file's score is its best segment's (an image has one; a sound, a window each).
    scores = np.stack([(text_vectors @ vectors.T).max(axis=1) for vectors in segments], axis=1)
    caption_files = [i for _, i in pairs]
    metrics = metrics_from_scores(scores, captions, caption_files)
    result = EvalReport(encoder.spec, media, len(keep), len(captions), report.failed, metrics)
    if rerank is not None:
        if media != MediaKind.IMAGE:
            raise SourceError("reranking is measured on images (a sound has no picture)")
        files = [dataset.images[i] for i in keep]
        result.reranked = _reranked(engine, rerank, scores, captions, caption_files, files)
    return result


def _reranked(
    engine: Engine,
    request: RerankRequest,
    scores: np.ndarray,
    captions: list[str],
    caption_files: list[int],
    files: list[Path],
) -> RerankedMetrics:
    """text->image metrics after reranking each caption's top_n as a search does."""
    service = engine.reranking
    top_n = service.top_n(request)
    reranker = service.reranker(request.model)
    method = service.method_for(reranker, request)
    reranker.load()  # a model that cannot load is an error here, not a fallback
    request = RerankRequest(top_n, request.model, method, timeout_ms=3_600_000)
    limits = engine.limits
    logit_scale = engine.encoder_for(IMAGE_TEXT).logit_scale

    def candidate(column: int) -> Candidate:
        path = files[column]
        return Candidate(
            str(path), lambda side: decode_image(path, limits, draft_to=(side, side)).image
        )

    started = time.perf_counter()
    reranked = scores.copy()
    pairs = 0
    for row, caption in enumerate(captions):
        top = np.argsort(-scores[row], kind="stable")[:top_n]
        outcome = service.rerank(caption, [candidate(int(c)) for c in top], request)
        if outcome.report is None or not outcome.report.applied:
            reason = outcome.report.reason if outcome.report else "unknown"
            raise SourceError(f"reranking failed: {reason}")
        order = fused_order(
            [logit_scale * float(scores[row, c]) for c in top],
            [outcome.log_likelihood(i) for i in range(len(top))],
            service.settings.weight,
        )
        # The reranked top stays above the rest, in its new order.
        ceiling = float(scores[row].max()) + 1.0
        for place, position in enumerate(order):
            reranked[row, top[position]] = ceiling + len(order) - place
        pairs += len(top)
    seconds = time.perf_counter() - started
    after = metrics_from_scores(reranked, captions, caption_files)
    return RerankedMetrics(
        reranker.spec,
        method,
        top_n,
        service.settings.weight,
        pairs,
        seconds,
        after.text_to_media,
    )

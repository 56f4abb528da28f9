"""Reranking and explaining a search's hits: their pictures, the new order, and the
explanations of the first few. The engine calls these; the model work is the
service's (service.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from xmodal.search.errors import ModelLoadError
from xmodal.search.hits import Hit
from xmodal.search.media import ImageLimits, MediaKind, decode_image, frame_at
from xmodal.search.store import ItemRecord

from .explain import explain_picture
from .service import Candidate, RerankReport, RerankRequest, RerankService


@dataclass
class ExplainReport:
    """How a search's explanations went: how many hits got one, and why not all."""

    explained: int
    model: str
    reason: str | None = None
    took_ms: float = 0.0


def moment_of(hit: Hit) -> float | None:
    """The moment whose frame stands for a video hit: its best segment's start."""
    if hit.item.kind != MediaKind.VIDEO:
        return None
    if hit.segments and hit.segments[0].start is not None:
        return float(hit.segments[0].start)
    return (hit.item.duration or 0.0) * 0.1


# An item's file, checked against the indexed roots (Store.original_path).
Locate = Callable[[ItemRecord], Path]


def picture_of(
    item: ItemRecord, seconds: float | None, limits: ImageLimits, side: int, locate: Locate
) -> Image.Image | None:
    """The picture a reranker looks at: an image, a video's frame at `seconds`; None
    for a sound. JPEGs decode at reduced scale down to `side` pixels."""
    if item.kind not in (MediaKind.IMAGE, MediaKind.VIDEO):
        return None
    source = locate(item)
    if item.kind == MediaKind.IMAGE:
        return decode_image(source, limits, draft_to=(side, side)).image
    if item.kind == MediaKind.VIDEO:
        # Within the video, as thumbnails are: a moment of 1e308 s once overflowed the seek.
        moment = min(seconds or 0.0, item.duration or seconds or 0.0)
        return frame_at(source, moment, short_side=side)
    return None


def candidate(hit: Hit, limits: ImageLimits, locate: Locate) -> Candidate:
    moment = moment_of(hit)
    item = hit.item
    return Candidate(
        (item.id, item.content_hash, moment),
        lambda side: picture_of(item, moment, limits, side, locate),
    )


def fused_order(
    first_log_odds: Sequence[float], log_likelihoods: Sequence[float], weight: float
) -> list[int]:
    """A new order for candidates given in their first order: by
    logit_scale x cosine (`first_log_odds`) + weight x log p(query | picture), ties in
    the first order.

    Both terms are log-probabilities up to a constant per query: the contrastive
    model's log odds of a match at its own temperature, and the reranker's
    log-likelihood of the query. Their sum ranks by the product of the two models'
    beliefs (a product of experts, weight its exponent): a reranker that is sure
    (a wrong colour costs it several nats) overrides a small cosine gap, and one that
    hesitates between full captions leaves a clear contrastive winner in place.
    weight 0 keeps the first order."""
    fused = [
        first + weight * evidence
        for first, evidence in zip(first_log_odds, log_likelihoods, strict=True)
    ]
    return sorted(range(len(fused)), key=lambda i: (-fused[i], i))


def rerank_hits(
    service: RerankService,
    query: str,
    hits: list[Hit],
    request: RerankRequest,
    limits: ImageLimits,
    locate: Locate,
    logit_scale: Callable[[str], float],
) -> RerankReport:
    """Rerank the first top_n hits in place. Pictures are reordered among the places
    pictures held; sounds keep their places. `locate` gives an item's original inside
    the roots; `logit_scale` each space's temperature (fused_order). Returns how it went."""
    top = hits[: service.top_n(request)]
    outcome = service.rerank(query, [candidate(hit, limits, locate) for hit in top], request)
    scored = sorted(outcome.scores)
    for index in scored:
        top[index].rerank_score = outcome.scores[index]
    order = fused_order(
        [logit_scale(top[i].space) * top[i].score for i in scored],
        [outcome.log_likelihood(i) for i in scored],
        service.settings.weight,
    )
    reordered = list(top)
    for place, position in zip(scored, order, strict=True):
        reordered[place] = top[scored[position]]
    hits[: len(top)] = reordered
    assert outcome.report is not None
    return outcome.report


def explain_hits(
    service: RerankService,
    query: str,
    hits: list[Hit],
    count: int,
    model: str | None,
    limits: ImageLimits,
    locate: Locate,
) -> ExplainReport:
    """Explanations for the first `count` hits that have a picture; a model that
    cannot load leaves them unexplained, with the reason."""
    started = time.perf_counter()
    reranker = service.reranker(model)
    report = ExplainReport(0, reranker.spec)
    try:
        for hit in hits:
            if report.explained >= count:
                break
            try:
                picture = service.picture(candidate(hit, limits, locate), reranker)
            except Exception:  # an unreadable original is left unexplained
                picture = None
            if picture is None:
                continue
            hit.explanation = explain_picture(
                reranker, query, picture, service.settings.explain_words
            )
            report.explained += 1
    except ModelLoadError as error:
        report.reason = f"model unavailable: {error}"
    report.took_ms = round((time.perf_counter() - started) * 1000.0, 3)
    return report

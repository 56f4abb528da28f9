"""The segment rows a file's vectors make, by space: one rule for a run's driver
(indexer/pipeline.py) and for the Ray workers that write those rows themselves
(indexer/ray_workers.py), so that both write the same rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmodal.search.encoders import AUDIO_TEXT, IMAGE_TEXT
from xmodal.search.media import MediaKind
from xmodal.search.store import SegmentRecord, segment_id_for

from .audio_encode import EncodedAudio
from .decode import Decoded


def segment_rows(
    item_id: str,
    vectors: Sequence[np.ndarray],
    spans: Sequence[tuple[float | None, float | None]] | Sequence[tuple[float, float]],
) -> list[SegmentRecord]:
    return [
        SegmentRecord(segment_id_for(item_id, index), item_id, vector, start, end)
        for index, (vector, (start, end)) in enumerate(zip(vectors, spans, strict=True))
    ]


def sound_fails(decoded: Decoded, sound: EncodedAudio) -> bool:
    """An audio file whose sound gave no vector (it could not be decoded, or every
    window was silent) fails; a video keeps its pictures."""
    return decoded.candidate.kind == MediaKind.AUDIO and bool(sound.error or not sound.vectors)


def file_segments(
    decoded: Decoded, vectors: Sequence[np.ndarray], sound: EncodedAudio | None
) -> dict[str, list[SegmentRecord]] | None:
    """A file's rows per space, from its picture vectors (one per keyframe; none for
    sound alone) and its sound's; None when the file fails (sound_fails)."""
    item_id = decoded.candidate.item_id
    rows = {IMAGE_TEXT: segment_rows(item_id, vectors, decoded.spans)} if len(vectors) else {}
    if sound is not None:
        if sound_fails(decoded, sound):
            return None
        if not sound.error and sound.vectors:
            rows[AUDIO_TEXT] = segment_rows(item_id, sound.vectors, sound.spans)
    return rows

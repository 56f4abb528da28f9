"""Store records: what one row of each table holds. API schemas are separate."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xmodal.search.media.kinds import MediaKind

INDEXED = "indexed"
FAILED = "failed"


def item_id_for(uri: str) -> str:
    """Stable id of a media item, derived from its location only."""
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]


def segment_id_for(item_id: str, index: int) -> str:
    return f"{item_id}:{index}"


@dataclass
class ItemRecord:
    id: str
    uri: str  # absolute path of a local file
    kind: MediaKind  # stored as its value: "image", "video" or "audio"
    root: str  # the indexed folder (or file) it was found under
    content_hash: str = ""  # sha256 of the file bytes; detects change and exact duplicates
    bytes: int = 0
    mtime_ns: int = 0
    width: int = 0  # pixels, after EXIF orientation
    height: int = 0
    duration: float | None = None  # seconds, for videos and audio
    metadata: dict[str, Any] = field(default_factory=dict)  # user metadata
    status: str = INDEXED  # INDEXED or FAILED
    error: str = ""  # why a FAILED item could not be indexed
    indexed_at: float = 0.0  # unix seconds


@dataclass
class SegmentRecord:
    id: str
    item_id: str
    vector: np.ndarray  # float32, unit length
    start: float | None = None  # seconds, for time-based media
    end: float | None = None


@dataclass(frozen=True)
class SpaceRecord:
    name: str  # e.g. "image-text"
    model_spec: str  # as the user wrote it when the space was created
    model_identity: str  # architecture and weights, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k
    dim: int

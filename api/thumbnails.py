"""JPEG thumbnails, generated on first request and cached under the data directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from xmodal.search.errors import UnknownItemError
from xmodal.search.media import ImageLimits, MediaKind, decode_image, frame_at
from xmodal.search.store import INDEXED, ItemRecord


class ThumbnailCache:
    def __init__(self, directory: Path, size: int, limits: ImageLimits):
        self.directory = directory
        self.size = size
        self.limits = limits

    def path_for(self, item: ItemRecord, source: Path, seconds: float | None = None) -> Path:
        """The cached JPEG for an item (keyed by content, so an edited file gets a new one),
        made from `source`, its file as checked against the indexed roots (the caller
        checks before every request, cached or not).

        For a video, the frame at `seconds` (default: a tenth into the video, past
        the black or title frames many videos open with)."""
        if item.status != INDEXED:
            raise UnknownItemError(item.id)
        moment = ""
        if item.kind == MediaKind.VIDEO:
            if seconds is None:
                seconds = (item.duration or 0.0) * 0.1
            seconds = round(min(seconds, item.duration or seconds), 1)
            moment = f"-t{seconds:g}"
        name = f"{item.id}-{item.content_hash[:16]}{moment}-{self.size}.jpg"
        target = self.directory / name[:2] / name
        if target.exists():
            return target
        if item.kind == MediaKind.VIDEO:
            image = frame_at(source, seconds or 0.0, short_side=self.size)
        else:
            image = decode_image(source, self.limits, draft_to=(self.size, self.size)).image
        image.thumbnail((self.size, self.size))
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file and rename, so a concurrent reader never sees half a JPEG.
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
            image.save(tmp, "JPEG", quality=85, optimize=True)
        os.replace(tmp.name, target)
        return target

"""The kinds of media, in one table: which files are each kind, and where each goes.

A kind's value is what the store's `kind` column and the HTTP API hold ("image",
"video", "audio"): MediaKind is a StrEnum, so a kind equals, hashes, formats and
serialises (JSON, Arrow) as that string, and a kind read back from the store is
`MediaKind(value)`. Each kind's files are decoded in its own module (images.py,
video.py, audio.py); the table only says which files are that kind and which
embedding spaces its segments go to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from xmodal.search.encoders import AUDIO_TEXT, IMAGE_TEXT
from xmodal.search.errors import MediaDecodeError

from .audio import sniff_audio_mime
from .files import open_regular
from .images import sniff_image_mime
from .video import sniff_video_mime

SNIFF_BYTES = 262  # enough for every signature filetype knows


class MediaKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True)
class KindSpec:
    extensions: frozenset[str]  # lower case, with the dot
    sniff: Callable[[bytes], str | None]  # the MIME type a file's first bytes announce, or None
    spaces: frozenset[str]  # the embedding spaces its segments go to


KINDS: Mapping[MediaKind, KindSpec] = MappingProxyType(
    {
        MediaKind.IMAGE: KindSpec(  # images.decode_image
            extensions=frozenset(
                {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
                | {".heic", ".heif", ".avif", ".jp2", ".ico"}
            ),
            sniff=sniff_image_mime,
            spaces=frozenset({IMAGE_TEXT}),
        ),
        MediaKind.VIDEO: KindSpec(  # video.extract_keyframes; its sound: audio.iter_audio_windows
            extensions=frozenset(
                {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts"}
                | {".3gp", ".ogv"}
            ),
            sniff=sniff_video_mime,
            spaces=frozenset({IMAGE_TEXT, AUDIO_TEXT}),  # a video has pictures and sound
        ),
        MediaKind.AUDIO: KindSpec(  # audio.iter_audio_windows
            extensions=frozenset(
                {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mka"}
                | {".wma", ".aiff"}
            ),
            sniff=sniff_audio_mime,
            spaces=frozenset({AUDIO_TEXT}),
        ),
    }
)
_BY_EXTENSION = {ext: kind for kind, spec in KINDS.items() for ext in spec.extensions}


def media_kind(path: Path) -> MediaKind | None:
    """A file's kind by its extension, else by its first bytes (sniffed in the table's
    order); None for other files."""
    kind = _BY_EXTENSION.get(path.suffix.lower())
    if kind is not None:
        return kind
    try:
        with open_regular(path) as f:  # a FIFO would block a plain open
            header = f.read(SNIFF_BYTES)
    except (OSError, MediaDecodeError):
        return None
    return sniff_kind(header)


def sniff_kind(header: bytes) -> MediaKind | None:
    """The kind a body's first SNIFF_BYTES announce (sniffed in the table's order), or
    None: for bytes from a URL or an upload, whose name and declared type prove nothing."""
    return next((kind for kind, spec in KINDS.items() if spec.sniff(header) is not None), None)


def kinds_in_space(space: str) -> frozenset[MediaKind]:
    """The kinds of media whose segments an embedding space holds (none for an unknown one)."""
    return frozenset(kind for kind, spec in KINDS.items() if space in spec.spaces)

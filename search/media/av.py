"""What video and audio decoding share: importing PyAV, opening a container, its duration."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from xmodal.search.errors import MediaDecodeError


def import_av(extra: str) -> Any:
    """PyAV, or a clear error naming the extra that installs it."""
    try:
        import av
    except ImportError as error:
        raise MediaDecodeError(
            f"{extra} support needs PyAV: pip install 'xmodal[{extra}]'"
        ) from error
    return av


def open_container(source: Path | bytes, extra: str, unreadable: str) -> Any:
    """An opened container, from a file or from bytes in memory (an upload); empty or
    unreadable media raise MediaDecodeError, the latter starting with `unreadable`
    (e.g. "not a readable video")."""
    av = import_av(extra)
    if isinstance(source, bytes):
        size = len(source)
    else:
        try:
            size = source.stat().st_size
        except OSError as error:
            raise MediaDecodeError(f"cannot read file: {error}") from error
    if size == 0:
        raise MediaDecodeError("empty file (0 bytes)")
    try:
        return av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except av.FFmpegError as error:
        raise MediaDecodeError(f"{unreadable}: {error}") from error


def stream_duration(container: Any, stream: Any) -> float:
    """Seconds from the stream header, else the container's, else 0 (unknown)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0

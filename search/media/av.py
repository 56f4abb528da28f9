"""What video and audio decoding share: importing PyAV, opening a container, its duration."""

from __future__ import annotations

import io
import os
from pathlib import Path
from time import monotonic
from typing import Any, BinaryIO

from xmodal.search.errors import MediaDecodeError

from .files import open_regular


def import_av(extra: str) -> Any:
    """PyAV, or a clear error naming the extra that installs it."""
    try:
        import av
    except ImportError as error:
        raise MediaDecodeError(
            f"{extra} support needs PyAV: pip install 'xmodal[{extra}]'"
        ) from error
    return av


# A container read from a file object opens any URL it names (an HLS playlist's
# segments, over any protocol: a file holding one is read as a playlist whatever its
# name), since no protocol list is inherited; media files need none of that.
NO_NESTED_OPENS = {"protocol_whitelist": "none"}


def open_container(
    source: Path | bytes, extra: str, unreadable: str, timeout: float | None = None
) -> tuple[Any, BinaryIO]:
    """An opened container, from a file or from bytes in memory (an upload); empty or
    unreadable media raise MediaDecodeError, the latter starting with `unreadable`
    (e.g. "not a readable video"). Returns the container and the file it reads, to
    close together (`close_container`).

    A file is opened by xmodal, not by FFmpeg (files.open_regular: a FIFO or a device
    is refused, never waited on) and handed over as a file object; it is closed with
    `close_container`. `timeout` (seconds) bounds FFmpeg's opening and each of its reads
    where FFmpeg checks for interruption."""
    av = import_av(extra)
    if isinstance(source, bytes):
        file: BinaryIO = io.BytesIO(source)
    else:
        try:
            file = open_regular(source)
        except OSError as error:
            raise MediaDecodeError(f"cannot read file: {error.strerror or error}") from error
    try:
        if _size(file) == 0:
            raise MediaDecodeError("empty file (0 bytes)")
        # Tags are text of any encoding, or damaged: they must not stop the decoding.
        container = av.open(
            file, options=NO_NESTED_OPENS, timeout=timeout, metadata_errors="replace"
        )
    except av.FFmpegError as error:
        file.close()
        raise MediaDecodeError(f"{unreadable}: {error}") from error
    except BaseException:
        file.close()
        raise
    return container, file


def close_container(container: Any, file: BinaryIO) -> None:
    """Close a container and the file under it (PyAV leaves a file object open)."""
    try:
        container.close()
    finally:
        file.close()


def decode_timeout_message(timeout: float) -> str:
    return f"decoding took over {timeout:g} s (setting indexing.decode_timeout)"


class Deadline:
    """A file's decoding time budget, checked between packets and frames."""

    def __init__(self, timeout: float | None):
        self.timeout = timeout
        self.started = monotonic()

    def check(self) -> None:
        """MediaDecodeError once more than `timeout` seconds have passed."""
        if self.timeout is not None and monotonic() - self.started > self.timeout:
            raise MediaDecodeError(decode_timeout_message(self.timeout))


def _size(file: BinaryIO) -> int:
    if isinstance(file, io.BytesIO):
        return len(file.getbuffer())
    return os.fstat(file.fileno()).st_size


def stream_duration(container: Any, stream: Any) -> float:
    """Seconds from the stream header, else the container's, else 0 (unknown)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0

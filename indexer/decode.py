"""The decode stage: read, hash, decode and prepare one file (runs in worker threads)."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from xmodal.search.errors import MediaDecodeError
from xmodal.search.media import (
    MediaKind,
    decode_image,
    extract_keyframes,
    open_regular,
    over_cap,
    probe_audio,
    read_capped,
)

from .discover import Candidate
from .options import DecodeOptions


class ImagePreparer(Protocol):
    """What decoding needs of the image encoder (the encoder itself, or indexer/
    background.AfterLoad while it loads)."""

    @property
    def input_size(self) -> tuple[int, int]: ...

    def prepare_image(self, image: Image.Image) -> np.ndarray: ...


@dataclass
class Decoded:
    candidate: Candidate
    content_hash: str = ""
    width: int = 0
    height: int = 0
    duration: float | None = None  # seconds, for videos and audio
    prepared: list[np.ndarray] = field(default_factory=list)  # model inputs, one per segment
    spans: list[tuple[float | None, float | None]] = field(default_factory=list)  # per segment
    # Audio to stream into the audio space (the file itself, or a video's soundtrack);
    # it is decoded later, window by window, next to the audio encoder.
    has_audio: bool = False
    error: str = ""  # why it could not be indexed (or, with segments, what was skipped)
    sound_note: str = ""  # why a video's sound was not indexed, when the run has none
    same_content: bool = False  # touched but byte-identical to what is indexed
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return (
            bool(self.error) and not self.prepared and not self.has_audio and not self.same_content
        )


HASH_CHUNK = 1024 * 1024  # bytes read at a time while hashing


def _file_hash(path: Path, max_bytes: int) -> str:
    """sha256 of a regular file of at most `max_bytes` bytes, streamed."""
    digest = hashlib.sha256()
    with open_regular(path) as file:  # a FIFO or a device is refused, not read
        size = os.fstat(file.fileno()).st_size
        if size > max_bytes:
            raise over_cap(size, max_bytes, "indexing.max_file_bytes")
        read = 0
        while chunk := file.read(HASH_CHUNK):
            read += len(chunk)
            if read > max_bytes:  # grew while being read
                raise over_cap(read, max_bytes, "indexing.max_file_bytes")
            digest.update(chunk)
    return digest.hexdigest()


def _same_as_indexed(result: Decoded) -> bool:
    """Whether the file's content hash is that of its indexed version (a touched file)."""
    candidate = result.candidate
    result.same_content = (
        candidate.previously_indexed and result.content_hash == candidate.previous_hash
    )
    return result.same_content


def _decode_image(result: Decoded, encoder: ImagePreparer, options: DecodeOptions) -> None:
    data = read_capped(result.candidate.path, options.max_image_bytes, "indexing.max_image_bytes")
    result.content_hash = hashlib.sha256(data).hexdigest()
    if _same_as_indexed(result):
        return
    decoded = decode_image(data, options.images, draft_to=encoder.input_size)
    result.width, result.height = decoded.width, decoded.height
    result.prepared = [encoder.prepare_image(decoded.image)]
    result.spans = [(None, None)]


def _hash_unless_same(result: Decoded, options: DecodeOptions) -> bool:
    """Hash the file (streamed: never read whole); True when the indexed content is the same."""
    result.content_hash = _file_hash(result.candidate.path, options.max_file_bytes)
    return _same_as_indexed(result)


def _decode_audio(result: Decoded, options: DecodeOptions) -> None:
    if _hash_unless_same(result, options):
        return
    if not options.sound:
        raise MediaDecodeError("no audio model is configured (audio_model = none)")
    info = probe_audio(result.candidate.path)  # unreadable, no audio stream: fails here
    if info.duration > options.audio.max_seconds:
        raise MediaDecodeError(
            f"audio lasts {info.duration:,.0f} s, over the limit of "
            f"{options.audio.max_seconds:,.0f} s (setting audio.max_seconds)"
        )
    result.duration = info.duration or None
    result.has_audio = True


def _video_has_sound(path: Path) -> bool:
    try:
        probe_audio(path)
    except MediaDecodeError:
        return False  # no audio stream (or none that opens): pictures only
    return True


def _decode_video(result: Decoded, encoder: ImagePreparer, options: DecodeOptions) -> None:
    if _hash_unless_same(result, options):
        return
    if not options.pictures:  # its sound only
        sound = options.video.sound and options.sound
        result.has_audio = sound and _video_has_sound(result.candidate.path)
        return
    video = extract_keyframes(
        result.candidate.path,
        options.video.keyframes,
        options.video,
        draft_side=min(encoder.input_size),
        prepare=encoder.prepare_image,
        timeout=options.timeout,
    )
    result.width, result.height, result.duration = video.width, video.height, video.duration
    result.prepared = [k.prepared for k in video.keyframes if k.prepared is not None]
    result.spans = [(k.start, k.end) for k in video.keyframes]
    result.error = "; ".join(video.warnings)
    if options.video.sound and options.sound:
        result.has_audio = _video_has_sound(result.candidate.path)


def decode_candidate(
    candidate: Candidate, encoder: ImagePreparer, options: DecodeOptions
) -> Decoded:
    started = time.perf_counter()
    result = Decoded(candidate)
    try:
        if candidate.kind == MediaKind.VIDEO:
            _decode_video(result, encoder, options)
        elif candidate.kind == MediaKind.AUDIO:
            _decode_audio(result, options)
        else:
            _decode_image(result, encoder, options)
    except MediaDecodeError as error:
        result.error = str(error)
    except OSError as error:
        result.error = f"cannot read file: {error.strerror or error}"
    except Exception as error:  # one bad file must never end the job
        result.error = f"unexpected {type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - started
    return result

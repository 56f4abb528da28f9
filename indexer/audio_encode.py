"""Audio windows -> vectors, streamed: a file of any length is decoded in a background
thread a few windows ahead of the encoder, and windows of several files share batches.

Memory stays bounded by `batch_size` windows being encoded plus `prefetch` windows
decoded ahead, whatever the length of the files (an hour of 48 kHz audio in 10 s
windows would be 700 MB if it were decoded first and encoded after).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import numpy as np

from xmodal.search.encoders import AudioTextEncoder
from xmodal.search.errors import MediaDecodeError
from xmodal.search.media import AudioDecodeStats, AudioOptions, AudioWindow, iter_audio_windows

_DONE = object()
T = TypeVar("T")


@dataclass
class EncodedAudio:
    """One file's audio: a vector per non-silent window, or why there is none."""

    vectors: list[np.ndarray] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)
    duration: float = 0.0  # seconds decoded
    skipped_silent: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str = ""  # set when the file's audio could not be decoded at all


@dataclass
class AudioEncodeStats:
    decode_seconds: float = 0.0  # in the decode thread, beside the encoding
    encode_seconds: float = 0.0
    windows: int = 0


def prefetched(windows: Iterator[T], depth: int) -> Iterator[T]:
    """Run an iterator in a background thread, at most `depth` items ahead.

    Errors are raised where the consumer is; a consumer that stops early stops the
    thread too (at its next window)."""
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for window in windows:
                while not stop.is_set():
                    try:
                        slots.put(window, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as error:  # handed to the consumer
            slots.put(error)

    thread = threading.Thread(target=produce, name="xmodal-audio-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(T, item)
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(0.05)


class AudioEncoder:
    """Encodes the audio of files, batching windows across files."""

    def __init__(
        self,
        encoder: AudioTextEncoder,
        options: AudioOptions,
        batch_size: int,
        prefetch: int = 0,
    ):
        self.encoder = encoder
        self.options = options
        self.batch_size = batch_size
        self.prefetch = prefetch or 2 * batch_size
        self.stats = AudioEncodeStats()

    def encode_files(self, paths: Sequence[Path]) -> list[EncodedAudio]:
        """The audio of each file, in order. A file that fails gets `error`; others go on.

        One background thread decodes the files one after another, a few windows ahead
        of the encoder, across file boundaries: while a batch is encoded the next
        files are already being decoded, however short they are."""
        results = [EncodedAudio() for _ in paths]
        pending: list[tuple[int, AudioWindow]] = []
        for number, window in prefetched(self._windows(paths, results), self.prefetch):
            pending.append((number, window))
            if len(pending) >= self.batch_size:
                self._encode(pending, results)
                pending = []
        self._encode(pending, results)
        for result in results:
            if result.error:  # windows encoded before the failure are dropped with it
                result.vectors, result.spans = [], []
        return results

    def _windows(
        self, paths: Sequence[Path], results: list[EncodedAudio]
    ) -> Iterator[tuple[int, AudioWindow]]:
        """(file number, window) for every file in turn; runs in the decode thread, which
        fills in each file's duration, warnings and error (read once it has finished)."""
        for number, path in enumerate(paths):
            result, decode = results[number], AudioDecodeStats()
            started = time.perf_counter()
            try:
                for window in iter_audio_windows(path, self.options, decode):
                    self.stats.decode_seconds += time.perf_counter() - started
                    yield number, window
                    started = time.perf_counter()
            except MediaDecodeError as error:
                result.error = str(error)
            except OSError as error:
                result.error = f"cannot read file: {error.strerror or error}"
            except Exception as error:  # one bad file must never end the job
                result.error = f"unexpected {type(error).__name__}: {error}"
            self.stats.decode_seconds += time.perf_counter() - started
            result.duration = decode.duration
            result.skipped_silent = decode.skipped_silent
            result.warnings = list(decode.warnings)

    def _encode(self, pending: list[tuple[int, AudioWindow]], results: list[EncodedAudio]) -> None:
        if not pending:
            return
        started = time.perf_counter()
        vectors = self.encoder.encode_audio(
            [window.samples for _, window in pending], self.options.sample_rate
        )
        self.stats.encode_seconds += time.perf_counter() - started
        self.stats.windows += len(pending)
        for (number, window), vector in zip(pending, vectors, strict=True):
            results[number].vectors.append(vector)
            results[number].spans.append((window.start, window.end))

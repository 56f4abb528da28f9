"""Audio decoding with PyAV into fixed-length mono windows for an audio encoder (CLAP).

Works on audio files (wav, flac, mp3, ogg, opus, m4a, ...) and on the first audio
stream of a video. Decoding is a stream: packets are decoded one by one, every frame
goes through one `av.AudioResampler` (mono downmix, float32, the target rate), and the
samples land in a buffer of exactly one window, so memory does not grow with the file.

Windows are `window_seconds` long and start every `hop_seconds` (hop < window overlaps,
hop > window leaves gaps). A window whose RMS level is below `silence_dbfs` is skipped.
The last, partial window is zero-padded to full length (its `end` is the real end) when
it holds at least `min_window_seconds` of audio not already in an earlier window; a file
shorter than that still gives its one window, so a short sound effect stays searchable.

Times count the samples produced, not frame timestamps: MP3 frames start at 25 ms
(the encoder delay FFmpeg trims) and other streams at arbitrary offsets, while the
samples are what the encoder sees. A packet that fails to decode is counted and
skipped; the hole it leaves in the timestamps is filled with silence so that later
windows keep their true times.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from time import monotonic
from typing import Any, BinaryIO

import numpy as np

from xmodal.search.errors import MediaDecodeError

from .av import (
    close_container,
    decode_timeout_message,
    import_av,
    open_container,
    stream_duration,
)

# Holes between frame timestamps shorter than this are jitter (container timestamp
# rounding), not lost packets; the shortest common codec frame is 2.5 ms (Opus), the
# usual ones 20-26 ms.
_GAP_TOLERANCE = 0.010


@dataclass(frozen=True)
class AudioOptions:
    sample_rate: int = 48000  # what the windows are resampled to (CLAP's rate)
    window_seconds: float = 10.0
    hop_seconds: float = 10.0  # < window_seconds: windows overlap
    silence_dbfs: float = -60.0  # windows quieter than this (RMS, dB full scale) are skipped
    max_seconds: float = 6 * 3600.0  # longer files are refused
    min_window_seconds: float = 1.0  # a shorter trailing partial window is dropped
    # Decode only this many seconds from the start (a query clip): longer files are
    # cut there instead of refused.
    read_seconds: float | None = None
    # Seconds of decoding one file may take (the time its windows wait for the encoder
    # not counted); None: no limit.
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, not {self.sample_rate}")
        if self.window_seconds <= 0 or self.hop_seconds <= 0:
            raise ValueError("window_seconds and hop_seconds must be positive")
        if round(self.window_seconds * self.sample_rate) < 1:
            raise ValueError("window_seconds is shorter than one sample")
        if round(self.hop_seconds * self.sample_rate) < 1:
            raise ValueError("hop_seconds is shorter than one sample")
        if self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, not {self.max_seconds}")
        if self.read_seconds is not None and self.read_seconds <= 0:
            raise ValueError(f"read_seconds must be positive, not {self.read_seconds}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}")

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_seconds * self.sample_rate)


@dataclass
class AudioWindow:
    start: float  # seconds
    end: float  # seconds; the real end of the audio for a padded last window
    samples: np.ndarray  # float32, mono, exactly window_samples long


@dataclass
class AudioDecodeStats:
    """Filled in while `iter_audio_windows` runs; complete once it is exhausted."""

    windows: int = 0  # windows yielded
    skipped_silent: int = 0
    corrupt_packets: int = 0
    gap_seconds: float = 0.0  # silence inserted where packets were lost
    duration: float = 0.0  # seconds of audio decoded (target-rate samples / rate)
    peak_buffered: int = 0  # most samples held in the window buffer at once
    peak_chunk: int = 0  # largest resampled frame (held besides the buffer)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AudioInfo:
    duration: float  # seconds, from the header (0.0 when the header does not say)
    sample_rate: int
    channels: int
    codec: str  # decoder name, e.g. "mp3float", "aac", "opus"
    layout: str  # e.g. "mono", "stereo", "5.1"


def _av() -> Any:
    return import_av("audio")


def _open(source: Path | bytes, timeout: float | None = None) -> tuple[Any, BinaryIO]:
    return open_container(source, "audio", "not an audio file (or damaged beyond reading)", timeout)


def _audio_stream(container: Any) -> Any:
    if not container.streams.audio:
        raise MediaDecodeError("no audio stream")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # FFmpeg knows the container, not the codec
        tag = getattr(stream, "codec_tag", "") or "unknown"
        raise MediaDecodeError(f"unsupported audio codec ({tag}): this FFmpeg cannot decode it")
    return stream


def probe_audio(path: Path) -> AudioInfo:
    """What the container's header says about the first audio stream; decodes nothing."""
    container, source_file = _open(Path(path))
    try:
        stream = _audio_stream(container)
        context = stream.codec_context
        return AudioInfo(
            duration=stream_duration(container, stream),
            sample_rate=int(context.sample_rate or 0),
            channels=int(context.channels or 0),
            codec=str(context.name),
            layout=str(context.layout.name) if context.layout is not None else "",
        )
    finally:
        close_container(container, source_file)


def sniff_audio_mime(header: bytes) -> str | None:
    """The audio MIME type the file's first bytes announce (WAV, FLAC, MP3, Ogg, M4A...)."""
    import filetype

    kind = filetype.guess(header)
    return kind.mime if kind is not None and kind.mime.startswith("audio/") else None


def _dbfs(samples: np.ndarray) -> float:
    if samples.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


class _Windower:
    """Cuts a stream of mono chunks into windows, holding at most one window of samples."""

    def __init__(self, options: AudioOptions, stats: AudioDecodeStats) -> None:
        self.options, self.stats = options, stats
        self.size, self.hop = options.window_samples, options.hop_samples
        self.buffer = np.zeros(self.size, np.float32)
        self.filled = 0  # samples in the buffer
        self.seen = 0  # of those, how many an earlier window already covered
        self.start = 0  # sample index (whole stream) of buffer[0]
        self.skip = 0  # samples still to drop before the next window (hop > window)
        self.total = 0  # samples received

    def push(self, chunk: np.ndarray) -> Iterator[AudioWindow]:
        self.total += len(chunk)
        self.stats.peak_chunk = max(self.stats.peak_chunk, len(chunk))
        while len(chunk):
            if self.skip:
                dropped = min(self.skip, len(chunk))
                chunk, self.skip = chunk[dropped:], self.skip - dropped
                continue
            take = min(self.size - self.filled, len(chunk))
            self.buffer[self.filled : self.filled + take] = chunk[:take]
            self.filled += take
            chunk = chunk[take:]
            self.stats.peak_buffered = max(self.stats.peak_buffered, self.filled)
            if self.filled == self.size:
                yield from self._emit(self.size)
                self._advance()

    def _advance(self) -> None:
        if self.hop < self.size:
            kept = self.size - self.hop
            self.buffer[:kept] = self.buffer[self.hop :]
            self.filled = self.seen = kept
        else:
            self.filled = self.seen = 0
            self.skip = self.hop - self.size
        self.start += self.hop

    def finish(self) -> Iterator[AudioWindow]:
        new = self.filled - self.seen
        if new <= 0:
            return
        first = self.start == 0  # nothing emitted or skipped before: a short file
        if first or self.filled >= self.options.min_window_seconds * self.options.sample_rate:
            self.buffer[self.filled :] = 0.0
            yield from self._emit(self.filled)
        self.filled = self.seen = 0

    def _emit(self, real: int) -> Iterator[AudioWindow]:
        rate = self.options.sample_rate
        if _dbfs(self.buffer[:real]) < self.options.silence_dbfs:
            self.stats.skipped_silent += 1
            return
        self.stats.windows += 1
        yield AudioWindow(
            start=self.start / rate, end=(self.start + real) / rate, samples=self.buffer.copy()
        )


def iter_audio_windows(
    source: Path | bytes,
    options: AudioOptions = AudioOptions(),
    stats: AudioDecodeStats | None = None,
) -> Iterator[AudioWindow]:
    """Non-silent windows of the first audio stream of a file (or its bytes), in order.

    Raises MediaDecodeError (on first iteration) for an empty or unreadable file, a file
    without an audio stream, one over `max_seconds`, or one where nothing decodes."""
    av = _av()
    stats = stats if stats is not None else AudioDecodeStats()
    started = monotonic()
    paused = 0.0  # seconds spent suspended at a yield, waiting for the consumer
    container, source_file = _open(
        source if isinstance(source, bytes) else Path(source), options.timeout
    )

    def handed_over(windows: Iterator[AudioWindow]) -> Iterator[AudioWindow]:
        nonlocal paused
        for window in windows:
            suspended = monotonic()
            yield window
            paused += monotonic() - suspended

    try:
        stream = _audio_stream(container)
        header_duration = stream_duration(container, stream)
        cut = options.read_seconds
        if cut is None and header_duration > options.max_seconds:
            raise MediaDecodeError(
                f"audio lasts {header_duration:,.0f} s, over the limit of {options.max_seconds:,.0f} s"
            )
        rate = options.sample_rate
        limit = round((options.max_seconds if cut is None else cut) * rate)
        windower = _Windower(options, stats)
        resampler = _new_resampler(av, rate)
        next_time: float | None = None  # where the next frame should start (stream time)

        def chunks(frames: list[Any]) -> Iterator[np.ndarray]:
            for out in frames:
                yield out.to_ndarray().reshape(-1)

        def resample(frame: Any) -> list[Any]:
            nonlocal resampler
            try:
                return list(resampler.resample(frame))
            except ValueError:
                # The input's rate or layout changed mid-stream (FFmpeg allows it, the
                # resampler does not): drain the old one and start another.
                tail = list(resampler.resample(None))
                resampler = _new_resampler(av, rate)
                return tail + list(resampler.resample(frame))

        try:
            for packet in container.demux(stream):
                if options.timeout is not None and (
                    monotonic() - started - paused > options.timeout
                ):
                    raise MediaDecodeError(decode_timeout_message(options.timeout))
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    stats.corrupt_packets += 1
                    continue
                for frame in frames:
                    if frame.samples == 0:
                        continue
                    time = float(frame.time) if frame.time is not None else None
                    if time is not None and next_time is not None:
                        gap = time - next_time
                        if _GAP_TOLERANCE < gap <= options.max_seconds:
                            # Lost packets: silence keeps later windows at their real time.
                            stats.gap_seconds += gap
                            missing = round(gap * rate)
                            silent = np.zeros(min(missing, rate), np.float32)
                            while missing > 0:  # a second at a time: memory stays bounded
                                yield from handed_over(windower.push(silent[:missing]))
                                missing -= len(silent)
                    if time is not None:
                        next_time = time + frame.samples / frame.sample_rate
                    elif next_time is not None:
                        next_time += frame.samples / frame.sample_rate
                    for chunk in chunks(resample(frame)):
                        yield from handed_over(windower.push(chunk))
                    if windower.total > limit:
                        if cut is not None:
                            break
                        raise MediaDecodeError(
                            f"audio lasts over the limit of {options.max_seconds:,.0f} s"
                        )
                else:
                    continue
                break  # read_seconds reached
        except av.FFmpegError as error:  # the container itself is damaged: keep what decoded
            stats.warnings.append(f"stopped reading at a damaged part of the file: {error}")
        for chunk in chunks(list(resampler.resample(None))):
            yield from windower.push(chunk)
        yield from windower.finish()
        stats.duration = windower.total / rate
        if stats.corrupt_packets:
            stats.warnings.append(f"{stats.corrupt_packets} corrupt packet(s) skipped")
        if windower.total == 0:
            raise MediaDecodeError(
                "no audio could be decoded"
                + (f" ({'; '.join(stats.warnings)})" if stats.warnings else "")
            )
    finally:
        close_container(container, source_file)


def _new_resampler(av: Any, rate: int) -> Any:
    return av.AudioResampler(format="flt", layout="mono", rate=rate)


def resample_mono(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 samples at `target_rate`, through the resampler decoding uses, so
    that a model trained on resampled clips hears what indexing will feed it."""
    samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    if rate == target_rate:
        return samples[0]
    av = _av()
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    frame.time_base = Fraction(1, rate)
    resampler = _new_resampler(av, target_rate)
    out = [*resampler.resample(frame), *resampler.resample(None)]
    if not out:
        return np.zeros(0, np.float32)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in out])

"""Synthetic test audio, written at run time with PyAV: deterministic, small, fast.

Signals are float32 numpy arrays in [-1, 1], shape (n,) for mono or (channels, n);
`tone`, `silence` and `noise_burst` make them, `place` puts one inside another at a
time. `write_audio(path, signal, rate)` picks codec and container from the suffix:

    .wav pcm_s16le, .flac flac, .mp3 libmp3lame, .ogg vorbis (FFmpeg's native encoder:
    stereo only, so mono is written as two equal channels), .opus libopus (48 kHz only:
    other rates are resampled first), .m4a aac, .mka flac in Matroska.

`video_with_audio` writes a small MP4 (H.264 + AAC) whose audio has a tone at a known
time. Damaged inputs: `corrupt_middle` (packet payloads in the middle of the timeline
overwritten, headers intact), `truncated`, and `text_file`.

Every writer passes `fflags=+bitexact`, so the same call writes the same bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# suffix -> (container format, encoder, encoder options)
FORMATS: dict[str, tuple[str, str, dict[str, str]]] = {
    ".wav": ("wav", "pcm_s16le", {}),
    ".flac": ("flac", "flac", {}),
    ".mp3": ("mp3", "libmp3lame", {}),
    # the native encoder is flagged experimental; libvorbis is not in PyAV's FFmpeg
    ".ogg": ("ogg", "vorbis", {"strict": "experimental"}),
    ".opus": ("ogg", "libopus", {}),
    ".m4a": ("ipod", "aac", {}),
    ".mka": ("matroska", "flac", {}),
}
LOSSY = frozenset({".mp3", ".ogg", ".opus", ".m4a"})
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


# -- signals ---------------------------------------------------------------------------
def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(round(seconds * rate), np.float32)


def noise_burst(seconds: float, rate: int, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """White noise (seeded), e.g. a click or a clap."""
    rng = np.random.default_rng(seed)
    return (amplitude * rng.uniform(-1, 1, round(seconds * rate))).astype(np.float32)


def place(background: np.ndarray, event: np.ndarray, at: float, rate: int) -> np.ndarray:
    """A copy of `background` with `event` added from `at` seconds on (mono signals)."""
    out = background.copy()
    start = round(at * rate)
    end = min(len(out), start + len(event))
    out[start:end] += event[: end - start]
    return out


def tone_in_silence(
    total: float, at: float, length: float, rate: int, freq: float = 1000.0
) -> np.ndarray:
    return place(silence(total, rate), tone(freq, length, rate), at, rate)


def multichannel(signal: np.ndarray, channels: int) -> np.ndarray:
    """The same mono signal on every channel (so any downmix keeps its shape)."""
    return np.repeat(np.atleast_2d(signal), channels, axis=0)


def resample_linear(signal: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Plain linear interpolation: good enough for test tones, and dependency-free."""
    signal = np.atleast_2d(signal)
    n = signal.shape[1]
    target = round(n * new_rate / rate)
    positions = np.arange(target) * rate / new_rate
    return np.stack([np.interp(positions, np.arange(n), row) for row in signal]).astype(np.float32)


# -- writers ---------------------------------------------------------------------------
def write_audio(
    path: str | os.PathLike[str], signal: np.ndarray, rate: int, chunk: int = 4096
) -> Path:
    """Encode `signal` (float32, (n,) or (channels, n)) at `rate` Hz, the codec and
    container chosen by the suffix (see FORMATS). Returns the path."""
    path = Path(path)
    try:
        container, codec, options = FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"no audio format for suffix {path.suffix!r}") from None
    data = np.atleast_2d(np.asarray(signal, np.float32))
    if codec == "libopus" and rate != 48000:
        data, rate = resample_linear(data, rate, 48000), 48000
    if codec == "vorbis" and data.shape[0] == 1:
        data = multichannel(data[0], 2)  # FFmpeg's native Vorbis encoder is stereo only
    channels = data.shape[0]
    layout = LAYOUTS.get(channels)
    if layout is None:
        raise ValueError(f"{channels} channels: only {sorted(LAYOUTS)} are supported")
    data = np.ascontiguousarray(np.clip(data, -1.0, 1.0))
    with av.open(str(path), "w", format=container, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout, options=options)
        _encode_samples(out, stream, data, rate, chunk)
    return path


def write_audio_stream(
    path: str | os.PathLike[str], chunks: Iterable[np.ndarray], rate: int, channels: int = 1
) -> Path:
    """Like `write_audio`, for long files: the signal comes as (channels, n) or (n,)
    chunks, never whole in memory. Lossless suffixes only (.wav, .flac, .mka)."""
    path = Path(path)
    container, codec, options = FORMATS[path.suffix.lower()]
    if path.suffix.lower() in LOSSY:
        raise ValueError("write_audio_stream writes lossless formats only")
    layout = LAYOUTS[channels]
    with av.open(str(path), "w", format=container, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout, options=options)
        position = 0
        for chunk in chunks:
            piece = np.ascontiguousarray(np.atleast_2d(np.asarray(chunk, np.float32)))
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = position
            frame.time_base = Fraction(1, rate)
            position += piece.shape[1]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _encode_samples(out, stream, data: np.ndarray, rate: int, chunk: int) -> None:
    """Feed planar float frames; PyAV converts them to the encoder's sample format and
    re-chunks them to its frame size."""
    layout = LAYOUTS[data.shape[0]]
    for start in range(0, data.shape[1], chunk):
        piece = np.ascontiguousarray(data[:, start : start + chunk])
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def video_with_audio(
    path: str | os.PathLike[str],
    seconds: float = 4.0,
    event_at: float | None = 2.0,
    event_seconds: float = 0.5,
    rate: int = 44100,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    audio: bool = True,
) -> Path:
    """An MP4: grey H.264 frames and (with `audio`) an AAC mono track, silent except for
    a 1 kHz tone from `event_at` for `event_seconds`."""
    path = Path(path)
    width, height = size
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream("aac", rate=rate, layout="mono") if audio else None
        picture = np.full((height, width, 3), 100, np.uint8)
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            signal = silence(seconds, rate)
            if event_at is not None:
                signal = place(signal, tone(1000.0, event_seconds, rate), event_at, rate)
            _encode_samples(out, sound, signal[None, :], rate, 4096)
    return path


# -- damaged files ---------------------------------------------------------------------
def _packet_spans(path: Path) -> list[tuple[float, int, int]]:
    """(time, byte position, size) of each audio packet whose payload is found in the
    file at or just after `packet.pos`."""
    data = path.read_bytes()
    spans = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for packet in container.demux(stream):
            if not packet.size or packet.pts is None or packet.pos is None or packet.pos < 0:
                continue
            head = bytes(packet)[:16]
            found = data.find(head, packet.pos, packet.pos + 64 + len(head))
            if found >= 0 and packet.time_base is not None:
                spans.append((float(packet.pts * packet.time_base), found, packet.size))
    return spans


def corrupt_middle(
    path_in: str | os.PathLike[str],
    path_out: str | os.PathLike[str],
    fraction: float = 0.1,
    seed: int = 0,
) -> Path:
    """A copy whose audio packets in the middle `fraction` of the timeline have their
    payloads overwritten with random bytes (packet and page headers kept, so the file
    still opens and demuxes). Raises ValueError when no packet can be placed."""
    path_in, path_out = Path(path_in), Path(path_out)
    spans = _packet_spans(path_in)
    if not spans:
        raise ValueError(f"no audio packet could be placed in {path_in}")
    times = [t for t, _, _ in spans]
    middle = (min(times) + max(times)) / 2
    half = (max(times) - min(times)) * fraction / 2
    chosen = [s for s in spans if middle - half <= s[0] <= middle + half] or [
        min(spans, key=lambda s: abs(s[0] - middle))
    ]
    data = bytearray(path_in.read_bytes())
    rng = np.random.default_rng(seed)
    for _, pos, size in chosen:
        data[pos : pos + size] = rng.bytes(min(size, len(data) - pos))
    path_out.write_bytes(bytes(data))
    return path_out


def truncated(
    path_in: str | os.PathLike[str], path_out: str | os.PathLike[str], keep_fraction: float = 0.5
) -> Path:
    """A copy of the first `keep_fraction` of the bytes."""
    data = Path(path_in).read_bytes()
    path_out = Path(path_out)
    path_out.write_bytes(data[: int(len(data) * keep_fraction)])
    return path_out


def text_file(path: str | os.PathLike[str]) -> Path:
    """Plain text under an audio name (e.g. "notes.mp3")."""
    path = Path(path)
    path.write_text("These are meeting notes, not audio.\n" * 40)
    return path

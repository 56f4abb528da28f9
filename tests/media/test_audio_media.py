"""The synthetic audio helpers write what they claim (read back with PyAV)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tests.media.audio import (
    corrupt_middle,
    multichannel,
    noise_burst,
    silence,
    text_file,
    tone,
    truncated,
    video_with_audio,
    write_audio,
    write_audio_stream,
)

# suffix -> (decoder name, channels written for a mono signal, rate read back)
EXPECTED = {
    ".wav": ("pcm_s16le", 1, 44100),
    ".flac": ("flac", 1, 44100),
    ".mp3": ("mp3float", 1, 44100),
    ".ogg": ("vorbis", 2, 44100),  # the native Vorbis encoder writes stereo only
    ".opus": ("opus", 1, 48000),  # Opus runs at 48 kHz; the writer resamples
    ".m4a": ("aac", 1, 44100),
}


def read_samples(path: Path) -> tuple[av.audio.stream.AudioStream, int, float]:
    """(stream info, samples decoded, container duration in seconds)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        total = sum(frame.samples for frame in container.decode(stream))
        return stream, total, (container.duration or 0) / av.time_base


def test_signals() -> None:
    assert tone(1000, 0.5, 8000).shape == (4000,) and tone(1000, 0.5, 8000).dtype == np.float32
    assert np.abs(tone(1000, 1, 8000)).max() == pytest.approx(0.5, abs=1e-3)
    assert not silence(1, 8000).any()
    assert np.array_equal(noise_burst(0.1, 8000, seed=1), noise_burst(0.1, 8000, seed=1))
    assert multichannel(tone(1000, 0.1, 8000), 6).shape == (6, 800)


@pytest.mark.parametrize("suffix", list(EXPECTED))
def test_formats(tmp_path: Path, suffix: str) -> None:
    path = write_audio(tmp_path / f"a{suffix}", tone(440, 2.0, 44100), 44100)
    stream, total, duration = read_samples(path)
    codec, channels, rate = EXPECTED[suffix]
    assert stream.codec_context.name == codec
    assert (stream.channels, stream.sample_rate) == (channels, rate)
    assert total / rate == pytest.approx(2.0, abs=2048 / rate)
    assert duration == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".m4a"])
def test_writes_are_deterministic(tmp_path: Path, suffix: str) -> None:
    signal = noise_burst(0.5, 44100)
    one = write_audio(tmp_path / f"1{suffix}", signal, 44100).read_bytes()
    assert one == write_audio(tmp_path / f"2{suffix}", signal, 44100).read_bytes()


def test_multichannel_and_odd_rates(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "a.flac", multichannel(tone(440, 1.0, 96000), 6), 96000)
    stream, total, _ = read_samples(path)
    assert (stream.channels, stream.sample_rate, total) == (6, 96000, 96000)
    assert stream.codec_context.layout.name == "5.1"
    path = write_audio(tmp_path / "b.opus", tone(440, 1.0, 11025), 11025)
    stream, total, _ = read_samples(path)
    assert stream.sample_rate == 48000 and total == pytest.approx(48000, abs=960)


def test_write_audio_stream(tmp_path: Path) -> None:
    path = write_audio_stream(tmp_path / "long.flac", (silence(1.0, 8000) for _ in range(5)), 8000)
    _, total, _ = read_samples(path)
    assert total == 40000
    with pytest.raises(ValueError):
        write_audio_stream(tmp_path / "x.mp3", [silence(1.0, 8000)], 8000)


def test_video_with_audio(tmp_path: Path) -> None:
    path = video_with_audio(tmp_path / "v.mp4", seconds=2.0, event_at=1.0)
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.duration / av.time_base == pytest.approx(2.0, abs=0.1)
    with av.open(str(video_with_audio(tmp_path / "mute.mp4", audio=False))) as container:
        assert len(container.streams.video) == 1 and not container.streams.audio


@pytest.mark.parametrize("suffix", [".mp3", ".m4a"])
def test_corrupt_middle(tmp_path: Path, suffix: str) -> None:
    good = write_audio(tmp_path / f"a{suffix}", tone(440, 6.0, 44100), 44100)
    bad = corrupt_middle(good, tmp_path / f"bad{suffix}")
    assert bad.stat().st_size == good.stat().st_size and bad.read_bytes() != good.read_bytes()
    errors = decoded = 0
    with av.open(str(bad)) as container:  # still opens
        for packet in container.demux(container.streams.audio[0]):
            try:
                decoded += sum(frame.samples for frame in packet.decode())
            except av.FFmpegError:
                errors += 1
    assert errors > 0 and decoded > 44100


def test_truncated_and_text(tmp_path: Path) -> None:
    good = write_audio(tmp_path / "a.wav", tone(440, 2.0, 44100), 44100)
    cut = truncated(good, tmp_path / "cut.wav", 0.5)
    assert cut.stat().st_size == good.stat().st_size // 2
    _, total, _ = read_samples(cut)
    assert total == pytest.approx(44100, abs=100)
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(text_file(tmp_path / "notes.mp3")))

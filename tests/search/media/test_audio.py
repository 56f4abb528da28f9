"""Audio decoding into windows (search.media.audio) on synthetic files from tests.media.audio."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.media.audio import (
    LOSSY,
    corrupt_middle,
    multichannel,
    silence,
    text_file,
    tone,
    tone_in_silence,
    truncated,
    video_with_audio,
    write_audio,
    write_audio_stream,
)
from xmodal.search.errors import MediaDecodeError
from xmodal.search.media.audio import (
    AudioDecodeStats,
    AudioOptions,
    AudioWindow,
    iter_audio_windows,
    probe_audio,
)

SUFFIXES = [".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"]
RATE = 44100
FRAME = 2048 / RATE  # one codec frame, with margin (AAC/Vorbis 1024, MP3 1152, Opus 960)
FIVE = AudioOptions(window_seconds=5.0, hop_seconds=5.0)
FIVE_ALL = AudioOptions(window_seconds=5.0, hop_seconds=5.0, silence_dbfs=-math.inf)  # silent too


def decode(path: Path, options: AudioOptions = FIVE) -> tuple[list[AudioWindow], AudioDecodeStats]:
    stats = AudioDecodeStats()
    return list(iter_audio_windows(path, options, stats)), stats


def spans(windows: list[AudioWindow]) -> list[tuple[float, float]]:
    return [(round(w.start, 4), round(w.end, 4)) for w in windows]


def block_rms(samples: np.ndarray, rate: int = 48000, block: float = 0.1) -> np.ndarray:
    n = round(block * rate)
    usable = len(samples) // n * n
    return np.sqrt(np.mean(np.square(samples[:usable].reshape(-1, n)), axis=1))


@pytest.fixture(scope="module")
def tone_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """30 s of silence with a 1 s, 1 kHz tone at exactly 12.0 s, in every format."""
    folder = tmp_path_factory.mktemp("audio")
    signal = tone_in_silence(30.0, 12.0, 1.0, RATE)
    return {suffix: write_audio(folder / f"tone{suffix}", signal, RATE) for suffix in SUFFIXES}


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_tone_lands_in_its_window(tone_files: dict[str, Path], suffix: str) -> None:
    windows, stats = decode(tone_files[suffix])
    assert spans(windows) == [(10.0, 15.0)]
    assert stats.skipped_silent == 5 and stats.corrupt_packets == 0
    samples = windows[0].samples
    assert samples.dtype == np.float32 and samples.shape == (FIVE.window_samples,)
    rms = block_rms(samples)  # 50 blocks of 0.1 s; the tone fills blocks 20..29
    margin = 1 if suffix in LOSSY else 0  # one codec frame of smear at each edge
    loud = rms[20 + margin : 30 - margin]
    quiet = np.concatenate([rms[: 20 - margin], rms[30 + margin :]])
    assert loud.min() > 0.3, rms  # a 0.5 sine: RMS 0.35
    assert quiet.max() < 0.01, rms


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_format_gives_all_windows_and_duration(
    tone_files: dict[str, Path], suffix: str
) -> None:
    windows, stats = decode(tone_files[suffix], FIVE_ALL)
    assert [w.start for w in windows] == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    assert all(len(w.samples) == FIVE.window_samples for w in windows)
    assert stats.duration == pytest.approx(30.0, abs=FRAME)
    assert probe_audio(tone_files[suffix]).duration == pytest.approx(30.0, abs=FRAME)


@pytest.mark.parametrize("rate", [11025, 44100, 96000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_rates_and_layouts(tmp_path: Path, rate: int, channels: int) -> None:
    signal = multichannel(tone_in_silence(8.0, 3.0, 1.0, rate), channels)
    path = write_audio(tmp_path / "a.flac", signal, rate)
    info = probe_audio(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    options = AudioOptions(window_seconds=2.0, hop_seconds=2.0)
    windows, stats = decode(path, options)
    assert spans(windows) == [(2.0, 4.0)]
    assert stats.duration == pytest.approx(8.0, abs=1e-3)
    rms = block_rms(windows[0].samples)  # tone in blocks 10..19
    assert rms[11:].min() > 0.1 and rms[:9].max() < 0.01, rms


def test_overlapping_windows(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "a.wav", tone(440, 12.0, RATE), RATE)
    windows, _ = decode(path, AudioOptions(window_seconds=4.0, hop_seconds=2.0))
    assert spans(windows) == [(0, 4), (2, 6), (4, 8), (6, 10), (8, 12)]  # no redundant tail
    # overlapping parts hold the same samples
    assert np.array_equal(windows[0].samples[96000:], windows[1].samples[:96000])


def test_hop_longer_than_window_leaves_gaps(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "a.wav", tone(440, 10.0, RATE), RATE)
    windows, _ = decode(path, AudioOptions(window_seconds=2.0, hop_seconds=3.0))
    assert spans(windows) == [(0, 2), (3, 5), (6, 8), (9, 10)]


def test_trailing_partial_window_padded_or_dropped(tmp_path: Path) -> None:
    padded = write_audio(tmp_path / "a.wav", tone(440, 11.5, RATE), RATE)
    windows, _ = decode(padded)
    assert spans(windows) == [(0, 5), (5, 10), (10, 11.5)]
    last = windows[-1].samples
    assert len(last) == FIVE.window_samples
    assert not last[72000:].any() and block_rms(last[:72000]).min() > 0.3

    dropped = write_audio(tmp_path / "b.wav", tone(440, 10.5, RATE), RATE)
    assert spans(decode(dropped)[0]) == [(0, 5), (5, 10)]
    # a trailing window after an overlap counts only its new samples
    assert spans(decode(padded, AudioOptions(window_seconds=5.0, hop_seconds=4.0))[0]) == [
        (0, 5),
        (4, 9),
        (8, 11.5),
    ]


def test_file_shorter_than_min_window_keeps_one_window(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "blip.wav", tone(440, 0.5, RATE), RATE)
    windows, stats = decode(path)
    assert spans(windows) == [(0, 0.5)] and stats.duration == pytest.approx(0.5)


def test_silent_file_gives_no_window(tmp_path: Path) -> None:
    windows, stats = decode(write_audio(tmp_path / "s.flac", silence(12.0, RATE), RATE))
    assert windows == [] and stats.skipped_silent == 3


def test_audio_track_of_a_video(tmp_path: Path) -> None:
    path = video_with_audio(tmp_path / "v.mp4", seconds=4.0, event_at=2.0, event_seconds=0.5)
    info = probe_audio(path)
    assert (info.codec, info.channels, info.sample_rate) == ("aac", 1, 44100)
    windows, stats = decode(path, AudioOptions(window_seconds=1.0, hop_seconds=1.0))
    assert spans(windows) == [(2, 3)]
    assert stats.duration == pytest.approx(4.0, abs=FRAME)
    rms = block_rms(windows[0].samples)
    assert rms[1:4].min() > 0.3 and rms[6:].max() < 0.01, rms


def test_video_without_audio(tmp_path: Path) -> None:
    path = video_with_audio(tmp_path / "v.mp4", audio=False)
    with pytest.raises(MediaDecodeError, match="no audio stream"):
        decode(path)
    with pytest.raises(MediaDecodeError, match="no audio stream"):
        probe_audio(path)


def test_empty_and_text_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(MediaDecodeError, match="empty file"):
        decode(empty)
    with pytest.raises(MediaDecodeError, match="not an audio file"):
        decode(text_file(tmp_path / "notes.mp3"))


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".ogg", ".opus"])
def test_truncated_streams_decode_what_is_there(
    tone_files: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    path = truncated(tone_files[suffix], tmp_path / f"cut{suffix}", 0.5)
    windows, stats = decode(path, FIVE_ALL)
    assert 3.0 < stats.duration < 29.0
    assert windows and all(len(w.samples) == FIVE.window_samples for w in windows)


def test_truncated_mp4_index_is_a_clear_error(tone_files: dict[str, Path], tmp_path: Path) -> None:
    # the moov index is at the end of a PyAV-written M4A: the start alone does not open
    with pytest.raises(MediaDecodeError, match="not an audio file"):
        decode(truncated(tone_files[".m4a"], tmp_path / "cut.m4a", 0.5))


@pytest.mark.parametrize("suffix", [".mp3", ".m4a"])
def test_corrupt_middle_is_counted_and_skipped(
    tone_files: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    path = corrupt_middle(tone_files[suffix], tmp_path / f"bad{suffix}", fraction=0.1)
    windows, stats = decode(path)
    assert stats.corrupt_packets > 0
    assert spans(windows) == [(10.0, 15.0)]  # the damage (13.5-16.5 s) spares the onset
    assert any("corrupt" in warning for warning in stats.warnings)
    if suffix == ".m4a":  # lost AAC packets leave timestamp holes, filled with silence
        assert stats.gap_seconds > 0
        assert stats.duration == pytest.approx(30.0, abs=FRAME)


def test_max_seconds_refused_before_decoding(tone_files: dict[str, Path]) -> None:
    stats = AudioDecodeStats()
    options = AudioOptions(max_seconds=20.0)
    with pytest.raises(MediaDecodeError, match="over the limit"):
        list(iter_audio_windows(tone_files[".flac"], options, stats))
    assert stats.duration == 0.0 and stats.peak_buffered == 0


def test_memory_stays_at_one_window(tmp_path: Path) -> None:
    rate, minutes = 8000, 20
    beep = tone(1000.0, 1.0, rate)

    def chunks():  # 20 minutes, a beep at the start of every 5th minute
        for minute in range(minutes):
            yield beep if minute % 5 == 0 else silence(1.0, rate)
            yield silence(59.0, rate)

    path = write_audio_stream(tmp_path / "long.flac", chunks(), rate)
    options = AudioOptions(sample_rate=16000, window_seconds=10.0, hop_seconds=5.0)
    windows, stats = decode(path, options)
    assert stats.duration == pytest.approx(minutes * 60.0, abs=1e-3)
    # each beep at the start of a minute is in the window starting there and the one before
    expected = sorted({m * 60.0 + d for m in range(0, minutes, 5) for d in (-5.0, 0.0)} - {-5.0})
    assert [w.start for w in windows] == expected
    assert stats.peak_buffered <= options.window_samples
    assert stats.peak_chunk < options.hop_samples

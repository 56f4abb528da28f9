"""Audio files and the sound of videos through the indexer into the audio-text space,
with tiny image-text and audio-text models (tests/conftest.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_CLAP_WINDOW
from tests.media.audio import (
    corrupt_middle,
    noise_burst,
    place,
    silence,
    text_file,
    tone,
    tone_in_silence,
    video_with_audio,
    write_audio,
)
from xmodal.indexer import AudioIndexing, DecodeOptions, IndexOptions, index_paths
from xmodal.search import Engine, Store
from xmodal.search.encoders import AUDIO_TEXT, IMAGE_TEXT
from xmodal.search.store import FAILED, INDEXED, item_id_for

RATE = 22050  # not the model's 16 kHz: the decoder resamples


def wav_with_unknown_codec(path: Path) -> Path:
    """A RIFF/WAVE file whose format tag no decoder knows (0x9999)."""
    data = bytes(range(256)) * 100
    fmt = struct.pack("<HHIIHH", 0x9999, 1, 16000, 32000, 2, 16)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data))
    path.write_bytes(
        b"RIFF" + struct.pack("<I", 4 + len(chunks) + len(data)) + b"WAVE" + chunks + data
    )
    return path


def segments_of(store: Store, space: str, item_id: str) -> list[tuple[float, float]]:
    rows = store.segments_table(space).to_pylist()
    return sorted((r["start"], r["end"]) for r in rows if r["item_id"] == item_id)


@pytest.fixture
def sound_library(tmp_path: Path, make_image) -> Path:
    lib = tmp_path / "lib"
    make_image(lib / "picture.jpg", seed=1)
    # 7 s: windows of 2 s at 0, 2, 4 and a partial one 6-7 s (1 s of new audio is kept).
    write_audio(lib / "beep.wav", tone_in_silence(7.0, 3.0, 1.0, RATE, freq=440.0), RATE)
    hum = tone(120.0, 4.0, RATE, amplitude=0.4)
    write_audio(lib / "hum.flac", np.stack([hum, hum * 0.5]), RATE)  # stereo
    write_audio(lib / "noise.mp3", noise_burst(3.0, RATE), RATE)
    video_with_audio(lib / "clip.mp4", seconds=4.0, event_at=2.0, event_seconds=1.0)
    return lib


def test_audio_files_and_video_sound_are_indexed_with_timed_windows(audio_engine, sound_library):
    report = index_paths(audio_engine, [sound_library])
    assert report.failed == []
    assert report.indexed == 5
    store = audio_engine.store
    assert {s.name for s in store.spaces()} == {IMAGE_TEXT, AUDIO_TEXT}

    beep = item_id_for(str(sound_library / "beep.wav"))
    # Windows at 0-2 and 6-7 are silent and skipped; the tone at 3-4 s falls in 2-4.
    assert segments_of(store, AUDIO_TEXT, beep) == [(2.0, 4.0)]
    assert segments_of(store, IMAGE_TEXT, beep) == []
    item = store.item(beep)
    assert item.kind == "audio" and item.status == INDEXED
    assert item.duration == pytest.approx(7.0, abs=0.05)

    hum = item_id_for(str(sound_library / "hum.flac"))
    assert segments_of(store, AUDIO_TEXT, hum) == [(0.0, 2.0), (2.0, 4.0)]

    clip = item_id_for(str(sound_library / "clip.mp4"))
    assert store.item(clip).kind == "video"
    assert len(segments_of(store, IMAGE_TEXT, clip)) >= 1  # keyframes
    sound = segments_of(store, AUDIO_TEXT, clip)
    assert len(sound) == 1 and sound[0][0] == pytest.approx(2.0, abs=0.05)  # the tone at 2-3 s

    picture = item_id_for(str(sound_library / "picture.jpg"))
    assert segments_of(store, AUDIO_TEXT, picture) == []
    assert report.segments == len(store.segments_table(IMAGE_TEXT)) + len(
        store.segments_table(AUDIO_TEXT)
    )


def test_rerun_skips_unchanged_and_reembeds_changed_audio(audio_engine, sound_library):
    index_paths(audio_engine, [sound_library])
    store = audio_engine.store
    before = store.count_segments(AUDIO_TEXT)
    again = index_paths(audio_engine, [sound_library])
    assert again.unchanged == 5 and again.indexed == again.updated == 0
    assert store.count_segments(AUDIO_TEXT) == before

    # A longer hum: re-embedded, its old windows replaced, not added to.
    hum = tone(120.0, 6.0, RATE, amplitude=0.4)
    write_audio(sound_library / "hum.flac", hum, RATE)
    third = index_paths(audio_engine, [sound_library])
    assert third.updated == 1
    hum_id = item_id_for(str(sound_library / "hum.flac"))
    assert segments_of(store, AUDIO_TEXT, hum_id) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert store.count_segments(AUDIO_TEXT) == before + 1

    (sound_library / "beep.wav").unlink()
    fourth = index_paths(audio_engine, [sound_library])
    assert fourth.removed == 1
    beep_id = item_id_for(str(sound_library / "beep.wav"))
    assert segments_of(store, AUDIO_TEXT, beep_id) == []


def test_bad_audio_is_recorded_and_the_job_goes_on(audio_engine, tmp_path):
    lib = tmp_path / "bad"
    lib.mkdir()
    write_audio(lib / "good.wav", tone(440.0, 3.0, RATE), RATE)
    (lib / "empty.wav").write_bytes(b"")
    text_file(lib / "notes.mp3")
    write_audio(lib / "quiet.wav", silence(3.0, RATE), RATE)
    write_audio(lib / "long.wav", tone(300.0, 12.0, RATE), RATE)
    wav_with_unknown_codec(lib / "odd-codec.wav")
    # Damaged packets mid-file: indexed for what decodes, with a warning.
    clean = write_audio(tmp_path / "clean.m4a", tone(700.0, 8.0, RATE), RATE)
    corrupt_middle(clean, lib / "damaged.m4a", fraction=0.2)
    # Odd rate and 5.1 layout: resampled and mixed down, not refused.
    odd = np.stack([tone(500.0, 3.0, 11025)] * 6)
    write_audio(lib / "surround.flac", odd, 11025)
    options = DecodeOptions(audio=AudioIndexing(max_seconds=10.0))
    report = index_paths(audio_engine, [lib], decode=options)
    reasons = {Path(path).name: reason for path, reason in report.failed}
    assert set(reasons) == {"empty.wav", "notes.mp3", "quiet.wav", "long.wav", "odd-codec.wav"}
    assert "empty" in reasons["empty.wav"]
    assert "unsupported audio codec" in reasons["odd-codec.wav"]
    assert "not an audio file" in reasons["notes.mp3"]
    assert "silent" in reasons["quiet.wav"]
    assert "over the limit" in reasons["long.wav"]
    assert report.indexed == 3
    warnings = {Path(path).name: note for path, note in report.warnings}
    assert "corrupt packet" in warnings["damaged.m4a"]
    store = audio_engine.store
    damaged = store.item(item_id_for(str(lib / "damaged.m4a")))
    assert damaged.status == INDEXED and "corrupt packet" in damaged.error
    assert segments_of(store, AUDIO_TEXT, damaged.id)
    for name in reasons:
        item = store.item(item_id_for(str(lib / name)))
        assert item.status == FAILED and item.error == reasons[name]
    surround = item_id_for(str(lib / "surround.flac"))
    assert segments_of(store, AUDIO_TEXT, surround) == [(0.0, 2.0), (2.0, 3.0)]


def test_without_an_audio_model_audio_fails_and_videos_keep_their_pictures(tiny_encoder, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    write_audio(lib / "beep.wav", tone(440.0, 3.0, RATE), RATE)
    video_with_audio(lib / "clip.mp4")
    engine = Engine(Store(tmp_path / "data"), tiny_encoder)
    report = index_paths(engine, [lib])
    assert [Path(p).name for p, _ in report.failed] == ["beep.wav"]
    assert "no audio model" in report.failed[0][1]
    assert engine.store.space(AUDIO_TEXT) is None
    clip = item_id_for(str(lib / "clip.mp4"))
    assert engine.store.item(clip).status == INDEXED


def test_long_audio_streams_in_windows_of_the_model(audio_engine, tmp_path):
    """A file much longer than a batch of windows: every window is encoded once, in order."""
    lib = tmp_path / "long"
    lib.mkdir()
    seconds = 2 * TINY_CLAP_WINDOW * 40  # 80 windows: more than two batches of 32
    signal = place(
        noise_burst(seconds, RATE, amplitude=0.05, seed=3), tone(900.0, 1.0, RATE), 50.5, RATE
    )
    write_audio(lib / "long.flac", signal, RATE)
    report = index_paths(audio_engine, [lib], IndexOptions(batch_size=32))
    assert report.failed == []
    spans = segments_of(audio_engine.store, AUDIO_TEXT, item_id_for(str(lib / "long.flac")))
    assert len(spans) == seconds // TINY_CLAP_WINDOW
    assert spans[0] == (0.0, 2.0) and spans[-1] == (seconds - 2.0, float(seconds))


def test_interrupted_run_resumes_without_duplicate_windows(audio_engine, sound_library):
    index_paths(audio_engine, [sound_library])
    store = audio_engine.store
    complete = sorted((r["id"], r["start"]) for r in store.segments_table(AUDIO_TEXT).to_pylist())
    # A crash after a batch's segments were written but before its item rows: the
    # segments are orphans until the next run, which removes and redoes them.
    hum = item_id_for(str(sound_library / "hum.flac"))
    store._items.delete(f"id = '{hum}'")
    resumed = index_paths(audio_engine, [sound_library])
    assert resumed.indexed == 1 and resumed.failed == []
    again = sorted((r["id"], r["start"]) for r in store.segments_table(AUDIO_TEXT).to_pylist())
    assert again == complete


def test_an_hour_long_file_is_indexed_in_bounded_memory(audio_engine, tmp_path):
    """An hour of sound (230 MB of float samples once decoded at 16 kHz) is indexed while
    holding a few windows at a time: decoding streams into the encoder's batches."""
    import tracemalloc

    from tests.media.audio import write_audio_stream

    rate, minutes = 16000, 60
    beep = tone(1000.0, 1.0, rate)

    def chunks():
        for minute in range(minutes):
            second = silence(60.0, rate)
            if minute % 10 == 5:  # a beep at 5, 15, 25, ... minutes
                second = place(second, beep, 30.0, rate)
            yield second

    lib = tmp_path / "hour"
    lib.mkdir()
    write_audio_stream(lib / "hour.flac", chunks(), rate)
    tracemalloc.start()
    try:
        report = index_paths(audio_engine, [lib], IndexOptions(batch_size=8))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.failed == [] and report.indexed == 1
    spans = segments_of(audio_engine.store, AUDIO_TEXT, item_id_for(str(lib / "hour.flac")))
    assert spans == [(60.0 * m + 30.0, 60.0 * m + 32.0) for m in range(5, 60, 10)]
    assert audio_engine.store.item(item_id_for(str(lib / "hour.flac"))).duration == 3600.0
    # Measured: 3.5 MiB of Python and numpy allocations at the peak (tracemalloc sees
    # numpy's buffers, not FFmpeg's); holding the decoded hour would be 230 MB.
    assert peak < 32 * 1024 * 1024, f"{peak / 2**20:.0f} MiB"

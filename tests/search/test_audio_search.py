"""Searching sounds next to pictures with tiny models: merged lists, kinds, queries by
sound, moments, calibration mechanics. (Relevance itself is tested with the reference
models in tests/search/test_calibrated_search.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.media.audio import noise_burst, place, silence, tone, video_with_audio, write_audio
from xmodal.indexer import AudioIndexing, DecodeOptions, index_paths
from xmodal.search import InvalidQueryError, MediaDecodeError
from xmodal.search.encoders import AUDIO_TEXT, IMAGE_TEXT
from xmodal.search.space.calibration import MIN_SPREAD, Calibration, null_queries
from xmodal.search.store import item_id_for

RATE = 16000


@pytest.fixture
def mixed(audio_engine, make_image, tmp_path) -> Path:
    lib = tmp_path / "mixed"
    for i in range(3):
        make_image(lib / f"picture{i}.jpg", seed=i)
    write_audio(
        lib / "beep.wav", place(silence(6.0, RATE), tone(880.0, 1.5, RATE), 2.5, RATE), RATE
    )
    write_audio(lib / "hum.wav", tone(150.0, 4.0, RATE, amplitude=0.3), RATE)
    write_audio(lib / "hiss.wav", noise_burst(4.0, RATE, seed=5), RATE)
    video_with_audio(lib / "clip.mp4", seconds=4.0, event_at=1.0, event_seconds=2.0)
    index_paths(audio_engine, [lib])
    return lib


def test_text_queries_merge_both_spaces_by_calibrated_score(audio_engine, mixed):
    result = audio_engine.search_text("a sound", k=20)
    kinds = {(h.item.kind, h.matched) for h in result.hits}
    assert ("image", "picture") in kinds and ("audio", "sound") in kinds
    ids = [h.item.id for h in result.hits]
    assert len(ids) == len(set(ids)) == 7  # the video once, though both spaces hold it
    calibrated = [h.calibrated for h in result.hits]
    assert all(c is not None for c in calibrated)
    assert calibrated == sorted(calibrated, reverse=True)
    for hit in result.hits:
        calibration = audio_engine.calibration(hit.space)
        assert hit.calibrated == pytest.approx(calibration.score(hit.score))

    # Paging walks the merged list.
    second = audio_engine.search_text("a sound", k=3, offset=3)
    assert [h.item.id for h in second.hits] == ids[3:6]


def test_min_score_and_kinds(audio_engine, mixed):
    everything = audio_engine.search_text("a sound", k=20)
    cut = sorted(h.calibrated for h in everything.hits)[3]
    kept = audio_engine.search_text("a sound", k=20, min_score=cut)
    assert [h.item.id for h in kept.hits] == [
        h.item.id for h in everything.hits if h.calibrated >= cut
    ]
    assert audio_engine.search_text("a sound", k=20, min_score=1e9).hits == []

    audio_only = audio_engine.search_text("a sound", k=20, kinds=["audio"])
    assert {h.item.kind for h in audio_only.hits} == {"audio"} and len(audio_only.hits) == 3
    images = audio_engine.search_text("a sound", k=20, kinds=["image"])
    assert {h.matched for h in images.hits} == {"picture"} and len(images.hits) == 3
    with pytest.raises(InvalidQueryError):
        audio_engine.search_text("a sound", kinds=["smell"])


def test_audio_hits_carry_their_timed_windows(audio_engine, mixed):
    hits = audio_engine.search_text("a beep", k=20, kinds=["audio"]).hits
    beep = next(h for h in hits if h.item.uri.endswith("beep.wav"))
    # 2 s windows; the tone (2.5-4 s) lies in 2-4 s, the rest of the file is silent.
    assert [(s.start, s.end) for s in beep.segments] == [(2.0, 4.0)]
    assert beep.item.duration == pytest.approx(6.0, abs=0.05)


def test_query_by_sound(audio_engine, mixed):
    data = (mixed / "hum.wav").read_bytes()
    result = audio_engine.search_audio(data, k=3)
    assert result.hits[0].item.uri == str(mixed / "hum.wav")
    assert result.hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert all(h.matched == "sound" and h.calibrated is None for h in result.hits)
    by_path = audio_engine.search_audio(mixed / "hum.wav", k=3)
    assert [h.item.id for h in by_path.hits] == [h.item.id for h in result.hits]

    # The video's soundtrack finds the video, by its sound.
    clip = audio_engine.search_audio(mixed / "clip.mp4", k=1).hits[0]
    assert clip.item.uri == str(mixed / "clip.mp4") and clip.matched == "sound"

    with pytest.raises(MediaDecodeError):
        audio_engine.search_audio(b"not audio at all" * 10)
    with pytest.raises(MediaDecodeError):
        audio_engine.search_audio(b"")
    quiet = mixed.parent / "quiet.wav"
    write_audio(quiet, silence(3.0, RATE), RATE)
    with pytest.raises(InvalidQueryError, match="silent"):
        audio_engine.search_audio(quiet)


def test_similar_to_a_sound_uses_the_sound_space(audio_engine, mixed):
    hum = item_id_for(str(mixed / "hum.wav"))
    result = audio_engine.search_similar(hum, k=10)
    assert hum not in [h.item.id for h in result.hits]
    assert {h.matched for h in result.hits} == {"sound"}
    assert len(result.hits) == 3  # beep, hiss and the video's sound
    picture = item_id_for(str(mixed / "picture0.jpg"))
    assert {h.matched for h in audio_engine.search_similar(picture, k=10).hits} == {"picture"}


def test_overlapping_windows_merge_into_one_moment(audio_engine, tmp_path):
    lib = tmp_path / "overlap"
    write_audio(
        lib.mkdir() or lib / "long-tone.wav",
        place(silence(8.0, RATE), tone(600.0, 3.0, RATE), 3.0, RATE),
        RATE,
    )
    index_paths(audio_engine, [lib], decode=DecodeOptions(audio=AudioIndexing(hop=1.0)))
    store = audio_engine.store
    spans = sorted((r["start"], r["end"]) for r in store.segments_table(AUDIO_TEXT).to_pylist())
    # Hop 1 s: overlapping windows; those wholly in silence are skipped.
    assert spans == [(2.0, 4.0), (3.0, 5.0), (4.0, 6.0), (5.0, 7.0)]
    # every window counts as a moment
    audio_engine.query = audio_engine.query.model_copy(update={"moment_margin": 2.0})
    hit = audio_engine.search_text("a tone", k=1).hits[0]
    assert [(s.start, s.end) for s in hit.segments] == [(spans[0][0], spans[-1][1])]


def test_calibration_fits_the_best_scores_of_unrelated_queries():
    queries = null_queries()
    assert len(queries) == len(set(queries)) == 64 and queries == null_queries()
    best = np.array([0.20, 0.22, 0.24, 0.26, 0.28, 0.90, -np.inf])
    calibration = Calibration.fit(best)
    assert calibration.center == pytest.approx(0.25)  # the median: one odd match moves it little
    assert calibration.spread == pytest.approx(np.std(best[:-1]))  # the tail widens the spread
    assert calibration.score(0.25) == pytest.approx(0.0)
    assert Calibration.fit(np.full(10, 0.3)).spread == MIN_SPREAD


def test_calibration_follows_the_store(audio_engine, mixed, make_image):
    before = audio_engine.calibration(IMAGE_TEXT)
    assert audio_engine.calibration(IMAGE_TEXT) is before  # cached for the version
    for i in range(10, 20):
        make_image(mixed / f"more{i}.jpg", seed=i)
    index_paths(audio_engine, [mixed])
    after = audio_engine.calibration(IMAGE_TEXT)
    assert after is not before


def test_a_sound_library_never_needs_the_image_model(tmp_path, tiny_audio_encoder):
    """Indexing, warming and searching sounds work while the image model cannot load."""
    from xmodal.search import Engine, ModelLoadError, Store, create_encoder

    unloadable = create_encoder(f"open_clip:xmodal-tiny/{tmp_path / 'missing.pt'}", device="cpu")
    with pytest.raises(ModelLoadError):
        unloadable.load()
    engine = Engine(Store(tmp_path / "data"), unloadable, audio_encoder=tiny_audio_encoder)
    lib = tmp_path / "sounds"
    write_audio(lib.mkdir() or lib / "hum.wav", tone(150.0, 3.0, RATE, amplitude=0.3), RATE)
    assert index_paths(engine, [lib]).indexed == 1
    engine.warm()
    hits = engine.search_text("a hum", k=3).hits
    assert [h.item.uri for h in hits] == [str(lib / "hum.wav")]
    assert engine.store.space(IMAGE_TEXT) is None

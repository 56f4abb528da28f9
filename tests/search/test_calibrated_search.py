"""One list across spaces, with the project's reference models: pictures (`xmodal-ref`)
and sounds (`xmodal-ref-audio`) in one library, text queries about either, and queries
about nothing in it."""

from __future__ import annotations

import pytest

from xmodal.indexer import index_paths
from xmodal.search import Engine, Store
from xmodal.search.encoders import create_audio_encoder, create_encoder
from xmodal.search.encoders.builtin import REFERENCE_AUDIO_MODEL, REFERENCE_MODEL
from xmodal.synthetic import shapes, sounds

# The threshold the README recommends. Measured on this library: the sounds' captions
# calibrate at 4.4-6.1 in the audio space (median 5.4), the pictures' at 3.2-4.6 in the
# image space (median 3.8); a caption's best hit in the other space at most 1.8; of 300
# random letter strings and word salads, 2.3% reach 3 (the reference models' small
# tokenizers map some fragments onto words they know), none of the queries below 1.5.
MIN_SCORE = 3.0
NONSENSE = (
    "zorblax quinterly flumph",
    "vrrsk mnoptl",
    "the fiscal policy of atlantis in 1850",
    "asdfgh jkl qwerty",
    "a recipe for invisible soup",
    "xylophagous tergiversation",
)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, dict[str, str]]:
    """40 pictures and 40 sounds of held-out seeds; returns the engine and caption per uri."""
    folder = tmp_path_factory.mktemp("mixed")
    captions: dict[str, str] = {}
    for item in shapes.generate(40, seed=23, split="seen"):
        path = folder / f"picture-{item.index:03d}.jpg"
        path.write_bytes(item.jpeg)
        captions[str(path)] = item.caption
    for number, clip in enumerate(sounds.generate(40, seed=23, split="seen", rate=16000)):
        path = folder / f"sound-{number:03d}.wav"
        sounds.write_wav(path, clip.samples, 16000)
        captions[str(path)] = clip.caption
    engine = Engine(
        Store(tmp_path_factory.mktemp("store")),
        create_encoder(REFERENCE_MODEL, device="cpu"),
        audio_encoder=create_audio_encoder(REFERENCE_AUDIO_MODEL, device="cpu"),
    )
    report = index_paths(engine, [folder])
    assert report.failed == [] and report.indexed == 80
    return engine, captions


def _captions_of(captions: dict[str, str], suffix: str) -> list[tuple[str, str]]:
    return [(uri, text) for uri, text in captions.items() if uri.endswith(suffix)]


def test_a_query_about_a_sound_ranks_a_sound_first(library):
    engine, captions = library
    own_in_top5 = 0
    for uri, text in _captions_of(captions, ".wav"):
        hits = engine.search_text(text, k=5).hits
        assert hits[0].matched == "sound", (text, [h.item.uri for h in hits])
        own_in_top5 += uri in [h.item.uri for h in hits]
    assert own_in_top5 >= 0.6 * 40


def test_a_query_about_a_picture_ranks_a_picture_first(library):
    engine, captions = library
    own_in_top5 = 0
    for uri, text in _captions_of(captions, ".jpg"):
        hits = engine.search_text(text, k=5).hits
        assert hits[0].matched == "picture", (text, [h.item.uri for h in hits])
        own_in_top5 += uri in [h.item.uri for h in hits]
    assert own_in_top5 >= 0.6 * 40


def test_nonsense_returns_nothing_above_min_score(library):
    engine, captions = library
    for text in NONSENSE:
        assert engine.search_text(text, k=10, min_score=MIN_SCORE).hits == [], text
    # ... while the captions of what is there keep their hits at that threshold.
    kept = [
        bool(engine.search_text(text, k=1, min_score=MIN_SCORE).hits)
        for _, text in captions.items()
    ]
    assert sum(kept) >= 0.9 * len(kept)


def test_one_threshold_means_the_same_in_both_spaces(library):
    """A sound query's best picture and a picture query's best sound both calibrate
    like unrelated queries: near 0, far below MIN_SCORE."""
    engine, captions = library
    for suffix, other in ((".wav", "image"), (".jpg", "audio")):
        for _, text in _captions_of(captions, suffix)[:10]:
            wrong = engine.search_text(text, k=1, kinds=[other]).hits[0]
            assert wrong.calibrated is not None and wrong.calibrated < MIN_SCORE, text
